"""Registering many pairs with one loaded model: ``eoir register --pairs FILE --out-dir DIR``.

The pairs come from a CSV (columns ``fixed``, ``moving`` and optionally ``moving_labels``; paths
relative to the CSV's folder) or a Learn2Reg ``dataset.json`` (its ``registration_val`` or
``registration_test`` pairs, with their label maps). The model is loaded once; while a pair is
registered a background thread reads the next pair and another writes the previous pair's
outputs, so reading and writing overlap with computing. Under ``torchrun`` each process takes
every ``world``-th pair. For each pair ``DIR`` receives ``<moving>_to_<fixed>_warped.nii.gz``,
``..._field.nii.gz`` (ITK by default) and, with labels, ``..._labels.nii.gz``; rank 0 writes
``DIR/summary.csv`` (per pair: status ``ok``/``failed``/``skipped``, the error of a failed
pair, seconds, folding, SDlogJ). A pair that fails writes nothing and the others go on. Every
target is checked before any work: an existing file without ``overwrite`` stops the run before
anything is written, unless ``skip_existing`` skips the pairs already complete.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.distributed as dist

from eoir.errors import InputError, reason
from eoir.image import Image
from eoir.io import FieldFormat, OutputSet, Split, Subject, load_dataset, read_image
from eoir.nn import load_model
from eoir.progress import ProgressLike, progress_for
from eoir.registration.pipeline import register
from eoir.runtime import distributed, finish_distributed, rank_device, resolve_device

__all__ = ["SUMMARY_COLUMNS", "PairJob", "read_pairs", "register_pairs"]


@dataclass(frozen=True)
class PairJob:
    """One pair to register and the names of its outputs."""

    fixed: Path
    moving: Path
    moving_labels: Path | None = None

    @property
    def stem(self) -> str:
        """``<moving>_to_<fixed>`` from the file names without image suffixes."""
        return f"{Subject(self.moving).name}_to_{Subject(self.fixed).name}"


def read_pairs(path: str | os.PathLike, split: Split = "val") -> list[PairJob]:
    """The pairs listed in a CSV or a Learn2Reg ``dataset.json``.

    Raises
    ------
    InputError
        Unreadable file, missing columns, no pairs, or a listed file that does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: pair list not found")
    if path.suffix == ".json":
        spec = load_dataset(path)
        jobs = [PairJob(f.image, m.image, m.label) for f, m in spec.pairs(split)]
    else:
        try:
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            raise InputError(f"{path}: cannot read the pair list ({reason(err)})") from None
        if not rows or not {"fixed", "moving"} <= set(rows[0]):
            raise InputError(f"{path}: needs a header with fixed,moving[,moving_labels] and rows")
        base = path.parent
        jobs = []
        for row in rows:
            labels = (row.get("moving_labels") or "").strip()
            jobs.append(
                PairJob(
                    base / row["fixed"].strip(),
                    base / row["moving"].strip(),
                    base / labels if labels else None,
                )
            )
    for job in jobs:
        for file in (job.fixed, job.moving, job.moving_labels):
            if file is not None and not file.exists():
                raise InputError(f"{path}: lists {file}, which does not exist")
    stems = [job.stem for job in jobs]
    if len(set(stems)) != len(stems):
        raise InputError(f"{path}: two pairs would write the same outputs (same file names)")
    return jobs


def _targets(job: PairJob, out_dir: Path) -> dict[str, Path | None]:
    return {
        "warped": out_dir / f"{job.stem}_warped.nii.gz",
        "field": out_dir / f"{job.stem}_field.nii.gz",
        "warped_labels": out_dir / f"{job.stem}_labels.nii.gz" if job.moving_labels else None,
    }


def _read(job: PairJob) -> tuple[Image, Image, Image | None]:
    labels = read_image(job.moving_labels, "moving labels") if job.moving_labels else None
    return read_image(job.fixed, "fixed image"), read_image(job.moving, "moving image"), labels


FAILURES = (InputError, OSError, MemoryError)  # what fails one pair and not the batch


def register_pairs(
    jobs: list[PairJob],
    out_dir: str | os.PathLike,
    *,
    model: Any = None,
    field_format: FieldFormat = "itk",
    overwrite: bool = False,
    skip_existing: bool = False,
    device: str = "auto",
    echo: Callable[[str], None] = print,
    progress: ProgressLike = True,
    **options: Any,
) -> list[dict[str, Any]]:
    """Register every pair with one loaded model and write its outputs into ``out_dir``.

    A pair that fails (an unreadable or bad file, a full disk, ...) is recorded in the summary
    with its error and writes nothing; the other pairs go on.

    Parameters
    ----------
    jobs : list of PairJob
        From :func:`read_pairs`.
    out_dir : path
        Output folder (created).
    model : module, path, str or None
        As for :func:`eoir.register`; loaded once.
    field_format : {"itk", "l2r"}
        Field file format.
    overwrite : bool
        Replace existing outputs.
    skip_existing : bool
        Skip the pairs whose outputs all exist already (a rerun after failures or a kill);
        their rows say ``skipped``.
    device : str
        ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"`` (under torchrun each rank
        takes its share of the pairs, on ``cuda:LOCAL_RANK``).
    echo : callable
        Where failures and warnings are reported.
    progress : bool or callable
        Show the pair count, each pair's time and the time left (:mod:`eoir.progress`: a
        rewritten line on a terminal, else a line per pair through ``echo``); the
        registrations' own progress is not shown.
    **options
        Passed to :func:`eoir.register` (``optimize_steps``, ``preset``, ``affine``,
        ``downsample``, ``precision``, ...).

    Returns
    -------
    list of dict
        One summary row per pair (all pairs on rank 0, this rank's share elsewhere): ``status``
        is ``ok``, ``failed`` (with ``error``) or ``skipped``.
    """
    out = Path(out_dir)
    dev = resolve_device(device)
    rank, world = distributed(dev)
    dev = rank_device(dev, world)  # cuda:LOCAL_RANK under torchrun
    mine = jobs[rank::world]
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    done = {job for job in mine if skip_existing and _complete(job, out)}
    todo = [job for job in mine if job not in done]
    every = [t for job in todo for t in _targets(job, out).values() if t is not None]
    # refuses existing files (without overwrite) before any work
    sources = [f for job in jobs for f in (job.fixed, job.moving, job.moving_labels)]
    try:
        OutputSet(every, overwrite, inputs=sources)
    except InputError as err:
        if err.switches and not skip_existing:
            raise InputError(err.message, switches=("overwrite", "skip_existing")) from None
        raise
    if rank == 0:
        summary_overwrite = overwrite or skip_existing  # a rerun rewrites its summary
        OutputSet([out / "summary.csv"], summary_overwrite, suffixes=(".csv",), inputs=sources)
    net = load_model(model, dev) if model is not None else None
    rows = {job: _row(job, out, "skipped") for job in done}
    shown = progress_for(progress, len(todo), "pairs", every=0, echo=echo)
    with (
        shown,
        ThreadPoolExecutor(max_workers=1) as reader,
        ThreadPoolExecutor(max_workers=1) as writer,
    ):
        pending: Future | None = reader.submit(_read, todo[0]) if todo else None
        written: dict[PairJob, Future] = {}
        for index, job in enumerate(todo):
            reading, pending = pending, None
            if index + 1 < len(todo):
                pending = reader.submit(_read, todo[index + 1])
            try:
                fixed, moving, labels = reading.result()
                result = register(fixed, moving, model=net, device=dev, progress=False, **options)
            except FAILURES as err:
                rows[job] = _row(job, out, "failed", error=_error(err))
                echo(f"{job.stem}: failed: {_error(err)}")
                shown.update(note=f"{job.stem} failed")
                continue
            targets = _targets(job, out)
            written[job] = writer.submit(
                result.save,
                targets["warped"],
                targets["field"],
                field_format,
                labels,
                targets["warped_labels"],
                overwrite,
            )
            stats = result.jacobian_stats()
            rows[job] = _row(
                job,
                out,
                "ok",
                seconds=round(result.seconds, 3),
                folding_percent=stats["folding_percent"],
                sdlogj=stats["sdlogj"],
            )
            shown.update(note=f"{job.stem} {result.seconds:.1f} s")
            for message in result.info["warnings"]:
                echo(f"{job.stem}: warning: {message}")
        for job, future in written.items():
            try:
                future.result()
            except FAILURES as err:  # a write that failed left nothing behind (OutputSet)
                rows[job] = _row(job, out, "failed", error=_error(err))
                echo(f"{job.stem}: failed: {_error(err)}")
    table = [rows[job] for job in mine]
    if world > 1:
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, table)
        table = [row for part in gathered for row in part]
    if rank == 0 and table:
        buffer = io.StringIO()
        writer_csv = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS)
        writer_csv.writeheader()
        writer_csv.writerows(table)
        with OutputSet([out / "summary.csv"], True, suffixes=(".csv",)) as outputs:
            outputs.temp(out / "summary.csv").write_text(buffer.getvalue())
    finish_distributed()
    return table


SUMMARY_COLUMNS = [
    "fixed",
    "moving",
    "status",
    "error",
    "seconds",
    "folding_percent",
    "sdlogj",
    "field",
]


def _row(job: PairJob, out: Path, status: str, **values: Any) -> dict[str, Any]:
    row = dict.fromkeys(SUMMARY_COLUMNS, "")
    row.update(fixed=str(job.fixed), moving=str(job.moving), status=status, **values)
    if status != "failed":
        row["field"] = str(_targets(job, out)["field"])
    return row


def _complete(job: PairJob, out: Path) -> bool:
    """Whether every output of ``job`` exists already."""
    return all(t.is_file() for t in _targets(job, out).values() if t is not None)


def _error(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        return f"{err.filename}: {err.strerror}" if err.filename else err.strerror
    if isinstance(err, MemoryError):
        return "out of memory"
    return reason(err)
