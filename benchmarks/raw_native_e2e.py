"""Raw scans end to end: ``eoir register --affine`` against ANTs (affine + SyN), side by side.

OASIS-TRT-20 subjects 13-15 as scanned (``oasis-trt-20-native``: 256x256x160, 1 mm, not
aligned). For each ordered pair, alternately:

- eoir: ``python -m eoir register --fixed F --moving M --affine --warped W --field FIELD
  --moving-labels ML --warped-labels WL --quiet`` (defaults: the built-in affine stage, the
  shipped model), wall time of the whole command (start-up, reading and writing included);
- ANTs: a new Python process that reads both images with antspyx, runs ``ants.registration``
  with ``type_of_transform="SyN"`` (affine + SyN, antspyx defaults), applies the transforms to
  the moving image (linear) and labels (nearest neighbour) and writes both and the warp, timed
  the same way.

Dice of the written warped labels against the fixed labels (Learn2Reg convention), seconds, and
the ratio of the medians. Needs antspyx (``pip install -e ".[bench]"``, or a separate venv: run
this script with that venv's python; eoir runs with the same interpreter).

``--aligned`` runs the same on the pre-aligned, skull-stripped pairs of the same subjects
(``oasis-trt-20``, 208x176x160): ``eoir register`` without ``--affine`` against ANTs
``SyNOnly`` (antspyx defaults), the issue's aligned baseline.

``--before SRC`` adds a third command, the same eoir command run from another tree's ``src``
(``git worktree add /tmp/before HEAD~1``), timed in the same rounds: a change's effect on the
whole command, side by side; with ``--skip-ants`` only the two eoir commands run (``--rounds N``
times over the pairs), for a change's effect measured on more rounds than ANTs' time allows.

Usage::

    python benchmarks/raw_native_e2e.py [--pairs 6] [--threads 2] [--before /tmp/before/src]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from eoir.metrics import mean_dice

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

ANTS = r"""
import os, sys
os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = sys.argv[6]
import ants
fixed, moving, labels = (ants.image_read(path) for path in sys.argv[1:4])
result = ants.registration(fixed, moving, type_of_transform=sys.argv[7])
warped = ants.apply_transforms(fixed, moving, result["fwdtransforms"], interpolator="linear")
warped_labels = ants.apply_transforms(fixed, labels, result["fwdtransforms"],
                                      interpolator="nearestNeighbor")
ants.image_write(warped, sys.argv[4])
ants.image_write(warped_labels, sys.argv[5])
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--before", metavar="SRC", help="also run eoir from this src folder")
    parser.add_argument("--skip-ants", action="store_true", help="with --before: eoir only")
    parser.add_argument("--rounds", type=int, default=1, help="passes over the pairs")
    parser.add_argument(
        "--aligned", action="store_true", help="the pre-aligned pairs (no affine stage, SyNOnly)"
    )
    args = parser.parse_args()
    data = SHARED / ("oasis-trt-20" if args.aligned else "oasis-trt-20-native")
    if args.skip_ants and not args.before:
        parser.error("--skip-ants compares two eoir trees: give --before SRC")
    if not data.is_dir():
        print(f"skipped: {data} not found")
        return 0
    if not args.skip_ants:
        try:
            import ants  # noqa: F401
        except ImportError:
            print("skipped: antspyx is not installed (pip install -e '.[bench]')")
            return 0
    name = "OASISTRT_{:04d}_0000.nii.gz"
    methods = ["eoir"] + ([] if args.skip_ants else ["ants"]) + (["before"] if args.before else [])
    times: dict[str, list[float]] = {method: [] for method in methods}
    dices: dict[str, list[float]] = {method: [] for method in methods}
    labels = {"eoir": "eoir", "ants": "ANTs", "before": "before"}
    print("| pair | " + " | ".join(f"{labels[m]} Dice | {labels[m]} s" for m in methods) + " |")
    print("|---|" + "---|---|" * len(methods))
    pairs = list(itertools.permutations((13, 14, 15), 2))[: args.pairs] * args.rounds
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for f, m in pairs:
            fixed, moving = data / "imagesTr" / name.format(f), data / "imagesTr" / name.format(m)
            fixed_labels = data / "labelsTr" / name.format(f)
            moving_labels = data / "labelsTr" / name.format(m)
            commands = {
                "eoir": [sys.executable, "-m", "eoir", "register", "--fixed", fixed,
                         "--moving", moving, *([] if args.aligned else ["--affine"]),
                         "--warped", out / "e_w.nii.gz",
                         "--field", out / "e_f.nii.gz", "--moving-labels", moving_labels,
                         "--warped-labels", out / "e_l.nii.gz", "--quiet", "--overwrite"],
                "ants": [sys.executable, "-c", ANTS, fixed, moving, moving_labels,
                         out / "a_w.nii.gz", out / "a_l.nii.gz", str(args.threads),
                         "SyNOnly" if args.aligned else "SyN"],
            }  # fmt: skip
            if args.skip_ants:
                del commands["ants"]
            if args.before:  # the same eoir command from the other tree
                commands["before"] = [
                    str(c).replace("e_", "b_") if str(c).startswith(str(out)) else c
                    for c in commands["eoir"]
                ]
            row = [f"{m} -> {f}"]
            for method, command in commands.items():
                env = None
                if method == "before":
                    env = {**os.environ, "PYTHONPATH": args.before}
                began = time.perf_counter()
                done = subprocess.run(
                    [str(c) for c in command], capture_output=True, text=True, env=env
                )
                seconds = time.perf_counter() - began
                if done.returncode != 0:
                    print(done.stderr[-2000:], file=sys.stderr)
                    return 1
                warped = np.asanyarray(nib.load(out / f"{method[0]}_l.nii.gz").dataobj)
                dice = mean_dice(
                    np.asanyarray(nib.load(fixed_labels).dataobj),
                    warped,
                    np.asanyarray(nib.load(moving_labels).dataobj),
                )
                times[method].append(seconds)
                dices[method].append(dice)
                row += [f"{dice:.3f}", f"{seconds:.1f}"]
            print("| " + " | ".join(row) + " |", flush=True)
    e = statistics.median(times["eoir"])
    print(f"\neoir: mean Dice {statistics.fmean(dices['eoir']):.3f}, median {e:.2f} s")
    if not args.skip_ants:
        a = statistics.median(times["ants"])
        print(f"ANTs: mean Dice {statistics.fmean(dices['ants']):.3f}, median {a:.1f} s: eoir "
              f"{a / e:.1f}x faster")  # fmt: skip
    if args.before:
        b = statistics.median(times["before"])
        faster = sum(x < y for x, y in zip(times["eoir"], times["before"], strict=True))
        line = (
            f"before ({args.before}): mean Dice {statistics.fmean(dices['before']):.3f}, "
            f"median {b:.2f} s; eoir faster in {faster} of {len(times['eoir'])} rounds"
        )
        if not args.skip_ants:
            line += f"; before was {a / b:.1f}x faster than ANTs"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
