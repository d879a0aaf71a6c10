"""Train the benchmark's brain models side by side on one GPU with one step budget.

Every model (EOIR at widths 8/16/32, its large-kernel variant, VoxelMorph) is trained with the
``brain-mri`` recipe (same data, loss, learning rate and number of steps; only the network
differs) as concurrent ``eoir train`` processes. With ``--steps auto`` a short probe run of every
model first measures the slowest one's rate, and the budget is the number of steps that rate
fits in the time left before ``--minutes``. At the deadline any run still going is stopped and
its last checkpoint (saved every 100 steps) is kept. Each run's final weights are written as a
slim checkpoint ``NAME.pt`` (weights, model and run config, no optimizer state) and, with
``--pack``, everything is bundled into one tar.gz.

With ``--recipe synth-brain`` the runs are the ``SYNTH`` table's (the any-MRI model, trained on
label maps alone); ``--set KEY=VALUE`` adds a setting to every run (after the table's).

Usage (the commands the benchmarks ran, on a lent H100 and H200; data copied to .data/ first)::

    python benchmarks/train_brain_gpu.py --dataset .data/oasis-trt-20/dataset.json \\
        --out runs/brain-gpu --minutes 8.5 --pack $OUT/brain-runs.tar.gz
    bash benchmarks/any_mri_gpu.sh $OUT 6.5          # the SYNTH table, 3 runs side by side
    python benchmarks/train_brain_gpu.py --recipe synth-brain \\
        --dataset .data/synthseg-label-maps --out runs/any-gpu2 --models any-init \\
        --steps 2000 --minutes 4.6 --set train.init=runs/any-gpu/any-init.pt \\
        --set synth.same_contrast=0.3 --set data.synth_on_device=false \\
        --set data.workers=12 --set train.save_every=100 --pack $OUT/any-runs2.tar.gz
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from eoir.nn.checkpoint import load_checkpoint, save_model

BRAIN: dict[str, list[str]] = {
    "eoir-w8": ["model.width=8"],
    "eoir-w16": ["model.width=16"],
    "eoir-w32": ["model.width=32"],
    "eoir-lk16": ["model.width=16", "model.large_kernel=true"],
    "voxelmorph": ["model.architecture=voxelmorph"],
    "eoir-w16-reg1": ["model.width=16", "loss.reg_weight=1.0"],
}
# the any-MRI model (issue 16), recipe synth-brain on label maps alone: pairs drawn by 4 CPU
# workers per run (drawn on the GPU, data.synth_on_device, the runs of 2026-11-30 waited for data
# half the time), the known-field term on one-head pairs, NCC on the half of the pairs that share
# a contrast
_SYNTH = ["data.workers=4", "loss.field_weight=0.5", "train.save_every=200"]
_START = ["synth.same_contrast=0.5", "loss.sim_weight=1"]
SYNTH: dict[str, list[str]] = {
    "any-init": [*_SYNTH, *_START, "train.init=brain-mri", "optim.lr=2e-4"],
    "any-scratch": [*_SYNTH, *_START],
    "any-init-labels": [*_SYNTH, "train.init=brain-mri", "optim.lr=2e-4"],
}
TABLES = {"brain-mri": BRAIN, "synth-brain": SYNTH}
MODELS = {**BRAIN, **SYNTH}


def _launch(name: str, args: argparse.Namespace, out: Path, steps: int, extra: list[str]):
    command = [sys.executable, "-m", "eoir", "train", "--dataset", str(args.dataset)]
    command += ["--out", str(out / name), "--recipe", args.recipe, "--device", args.device]
    command += ["--max-steps", str(steps), "--overwrite"]
    for item in MODELS[name] + extra:
        command += ["--set", item]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONUNBUFFERED="1")
    (out / name).mkdir(parents=True, exist_ok=True)
    log = open(out / f"{name}.log", "w")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)


def _rows(run: Path) -> list[dict[str, str]]:
    path = run / "metrics.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _wait(procs: dict[str, subprocess.Popen], deadline: float) -> dict[str, int | None]:
    while any(p.poll() is None for p in procs.values()) and time.time() < deadline:
        time.sleep(2)
    codes = {}
    for name, p in procs.items():
        if p.poll() is None:
            print(f"{name}: stopped at the deadline", flush=True)
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        codes[name] = p.poll()
    return codes


def _probe(args: argparse.Namespace, names: list[str], deadline: float) -> tuple[float, float]:
    """(slowest steps per second, seconds from launch to the first step) over a short run."""
    out = args.out / "probe"
    began = time.time()
    probe = ["train.log_every=10", "train.val_every=1000000"]
    procs = {n: _launch(n, args, out, args.probe_steps, probe) for n in names}
    codes = _wait(procs, deadline)
    rates, starts = [], []
    for name in names:
        rows = _rows(out / name)
        if codes[name] != 0 or len(rows) < 3:
            sys.exit(f"probe of {name} failed (exit {codes[name]}): see {out / name}.log")
        first, last = rows[1], rows[-1]  # skip step 1 (cudnn autotuning, caches)
        steps = int(last["step"]) - int(first["step"])
        rates.append(steps / (float(last["seconds"]) - float(first["seconds"])))
        starts.append(os.path.getmtime(out / name / "config.yaml") - began)
        print(f"probe {name}: {rates[-1]:.2f} steps/s side by side", flush=True)
    return min(rates), max(starts) + 10.0


def _slim(run: Path, target: Path) -> dict[str, object]:
    """The weights, configs and training frame of ``run/last.pt`` without the optimizer state,
    signed as ``eoir train`` signs checkpoints."""
    model, state = load_checkpoint(run / "last.pt")
    keep = ("run_config", "step", "input_axes", "input_spacing_mm")
    save_model(target, model.float(), **{k: state.get(k) for k in keep})
    return {"step": state.get("step")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--recipe", default="brain-mri")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), help="default: the recipe's")
    parser.add_argument("--steps", default="auto", help="steps per model, or auto")
    parser.add_argument("--minutes", type=float, default=8.5, help="deadline for everything")
    parser.add_argument("--probe-steps", type=int, default=60)
    parser.add_argument("--val-every", type=int, default=500, help="validate every N steps (most)")
    parser.add_argument("--set", action="append", default=[], help="one more setting for every run")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per process")
    parser.add_argument("--pack", type=Path, help="bundle checkpoints and logs into this tar.gz")
    args = parser.parse_args()
    args.models = args.models or list(TABLES.get(args.recipe, BRAIN))
    began = time.time()
    deadline = began + 60.0 * args.minutes
    args.out.mkdir(parents=True, exist_ok=True)
    if args.steps == "auto":
        rate, startup = _probe(args, args.models, deadline)
        left = deadline - time.time() - startup - 15.0
        steps = max(100, int(rate * left) // 100 * 100)
        print(f"budget: {steps} steps per model ({rate:.2f} steps/s, {left:.0f} s left)")
    else:
        steps = int(args.steps)
    val = ["train.val_every=" + str(max(min(steps // 5, args.val_every), 1)), *args.set]
    procs = {n: _launch(n, args, args.out, steps, val) for n in args.models}
    codes = _wait(procs, deadline)
    files = []
    for name in args.models:
        run = args.out / name
        if not (run / "last.pt").is_file():
            print(f"{name}: no checkpoint (exit {codes[name]})")
            continue
        info = _slim(run, args.out / f"{name}.pt")
        rows = [r for r in _rows(run) if r.get("val")]
        val_text = f", half-resolution validation Dice {rows[-1]['val']}" if rows else ""
        print(f"{name}: {info['step']} of {steps} steps (exit {codes[name]}){val_text}")
        files += [args.out / f"{name}.pt", run / "metrics.csv", run / "config.yaml"]
        files.append(args.out / f"{name}.log")
    print(f"total {time.time() - began:.0f} s")
    if args.pack:
        with tarfile.open(args.pack, "w:gz") as tar:
            for path in files:
                if path.is_file():
                    tar.add(path, arcname=str(path.relative_to(args.out)))


if __name__ == "__main__":
    main()
