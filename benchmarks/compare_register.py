"""``eoir.register`` in two versions of the code on the OASIS pairs: equal fields, and the time.

For changes that must not change results (a re-layout of the package, a library swap): each
version runs in its own process (``PYTHONPATH=<tree>/src``) through the public API alone
(``eoir.register(fixed, moving, model="brain-mri")``, the default of ``eoir register``), which
every version has, on the OASIS-TRT-20 validation pairs; the total fields (fixed voxels) of the
two versions are compared, and the registration seconds reported side by side (median over the
pairs, versions alternating pair by pair).

Usage::

    git worktree add /tmp/before HEAD~1
    python benchmarks/compare_register.py /tmp/before . [--pairs 6]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
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


if __name__ == "__main__":
    main()
