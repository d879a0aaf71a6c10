"""The shipped model fed in its training frame: one brain pair stored in other axis orders and
at other voxel sizes.

The OASIS-TRT-20 validation pair 14 -> 13 (aligned, 1 mm, stored ASL as in training) is written
again (images and labels) stored RAS, LPS and LIA (the same voxels and world, another axis
order), resampled onto a coarse oblique flipped grid (2.4x3.0x3.6 mm, rotated about three axes)
and onto a 0.7 mm grid. Each case is registered with ``eoir.register`` and the shipped model
(its defaults) in a fresh process, which reports Dice before and after (Learn2Reg convention),
the registration's seconds and the process's peak resident memory up to the end of the
registration (reading the images included, scoring not).

Run it on two trees to compare (``PYTHONPATH`` picks the tree)::

    python benchmarks/frame_oasis.py
    PYTHONPATH=/tmp/before/src python benchmarks/frame_oasis.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import axcodes2ornt, ornt_transform

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "oasis-trt-20"

CHILD = r"""
import json, resource, sys, time
import eoir
from eoir.registration import dice_before_after
fixed, moving, fixed_labels, moving_labels = sys.argv[1:5]
start = time.perf_counter()
result = eoir.register(fixed, moving, model="brain-mri", progress=False, device="cpu")
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # reading and registering
before, after = dice_before_after(result, fixed_labels, moving_labels)
print(json.dumps({"before": before, "after": after, "seconds": seconds, "peak_mb": peak}))
"""


def oblique(spacing, angles, flips) -> np.ndarray:
    """Rotation about three axes, flips and anisotropic spacing (voxel -> RAS, no shift)."""
    a, b, c = angles
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rx @ ry @ rz @ np.diag(flips) @ np.diag(spacing)
    return affine


def resampled(image: nib.Nifti1Image, affine: np.ndarray, shape, labels: bool):
    """``image`` sampled onto the grid ``affine``/``shape`` in world space."""
    from eoir.image import Image
    from eoir.registration.resample import warp_image

    source = Image(np.asanyarray(image.dataobj), np.asarray(image.affine, float))
    grid = Image(np.zeros(shape, np.float32), affine)
    array = warp_image(source, grid, mode="nearest" if labels else "bilinear")
    return nib.Nifti1Image(array, affine)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fixed", type=int, default=13)
    parser.add_argument("--moving", type=int, default=14)
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"skipped: {DATA} not found")
        return 0
    name = "OASISTRT_{:04d}_0000.nii.gz"
    originals = {}
    for role, subject in (("fixed", args.fixed), ("moving", args.moving)):
        originals[role] = nib.load(DATA / "imagesTr" / name.format(subject))
        originals[role + "_labels"] = nib.load(DATA / "labelsTr" / name.format(subject))
    fixed = originals["fixed"]
    centre = fixed.affine @ np.append((np.array(fixed.shape) - 1) / 2, 1)
    extent = np.array([210.0, 180.0, 165.0])  # mm, the brain's box with a margin
    cases = {"ASL (as trained)": None, "RAS": "RAS", "LPS": "LPS", "LIA": "LIA"}
    cases["2.4x3.0x3.6 mm oblique"] = ((2.4, 3.0, 3.6), (0.15, -0.1, 0.2), (1, -1, 1))
    cases["0.7 mm"] = ((0.7, 0.7, 0.7), (0.0, 0.0, 0.0), (1, 1, 1))
    print(f"pair {args.moving} -> {args.fixed}, shipped brain-mri, eoir.register defaults")
    print("| case | grid | Dice before | Dice after | s | peak MB |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for case, how in cases.items():
            paths = []
            for role in ("fixed", "moving", "fixed_labels", "moving_labels"):
                image = originals[role]
                if isinstance(how, str):
                    codes = nib.aff2axcodes(image.affine)
                    image = image.as_reoriented(
                        ornt_transform(axcodes2ornt(codes), axcodes2ornt(how))
                    )
                elif how is not None:
                    spacing, angles, flips = how
                    shape = tuple(np.ceil(extent / np.array(spacing)).astype(int))
                    affine = oblique(spacing, angles, flips)
                    affine[:3, 3] = centre[:3] - affine[:3, :3] @ ((np.array(shape) - 1) / 2)
                    image = resampled(image, affine, shape, "labels" in role)
                path = Path(tmp) / f"{role}.nii.gz"
                nib.save(image, path)
                paths.append(str(path))
            grid = nib.load(paths[0])
            size = "x".join(map(str, grid.shape))
            codes = "".join(nib.aff2axcodes(grid.affine))
            done = subprocess.run([sys.executable, "-c", CHILD, *paths],
                                  capture_output=True, text=True)  # fmt: skip
            if done.returncode != 0:
                print(f"| {case} | {size} {codes} | failed: {done.stderr.strip()[-200:]} |")
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"| {case} | {size} {codes} | {r['before']:.3f} | {r['after']:.3f} | "
                  f"{r['seconds']:.1f} | {r['peak_mb']:.0f} |", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
