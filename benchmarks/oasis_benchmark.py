"""OASIS-TRT-20 3-D benchmark: every method on the same validation pairs on this machine.

Methods (``--methods``, in this order by default when their inputs exist):

- ``affine``: the pairs as given (the dataset is affinely pre-aligned): the starting point;
- ``MODEL.pt``: a checkpoint (EOIR or VoxelMorph) predicting the field in one forward pass at
  the resolution it was trained at (its run config), the field upsampled to 208x176x160;
- ``MODEL.pt+ioN``: the same followed by N instance-optimisation steps (``eoir.instance``);
- ``ants``: ANTs SyN (``antspyx``, optional: ``pip install antspyx``) with the CC metric
  (radius 2), antspy's default SyN schedule (40x20x0 iterations at 4x/2x/1x shrink), no
  affine stage (the pairs are pre-aligned).

Each method runs in its own process (so its peak memory is its own) with ``--threads`` CPU
threads, registers every ``registration_val`` pair and scores it on the fixed grid: Dice over
the labels present in both images (all, cortex, subcortical), HD95 (mm), % of voxels with
``|J| <= 0`` and SDlogJ of the total field, registration seconds (reading and scoring
excluded), and the peak resident memory of the process while it reads and registers a pair
(reset before each pair through ``/proc/self/clear_refs``; scoring excluded) and peak GPU
memory on ``--device cuda``.
Parameters and multiply-adds are counted for the network at the size it runs.

Usage::

    python benchmarks/oasis_benchmark.py --dataset ../shared/data/oasis-trt-20/dataset.json \\
        --methods affine runs/brain-gpu/eoir-w16.pt runs/brain-gpu/eoir-w16.pt+io100 ants \\
        --csv benchmarks/results/oasis3d.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import ants_syn
import numpy as np

FIELDS = ["dice", "dice_cortex", "dice_subcortical", "hd95", "folding_percent", "sdlogj", "seconds"]


def _reset_peak_rss() -> None:
    """Restart the peak resident-memory count (Linux; elsewhere the process peak is kept)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_rss_mb() -> float:
    """Peak resident memory since the last reset (MB)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _network_counts(model) -> dict[str, float]:
    """Parameters and multiply-adds of a loaded model at the size it registers 208x176x160."""
    from eoir.nn.complexity import count_multiply_adds, count_parameters

    down = model.trained_downsample
    shape = tuple(-(-n // down) for n in (208, 176, 160))
    return {
        "params": count_parameters(model),
        "gmacs": count_multiply_adds(model, shape) / 1e9,
        "input": "x".join(map(str, shape)),
    }


def _ants_pair(fixed, moving, moving_labels_path: str, threads: int):
    """ANTs SyN on one pair: (seconds, peak MB, warped labels array, voxel displacement)."""
    import ants

    from eoir.io import read_field

    f = ants.image_read(str(fixed.image))
    seconds, result = ants_syn.register(f, ants.image_read(str(moving.image)), threads)
    peak = _peak_rss_mb()
    labels = ants.image_read(moving_labels_path)
    warped = ants.apply_transforms(f, labels, result["fwdtransforms"], interpolator="genericLabel")
    disp, _ = read_field(ants_syn.warp_file(result))
    ants_syn.remove_files(result)
    # ANTs reads NIfTI through ITK: its array axes are the NIfTI axes, as eoir's are
    return seconds, peak, warped.numpy().astype(np.int64), disp


def run_method(
    spec: str, dataset: str, threads: int, device: str, io_lr: float, score: bool = True
) -> dict:
    """Register and score every validation pair with one method (in this process)."""
    import torch

    from eoir.io import load_dataset, read_image
    from eoir.metrics import jacobian_stats
    from eoir.nn.checkpoint import load_model
    from eoir.registration import register
    from eoir.training.evaluate import score_pair

    torch.set_num_threads(threads)
    data = load_dataset(dataset)
    model_path, steps = spec, 0
    if "+io" in spec:
        model_path, text = spec.split("+io")
        steps = int(text)
    # a checkpoint registers at the resolution it was trained at (eoir.register's default)
    net = load_model(model_path, device) if spec not in ("affine", "ants") else None
    rows, peak = [], 0.0
    for fixed, moving in data.pairs("val"):
        fixed_labels = read_image(fixed.label, "fixed labels")
        moving_labels = read_image(moving.label, "moving labels")
        _reset_peak_rss()
        if spec == "ants":
            seconds, used, warped, disp = _ants_pair(fixed, moving, str(moving.label), threads)
            stats = jacobian_stats(disp)
        else:
            result = register(
                fixed.image,
                moving.image,
                model=net,
                optimize_steps=steps,
                device=device,
                optimize_options={"lr": io_lr} if steps else None,
            )
            used = _peak_rss_mb()
            if not score:
                peak = max(peak, used)
                rows.append({"fixed": fixed.name, "moving": moving.name, "seconds": result.seconds})
                continue
            seconds, warped = result.seconds, result.warp_labels(moving_labels)
            stats = result.jacobian_stats()
        peak = max(peak, used)
        row, _ = score_pair(
            fixed_labels.array,
            warped,
            moving_labels.array,
            fixed_labels.spacing,
            data.label_names,
        )
        rows.append(
            {"fixed": fixed.name, "moving": moving.name, **row, **stats, "seconds": seconds}
        )
        print(f"  {spec}: {moving.name} -> {fixed.name} Dice {row['dice']:.4f}", file=sys.stderr)
    out = {"method": spec, "rows": rows, "peak_rss_mb": peak}
    if device.startswith("cuda"):
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    if net is not None:
        out.update(_network_counts(net))
    return out


def _summary(result: dict) -> dict:
    rows = result["rows"]
    summary = {"method": result["method"]}
    for key in FIELDS:
        values = np.array([r.get(key, np.nan) for r in rows], dtype=float)
        summary[key] = (float(np.nanmean(values)), float(np.nanstd(values)))
    for key in ("params", "gmacs", "input", "peak_rss_mb", "peak_gpu_mb"):
        if key in result:
            summary[key] = result[key]
    return summary


def markdown(results: list[dict], names: dict[str, str]) -> str:
    """A results table, mean +- sd over the pairs."""
    head = (
        "| method | Dice | Dice cortex | Dice subcortical | HD95 (mm) | %\\|J\\|<=0 | SDlogJ "
        "| params | GMACs (input) | s / pair | peak memory (MB) |"
    )
    lines = [head, "|" + "---|" * 11]
    for result in results:
        s = _summary(result)
        cells = [names.get(s["method"], s["method"])]
        for key, digits in (
            ("dice", 3),
            ("dice_cortex", 3),
            ("dice_subcortical", 3),
            ("hd95", 2),
            ("folding_percent", 4),
            ("sdlogj", 3),
        ):
            mean, sd = s[key]
            cells.append("-" if np.isnan(mean) else f"{mean:.{digits}f} +- {sd:.{digits}f}")
        cells.append(f"{s['params']:,}" if "params" in s else "-")
        cells.append(f"{s['gmacs']:.1f} ({s['input']})" if "gmacs" in s else "-")
        cells.append(f"{s['seconds'][0]:.2f}")
        memory = f"{s['peak_rss_mb']:.0f}"
        if "peak_gpu_mb" in s:
            memory += f" (GPU {s['peak_gpu_mb']:.0f})"
        cells.append(memory)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="../shared/data/oasis-trt-20/dataset.json")
    parser.add_argument("--methods", nargs="+", default=["affine"])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--io-lr", type=float, default=0.1, help="instance-optimisation lr")
    parser.add_argument("--csv", type=Path, help="per-pair rows of every method")
    parser.add_argument("--json", type=Path, help="all results (for tables)")
    parser.add_argument("--no-score", action="store_true", help="time only (e.g. on a GPU)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not Path(args.dataset).is_file():
        print(f"skipped: {args.dataset} not found (the benchmark needs ../shared/data)")
        return
    if args.worker:
        result = run_method(
            args.worker, args.dataset, args.threads, args.device, args.io_lr, not args.no_score
        )
        print(json.dumps(result))
        return
    results = []
    for spec in args.methods:
        if spec == "ants":
            if not ants_syn.available():
                print("ants: skipped (pip install antspyx to include ANTs SyN)")
                continue
        command = [sys.executable, __file__, "--worker", spec, "--dataset", args.dataset]
        command += ["--threads", str(args.threads), "--device", args.device]
        command += ["--io-lr", str(args.io_lr)] + (["--no-score"] if args.no_score else [])
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"{spec} failed:\n{done.stderr[-3000:]}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(markdown(results[-1:], {}).splitlines()[-1], flush=True)
    print(markdown(results, {}))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=args.json.parent, delete=False) as f:
            json.dump(results, f, indent=1)
        os.replace(f.name, args.json)
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=args.csv.parent, delete=False, newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["method", "fixed", "moving", *FIELDS])
            writer.writeheader()
            for result in results:
                for row in result["rows"]:
                    writer.writerow(
                        {"method": result["method"], **{k: row.get(k) for k in writer.fieldnames}}
                    )
        os.replace(f.name, args.csv)


if __name__ == "__main__":
    main()
