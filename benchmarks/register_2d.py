"""2-D image files end to end: OASIS-TRT-20 axial slices as 8-bit PNGs through ``eoir register``.

Writes each validation subject's slice (subjects 13-15 of ``oasis-trt-20-2d``; 1-12 are the
2-D training subjects of ``oasis2d_benchmark.py``) as an 8-bit PNG (robust 0-255 window) and its
label map as a 2-D NIfTI, then runs the command a user would run on every ordered pair::

    eoir register --fixed F.png --moving M.png --warped W.png --field FIELD.nii.gz \\
        --inverse-field INV.nii.gz --moving-labels ML.nii.gz --warped-labels WL.nii.gz \\
        --fixed-labels FL.nii.gz --json S.json

and reports Dice (Learn2Reg convention, all labels) before and after, the registration time and
the whole command's time (start-up, reading and writing included), folding, and the inverse's
consistency (each moving pixel through the inverse and back through the field, pixels).

Usage::

    python benchmarks/register_2d.py [--data ../shared/data/oasis-trt-20-2d] [--subjects 13 14 15]
        [--extra ARGS...]
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from eoir.image import Image
from eoir.io import read_field, write_image
from eoir.spatial import identity_grid, sample, transform_positions

HERE = Path(__file__).resolve().parent


def export(folder: Path, data: Path, subject: int) -> dict[str, Path]:
    """The subject's slice as an 8-bit PNG and its labels as a 2-D NIfTI."""
    arrays = np.load(data / f"OASIS-TRT-20-{subject}_axial.npz")
    image = arrays["img"]
    lo, hi = np.percentile(image, (0.5, 99.5))
    grey = np.clip((image - lo) / (hi - lo) * 255, 0, 255).round().astype(np.uint8)
    grid = Image(grey, np.diag([-1.0, -1.0, 1.0]))  # ITK's identity geometry of a picture
    paths = {"image": folder / f"s{subject}.png", "labels": folder / f"s{subject}_labels.nii.gz"}
    write_image(paths["image"], grey, grid)
    write_image(paths["labels"], arrays["seg"], grid)
    return paths


def inverse_consistency(field: Path, inverse: Path, margin: int = 8) -> tuple[float, float]:
    """Median and 99th percentile of ``|e|`` in pixels, ``margin`` pixels in from the border:
    every moving pixel ``q`` mapped to the fixed grid by the inverse and back by the field (as
    ``inverse_oasis.py`` measures it in 3-D), both read back from their files."""
    disp, grid = read_field(field)
    inv, moving = read_field(inverse)
    q = identity_grid(moving.shape, dtype=torch.float64)
    to_fixed = np.linalg.inv(grid.affine) @ moving.affine
    p = transform_positions(to_fixed, q + inv.double())
    back = transform_positions(
        np.linalg.inv(to_fixed), p + sample(disp.double(), p, padding="border")
    )
    error = (back - q).norm(dim=1)[0, margin:-margin, margin:-margin].flatten()
    return float(error.median()), float(torch.quantile(error, 0.99))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(HERE.parent.parent / "shared/data/oasis-trt-20-2d"))
    parser.add_argument("--subjects", type=int, nargs="+", default=[13, 14, 15])
    parser.add_argument("--extra", default="", help="more eoir register arguments, quoted")
    args = parser.parse_args()
    data = Path(args.data)
    if not data.is_dir():
        print(f"skipped: {data} not found (the 2-D OASIS slices)")
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = {s: export(folder, data, s) for s in args.subjects}
        for f, m in itertools.permutations(args.subjects, 2):
            out = {k: folder / f"{m}_{f}_{k}" for k in ("w.png", "f.nii.gz", "i.nii.gz")}
            out["wl"], out["json"] = folder / f"{m}_{f}_wl.nii.gz", folder / f"{m}_{f}.json"
            command = [
                sys.executable, "-m", "eoir", "register",
                "--fixed", files[f]["image"], "--moving", files[m]["image"],
                "--warped", out["w.png"], "--field", out["f.nii.gz"],
                "--inverse-field", out["i.nii.gz"],
                "--moving-labels", files[m]["labels"], "--warped-labels", out["wl"],
                "--fixed-labels", files[f]["labels"], "--json", out["json"], "--quiet",
                *shlex.split(args.extra),
            ]  # fmt: skip
            start = time.perf_counter()
            done = subprocess.run([str(c) for c in command], capture_output=True, text=True)
            seconds = time.perf_counter() - start
            if done.returncode != 0:
                print(done.stderr, file=sys.stderr)
                return 1
            summary = json.loads(out["json"].read_text())
            median_error, p99 = inverse_consistency(out["f.nii.gz"], out["i.nii.gz"])
            row = {
                "pair": f"{m}->{f}",
                "dice_before": summary["dice_before"],
                "dice_after": summary["dice_after"],
                "register_s": summary["seconds"],
                "command_s": seconds,
                "folding_percent": summary["folding_percent"],
                "inverse_median_px": median_error,
                "inverse_p99_px": p99,
            }
            rows.append(row)
            print("  ".join(f"{k} {v:.4g}" if isinstance(v, float) else str(v)
                            for k, v in row.items()), flush=True)  # fmt: skip
    print(f"\n{len(rows)} pairs, eoir register {args.extra or '(defaults)'}: median (mean)")
    for key in list(rows[0])[1:]:
        values = [r[key] for r in rows]
        print(f"  {key}: {statistics.median(values):.4g} ({statistics.fmean(values):.4g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
