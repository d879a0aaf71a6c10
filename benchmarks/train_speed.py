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

The encoder runs channels-last on a CPU (:meth:`eoir.nn.EOIR.set_layout`, as ``eoir train``
sets it); ``--layouts auto contiguous`` adds rows with it kept contiguous. ``--before SRC`` runs
each case with a previous tree's ``src`` too, alternating with this one for ``--rounds`` rounds
(the median over rounds), so that two versions are compared side by side in one run.

Usage::

    python benchmarks/train_speed.py                       # the CPU, every case (minutes)
    python benchmarks/train_speed.py --widths 16 --sizes half --steps 4
    python benchmarks/train_speed.py --device cuda --sizes half full
    git worktree add /tmp/before HEAD~1
    python benchmarks/train_speed.py --widths 16 --sizes half --before /tmp/before/src --rounds 3
    python benchmarks/train_speed.py --widths 16 --sizes half --steps 2 --profile
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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
amp, steps, layout = sys.argv[4] == "1", int(sys.argv[5]), sys.argv[6]
profile = len(sys.argv) > 7 and sys.argv[7] == "1"
dev = torch.device(device)
torch.manual_seed(0)
model = EOIR(width=width, levels=4).to(dev).train()
if layout == "contiguous":
    model.channels_last = False
if hasattr(model, "set_layout"):  # as eoir train does (trees before it: contiguous)
    model.set_layout(dev)
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
top = ""
if profile:  # one more step under torch.profiler: the operators that took longest
    from torch.profiler import ProfilerActivity, profile as profiler
    with profiler(activities=[ProfilerActivity.CPU]) as prof:
        training_step(model, optimizer, moving, fixed, loss_config, amp, **labels)
    top = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)
print(json.dumps({"seconds": statistics.median(times[1:] or times), "peak_gb": peak, "top": top,
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


def child(script: str, *args: str, src: str | None = None) -> dict:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--widths", nargs="+", type=int, default=[8, 16, 32])
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=["quarter", "half"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--layouts", nargs="+", choices=["auto", "contiguous"], default=["auto"])
    parser.add_argument("--before", help="a previous tree's src, run side by side")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--profile",
        action="store_true",
        help="print the operators that took longest in one more step (CPU)",
    )
    args = parser.parse_args()

    import torch

    from eoir.runtime import bf16_native

    native = bf16_native(torch.device(args.device))
    precisions = ["float32", "bfloat16"] if native else ["float32"]
    limits = {p: child(LIMIT, args.device, p)["gflops"] for p in precisions}
    print(f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"bf16 native: {native}; matmul limit "
          + ", ".join(f"{p} {g:.0f} GFLOP/s" for p, g in limits.items()))  # fmt: skip
    print("| size | width | precision | code | s / step | peak GB | G multiply-adds "
          "| share of limit |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    codes = [(f"this tree, {layout}", None, layout) for layout in args.layouts]
    profiles: list[str] = []
    if args.before:
        codes.insert(0, ("before", args.before, "auto"))
    for size in args.sizes:
        shape = SIZES[size]
        for width in args.widths:
            for precision in precisions:
                amp = "1" if precision == "bfloat16" else "0"
                name = f"{size} {'x'.join(map(str, shape))}"
                runs: dict[str, list[dict]] = {code: [] for code, _, _ in codes}
                for _ in range(args.rounds):  # the codes alternate within each round
                    for code, src, layout in codes:
                        runs[code].append(child(
                            CHILD, args.device, str(width), json.dumps(shape), amp,
                            str(args.steps), layout, "1" if args.profile else "0", src=src,
                        ))  # fmt: skip
                for code, rows in runs.items():
                    failed = [row["error"] for row in rows if "error" in row]
                    if failed:
                        print(f"| {name} | {width} | {precision} | {code} | {failed[0]} | | | |")
                        continue
                    seconds = statistics.median(row["seconds"] for row in rows)
                    peak = max(row["peak_gb"] for row in rows)
                    macs = rows[0]["macs"]
                    share = 3 * 2 * macs / seconds / (limits[precision] * 1e9)
                    print(
                        f"| {name} | {width} | {precision} | {code} | {seconds:.2f} | "
                        f"{peak:.2f} | {macs / 1e9:.1f} | {100 * share:.0f} % |",
                        flush=True,
                    )
                    if rows[-1].get("top"):
                        profiles.append(f"{name}, width {width}, {precision}, {code}:\n"
                                        + rows[-1]["top"])  # fmt: skip
    for text in profiles:
        print("\n" + text)


if __name__ == "__main__":
    main()
