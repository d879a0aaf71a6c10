"""Could a run-time check keep a network's field from ending worse than its start?

Issue 16 asks that the default never leave a registration worse than its (affine) start. A
guard that needs no ground truth would compare the pair's similarity before and after the
network's field on the working grid and keep the start when it drops. This script measures
whether such a similarity tells a worse field from a better one: for each case of
``benchmarks/any_mri.py`` (known-deformation cases: same-contrast T1, T2/FLAIR/T1c -> T1 of
one patient, two synthetic skull-on heads; error before and after, mm) and the six OASIS-TRT-20
validation pairs (Dice before and after), the change that the field makes to four contrast
measures on the working grid: global mutual information (32 bins, Parzen), the same over the
voxels where either image is above 2 % of its range, MIND-SSC similarity (minus the mean squared
descriptor difference) and windowed NCC (9 voxels). A usable guard needs a measure that drops
whenever the error rises (or Dice falls) and rises otherwise.

Usage::

    python benchmarks/similarity_guard.py [--models brain-mri benchmarks/candidates/any-stage2.pt]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import any_mri

from eoir.image import Image
from eoir.io import load_dataset, read_image
from eoir.losses import mind_loss, mutual_information_loss, ncc_loss
from eoir.nn import load_model
from eoir.registration import dice_before_after, pipeline
from eoir.spatial import warp

MEASURES = ("MI", "MI fg", "MIND", "NCC")


def measures(work: pipeline.WorkPair, disp: torch.Tensor | None) -> list[float]:
    """The four similarities (higher: more alike) of the working pair under ``disp``."""
    fixed = work.fixed
    moving = work.moving if disp is None else warp(work.moving, disp)
    foreground = (fixed > 0.02) | (moving > 0.02)
    return [
        -float(mutual_information_loss(moving, fixed)),
        -float(mutual_information_loss(moving[foreground], fixed[foreground])),
        -float(mind_loss(moving, fixed)),
        -float(ncc_loss(moving, fixed)),
    ]


def stages(fixed: Image, moving: Image, net: torch.nn.Module):
    """The network's registration of the pair, stage by stage (no affine: aligned pairs)."""
    net, settings = pipeline.configure(net, pipeline.Settings(device="cpu", progress=False))
    pair = pipeline.prepare(fixed, moving, settings)
    work = pipeline.sample_pair(pair, None, settings, pipeline.frame_for(net, fixed, settings))
    disp = pipeline.predict(work, net, settings)
    start = pipeline.finish(pair, work, None, None, 0.0, {})
    result = pipeline.finish(pair, work, disp, None, 0.0, {})
    changes = [b - a for a, b in zip(measures(work, None), measures(work, disp), strict=True)]
    return start, result, changes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--models", nargs="+", default=["brain-mri", "benchmarks/candidates/any-stage2.pt"]
    )
    args = parser.parse_args()
    if not (any_mri.DATA / "multicontrast-tcga").is_dir():
        print(f"skipped: {any_mri.DATA} lacks the cases")
        return 0
    cases = any_mri.tcga_cases() + any_mri.skull_on_cases()
    spec = load_dataset(any_mri.DATA / "oasis-trt-20")
    print("| model | case | before | after | worse | " + " | ".join(f"d {m}" for m in MEASURES))
    print("|---|---|---|---|---|" + "---|" * len(MEASURES))
    caught = {m: [0, 0] for m in MEASURES}  # worse results flagged, the others kept
    worse_count = total = 0
    for model in args.models:
        net = load_model(model, torch.device("cpu"))
        rows = []
        for case in cases:
            fixed = Image(case["fixed"], case["affine"])
            moving = Image(np.asarray(case["moving"], np.float32), case["affine"])
            start, result, changes = stages(fixed, moving, net)
            error = [
                any_mri.field_error(r, case["truth"], case["mask"], case["spacing"])
                for r in (start, result)
            ]
            rows.append((case["case"], f"{error[0]:.2f} mm", f"{error[1]:.2f} mm",
                         error[1] > error[0], changes))  # fmt: skip
        for fixed_entry, moving_entry in spec.val:
            fixed, moving = read_image(fixed_entry.image), read_image(moving_entry.image)
            start, result, changes = stages(fixed, moving, net)
            dice = [
                dice_before_after(r, fixed_entry.label, moving_entry.label)[1]
                for r in (start, result)
            ]
            subjects = [
                Path(str(e.image)).name.split("_0000")[0] for e in (moving_entry, fixed_entry)
            ]
            name = f"OASIS {subjects[0]} -> {subjects[1]}"
            rows.append((name, f"Dice {dice[0]:.3f}", f"Dice {dice[1]:.3f}", dice[1] < dice[0],
                         changes))  # fmt: skip
        for name, before, after, worse, changes in rows:
            worse_count += worse
            total += 1
            for measure, change in zip(MEASURES, changes, strict=True):
                caught[measure][0] += worse and change < 0
                caught[measure][1] += (not worse) and change >= 0
            flag = "yes" if worse else ""
            print(f"| {Path(model).name} | {name} | {before} | {after} | {flag} | "
                  + " | ".join(f"{c:+.4f}" for c in changes) + " |", flush=True)  # fmt: skip
    print(f"\n{worse_count} of {total} registrations ended worse than their start")
    for measure, (flagged, kept) in caught.items():
        print(f"{measure}: a drop flags {flagged} of the {worse_count} worse; a rise keeps {kept} "
              f"of the {total - worse_count} others")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
