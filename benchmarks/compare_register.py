"""``eoir.register`` in two versions of the code on the OASIS pairs: equal fields, and the time.

For changes that must not change results (a re-layout of the package, a library swap): each
version runs in its own process (``PYTHONPATH=<tree>/src``) through the public API alone
(``eoir.register(fixed, moving, model="brain-mri")``, the default of ``eoir register``), which
every version has, on the OASIS-TRT-20 validation pairs; the total fields (fixed voxels) of the
two versions are compared, and the registration seconds reported side by side (median over the
pairs, versions alternating pair by pair).

With ``--commands N`` it also times the whole command, ``eoir register --fixed F --moving M
--warped W --field D`` (start-up, reading, registration, writing both outputs), N times per
version on the first pair, alternating, and reports the median wall time of each.

Usage::

    git worktree add /tmp/before HEAD~1
    python benchmarks/compare_register.py /tmp/before . [--pairs 6] [--commands 7]
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_CHILD = r"""
import json, sys
import numpy as np
import eoir

fixed, moving, out = sys.argv[1:4]
result = eoir.register(fixed, moving, model="brain-mri")
np.save(out, result.disp.numpy())
print(json.dumps({"seconds": result.seconds}))
"""


def _pairs(data: Path) -> list[tuple[Path, Path]]:
    meta = json.loads((data / "dataset.json").read_text())
    return [(data / p["fixed"], data / p["moving"]) for p in meta.get("registration_val") or []]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs=2, type=Path, help="two source trees (repository roots)")
    parser.add_argument("--pairs", type=int, default=6, help="how many validation pairs")
    parser.add_argument("--commands", type=int, default=0, help="time the command N times each")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/oasis-trt-20"))
    args = parser.parse_args()
    if not (args.data / "dataset.json").is_file():
        print(f"skipped: {args.data} is not there (the OASIS-TRT-20 data)")
        return
    folder = Path(tempfile.mkdtemp(prefix="eoir-compare-"))
    seconds: dict[int, list[float]] = {0: [], 1: []}
    worst = 0.0
    for fixed, moving in _pairs(args.data)[: args.pairs]:
        fields = []
        for index, tree in enumerate(args.trees):
            out = folder / f"field{index}.npy"
            env = {**os.environ, "PYTHONPATH": str(tree.resolve() / "src")}
            command = [sys.executable, "-c", _CHILD, str(fixed), str(moving), str(out)]
            run = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
            seconds[index].append(json.loads(run.stdout.strip().splitlines()[-1])["seconds"])
            fields.append(np.load(out))
        difference = np.abs(fields[0] - fields[1])
        worst = max(worst, float(difference.max()))
        print(
            f"{moving.name} -> {fixed.name}: field difference max {difference.max():.2e}, "
            f"mean {difference.mean():.2e} voxels; {seconds[0][-1]:.2f} s / {seconds[1][-1]:.2f} s",
            flush=True,
        )
    for index, tree in enumerate(args.trees):
        print(f"{tree}: median registration {statistics.median(seconds[index]):.2f} s")
    print(f"largest field difference over the pairs: {worst:.2e} voxels")
    if args.commands:
        time_commands(args.trees, _pairs(args.data)[0], args.commands, folder)


def time_commands(trees: list[Path], pair: tuple[Path, Path], rounds: int, folder: Path) -> None:
    """Median wall time of ``eoir register`` writing the warped image and the field."""
    for tree in trees:  # bytecode compiled, as pip install leaves a package
        compileall.compile_dir(str(tree.resolve() / "src" / "eoir"), quiet=1)
    walls: dict[int, list[float]] = {0: [], 1: []}
    for _ in range(rounds):
        for index, tree in enumerate(trees):
            env = {**os.environ, "PYTHONPATH": str(tree.resolve() / "src")}
            outputs = [folder / f"w{index}.nii.gz", folder / f"d{index}.nii.gz"]
            command = [
                sys.executable, "-m", "eoir", "register", "--fixed", str(pair[0]),
                "--moving", str(pair[1]), "--warped", str(outputs[0]), "--field",
                str(outputs[1]), "--overwrite",
            ]  # fmt: skip
            began = time.perf_counter()
            subprocess.run(command, env=env, check=True, capture_output=True)
            walls[index].append(time.perf_counter() - began)
    for index, tree in enumerate(trees):
        sizes = ", ".join(
            f"{(folder / f'{n}{index}.nii.gz').stat().st_size / 1e6:.1f} MB" for n in "wd"
        )
        print(
            f"{tree}: eoir register (warped + field) median {statistics.median(walls[index]):.2f} s"
            f" over {rounds} runs ({sizes})"
        )


if __name__ == "__main__":
    main()
