"""Time the shipped model's forward pass in two versions of the code, alternately, in one run.

A change worth a few per cent cannot be seen across runs on a shared machine (5-25 % between
runs); alternating the versions in one session can. Each version runs in its own process
(``PYTHONPATH=<tree>/src``) on OASIS-TRT-20 14 -> 13 with ``speed.py``'s harness of the shipped
model (as ``eoir register`` runs it: network at half resolution, field upsampled; median of up
to 7 passes after a warm-up), and the fields of the two versions are compared.

Usage::

    git worktree add /tmp/before HEAD~1
    python benchmarks/compare_forward.py /tmp/before . --rounds 2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

_CHILD = r"""
import sys
import numpy as np, torch
sys.path.insert(0, sys.argv[3])  # this checkout's benchmarks: one harness for both trees
import speed
from eoir.nn import load_model

images, out, cpu = sys.argv[1], sys.argv[2], torch.device("cpu")
model = load_model("brain-mri", cpu)
fixed = speed.read_normalised(f"{images}/OASISTRT_0013_0000.nii.gz", cpu)
moving = speed.read_normalised(f"{images}/OASISTRT_0014_0000.nii.gz", cpu)
run = speed.shipped_forward(model, fixed, moving, "float32")
np.save(out, run().numpy())
print(speed.median_time(run, cpu, 7))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs=2, type=Path, help="two source trees (repository roots)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/oasis-trt-20"))
    args = parser.parse_args()
    images = args.data / "imagesTr"
    if not images.is_dir():
        print(f"skipped: {images} is not there (the OASIS-TRT-20 data)")
        return
    folder = Path(tempfile.mkdtemp(prefix="eoir-compare-"))
    fields = {}
    for round_ in range(args.rounds):
        for index, tree in enumerate(args.trees):
            out = folder / f"field{index}.npy"
            env = {**os.environ, "PYTHONPATH": str(tree.resolve() / "src")}
            here = str(Path(__file__).resolve().parent)
            command = [sys.executable, "-c", _CHILD, str(images), str(out), here]
            result = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
            seconds = float(result.stdout.strip().splitlines()[-1])
            print(f"round {round_ + 1}, {tree}: median {seconds:.3f} s", flush=True)
            fields[index] = np.load(out)
    difference = np.abs(fields[0] - fields[1])
    print(f"field difference: max {difference.max():.2e}, mean {difference.mean():.2e} voxels")


if __name__ == "__main__":
    main()
