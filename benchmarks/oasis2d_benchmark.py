"""OASIS-TRT-20 2-D benchmark: EOIR (widths 8/16/32), VoxelMorph, ANTs SyN and no registration
on axial slices, split by subject number (1-12 train, the 6 ordered pairs of 13-15 evaluated).

``train`` fits every network with one recipe (NCC + Dice + L1 smoothness 0.3 on the residuals,
Adam 1e-3 with poly decay, the same random training pairs and number of steps); ``evaluate``
registers the validation pairs on the CPU and scores them: Dice (all, cortex, subcortical), HD95
(pixels = mm), % of pixels with ``|J| <= 0``, SDlogJ, parameters, multiply-adds and milliseconds
per pair (median of 5 runs, forward pass alone, ``--threads`` threads). ANTs SyN (optional
``antspyx``) runs on the same slices with the CC metric (radius 2) and antspy's default SyN
schedule.

Usage::

    python benchmarks/oasis2d_benchmark.py train --out runs/oasis2d --steps 2000 --device cuda
    python benchmarks/oasis2d_benchmark.py evaluate --out runs/oasis2d
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

import ants_syn
import numpy as np
import torch

from eoir.losses import one_hot
from eoir.metrics import jacobian_stats
from eoir.nn.checkpoint import build_model, load_checkpoint, save_model
from eoir.nn.complexity import count_multiply_adds, count_parameters
from eoir.registration.preprocess import normalise
from eoir.spatial import warp
from eoir.training.config import load_config
from eoir.training.evaluate import score_pair
from eoir.training.train import training_step

TRAIN, VAL = range(1, 13), (13, 14, 15)
MODELS = {
    "eoir-w8": {"architecture": "eoir", "ndim": 2, "width": 8, "levels": 4},
    "eoir-w16": {"architecture": "eoir", "ndim": 2, "width": 16, "levels": 4},
    "eoir-w32": {"architecture": "eoir", "ndim": 2, "width": 32, "levels": 4},
    "voxelmorph": {"architecture": "voxelmorph", "ndim": 2},
}
NAMES = {"eoir-w8": "EOIR w8", "eoir-w16": "EOIR w16", "eoir-w32": "EOIR w32"}


def load_slices(folder: Path) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Subject number -> (normalised image (1, 1, H, W), labels (1, 1, H, W) int64)."""
    out = {}
    for subject in (*TRAIN, *VAL):
        data = np.load(folder / f"OASIS-TRT-20-{subject}_axial.npz")
        image = torch.from_numpy(normalise(data["img"], "mri"))[None, None]
        labels = torch.from_numpy(data["seg"].astype(np.int64))[None, None]
        out[subject] = (image, labels)
    return out


def train(args: argparse.Namespace) -> None:
    slices = load_slices(args.data)
    values = sorted({int(v) for s in TRAIN for v in torch.unique(slices[s][1])})
    device = torch.device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        torch.manual_seed(0)
        rng = random.Random(0)
        model = build_model(MODELS[name]).to(device).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, amsgrad=True)
        loss_config = load_config("brain-mri")["loss"]  # NCC 9/5/3, L1 0.3, Dice 1, float32
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: (1.0 - min(s, args.steps - 1) / args.steps) ** 0.9
        )
        began = time.perf_counter()
        for _ in range(args.steps):
            fixed_id, moving_id = rng.sample(list(TRAIN), 2)
            fixed, fixed_labels = (t.to(device) for t in slices[fixed_id])
            moving, moving_labels = (t.to(device) for t in slices[moving_id])
            training_step(
                model,
                optimizer,
                moving,
                fixed,
                loss_config,
                False,
                moving_labels=one_hot(moving_labels, values),
                fixed_labels=one_hot(fixed_labels, values),
            )
            schedule.step()
        seconds = time.perf_counter() - began
        run = {"data": {"preset": "mri", "downsample": 1}, "steps": args.steps}
        save_model(args.out / f"{name}.pt", model.cpu(), run_config=run, step=args.steps)
        print(f"{name}: {args.steps} steps in {seconds:.0f} s on {device}", flush=True)


def _ants(fixed: np.ndarray, moving: np.ndarray, labels: np.ndarray, threads: int):
    import ants

    f = ants.from_numpy(fixed)
    seconds, result = ants_syn.register(f, ants.from_numpy(moving), threads)
    warped = ants.apply_transforms(
        f, ants.from_numpy(labels.astype(np.float32)), result["fwdtransforms"], "genericLabel"
    ).numpy()
    field = ants.image_read(ants_syn.warp_file(result))
    # ITK physical offsets with unit spacing and identity direction: (H, W, 2) per array axis
    disp = np.moveaxis(field.numpy(), -1, 0)
    ants_syn.remove_files(result)
    return seconds, warped.astype(np.int64), disp


def evaluate(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    slices = load_slices(args.data)
    names = {v: ("subcortical" if v < 1000 else "cortex") for v in range(1, 3000)}
    pairs = [(f, m) for f in VAL for m in VAL if f != m]
    methods = ["affine", *args.models]
    if ants_syn.available():
        methods.append("ants")
    else:
        print("ants: skipped (pip install antspyx to include ANTs SyN)")
    lines = [
        "| method | Dice | Dice cortex | Dice subcortical | HD95 (mm) | %\\|J\\|<=0 | SDlogJ "
        "| params | MMACs | ms / pair |",
        "|" + "---|" * 10,
    ]
    for method in methods:
        net = None
        if method not in ("affine", "ants"):
            net, _ = load_checkpoint(args.out / f"{method}.pt")
        rows, times = [], []
        for fixed_id, moving_id in pairs:
            fixed, fixed_labels = slices[fixed_id]
            moving, moving_labels = slices[moving_id]
            if method == "ants":
                seconds, warped, disp = _ants(
                    fixed[0, 0].numpy(), moving[0, 0].numpy(), moving_labels[0, 0].numpy(), 2
                )
                times.append(seconds)
            else:
                disp = torch.zeros(1, 2, *fixed.shape[2:])
                if net is not None:
                    with torch.inference_mode():
                        net(moving, fixed)  # warm-up
                        runs = []
                        for _ in range(5):
                            began = time.perf_counter()
                            disp = net(moving, fixed)
                            runs.append(time.perf_counter() - began)
                    times.append(statistics.median(runs))
                warped = warp(moving_labels.double(), disp.double(), mode="nearest")[0, 0]
                warped = warped.long().numpy()
            row, _ = score_pair(
                fixed_labels[0, 0].numpy(),
                warped,
                moving_labels[0, 0].numpy(),
                (1.0, 1.0),
                names,
            )
            rows.append({**row, **jacobian_stats(disp)})
        cells = [NAMES.get(method, method)]
        for key, digits in (
            ("dice", 3),
            ("dice_cortex", 3),
            ("dice_subcortical", 3),
            ("hd95", 2),
            ("folding_percent", 3),
            ("sdlogj", 3),
        ):
            v = np.array([r[key] for r in rows], dtype=float)
            cells.append(f"{np.nanmean(v):.{digits}f} +- {np.nanstd(v):.{digits}f}")
        if net is not None:
            cells.append(f"{count_parameters(net):,}")
            cells.append(f"{count_multiply_adds(net, tuple(fixed.shape[2:])) / 1e6:,.0f}")
        else:
            cells += ["-", "-"]
        cells.append(f"{1000 * statistics.median(times):.1f}" if times else "-")
        lines.append("| " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("train", "evaluate"))
    parser.add_argument("--data", type=Path, default=Path("../shared/data/oasis-trt-20-2d"))
    parser.add_argument("--out", type=Path, default=Path("runs/oasis2d"))
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"skipped: {args.data} not found (the benchmark needs ../shared/data)")
        sys.exit(0)
    (train if args.command == "train" else evaluate)(args)


if __name__ == "__main__":
    main()
