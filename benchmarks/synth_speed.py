"""What a synthetic training pair costs against the training step it feeds.

Draws pairs the way ``eoir train --recipe synth-brain`` does (:class:`SynthPairDataset` over
the whole-head label maps of ``../shared/data/synthseg-label-maps``, the recipe's generator
ranges and resolution), after the maps are loaded and aligned (once per map and worker, timed
apart), then times the recipe's training step (width 16, 4 levels, Dice over the brain
structures, L1 smoothness) on such a pair, in one run. Reports medians.

Usage::

    python benchmarks/synth_speed.py --pairs 8 --steps 3
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from eoir.io import load_dataset
from eoir.losses import one_hot
from eoir.nn.checkpoint import build_model
from eoir.synth import SynthOptions, brain_labels
from eoir.training.config import load_config
from eoir.training.data import StepPairs, SynthPairDataset
from eoir.training.train import training_step

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "synthseg-label-maps"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--maps", type=int, default=4, help="label maps to load")
    args = parser.parse_args()
    config = load_config("synth-brain")
    spec = load_dataset(DATA, label_maps=True)
    subjects = spec.training[: args.maps]
    pairs = StepPairs(len(subjects), "random", 0)
    data = SynthPairDataset(
        subjects, pairs, spec.labels, SynthOptions.from_dict(config["synth"]), 2, seed=0
    )
    loading = []
    for index in range(len(subjects)):
        began = time.perf_counter()
        data.load(index)
        loading.append(time.perf_counter() - began)
    drawing, items = [], []
    for step in range(args.pairs):
        began = time.perf_counter()
        items.append(data[step])
        drawing.append(time.perf_counter() - began)
    model = build_model(config["model"], strict=False).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, amsgrad=True)
    classes = brain_labels(spec.labels)
    stepping = []
    for step in range(args.steps + 1):
        item = items[step % len(items)]
        labels = {k: one_hot(item[k][None], classes) for k in ("moving_labels", "fixed_labels")}
        began = time.perf_counter()
        training_step(model, optimizer, item["moving"][None], item["fixed"][None],
                      config["loss"], False, **labels)  # fmt: skip
        stepping.append(time.perf_counter() - began)
    draw, step_s = statistics.median(drawing), statistics.median(stepping[1:])
    shape = "x".join(map(str, config["synth"]["shape"]))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; grid {shape}")
    print(f"loading and aligning a label map (once per map and worker): median "
          f"{statistics.median(loading):.2f} s")  # fmt: skip
    print(f"drawing a pair: median {draw:.2f} s over {args.pairs} pairs")
    print(f"training step (float32): median {step_s:.2f} s over {args.steps} steps")
    print(f"a pair costs {100 * draw / step_s:.1f} % of the step it feeds")


if __name__ == "__main__":
    main()
