"""Peak GPU memory and time of one full-size EOIR training step, with and without activation
checkpointing (``train.checkpointing``), in float32 and bf16 autocast.

One step is ``eoir train``'s own step (:func:`eoir.training.train.training_step`) on a
(moving, fixed) pair with the ``brain-mri`` recipe's loss (NCC windows 9/5/3, L1 smoothness
0.3, Dice over ``--labels`` one-hot labels): forward, multi-level loss, backward, an Adam
step. Peak memory is ``torch.cuda.max_memory_allocated`` over the steps; time is the median of
the steps after the first (cuDNN picks its algorithms then).

Usage::

    python benchmarks/train_memory.py --device cuda            # 160x192x224, width 32, 5 levels
    python benchmarks/train_memory.py --device cpu --shape 48x40x32 --width 8   # a quick check
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from eoir.losses import one_hot
from eoir.nn import EOIR
from eoir.training.config import load_config
from eoir.training.train import training_step


def one_case(args, device: torch.device, precision: str, recompute: bool) -> dict:
    """Peak memory (GB) and median seconds of ``args.steps`` training steps."""
    torch.manual_seed(0)
    model = EOIR(width=args.width, levels=args.levels).to(device).train()
    model.activation_checkpointing = recompute
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, amsgrad=True)
    loss_config = load_config("brain-mri")["loss"]  # NCC 9/5/3, L1 0.3, Dice 1
    moving = torch.rand(1, 1, *args.shape, device=device)
    fixed = torch.rand(1, 1, *args.shape, device=device)
    labels = {}
    if args.labels:
        classes = args.labels + 1  # with the background
        for name in ("moving_labels", "fixed_labels"):
            index = torch.randint(0, classes, (1, 1, *args.shape), device=device)
            labels[name] = one_hot(index, classes)  # as eoir train encodes them
    amp = precision == "bfloat16"
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(args.steps):
        began = time.perf_counter()
        loss, _ = training_step(model, optimizer, moving, fixed, loss_config, amp, **labels)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - began)
        del loss
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"peak_gb": peak, "seconds": statistics.median(times[1:] or times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--shape", default="160x192x224")
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--levels", type=int, default=5)
    parser.add_argument("--labels", type=int, default=35, help="Dice labels (0: no Dice term)")
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    args.shape = tuple(int(n) for n in args.shape.split("x"))
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as eoir train
        name = torch.cuda.get_device_name(device)
    else:
        name = "CPU (no peak memory figure)"
    print(
        f"device: {name}; torch {torch.__version__}; input {'x'.join(map(str, args.shape))}, "
        f"width {args.width}, {args.levels} levels, {args.labels} Dice labels"
    )
    print("| precision | activation checkpointing | peak GB | s / step | fits 24 GB |")
    print("|---|---|---|---|---|")
    for precision in ("float32", "bfloat16"):
        for recompute in (False, True):
            try:
                row = one_case(args, device, precision, recompute)
            except torch.OutOfMemoryError:
                print(f"| {precision} | {'on' if recompute else 'off'} | out of memory | - | no |")
                continue
            peak = row["peak_gb"]
            fits = "-" if peak is None else ("yes" if peak < 24 else "no")
            shown = "-" if peak is None else f"{peak:.1f}"
            print(
                f"| {precision} | {'on' if recompute else 'off'} | {shown} | "
                f"{row['seconds']:.2f} | {fits} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
