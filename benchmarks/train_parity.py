"""Does a change to the training code train as well? A recipe run with two trees, side by side.

Runs ``eoir train --recipe RECIPE`` on the shared OASIS-TRT-20 set (its own schedule, seed and
validation) with this tree and with a previous tree's ``src`` (``--before``), one after the
other, and prints each run's validation Dice at every validation step, its best, and the seconds
to its last step, validation passes included (from the run's ``metrics.csv``). Same seed and
data order in both: a change that only reorders float arithmetic gives curves within noise of
each other.

Usage::

    git worktree add /tmp/before c2f4060
    python benchmarks/train_parity.py --before /tmp/before/src            # cpu-brain, ~16 min
    python benchmarks/train_parity.py --before /tmp/before/src --recipe cpu-brain --steps 200

Two settings of one tree: ``--before src --set-before OVERRIDE`` (e.g. ``train.amp=false``:
float32 against the default bf16 autocast on a CPU with native bf16).

Skips with a reason when the shared data is absent.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_recipe_speed import DATA, train_rows  # the same command, from this folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="a previous tree's src")
    parser.add_argument("--recipe", default="cpu-brain")
    parser.add_argument("--steps", type=int, help="stop after this many steps (the recipe's)")
    parser.add_argument(
        "--set-before", action="append", default=[], help="a config override of the before run"
    )
    args = parser.parse_args()
    if not (DATA / "dataset.json").exists():
        print(f"skipped: {DATA} is absent (the shared OASIS-TRT-20 set)")
        return
    import torch

    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for code, src in (("before", args.before), ("this tree", None)):
            options = ["--max-steps", str(args.steps)] if args.steps else []
            if code == "before":
                options += [a for item in args.set_before for a in ("--set", item)]
            out = Path(tmp) / code.replace(" ", "-")
            runs[code] = train_rows(args.recipe, src, out, *options)
    print(f"eoir train --recipe {args.recipe} on OASIS-TRT-20 (validation: its 6 pairs' Dice); "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; before: "
          f"{args.before} {' '.join(args.set_before)}")  # fmt: skip
    steps = sorted({int(r["step"]) for rows in runs.values() for r in rows if r.get("val")})
    print(
        "| code | "
        + " | ".join(f"step {s}" for s in steps)
        + " | best | seconds to the last step |"
    )
    print("|---|" + "---|" * (len(steps) + 2))
    for code, rows in runs.items():
        val = {int(r["step"]): float(r["val"]) for r in rows if r.get("val")}
        cells = [f"{val[s]:.4f}" if s in val else "" for s in steps]
        seconds = max(float(r["seconds"]) for r in rows if r.get("seconds"))
        print(f"| {code} | " + " | ".join(cells) + f" | {max(val.values()):.4f} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
