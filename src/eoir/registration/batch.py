"""Registering many pairs with one loaded model: ``eoir register --pairs FILE --out-dir DIR``.

The pairs come from a CSV (columns ``fixed``, ``moving`` and optionally ``moving_labels``; paths
relative to the CSV's folder) or a Learn2Reg ``dataset.json`` (its ``registration_val`` or
``registration_test`` pairs, with their label maps). The model is loaded once; while a pair is
registered a background thread reads the next pair and another writes the previous pair's
outputs, so reading and writing overlap with computing. Under ``torchrun`` each process takes
every ``world``-th pair. For each pair ``DIR`` receives ``<moving>_to_<fixed>_warped.nii.gz``,
``..._field.nii.gz`` (ITK by default) and, with labels, ``..._labels.nii.gz``; rank 0 writes
``DIR/summary.csv`` (seconds, folding, SDlogJ per pair). Every target is checked before any
work: an existing file without ``overwrite`` stops the run before anything is written.
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
from eoir.registration.pipeline import register
from eoir.runtime import distributed, finish_distributed, rank_device, resolve_device

__all__ = ["PairJob", "read_pairs", "register_pairs"]


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


def register_pairs(
    jobs: list[PairJob],
    out_dir: str | os.PathLike,
    *,
    model: Any = None,
    field_format: FieldFormat = "itk",
    overwrite: bool = False,
    device: str = "cpu",
    echo: Callable[[str], None] = print,
    **options: Any,
) -> list[dict[str, Any]]:
    """Register every pair with one loaded model and write its outputs into ``out_dir``.

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
    device : str
        ``"cpu"`` or ``"cuda"`` (under torchrun each rank takes its share of the pairs).
    **options
        Passed to :func:`eoir.register` (``optimize_steps``, ``preset``, ``affine``,
        ``downsample``, ``precision``, ...).

    Returns
    -------
    list of dict
        One summary row per pair (all pairs on rank 0, this rank's share elsewhere).
    """
    out = Path(out_dir)
    rank, world = distributed(device)
    dev = rank_device(resolve_device(device), world)
    mine = jobs[rank::world]
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    every = [t for job in mine for t in _targets(job, out).values() if t is not None]
    # refuses existing files (without overwrite) before any work
    sources = [f for job in jobs for f in (job.fixed, job.moving, job.moving_labels)]
    OutputSet(every, overwrite, inputs=sources)
    if rank == 0:
        OutputSet([out / "summary.csv"], overwrite, suffixes=(".csv",))
    net = load_model(model, dev) if model is not None else None
    rows: list[dict[str, Any]] = []
    with ThreadPoolExecutor(max_workers=1) as reader, ThreadPoolExecutor(max_workers=1) as writer:
        pending: Future | None = reader.submit(_read, mine[0]) if mine else None
        written: list[Future] = []
        for index, job in enumerate(mine):
            fixed, moving, labels = pending.result()
            if index + 1 < len(mine):
                pending = reader.submit(_read, mine[index + 1])
            result = register(fixed, moving, model=net, device=dev, **options)
            targets = _targets(job, out)
            written.append(
                writer.submit(
                    result.save,
                    targets["warped"],
                    targets["field"],
                    field_format,
                    labels,
                    targets["warped_labels"],
                    overwrite,
                )
            )
            stats = result.jacobian_stats()
            rows.append(
                {
                    "fixed": str(job.fixed),
                    "moving": str(job.moving),
                    "seconds": round(result.seconds, 3),
                    "folding_percent": stats["folding_percent"],
                    "sdlogj": stats["sdlogj"],
                    "field": str(targets["field"]),
                }
            )
            echo(f"{job.stem}: {result.seconds:.2f} s, folding {stats['folding_percent']:.3f} %")
            for message in result.info["warnings"]:
                echo(f"{job.stem}: warning: {message}")
        for future in written:
            future.result()  # re-raise a failed write
    if world > 1:
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, rows)
        rows = [row for part in gathered for row in part]
    if rank == 0 and rows:
        buffer = io.StringIO()
        table = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        table.writeheader()
        table.writerows(rows)
        with OutputSet([out / "summary.csv"], True, suffixes=(".csv",)) as outputs:
            outputs.temp(out / "summary.csv").write_text(buffer.getvalue())
    finish_distributed()
    return rows
