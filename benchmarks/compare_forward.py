"""Time the shipped model's forward pass in two versions of the code, alternately, in one run.

A change worth a few per cent cannot be seen across runs on a shared machine (5-25 % between
runs); alternating the versions in one session can. Each version runs in its own process
(``PYTHONPATH=<tree>/src``) on OASIS-TRT-20 14 -> 13 as ``eoir register`` runs it (network at
half resolution, field upsampled), reports the median of 7 passes, and the fields of the two
versions are compared.

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
import statistics, sys, time
import numpy as np, torch
from eoir.checkpoint import load_model
from eoir.io import read_image
from eoir.preprocess import normalise
from eoir.spatial import resize_field

images, out = sys.argv[1], sys.argv[2]
model = load_model("brain-mri", torch.device("cpu"))
down = int(model.trained_downsample)
read = lambda n: torch.from_numpy(normalise(read_image(f"{images}/{n}").array, "mri"))[None, None]
fixed, moving = read("OASISTRT_0013_0000.nii.gz"), read("OASISTRT_0014_0000.nii.gz")
small = [-(-n // down) for n in fixed.shape[2:]]

def run():
    with torch.inference_mode():
        f = torch.nn.functional.interpolate(fixed, small, mode="trilinear", align_corners=True)
        m = torch.nn.functional.interpolate(moving, small, mode="trilinear", align_corners=True)
        return resize_field(model(m, f).float(), fixed.shape[2:])

field = run()
times = []
for _ in range(7):
    began = time.perf_counter()
    run()
    times.append(time.perf_counter() - began)
np.save(out, field.numpy())
print(statistics.median(times))
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
            command = [sys.executable, "-c", _CHILD, str(images), str(out)]
            result = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
            seconds = float(result.stdout.strip().splitlines()[-1])
            print(f"round {round_ + 1}, {tree}: median {seconds:.3f} s", flush=True)
            fields[index] = np.load(out)
    difference = np.abs(fields[0] - fields[1])
    print(f"field difference: max {difference.max():.2e}, mean {difference.mean():.2e} voxels")


if __name__ == "__main__":
    main()
