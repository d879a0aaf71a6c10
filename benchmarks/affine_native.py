"""The affine stage on raw scans: eoir's own linear alignment against SimpleITK's.

Part 1, native pairs: OASIS-TRT-20 subjects 13-15 as scanned (``oasis-trt-20-native``:
256x256x160, 1 mm, not aligned), all 6 ordered pairs. Each method aligns the pair (affine part
alone, on the images as ``eoir.register`` normalises them); the moving labels are carried onto
the fixed grid through the alignment (nearest neighbour) and scored (Dice, Learn2Reg
convention). Methods: ``eoir`` (``linear_align``: moments, then Adam at 4 and 2 mm on 20,000
sampled voxels, global NCC), ``eoir-rigid``, ``simpleitk`` (the former default: Mattes MI, 3
levels, 200 iterations) and ``simpleitk-light`` (100 iterations, 5 % of voxels). Seconds are the
stage's own, in one process (the first call of each method included in the median).

Part 2, robustness (``--robustness``): the fixed image moved by a known transform (45 degrees
about each axis in turn with a 20 mm shift), and a T1 -> T2 case (TCGA, skull-stripped and
co-registered: the T2 moved by 30 degrees and 15 mm, ``similarity="mind"``, i.e. mutual
information), and a whole head against the same brain skull-stripped (an image made from a
SynthSeg label map, the head moved by 20 degrees and 10 mm); the error is the mean distance
(mm) between where the true and the found transforms take the fixed image's brain voxels.

``--peers`` adds the kept libraries the issue named, each with its documented defaults, where
installed (in a separate venv; never eoir's dependencies): ``torchreg`` (MIT; ``AffineRegistration``
with its defaults, 500 + 100 Adam steps at 1/4 and 1/2 resolution, MSE, on the moving image first
brought onto the fixed grid through the headers, since it works on one grid) and ``fireants``
(FireANTs' own licence: a peer, not a dependency; its ``MomentsRegistration`` with second
moments, then ``AffineRegistration`` with local NCC at scales 4 and 2, 200 and 100 steps, both on
the files' physical geometry, on the CPU; ``--fireants-scales 4,2,1`` adds its usual 50 steps at
full resolution, 11 s a step on a 2-core CPU without its fused CUDA operations).

Usage::

    python benchmarks/affine_native.py [--robustness] [--no-simpleitk] [--peers]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import eoir
from eoir.image import Image
from eoir.metrics import mean_dice
from eoir.registration.affine import linear_align, sitk_affine_align
from eoir.registration.preprocess import normalise
from eoir.registration.resample import total_field, warp_image

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def rotation(axis: int, degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    c, s = np.cos(a), np.sin(a)
    i, j = [k for k in range(3) if k != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def moved(image: Image, world: np.ndarray) -> Image:
    """``image`` as seen through ``world`` (fixed world -> moving world): the same voxels on
    a grid whose affine is ``world @ affine``, resampled back onto the original grid."""
    shifted = Image(image.array, world @ image.affine)
    return Image(warp_image(shifted, image), image.affine)


def error_mm(found: np.ndarray, true: np.ndarray, image: Image) -> float:
    mask = np.argwhere(image.array > np.percentile(image.array, 75))[::50]
    points = image.affine @ np.vstack([mask.T, np.ones(len(mask))])
    return float(np.linalg.norm(((found - true) @ points)[:3], axis=0).mean())


def torchreg_align(f: Image, m: Image, fv: np.ndarray, mv: np.ndarray) -> np.ndarray:
    """torchreg's affine with its defaults; its matrix (on grid_sample's normalised (x, y, z)
    coordinates of the fixed grid) turned into fixed RAS world -> moving RAS world."""
    import torch
    from torchreg import AffineRegistration

    from eoir.registration.resample import to_fixed_grid

    moving = to_fixed_grid(Image(mv, m.affine), f, values=mv)  # one grid, through the headers
    static = torch.from_numpy(np.ascontiguousarray(fv))[None, None]
    registration = AffineRegistration(verbose=False)
    registration(moving, static, return_moved=False)
    normalised = np.vstack([registration.get_affine()[0].double().numpy(), [0, 0, 0, 1]])
    to_normalised = np.zeros((4, 4))  # fixed voxel (i, j, k) -> (x, y, z) = reversed, in [-1, 1]
    to_normalised[3, 3] = 1.0
    for axis, n in enumerate(f.shape):
        to_normalised[2 - axis, axis] = 2.0 / (n - 1)
        to_normalised[2 - axis, 3] = -1.0
    voxels = np.linalg.inv(to_normalised) @ normalised @ to_normalised
    return f.affine @ voxels @ np.linalg.inv(f.affine)


def fireants_align(
    f: Image, m: Image, fv: np.ndarray, mv: np.ndarray, scales: tuple[int, ...] = (4, 2)
) -> np.ndarray:
    """FireANTs' moments, then affine registration, on the files as read (its physical, LPS
    coordinates); its fixed -> moving matrix turned into RAS."""
    import torch
    from fireants.io import BatchedImages
    from fireants.io import Image as FireImage
    from fireants.registration.affine import AffineRegistration
    from fireants.registration.moments import MomentsRegistration

    fixed = BatchedImages([FireImage.load_file(str(f.path), device="cpu")])
    moving = BatchedImages([FireImage.load_file(str(m.path), device="cpu")])
    moments = MomentsRegistration(1.0, fixed, moving, moments=2, blur=True, cc_kernel_size=5)
    moments.optimize()
    steps = {4: 200, 2: 100, 1: 50}
    affine = AffineRegistration(list(scales), [steps[s] for s in scales], fixed, moving,
                                loss_type="cc",
                                optimizer_lr=3e-3, cc_kernel_size=5,
                                init_rigid=moments.get_affine_init())  # fmt: skip
    affine.optimize()
    lps = affine.get_affine_matrix()[0].detach().to(torch.float64).numpy()
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS
    return flip @ lps @ flip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--robustness", action="store_true")
    parser.add_argument("--no-simpleitk", action="store_true")
    parser.add_argument("--peers", action="store_true", help="torchreg, FireANTs where installed")
    parser.add_argument("--fireants-scales", default="4,2", help="FireANTs' affine scales")
    args = parser.parse_args()
    native = DATA / "oasis-trt-20-native"
    if not native.is_dir():
        print(f"skipped: {native} not found")
        return 0
    methods = {
        "eoir": lambda f, m, fv, mv: linear_align(f, m, fv, mv),
        "eoir-rigid": lambda f, m, fv, mv: linear_align(f, m, fv, mv, model="rigid"),
    }
    if not args.no_simpleitk:
        methods["simpleitk"] = lambda f, m, fv, mv: sitk_affine_align(f, m, fv, mv)
        methods["simpleitk-light"] = lambda f, m, fv, mv: sitk_affine_align(
            f, m, fv, mv, iterations=100, sampling=0.05
        )
    if args.peers:
        import importlib.util

        scales = tuple(int(s) for s in args.fireants_scales.split(","))

        def fireants(f, m, fv, mv):
            return fireants_align(f, m, fv, mv, scales)

        for peer, align in (("torchreg", torchreg_align), ("fireants", fireants)):
            if importlib.util.find_spec(peer) is None:
                print(f"{peer}: not installed, skipped")
            else:
                methods[peer] = align
    name = "OASISTRT_{:04d}_0000.nii.gz"
    subjects = (13, 14, 15)
    images = {s: eoir.read_image(native / "imagesTr" / name.format(s)) for s in subjects}
    labels = {s: eoir.read_image(native / "labelsTr" / name.format(s)) for s in subjects}
    values = {s: normalise(images[s].array, "mri") for s in subjects}

    def dice(f: int, m: int, world: np.ndarray) -> float:
        field = total_field(images[f], None, world)
        warped = warp_image(labels[m], images[f], field, mode="nearest")
        return mean_dice(labels[f].array, warped, labels[m].array)

    results: dict[str, list[tuple[float, float]]] = {k: [] for k in methods}
    starts = []
    for f, m in itertools.permutations(subjects, 2):
        starts.append(dice(f, m, np.eye(4)))
        row = [f"{m}->{f} start {starts[-1]:.3f}"]
        for method, align in methods.items():
            began = time.perf_counter()
            world = align(images[f], images[m], values[f], values[m])
            seconds = time.perf_counter() - began
            results[method].append((dice(f, m, world), seconds))
            row.append(f"{method} {results[method][-1][0]:.3f} {seconds:.2f} s")
        print("  ".join(row), flush=True)
    print("\n| method | Dice after affine (mean of 6) | s (median) |")
    print("|---|---|---|")
    print(f"| none (the raw start) | {statistics.fmean(starts):.3f} | - |")
    for method, rows in results.items():
        d = statistics.fmean(r[0] for r in rows)
        print(f"| {method} | {d:.3f} | {statistics.median(r[1] for r in rows):.2f} |")
    if args.robustness:
        robustness()
    return 0


def robustness() -> None:
    print("\n| case | error before (mm) | eoir error (mm) | s |")
    print("|---|---|---|---|")
    fixed = eoir.read_image(DATA / "oasis-trt-20-native" / "imagesTr" / "OASISTRT_0013_0000.nii.gz")
    centre = fixed.affine @ np.append((np.array(fixed.shape) - 1) / 2, 1)
    cases = []
    for axis in range(3):
        true = np.eye(4)
        true[:3, :3] = rotation(axis, 45)
        true[:3, 3] = centre[:3] - true[:3, :3] @ centre[:3] + [20.0, -20.0, 20.0][axis]
        cases.append((f"45 deg about axis {axis} + 20 mm", fixed, fixed, true, "ncc"))
    tcga = DATA / "multicontrast-tcga" / "skull-stripped"
    if (tcga / "t2.nii.gz").is_file():
        t1, t2 = eoir.read_image(tcga / "t1.nii.gz"), eoir.read_image(tcga / "t2.nii.gz")
        c = t1.affine @ np.append((np.array(t1.shape) - 1) / 2, 1)
        true = np.eye(4)
        true[:3, :3] = rotation(2, 30)
        true[:3, 3] = c[:3] - true[:3, :3] @ c[:3] + [15.0, 0.0, 0.0]
        cases.append(("T1 -> T2, 30 deg + 15 mm (mutual information)", t1, t2, true, "mind"))
    synthseg = DATA / "synthseg-label-maps" / "training_seg_01.nii.gz"
    if synthseg.is_file():
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from helpers import head_and_brain  # the tests' generator of this case

        head, brain = head_and_brain(synthseg)
        true = np.eye(4)
        c = brain.affine @ np.append((np.array(brain.shape) - 1) / 2, 1)
        true[:3, :3] = rotation(0, 20)
        true[:3, 3] = c[:3] - true[:3, :3] @ c[:3] + 10.0
        cases.append(("whole head -> brain only (SynthSeg map), 20 deg + 10 mm", brain, head,
                      true, "ncc"))  # fmt: skip
    for case, fixed_image, source, true, similarity in cases:
        moving = moved(source, true)
        fv, mv = normalise(fixed_image.array, "mri"), normalise(moving.array, "mri")
        began = time.perf_counter()
        found = linear_align(fixed_image, moving, fv, mv, similarity=similarity)
        seconds = time.perf_counter() - began
        before = error_mm(np.eye(4), true, fixed_image)
        print(f"| {case} | {before:.1f} | {error_mm(found, true, fixed_image):.2f} | "
              f"{seconds:.2f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
