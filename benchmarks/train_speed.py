"""Seconds per training step and peak memory, as a share of the machine's matmul limit.

One step is ``eoir train``'s own (:func:`eoir.training.train.training_step`: forward, the
``brain-mri`` recipe's multi-level loss with NCC 9/5/3, L1 smoothness 0.3 and Dice over 35
labels, backward, an AMSGrad step) on random images, for EOIR widths 8/16/32 (4 levels) at
quarter (52x44x40) and half (104x88x80) resolution of a 208x176x160 brain, in float32 and, where
bf16 is native (:func:`eoir.runtime.bf16_native`), bf16 autocast. Each case runs in a fresh
process: the median of its steps after the first, its peak resident memory (CPU) or peak
allocated memory (GPU).

The limit is measured in the same run: a 2048x2048 matmul in float32 (and bf16 where native),
median GFLOP/s. The share is ``3 x 2 x forward multiply-adds / seconds / limit`` (the backward
pass costs about twice the forward's convolutions; warps, norms and the loss are not counted).

Usage::

    python benchmarks/train_speed.py                       # the CPU, every case (minutes)
    python benchmarks/train_speed.py --widths 16 --sizes half --steps 4
    python benchmarks/train_speed.py --device cuda --sizes half full
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

SIZES = {"quarter": (52, 44, 40), "half": (104, 88, 80), "full": (208, 176, 160)}

CHILD = r"""
import json, resource, statistics, sys, time
import torch
from eoir.losses import one_hot
from eoir.nn import EOIR
from eoir.nn.complexity import count_multiply_adds
from eoir.training.config import load_config
from eoir.training.train import training_step
device, width, shape = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
amp, steps = sys.argv[4] == "1", int(sys.argv[5])
dev = torch.device(device)
torch.manual_seed(0)
model = EOIR(width=width, levels=4).to(dev).train()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, amsgrad=True)
loss_config = load_config("brain-mri")["loss"]
moving, fixed = torch.rand(1, 1, *shape, device=dev), torch.rand(1, 1, *shape, device=dev)
labels = {k: one_hot(torch.randint(0, 36, (1, 1, *shape), device=dev), 36)
          for k in ("moving_labels", "fixed_labels")}
times = []
for _ in range(steps):
    began = time.perf_counter()
    training_step(model, optimizer, moving, fixed, loss_config, amp, **labels)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    times.append(time.perf_counter() - began)
if dev.type == "cuda":
    peak = torch.cuda.max_memory_allocated(dev) / 2**30
else:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
print(json.dumps({"seconds": statistics.median(times[1:] or times), "peak_gb": peak,
                  "macs": count_multiply_adds(EOIR(width=width, levels=4), shape)}))
"""

LIMIT = r"""
import json, statistics, sys, time
import torch
dev, dtype = torch.device(sys.argv[1]), getattr(torch, sys.argv[2])
a = torch.randn(2048, 2048, device=dev).to(dtype)
rates = []
for _ in range(6):
    began = time.perf_counter()
    a @ a
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    rates.append(2 * 2048**3 / (time.perf_counter() - began) / 1e9)
print(json.dumps({"gflops": statistics.median(rates[1:])}))
"""


def child(script: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--widths", nargs="+", type=int, default=[8, 16, 32])
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=["quarter", "half"])
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()

    import torch

    from eoir.runtime import bf16_native

    native = bf16_native(torch.device(args.device))
    precisions = ["float32", "bfloat16"] if native else ["float32"]
    limits = {p: child(LIMIT, args.device, p)["gflops"] for p in precisions}
    print(f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"bf16 native: {native}; matmul limit "
          + ", ".join(f"{p} {g:.0f} GFLOP/s" for p, g in limits.items()))  # fmt: skip
    print("| size | width | precision | s / step | peak GB | G multiply-adds | share of limit |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        shape = SIZES[size]
        for width in args.widths:
            for precision in precisions:
                amp = "1" if precision == "bfloat16" else "0"
                row = child(CHILD, args.device, str(width), json.dumps(shape), amp, str(args.steps))
                name = f"{size} {'x'.join(map(str, shape))}"
                if "error" in row:
                    print(f"| {name} | {width} | {precision} | {row['error']} | | | |")
                    continue
                share = 3 * 2 * row["macs"] / row["seconds"] / (limits[precision] * 1e9)
                print(
                    f"| {name} | {width} | {precision} | {row['seconds']:.2f} | "
                    f"{row['peak_gb']:.2f} | {row['macs'] / 1e9:.1f} | {100 * share:.0f} % |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
