"""Seconds per step of ``eoir train --recipe brain-mri`` on the shared OASIS set, data included.

The issue's measure of training speed (issue 15): the whole command on
``../shared/data/oasis-trt-20/dataset.json`` (its DataLoader workers, augmentation, the Dice of
35 labels, the optimiser), per step from the run's own ``metrics.csv`` (every step logged): the
seconds between its second and last logged steps over the steps between them, so start-up, the
first step and the final validation and checkpoint are left out. The ``wait`` column gives the
fraction of that time the loop waited for its data loader.

``--before SRC`` runs a previous tree's ``src`` too, alternating with this one for ``--rounds``
rounds (median over rounds), so that two versions are compared side by side in one run::

    git worktree add /tmp/before HEAD~1
    python benchmarks/train_recipe_speed.py --steps 6 --before /tmp/before/src --rounds 2

``--recipe synth-brain --dataset ../shared/data/synthseg-label-maps`` times the any-MRI recipe
(pairs synthesised from label maps in the workers, Dice of 41 brain labels); ``--set KEY=VALUE``
passes config overrides.

Skips with a reason when the shared data is absent.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "oasis-trt-20"


def train_rows(
    recipe: str, src: str | None, out: Path, *options: str, dataset: Path | None = None
) -> list[dict[str, str]]:
    """The rows of ``metrics.csv`` of one ``eoir train --recipe recipe`` run on ``dataset``
    (default: the shared OASIS set) into ``out``, with ``src`` (a tree's ``src``) first on the
    path and ``options`` added."""
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    command = [
        sys.executable, "-m", "eoir", "train", "--recipe", recipe,
        "--dataset", str(dataset or DATA / "dataset.json"), "--out", str(out), "--device", "cpu",
        "--overwrite", *options,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"eoir train failed: {(done.stderr or done.stdout).strip()[-400:]}")
    with open(out / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def one_run(
    steps: int, recipe: str, src: str | None, folder: Path, dataset: Path, sets: list[str]
) -> tuple[float, float]:
    """Seconds per step and the fraction spent waiting for data, of one ``eoir train`` run."""
    options = [
        "--max-steps", str(steps), "--set", "train.log_every=1",
        "--set", "train.val_every=100000", "--set", "train.save_every=100000",
        *[a for item in sets for a in ("--set", item)],
    ]  # fmt: skip
    rows = train_rows(recipe, src, folder / "run", *options, dataset=dataset)
    rows = [r for r in rows if r.get("seconds")]
    first, last = rows[1], rows[-1]
    span = float(last["seconds"]) - float(first["seconds"])
    per_step = span / (int(last["step"]) - int(first["step"]))
    waited = sum(float(r["wait"]) * (float(r["seconds"]) - float(p["seconds"]))
                 for p, r in itertools.pairwise(rows[1:]))  # fmt: skip
    return per_step, waited / span


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--recipe", default="brain-mri")
    parser.add_argument("--before", help="a previous tree's src, run side by side")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--dataset", type=Path, default=DATA / "dataset.json", help="default: the OASIS set"
    )
    parser.add_argument("--set", action="append", default=[], help="a config override")
    args = parser.parse_args()
    if not args.dataset.exists():
        print(f"skipped: {args.dataset} is absent (shared data)")
        return
    import torch

    codes = [("this tree", None)]
    if args.before:
        codes.insert(0, ("before", args.before))
    results: dict[str, list[tuple[float, float]]] = {code: [] for code, _ in codes}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for code, src in codes:
                run = one_run(args.steps, args.recipe, src, Path(tmp), args.dataset, args.set)
                results[code].append(run)
    sets = "".join(f" --set {item}" for item in args.set)
    print(f"eoir train --recipe {args.recipe} --dataset {args.dataset}{sets}, {args.steps} "
          f"steps a run, {args.rounds} rounds; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")  # fmt: skip
    print("| code | s / step (median) | each run | waiting for data |")
    print("|---|---|---|---|")
    for code, runs in results.items():
        each = ", ".join(f"{s:.2f}" for s, _ in runs)
        wait = statistics.median(w for _, w in runs)
        print(f"| {code} | {statistics.median(s for s, _ in runs):.2f} | {each} | "
              f"{100 * wait:.1f} % |")  # fmt: skip


if __name__ == "__main__":
    main()
