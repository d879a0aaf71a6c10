"""Has a synth-brain network learnt anything? Held-out one-head synthetic pairs, against no field.

Pairs drawn by the checkpoint's own generator settings (its run config: ``synth`` section,
``data.downsample``) from the held-out label maps of ``../shared/data/synthseg-label-maps``
(the dataset's validation maps), each one head under two random geometries with unrelated random
contrasts (``--same-contrast``: one contrast for both), so the true field is known
(:func:`eoir.synth.true_field`). For each checkpoint: the
mean endpoint error over the fixed brain (voxels of the generator's grid) and the Dice of the
brain structures, next to those of no field (the identity). A network that settles on the
identity scores as the identity; one that learnt correspondence scores lower error and higher
Dice.

Usage::

    python benchmarks/synth_probe.py runs/synth-qs/last.pt [more.pt ...] [--pairs 8]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

from eoir.io import load_dataset
from eoir.losses import endpoint_error
from eoir.metrics import mean_dice
from eoir.nn import load_model
from eoir.nn.checkpoint import read_checkpoint
from eoir.spatial import warp
from eoir.synth import SynthOptions
from eoir.training.data import SynthPairDataset

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "synthseg-label-maps"


def scores(item: dict, disp: torch.Tensor) -> tuple[float, float]:
    """Endpoint error over the fixed brain (voxels) and Dice of the brain structures."""
    fixed, moving = item["fixed_labels"][None], item["moving_labels"][None]
    mask = (fixed > 0).float()
    error = float(endpoint_error(disp, item["field"][None], mask))
    warped = warp(moving.double(), disp.double(), mode="nearest")
    return error, mean_dice(fixed, warped, moving)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument(
        "--same-contrast",
        action="store_true",
        help="both images of a pair with one contrast (default: unrelated)",
    )
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"skipped: {DATA} not found")
        return 0
    torch.set_grad_enabled(False)
    spec = load_dataset(DATA, label_maps=True)
    held_out = [s for pair in spec.val for s in pair]
    held_out = list({id(s.label): s for s in held_out}.values())
    print(f"{args.pairs} one-head pairs from {len(held_out)} held-out maps, seed {args.seed}\n")
    print("| checkpoint | step | endpoint error, none (vox) | network | Dice, none | network |")
    print("|---|---|---|---|---|---|")
    for path in args.checkpoints:
        state = read_checkpoint(path)
        config = state.get("run_config") or {}
        options = SynthOptions.from_dict({
            **config.get("synth", {}), "same_map": 1.0,
            "same_contrast": 1.0 if args.same_contrast else 0.0,
        })  # fmt: skip
        downsample = int(config.get("data", {}).get("downsample", 2))
        pairs = [(i % len(held_out), (i + 1) % len(held_out)) for i in range(args.pairs)]
        data = SynthPairDataset(held_out, pairs, spec.labels, options, downsample, args.seed,
                                fields=True)  # fmt: skip
        model = load_model(path).eval()
        none, learnt = [], []
        for index in range(len(data)):
            item = data[index]
            disp = model(item["moving"][None], item["fixed"][None]).float()
            none.append(scores(item, torch.zeros_like(disp)))
            learnt.append(scores(item, disp))
        (e0, d0), (e1, d1) = ([statistics.fmean(v) for v in zip(*r, strict=True)]
                              for r in (none, learnt))  # fmt: skip
        print(f"| {path} | {state.get('step', '?')} | {e0:.3f} | {e1:.3f} | {d0:.3f} | "
              f"{d1:.3f} |", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
