"""Evaluation of a model (or of no registration) on a dataset's validation or test pairs.

Each pair is registered at full resolution through :func:`eoir.register` (with the
preprocessing the model was trained with) and scored on the fixed grid: Dice over the labels
present in both label maps (Learn2Reg convention, :mod:`eoir.metrics`), Dice per label group
when ``dataset.json`` names groups, HD95 (mm), % of voxels with ``J <= 0`` and SDlogJ of the
field, and the seconds the registration took. The next pair is read and the previous one scored
while a pair registers. Several processes under torchrun each take a share of the pairs (each on
its own GPU, ``cuda:LOCAL_RANK``); rank 0 writes the CSVs.
"""

from __future__ import annotations

import csv
import io
import re
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from eoir.errors import InputError
from eoir.image import Image
from eoir.io import OutputSet, Split, Subject, check_labels, load_dataset, read_image
from eoir.metrics import dice_per_label, evaluation_labels, mean_hd95
from eoir.nn import load_checkpoint
from eoir.progress import ProgressLike, progress_for
from eoir.registration import register
from eoir.runtime import distributed, finish_distributed, rank_device, resolve_device

__all__ = ["evaluate", "l2r_field_name", "score_pair"]


def l2r_field_name(fixed: Subject, moving: Subject) -> str:
    """The Learn2Reg file name of a pair's field.

    ``disp_<fixed id>_<fixed modality>_<moving id>_<moving modality>.nii.gz`` for images named
    ``..._<id>_<modality>.nii.gz`` (the current evaluator), else ``disp_<fixed>_<moving>.nii.gz``.
    """
    ids = []
    for subject in (fixed, moving):
        match = re.search(r"_(\d+)_(\d+)$", subject.name)
        ids.append(f"{match.group(1)}_{match.group(2)}" if match else subject.name)
    return f"disp_{ids[0]}_{ids[1]}.nii.gz"


def score_pair(
    fixed_labels: np.ndarray,
    warped: np.ndarray,
    moving_labels: np.ndarray,
    spacing: tuple[float, ...],
    names: dict[int, str],
) -> tuple[dict[str, float], dict[int, float]]:
    """Scores of one registered pair.

    Parameters
    ----------
    fixed_labels, warped, moving_labels : numpy.ndarray
        Label maps on the fixed grid (``warped``: the moving labels after registration) and the
        moving labels as given (they decide which labels are scored).
    spacing : tuple of float
        Fixed voxel size in mm.
    names : dict of int to str
        Label groups (``dataset.json``); each group gets a ``dice_<group>`` entry.

    Returns
    -------
    row : dict
        ``dice`` (mean over the labels present in both images), ``dice_<group>``, ``hd95`` (mm).
    per_label : dict of int to float
        Dice per label.
    """
    chosen = evaluation_labels(fixed_labels, moving_labels)
    per_label = dice_per_label(fixed_labels, warped, chosen, empty=0.0)
    row = {"dice": float(np.mean(list(per_label.values()))) if per_label else float("nan")}
    for group in sorted(set(names.values())):
        values = [d for label, d in per_label.items() if names.get(label) == group]
        row[f"dice_{group}"] = float(np.mean(values)) if values else float("nan")
    row["hd95"] = mean_hd95(fixed_labels, warped, moving_labels, spacing, chosen)
    return row, per_label


def evaluate(
    dataset: str | Path,
    model: str | Path | None,
    out_csv: str | Path,
    *,
    split: Split = "val",
    labels_csv: str | Path | None = None,
    save_fields: str | Path | None = None,
    optimize_steps: int = 0,
    device: str = "auto",
    overwrite: bool = False,
    echo=print,
    progress: ProgressLike = True,
) -> list[dict[str, Any]]:
    """Register and score every pair of a split.

    Parameters
    ----------
    dataset : path
        Learn2Reg ``dataset.json`` or folder.
    model : path or None
        A checkpoint (its run config gives the preset and resolution), or None to score the
        pairs as they are (no registration: the affine-only starting point of a pre-aligned
        dataset).
    out_csv : path
        One row per pair: fixed, moving, dice, dice per label group, hd95, folding_percent,
        sdlogj, seconds.
    split : {"val", "test"}
        Which pairs.
    labels_csv : path, optional
        Dice per label per pair (default: ``out_csv`` with ``_labels`` before ``.csv``).
    save_fields : path, optional
        Folder for Learn2Reg displacement files (:func:`l2r_field_name`).
    optimize_steps : int
        Instance-optimisation steps after the model (0: the model alone).
    device : str
        ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"`` (under torchrun each rank
        uses ``cuda:LOCAL_RANK``).
    overwrite : bool
        Replace existing outputs.
    echo : callable
        Where the summary (and, off a terminal, each pair's line) goes.
    progress : bool or callable
        Show each pair's scores, the pair count and the time left (:mod:`eoir.progress`).

    Returns
    -------
    list of dict
        The rows (all pairs on rank 0; this rank's share on others).
    """
    out_csv = Path(out_csv)
    if out_csv.suffix != ".csv":
        raise InputError(f"{out_csv}: the results file must end in .csv")
    labels_csv = Path(labels_csv) if labels_csv else out_csv.with_name(out_csv.stem + "_labels.csv")
    outputs = OutputSet([out_csv, labels_csv], overwrite, suffixes=(".csv",))
    spec = load_dataset(dataset)
    pairs = spec.pairs(split)
    for fixed, moving in pairs:  # every pair checked before any work
        if fixed.label is None or moving.label is None:
            raise InputError(f"{fixed.image}: evaluation needs label maps for both images")
    dev = resolve_device(device)
    rank, world = distributed(dev)
    dev = rank_device(dev, world)  # cuda:LOCAL_RANK under torchrun
    preset = "mri"
    net = None
    if model is not None:
        net, state = load_checkpoint(model, dev)
        run = state.get("run_config") or {}
        preset = run.get("data", {}).get("preset", preset)
    fields_dir = Path(save_fields) if save_fields else None
    if fields_dir is not None:
        fields_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    label_rows: list[dict[str, Any]] = []

    def read(pair: tuple[Subject, Subject]) -> list[Image]:
        fixed, moving = pair
        images = [
            read_image(fixed.image, "fixed image"),
            read_image(moving.image, "moving image"),
            read_image(fixed.label, "fixed labels"),
            read_image(moving.label, "moving labels"),
        ]
        check_labels(images[2], "fixed labels")
        check_labels(images[3], "moving labels")
        return images

    def score(pair: tuple[Subject, Subject], result, fixed_labels: Image, moving_labels: Image):
        fixed, moving = pair
        warped = result.warp_labels(moving_labels)
        row, per_label = score_pair(
            fixed_labels.array, warped, moving_labels.array, result.fixed.spacing, spec.label_names
        )
        stats = result.jacobian_stats(torch.float64)  # an evaluation: float64 arithmetic
        row = {"fixed": fixed.name, "moving": moving.name, **row, **stats}
        row.pop("std_log_j")
        row["seconds"] = round(result.seconds, 3)
        if fields_dir is not None:
            target = fields_dir / l2r_field_name(fixed, moving)
            result.save(field=target, field_format="l2r", overwrite=True)
        per_pair = [
            {
                "fixed": fixed.name,
                "moving": moving.name,
                "label": label,
                "name": spec.label_names.get(label, ""),
                "dice": dice,
            }
            for label, dice in per_label.items()
        ]
        return row, per_pair

    def collect(job: Future) -> None:
        row, per_pair = job.result()
        rows.append(row)
        label_rows.extend(per_pair)
        shown.update(
            note=f"{row['moving']} -> {row['fixed']}: Dice {row['dice']:.4f}, HD95 "
            f"{row['hd95']:.2f} mm, folding {row['folding_percent']:.3f} %"
        )

    # the next pair is read and the previous one scored (and its field written) in threads
    # while this one registers
    mine = pairs[rank::world]
    shown = progress_for(progress, len(mine), "pairs", every=0, echo=echo)
    with (
        shown,
        ThreadPoolExecutor(max_workers=1) as reader,
        ThreadPoolExecutor(max_workers=1) as scorer,
    ):
        pending = reader.submit(read, mine[0]) if mine else None
        scoring: Future | None = None
        for index, pair in enumerate(mine):
            assert pending is not None
            fixed_image, moving_image, fixed_labels, moving_labels = pending.result()
            pending = reader.submit(read, mine[index + 1]) if index + 1 < len(mine) else None
            result = register(
                fixed_image,
                moving_image,
                model=net,
                optimize_steps=optimize_steps if net is not None else 0,
                preset=preset,
                device=dev,
                progress=False,
            )
            if scoring is not None:
                collect(scoring)
            scoring = scorer.submit(score, pair, result, fixed_labels, moving_labels)
        if scoring is not None:
            collect(scoring)
    if world > 1:
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, (rows, label_rows))
        rows = [r for part in gathered for r in part[0]]
        label_rows = [r for part in gathered for r in part[1]]
    if rank != 0:
        finish_distributed()
        return rows
    with outputs:
        for path, table in ((out_csv, rows), (labels_csv, label_rows)):
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=list(table[0]) if table else ["fixed"])
            writer.writeheader()
            writer.writerows(table)
            outputs.temp(path).write_text(buffer.getvalue())
    columns = [c for c in rows[0] if c not in ("fixed", "moving")] if rows else []
    echo(f"{len(rows)} {split} pairs of {spec.source} with {model or 'no registration'}:")
    for column in columns:
        values = np.array([r[column] for r in rows], dtype=float)
        echo(f"  {column:>18}: {np.nanmean(values):.4f} +- {np.nanstd(values):.4f}")
    finish_distributed()
    return rows
