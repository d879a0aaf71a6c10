"""Does ANTs apply eoir's outputs as eoir does? ``--affine-out`` and ``--field`` through antspyx.

On a raw native OASIS-TRT-20 pair (``oasis-trt-20-native``, 256x256x160, not aligned), one run of
``eoir register --affine`` (the built-in affine stage, the shipped model) writes the warped image
and labels, the displacement field (``--field``) and the affine part (``--affine-out``, as an
ITK ``.txt``, an ITK ``.tfm`` and an ANTs ``.mat``); a second run with ``--model none
--optimize-steps 0 --initial-transform`` the first's affine writes the affine-only warp. Then
antspyx's ``apply_transforms`` (ANTs's ``antsApplyTransforms``):

- the affine file, each format, to the moving image, against eoir's affine-only warp;
- the displacement field to the moving image (linear) and labels (nearest neighbour), against
  eoir's warped image and labels.

Printed: the mean and 99th percentile of the absolute intensity difference inside the head (as a
percentage of the fixed image's 99th percentile intensity) and the Dice of ANTs's warped labels
against eoir's (1.0: the same labels). Needs antspyx (``pip install -e ".[bench]"``, or a
separate venv with eoir installed: run this script with that venv's python).

Usage::

    python benchmarks/ants_reads_outputs.py [--fixed 13 --moving 14]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

from eoir.metrics import mean_dice

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "oasis-trt-20-native"
NAME = "OASISTRT_{:04d}_0000.nii.gz"


def eoir(*args: object) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "eoir", "register", *map(str, args), "--quiet", "--overwrite"],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fixed", type=int, default=13)
    parser.add_argument("--moving", type=int, default=14)
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"skipped: {DATA} not found")
        return 0
    try:
        import ants
    except ImportError:
        print("skipped: antspyx is not installed (pip install -e '.[bench]')")
        return 0
    fixed_path = DATA / "imagesTr" / NAME.format(args.fixed)
    moving_path = DATA / "imagesTr" / NAME.format(args.moving)
    labels_path = DATA / "labelsTr" / NAME.format(args.moving)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        eoir("--fixed", fixed_path, "--moving", moving_path, "--affine",
             "--warped", out / "w.nii.gz", "--field", out / "field.nii.gz",
             "--moving-labels", labels_path, "--warped-labels", out / "wl.nii.gz",
             "--affine-out", out / "affine.txt")  # fmt: skip
        for suffix in (".tfm", ".mat"):  # the same alignment in the other formats
            eoir("--fixed", fixed_path, "--moving", moving_path, "--model", "none",
                 "--optimize-steps", "0", "--initial-transform", out / "affine.txt",
                 "--warped", out / "wa.nii.gz",
                 "--affine-out", out / f"affine{suffix}")  # fmt: skip
        fixed = ants.image_read(str(fixed_path))
        moving = ants.image_read(str(moving_path))
        labels = ants.image_read(str(labels_path))
        reference = np.asanyarray(nib.load(fixed_path).dataobj).astype(np.float32)
        head = reference > np.percentile(reference, 50)
        scale = float(np.percentile(reference[head], 99))

        def difference(theirs, ours_path: Path) -> str:
            ours = np.asanyarray(nib.load(ours_path).dataobj).astype(np.float32)
            diff = np.abs(theirs.numpy().astype(np.float32) - ours)[head] / scale * 100
            return f"{diff.mean():.3f} % | {np.percentile(diff, 99):.3f} %"

        print(f"pair {args.moving} -> {args.fixed}, antspyx {ants.__version__}\n")
        print("| ANTs applies | to | mean abs difference | p99 | labels Dice vs eoir's |")
        print("|---|---|---|---|---|")
        for suffix in (".txt", ".tfm", ".mat"):
            warped = ants.apply_transforms(
                fixed, moving, [str(out / f"affine{suffix}")], interpolator="linear"
            )
            print(f"| --affine-out {suffix} | eoir's affine-only warp | "
                  f"{difference(warped, out / 'wa.nii.gz')} | |")  # fmt: skip
        field = [str(out / "field.nii.gz")]
        warped = ants.apply_transforms(fixed, moving, field, interpolator="linear")
        warped_labels = ants.apply_transforms(fixed, labels, field, interpolator="nearestNeighbor")
        ours = np.asanyarray(nib.load(out / "wl.nii.gz").dataobj)
        theirs = warped_labels.numpy().round().astype(ours.dtype)
        dice = mean_dice(ours, theirs, np.asanyarray(nib.load(labels_path).dataobj))
        print(f"| --field | eoir's warped image, labels | "
              f"{difference(warped, out / 'w.nii.gz')} | {dice:.4f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
