"""Turn a training checkpoint into the shipped ``brain-mri`` model file and print its SHA-256.

The file keeps what registration needs: weights (float32), model config, the run config (its
preprocessing and resolution), the steps trained, the weights digest and the expected voxel
size and axis codes of the training images (the frame registration feeds the network in).
Paste the printed checksum into ``eoir.pretrained.PRETRAINED``.

Usage::

    python benchmarks/package_pretrained.py runs/brain-long/eoir-w16.pt \\
        src/eoir/pretrained/brain-mri.pt --spacing 1.0 --axes ASL

(``brain-mri`` in place of the checkpoint re-packages the shipped model itself, e.g. to record
its axes: the weights stay bit-identical.)
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from eoir.nn.checkpoint import load_checkpoint, save_model
from eoir.pretrained import file_sha256


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--spacing", type=float, default=1.0, help="expected voxel size (mm)")
    parser.add_argument(
        "--axes", default="ASL", help="voxel axis codes of the training images (OASIS: ASL)"
    )
    args = parser.parse_args()
    model, state = load_checkpoint(args.checkpoint)
    model = model.float()
    extra = {"run_config": state.get("run_config"), "step": state.get("step")}
    extra["input_spacing_mm"] = args.spacing
    extra["input_axes"] = args.axes
    save_model(args.out, model, **extra)
    size = os.path.getsize(args.out)
    print(f"{args.out}: {size / 1e6:.2f} MB, sha256 {file_sha256(args.out)}")
    check = torch.load(args.out, map_location="cpu", weights_only=True)
    print(f"config {check['config']}, {check['step']} steps")


if __name__ == "__main__":
    main()
