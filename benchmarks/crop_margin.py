"""The margin around the foreground box the network runs on, for raw scans (issue 14).

``eoir register --affine`` on a raw scan crops the working grid to the two images' foreground
plus ``CROP_MARGIN`` working voxels on every side (:func:`eoir.registration.frame.
foreground_box`) before the network. A smaller margin is a smaller grid (faster), but the
network sees less around the brain. For each margin, the six ordered native pairs of
``oasis-trt-20-native`` (256x256x160, 1 mm, not aligned) are registered in one process with
``eoir.register(..., model="brain-mri", affine=True)`` (the command's defaults), alternating
margins pair by pair; reported: the working grid's size, Dice (Learn2Reg convention) and the
seconds of the registration (reading excluded), medians over the pairs.

Usage::

    python benchmarks/crop_margin.py --margins 8 6 4
"""

from __future__ import annotations

import argparse
import functools
import itertools
import statistics
import time
from pathlib import Path

import torch

import eoir
from eoir.registration import dice_before_after, frame, pipeline

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "oasis-trt-20-native"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--margins", type=int, nargs="+", default=[8, 6, 4])
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    subjects = ["0013", "0014", "0015"]
    images = [DATA / "imagesTr" / f"OASISTRT_{s}_0000.nii.gz" for s in subjects]
    labels = [DATA / "labelsTr" / f"OASISTRT_{s}_0000.nii.gz" for s in subjects]
    if not all(p.is_file() for p in images + labels):
        print(f"skipped: the native subjects 13-15 are not in {DATA}")
        return
    print(f"eoir from {Path(eoir.__file__).parent}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; default margin {frame.CROP_MARGIN}")  # fmt: skip
    original = pipeline.foreground_box
    shapes: dict[int, list[tuple[int, ...]]] = {m: [] for m in args.margins}
    dice: dict[int, list[float]] = {m: [] for m in args.margins}
    seconds: dict[int, list[float]] = {m: [] for m in args.margins}
    eoir.register(images[0], images[1], model="brain-mri", affine=True, progress=False)  # warm
    for _ in range(args.rounds):
        for f, m in itertools.permutations(range(3), 2):
            for margin in args.margins:
                box = functools.partial(original, margin=margin)
                seen: list[tuple[int, ...]] = []

                def recorded(*tensors, box=box, seen=seen, **options):
                    found = box(*tensors, **options)
                    seen.append(tuple(s.stop - s.start for s in found) if found else ())
                    return found

                pipeline.foreground_box = recorded
                try:
                    start = time.perf_counter()
                    result = eoir.register(images[f], images[m], model="brain-mri",
                                           affine=True, progress=False)  # fmt: skip
                    seconds[margin].append(time.perf_counter() - start)
                finally:
                    pipeline.foreground_box = original
                dice[margin].append(dice_before_after(result, labels[f], labels[m])[1])
                shapes[margin].append(seen[-1])
                print(f"{subjects[m]} -> {subjects[f]}, margin {margin}: grid {seen[-1]}, "
                      f"Dice {dice[margin][-1]:.4f}, {seconds[margin][-1]:.2f} s")  # fmt: skip
    print("| margin (working voxels) | mean Dice | median s | working grids |")
    print("|---|---|---|---|")
    for margin in args.margins:
        grids = ", ".join("x".join(map(str, s)) for s in sorted(set(shapes[margin])))
        print(f"| {margin} | {statistics.mean(dice[margin]):.4f} | "
              f"{statistics.median(seconds[margin]):.2f} | {grids} |")  # fmt: skip


if __name__ == "__main__":
    main()
