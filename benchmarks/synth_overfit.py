"""Does the Dice of synthetic pairs carry a learning signal? One synthetic pair, overfitted.

A fresh ``synth-brain`` network (quarter resolution, 52x48x40, L1 smoothness 0.1) trained on a
single pair drawn from two of the whole-head label maps of ``../shared/data/synthseg-label-maps``
(the recipe's generator and loss); prints the loss, the Dice term, the largest displacement and
the pair's Dice of the brain structures every 10 steps. A diagnostic for training runs that settle
on the identity (``benchmarks/results.md``): if one pair is learnt, the gradient flows.

Usage::

    python benchmarks/synth_overfit.py --steps 60
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from eoir.io import load_dataset
from eoir.losses import one_hot
from eoir.metrics import mean_dice
from eoir.nn.checkpoint import build_model
from eoir.spatial import warp
from eoir.synth import SynthOptions, brain_labels
from eoir.training.config import load_config
from eoir.training.data import SynthPairDataset
from eoir.training.train import training_step

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "synthseg-label-maps"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    config = load_config("synth-brain", overrides=["synth.shape=[52,48,40]", "loss.reg_weight=0.1"])
    spec = load_dataset(DATA, label_maps=True)
    options = SynthOptions.from_dict(config["synth"])
    item = SynthPairDataset(spec.training[:3], [(0, 1)], spec.labels, options, 4, seed=0)[0]
    torch.manual_seed(0)
    model = build_model(config["model"], strict=False).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, amsgrad=True)
    classes = brain_labels(spec.labels)
    labels = {k: one_hot(item[k][None], classes) for k in ("moving_labels", "fixed_labels")}
    moving, fixed = item["moving"][None], item["fixed"][None]
    print("step | loss | Dice term | max |disp| (voxels) | Dice of the pair")
    for step in range(args.steps):
        loss, terms = training_step(
            model, optimizer, moving, fixed, config["loss"], False, **labels
        )
        if step % 10 == 0 or step == args.steps - 1:
            model.eval()
            with torch.no_grad():
                disp = model(moving, fixed)
            model.train()
            warped = warp(item["moving_labels"][None].double(), disp.double(), mode="nearest")
            dice = mean_dice(item["fixed_labels"], warped, item["moving_labels"])
            print(f"{step} | {float(loss.detach()):.4f} | {float(terms['dice']):.4f} | "
                  f"{float(disp.abs().max()):.2f} | {dice:.3f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
