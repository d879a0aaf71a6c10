"""The inverse field on real brains: inverse consistency and atlas labels carried back.

For each OASIS-TRT-20 validation pair, ``eoir.register`` with the shipped model (the default
of ``eoir register``), then ``result.inverse()`` (the field on the moving grid, as
``--inverse-field`` writes it):

- inverse consistency: every moving voxel ``q`` mapped to the fixed grid by the inverse and back
  by the forward field lands at ``q + e``; the median and 99th percentile of ``|e|`` (voxels)
  over the moving grid 3 voxels in from its border;
- atlas labels: the fixed image's label map warped onto the moving image with the inverse field
  (nearest neighbour, as ``eoir apply --nearest``), Dice against the moving image's own labels
  (Learn2Reg convention), against the unregistered start;
- the seconds ``inverse()`` takes.

Usage: ``python benchmarks/inverse_oasis.py [--pairs 6]`` (skipped without ``../shared/data``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import eoir
from eoir.metrics import mean_dice
from eoir.registration.resample import warp_image
from eoir.spatial import identity_grid, sample, transform_positions


def consistency(result: eoir.RegistrationResult, inverse: torch.Tensor) -> np.ndarray:
    """``|e|`` per moving voxel (3 voxels in from the border), voxels."""
    fixed, moving = result.fixed, result.moving
    q = identity_grid(moving.shape, dtype=torch.float64)
    to_fixed = np.linalg.inv(fixed.affine) @ moving.affine
    p = transform_positions(to_fixed, q + inverse.double())
    back = transform_positions(
        np.linalg.inv(to_fixed), p + sample(result.disp.double(), p, padding="border")
    )
    error = (back - q).norm(dim=1)[0, 3:-3, 3:-3, 3:-3]
    return error.numpy().ravel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/oasis-trt-20"))
    args = parser.parse_args()
    if not (args.data / "dataset.json").is_file():
        print(f"skipped: {args.data} is not there (the OASIS-TRT-20 data)")
        return
    meta = json.loads((args.data / "dataset.json").read_text())
    print("| pair | consistency median / p99 (voxels) | atlas Dice start -> inverse | s |")
    print("|---|---|---|---|")
    rows = []
    for entry in meta["registration_val"][: args.pairs]:
        fixed, moving = args.data / entry["fixed"], args.data / entry["moving"]
        labels = [Path(str(p).replace("imagesTr", "labelsTr")) for p in (fixed, moving)]
        result = eoir.register(fixed, moving, progress=False)
        began = time.perf_counter()
        inverse = result.inverse()
        seconds = time.perf_counter() - began
        error = consistency(result, inverse)
        fixed_labels, moving_labels = (eoir.read_image(p, "labels") for p in labels)
        start = warp_image(fixed_labels, result.moving, mode="nearest")
        carried = warp_image(fixed_labels, result.moving, inverse, mode="nearest")
        before = mean_dice(moving_labels.array, start, fixed_labels.array)
        after = mean_dice(moving_labels.array, carried, fixed_labels.array)
        rows.append((np.median(error), np.percentile(error, 99), before, after, seconds))
        print(
            f"| {moving.name[:13]} -> {fixed.name[:13]} | {rows[-1][0]:.4f} / {rows[-1][1]:.3f} "
            f"| {before:.3f} -> {after:.3f} | {seconds:.1f} |",
            flush=True,
        )
    mean = np.mean(rows, axis=0)
    print(
        f"| mean | {mean[0]:.4f} / {mean[1]:.3f} | {mean[2]:.3f} -> {mean[3]:.3f} | {mean[4]:.1f} |"
    )


if __name__ == "__main__":
    main()
