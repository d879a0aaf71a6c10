"""Does mapping the moving image's intensities onto the fixed one's help a one-contrast network?

A probe for issue 16 (one brain model for any MRI). Before the forward pass, the moving image's
intensities are replaced by the mean fixed intensity found at the voxels of each moving
intensity (a 64-bin conditional mean over the voxels inside both images, read from the joint
histogram of the pair as it stands: the correlation-ratio mapping), so that a T2 looks like the
T1 it is registered to wherever the pair already overlaps. It needs the pair roughly aligned
(after an affine stage) and makes two images of one contrast no more alike than they are.

Each model registers every case twice with :func:`eoir.register` on the CPU: as given and with
the moving image remapped. Cases from :mod:`any_mri` (run from this folder): the known-deformation
TCGA cases (mean error in the fixed brain, mm), the skull-on synthetic heads, and the OASIS-TRT-20
validation pairs (Dice, inter-subject T1: one contrast, so the mapping can only blur).

``--detect`` asks instead whether ``eoir register`` could tell two contrasts from one by itself:
the correlation of the two images' intensities on the network's working grid (after the affine
stage for raw scans), over the voxels above 10 % of each image's 99th percentile, for the TCGA
contrasts to its T1 (skull-stripped and raw, skull on), the native OASIS pairs and the aligned
OASIS validation pairs (one contrast each).

Usage::

    python benchmarks/contrast_remap.py --models brain-mri benchmarks/candidates/any-stage2.pt
    python benchmarks/contrast_remap.py --detect
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import any_mri  # the cases and the error measure, from this folder


def remap(moving: np.ndarray, fixed: np.ndarray, bins: int = 64) -> np.ndarray:
    """``moving`` with each intensity replaced by the mean of ``fixed`` where it occurs.

    Parameters
    ----------
    moving, fixed : np.ndarray
        Images of one shape, the pair as it stands (zero: outside the image).
    bins : int
        Intensity bins over the moving image's 0.5-99.5 percentiles inside both images.

    Returns
    -------
    np.ndarray
        float32, ``moving``'s shape; zero where ``moving`` is zero or below.
    """
    m, f = np.asarray(moving, np.float64), np.asarray(fixed, np.float64)
    inside = (m > 0) & (f > 0)
    low, high = np.percentile(m[inside], [0.5, 99.5])
    index = np.clip(((m - low) / (high - low) * bins).astype(np.int64), 0, bins - 1)
    sums = np.bincount(index[inside], f[inside], bins)
    counts = np.bincount(index[inside], None, bins)
    seen = counts > 0
    table = np.interp(np.arange(bins), np.flatnonzero(seen), sums[seen] / counts[seen])
    out = table[index].astype(np.float32)
    out[m <= 0] = 0
    return out


def oasis_pairs(model: str, pairs: int, remapped: bool) -> float:
    """Mean Dice over the OASIS-TRT-20 validation pairs, one forward pass."""
    import eoir
    from eoir.io import load_dataset, read_image
    from eoir.registration import dice_before_after

    spec = load_dataset(any_mri.DATA / "oasis-trt-20")
    dice = []
    for fixed, moving in spec.val[:pairs]:
        f, m = read_image(fixed.image), read_image(moving.image)
        source = remap(m.array, f.array) if remapped else m.array
        result = eoir.register(f.array, source, fixed_affine=f.affine, moving_affine=m.affine,
                               model=model, progress=False, device="cpu")  # fmt: skip
        dice.append(dice_before_after(result, fixed.label, moving.label)[1])
    return float(np.mean(dice))


def working_correlation(fixed: Path, moving: Path, affine: bool) -> float:
    """Correlation of the pair's intensities on the working grid ``eoir register`` feeds its
    network (``brain-mri``'s frame; after the affine stage with ``affine``), over the voxels
    above 10 % of each image's 99th percentile."""
    from eoir.io import read_image
    from eoir.registration import pipeline

    options = pipeline.Settings(preset="mri", affine=affine, device="cpu", progress=False)
    net, settings = pipeline.configure("brain-mri", options)
    f, m = read_image(fixed), read_image(moving)
    pair = pipeline.prepare(f, m, settings)
    world = pipeline.align(pair, settings)
    work = pipeline.sample_pair(pair, world, settings, pipeline.frame_for(net, f, settings))
    a, b = work.moving.flatten().double(), work.fixed.flatten().double()
    inside = (a > 0.1 * torch.quantile(a[a > 0][::7], 0.99)) & (
        b > 0.1 * torch.quantile(b[b > 0][::7], 0.99)
    )
    return float(torch.corrcoef(torch.stack([a[inside], b[inside]]))[0, 1])


def detect() -> None:
    """The ``--detect`` table."""
    from eoir.io import load_dataset

    tcga = any_mri.DATA / "multicontrast-tcga"
    print("| pair | contrasts | correlation on the working grid |")
    print("|---|---|---|")
    for folder, affine in (("skull-stripped", False), ("raw", True)):
        for name in ("t1", *any_mri.CONTRASTS):
            r = working_correlation(tcga / folder / "t1.nii.gz", tcga / folder / f"{name}.nii.gz",
                                    affine)  # fmt: skip
            kind = "one" if name == "t1" else "two"
            print(f"| TCGA {folder}: {name} -> t1 | {kind} | {r:.3f} |", flush=True)
    native = sorted((any_mri.DATA / "oasis-trt-20-native" / "imagesTr").glob("*.nii.gz"))
    for i, fixed in enumerate(native):
        for j, moving in enumerate(native):
            if i != j:
                r = working_correlation(fixed, moving, True)
                print(f"| OASIS native {moving.name[:-7]} -> {fixed.name[:-7]} | one | {r:.3f} |",
                      flush=True)  # fmt: skip
    spec = load_dataset(any_mri.DATA / "oasis-trt-20")
    for fixed, moving in spec.val[:6]:
        r = working_correlation(fixed.image, moving.image, False)
        print(f"| OASIS aligned {Path(moving.image).name[:-7]} -> {Path(fixed.image).name[:-7]} "
              f"| one | {r:.3f} |", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["brain-mri"])
    parser.add_argument("--oasis-pairs", type=int, default=6)
    parser.add_argument("--detect", action="store_true", help="the contrast-check table instead")
    args = parser.parse_args()
    if not (any_mri.DATA / "multicontrast-tcga").exists():
        print(f"skipped: {any_mri.DATA} lacks multicontrast-tcga (the shared data)")
        return
    if args.detect:
        detect()
        return
    cases = any_mri.tcga_cases() + any_mri.skull_on_cases()
    print("| case | none | " + " | ".join(f"{m} | {m}, remapped" for m in args.models) + " |")
    print("|---|---|" + "---|---|" * len(args.models))
    for case in cases:
        unregistered = SimpleNamespace(disp=torch.zeros_like(case["truth"]))
        start = any_mri.field_error(unregistered, case["truth"], case["mask"], case["spacing"])
        row = [case["case"], f"{start:.2f}"]
        for model in args.models:
            error, _ = any_mri.run_eoir(model, case)
            mapped = dict(case, moving=remap(case["moving"], case["fixed"]))
            error_remapped, _ = any_mri.run_eoir(model, mapped)
            row += [f"{error:.2f}", f"{error_remapped:.2f}"]
        print("| " + " | ".join(row) + " |", flush=True)
    if args.oasis_pairs and (any_mri.DATA / "oasis-trt-20").exists():
        row = ["OASIS-TRT-20 validation, Dice", ""]
        for model in args.models:
            row += [f"{oasis_pairs(model, args.oasis_pairs, r):.3f}" for r in (False, True)]
        print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
