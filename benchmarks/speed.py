"""Speed and memory of EOIR inference next to the machine's own limits, in one run.

For each input size and width it times one registration's forward pass (median of up to
``--repeats`` after a warm-up, see :func:`median_time`; ``torch.inference_mode``) in float32 and
in reduced precision (bf16 autocast on CPU and GPU, fp16 on GPU), and reports the peak memory
(CPU: resident set, reset before each case; GPU: max allocated), the multiply-adds, the achieved
FLOP/s (2 x multiply-adds / time) and that as a fraction of the machine's matrix-multiply FLOP/s
measured in the same run (a large matmul in the same precision). The memory bandwidth (a large
tensor copy, bytes read + written per second) is measured too.

It then times the shipped model as ``eoir register`` runs it on a 208x176x160 pair: the forward
pass at the model's resolution with the field upsampled (float32 and bf16, with the largest
field difference between them in voxels), the whole command end to end (a new process reading
two NIfTI files, registering and writing the warped image and the field), and, when
``antspyx`` is installed, ANTs SyN (CC) on the same pair, so the speed-up is a ratio measured
side by side. The pair is OASIS-TRT-20 14 -> 13 when ``../shared/data`` is there, else a
synthetic pair.

With ``--e2e`` (CPU) every 3-D size and width is also timed through ``eoir register`` end to
end (an untrained network of that width saved to a file, a synthetic pair of that size at full
resolution). With ``--variants`` it times width 32 at 160x192x224 in both memory layouts
(``--compile``: also under ``torch.compile``) and prints the heaviest GPU kernels.

Usage::

    python benchmarks/speed.py --ants --e2e          # CPU, every size and width, ANTs too
    python benchmarks/speed.py --device cuda         # GPU (no end-to-end or ANTs timing)
    python benchmarks/speed.py --device cuda --variants --compile --no-network-table
    python benchmarks/speed.py --quick               # 2D and the smallest 3D size only
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ants_syn
import numpy as np
import torch

from eoir.nn import EOIR
from eoir.nn.checkpoint import load_model
from eoir.nn.complexity import count_multiply_adds
from eoir.spatial import resize_field

SIZES = [(256, 256), (96, 80, 128), (160, 192, 224), (208, 176, 160)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def median_time(fn, device: torch.device, repeats: int, budget: float = 60.0) -> float:
    """Median wall seconds of ``fn()`` over up to ``repeats`` runs after one warm-up.

    A warm-up longer than 5 s (a large volume on a CPU) counts as the first run, and runs stop
    once ``budget`` seconds are spent (at least one is kept), so a CPU sweep over large volumes
    ends in minutes.
    """
    began = time.perf_counter()
    fn()
    _sync(device)
    first = time.perf_counter() - began
    times = [first] if device.type == "cpu" and first > 5.0 else []
    spent = first
    while len(times) < repeats and (not times or spent < budget):
        began = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - began)
        spent += times[-1]
    return statistics.median(times)


def machine_limits(device: torch.device) -> dict[str, float]:
    """Matmul FLOP/s per dtype and copy bandwidth (bytes/s) of this device, measured now."""
    n = 4096 if device.type == "cuda" else 2048
    out = {}
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16}
    if device.type == "cuda":
        dtypes["float16"] = torch.float16
    for name, dtype in dtypes.items():
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        seconds = median_time(lambda a=a, b=b: a @ b, device, 5)
        out[f"matmul_{name}"] = 2 * n**3 / seconds
    x = torch.empty(64 * 2**20, device=device)  # 256 MB
    y = torch.empty_like(x)
    seconds = median_time(lambda: y.copy_(x), device, 5)
    out["copy_bytes"] = 2 * x.numel() * 4 / seconds
    return out


def _precisions(device: torch.device) -> list[str]:
    return ["float32", "bfloat16"] + (["float16"] if device.type == "cuda" else [])


def time_forward(model, shape, device, precision: str, repeats: int) -> tuple[float, float]:
    """(median seconds, peak MB) of one forward pass on a random pair of ``shape``."""
    moving = torch.rand(1, 1, *shape, device=device)
    fixed = torch.rand(1, 1, *shape, device=device)
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(precision)

    def run():
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=bool(dtype)):
            return model(moving, fixed)

    _reset_peak(device)
    seconds = median_time(run, device, repeats)
    return seconds, _peak_mb(device)


def network_table(args, device, limits) -> list[dict]:
    rows = []
    for shape in args.sizes:
        for width in args.widths:
            ndim = len(shape)
            model = EOIR(ndim=ndim, width=width).to(device).eval()
            macs = count_multiply_adds(model, shape)
            for precision in _precisions(device):
                try:
                    seconds, peak = time_forward(model, shape, device, precision, args.repeats)
                except (RuntimeError, torch.OutOfMemoryError) as err:
                    print(f"{shape} w{width} {precision}: {str(err).splitlines()[0]}")
                    continue
                flops = 2 * macs / seconds
                limit = limits.get(f"matmul_{precision}", limits["matmul_float32"])
                row = {
                    "shape": "x".join(map(str, shape)),
                    "width": width,
                    "precision": precision,
                    "seconds": seconds,
                    "peak_mb": peak,
                    "gmacs": macs / 1e9,
                    "tflops": flops / 1e12,
                    "of_limit": flops / limit,
                }
                if args.e2e and precision == "float32" and device.type == "cpu" and ndim == 3:
                    row["command_seconds"] = _command_seconds(model, shape, args.repeats)
                rows.append(row)
                command = row.get("command_seconds")
                print(
                    f"| {row['shape']} | {width} | {precision} | {seconds * 1000:,.1f} | "
                    f"{peak:,.0f} | {row['gmacs']:,.1f} | {row['tflops']:.3f} | "
                    f"{100 * row['of_limit']:.1f} % |"
                    + (
                        f" {command:.2f} |" if command is not None else (" - |" if args.e2e else "")
                    ),
                    flush=True,
                )
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def _command_seconds(model: EOIR, shape: tuple[int, ...], repeats: int) -> float:
    """Median seconds of ``eoir register`` end to end with ``model`` (saved to a file) on a
    synthetic pair of ``shape`` at full resolution, writing the warped image and the field."""
    from eoir.nn.checkpoint import save_model

    fixed, moving = _synthetic_pair(shape)
    checkpoint = Path(fixed).with_name("model.pt")
    save_model(checkpoint, model)
    return end_to_end(fixed, moving, repeats, ("--model", str(checkpoint), "--downsample", "1"))


def variants_table(args, device, limits) -> list[dict]:
    """Width 32 at 160x192x224 (the GPU goal): memory layout x precision x torch.compile.

    ``contiguous`` / ``channels-last`` set :attr:`eoir.nn.EOIR.channels_last`; ``compiled``
    wraps the model in ``torch.compile`` (default mode; the compile time is excluded: it is
    paid once per shape, e.g. once per batch run). Prints the ten heaviest GPU kernels of the
    fastest eager variant.
    """
    shape, width = (160, 192, 224), 32
    rows, best = [], None
    for layout in ("contiguous", "channels-last"):
        for compiled in (False, True) if args.compile else (False,):
            model = EOIR(width=width).to(device).eval()
            model.channels_last = layout == "channels-last"
            macs = count_multiply_adds(model, shape)
            runner = torch.compile(model) if compiled else model
            for precision in _precisions(device):
                began = time.perf_counter()
                try:
                    seconds, peak = time_forward(runner, shape, device, precision, args.repeats)
                except Exception as err:  # a compiler failure is a result too
                    print(f"{layout} compiled={compiled} {precision}: {str(err).splitlines()[0]}")
                    continue
                limit = limits.get(f"matmul_{precision}", limits["matmul_float32"])
                row = {
                    "layout": layout,
                    "compiled": compiled,
                    "precision": precision,
                    "seconds": seconds,
                    "peak_mb": peak,
                    "of_limit": 2 * macs / seconds / limit,
                    "first_call_s": time.perf_counter() - began,
                }
                rows.append(row)
                print(
                    f"| {layout} | {'torch.compile' if compiled else 'eager'} | {precision} | "
                    f"{seconds * 1000:,.1f} | {peak:,.0f} | {100 * row['of_limit']:.1f} % |",
                    flush=True,
                )
                if not compiled and (best is None or seconds < best[0]):
                    best = (seconds, layout, precision)
            del model, runner
            torch.compiler.reset()
    if best is not None and device.type == "cuda":
        _print_kernels(best[1], best[2], shape, width, device)
    return rows


def _print_kernels(layout: str, precision: str, shape, width: int, device) -> None:
    from torch.profiler import ProfilerActivity, profile

    model = EOIR(width=width).to(device).eval()
    model.channels_last = layout == "channels-last"
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(precision)
    moving = torch.rand(1, 1, *shape, device=device)
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=bool(dtype)):
        model(moving, moving)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            model(moving, moving)
            torch.cuda.synchronize(device)
    print(f"heaviest kernels, {layout} {precision} eager:")
    print(
        prof.key_averages().table(sort_by="cuda_time_total", row_limit=10, max_name_column_width=60)
    )


def _pair(oasis: Path) -> tuple[str, str, str]:
    """Paths of a 208x176x160 fixed and moving image, and a label of where they came from."""
    if (oasis / "imagesTr").is_dir():
        images = oasis / "imagesTr"
        return (
            str(images / "OASISTRT_0013_0000.nii.gz"),
            str(images / "OASISTRT_0014_0000.nii.gz"),
            "OASIS-TRT-20 14 -> 13",
        )
    fixed, moving = _synthetic_pair((208, 176, 160))
    return fixed, moving, "synthetic blobs"


def _synthetic_pair(shape: tuple[int, ...]) -> tuple[str, str]:
    """Paths of a synthetic fixed and moving NIfTI volume (a shifted noisy blob), 1 mm voxels."""
    import nibabel as nib

    folder = Path(tempfile.mkdtemp(prefix="eoir-speed-"))
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    for name, shift in (("fixed", 0.0), ("moving", 0.08)):
        blob = np.exp(-((grid[0] - shift) ** 2 + grid[1] ** 2 + grid[2] ** 2) * 3)
        data = (1000 * blob + 20 * rng.standard_normal(blob.shape)).astype(np.float32)
        nib.save(nib.Nifti1Image(data, np.eye(4)), str(folder / f"{name}.nii.gz"))
    return str(folder / "fixed.nii.gz"), str(folder / "moving.nii.gz")


def read_normalised(path: str, device: torch.device) -> torch.Tensor:
    """``(1, 1, *shape)`` image of ``path`` with the ``mri`` intensity preset, on ``device``."""
    from eoir.io import read_image
    from eoir.registration.preprocess import normalise

    return torch.from_numpy(normalise(read_image(path).array, "mri"))[None, None].to(device)


def shipped_forward(model, fixed: torch.Tensor, moving: torch.Tensor, precision: str):
    """A function running one forward pass as ``eoir register`` runs the model: both images
    down to the model's training resolution, the network, the field up to the fixed grid."""
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(precision)
    shape = tuple(fixed.shape[2:])
    small = tuple(-(-n // int(model.trained_downsample)) for n in shape)

    def run():
        with torch.inference_mode():
            f = torch.nn.functional.interpolate(fixed, small, mode="trilinear", align_corners=True)
            m = torch.nn.functional.interpolate(moving, small, mode="trilinear", align_corners=True)
            with torch.autocast(fixed.device.type, dtype=dtype, enabled=bool(dtype)):
                disp = model(m, f)
            return resize_field(disp.float(), shape)

    return run


def shipped_model(args, device, limits) -> dict:
    """The shipped model as ``eoir register`` runs it, and the whole command, and ANTs."""
    from eoir.io import read_image

    fixed_path, moving_path, source = _pair(args.data)
    model = load_model("brain-mri", device)
    down = int(model.trained_downsample)
    fixed, moving = read_normalised(fixed_path, device), read_normalised(moving_path, device)
    shape = tuple(fixed.shape[2:])
    small = tuple(-(-n // down) for n in shape)
    out: dict = {"pair": source, "shape": "x".join(map(str, shape)), "model_input": small}

    def forward(precision: str):
        return shipped_forward(model, fixed, moving, precision)

    macs = count_multiply_adds(model, small)
    labels = [Path(p.replace("imagesTr", "labelsTr")) for p in (fixed_path, moving_path)]
    if "imagesTr" not in fixed_path:  # the synthetic pair has no labels
        labels = []
    fields = {}
    for precision in _precisions(device):
        _reset_peak(device)
        seconds = median_time(forward(precision), device, args.repeats)
        fields[precision] = forward(precision)()
        flops = 2 * macs / seconds
        limit = limits.get(f"matmul_{precision}", limits["matmul_float32"])
        out[precision] = {
            "seconds": seconds,
            "peak_mb": _peak_mb(device),
            "of_limit": flops / limit,
            "max_diff_voxels": float((fields[precision] - fields["float32"]).abs().max()),
        }
        if labels and all(p.is_file() for p in labels):
            from eoir.metrics import mean_dice
            from eoir.spatial import warp

            fixed_labels = read_image(labels[0]).array
            moving_labels = torch.from_numpy(read_image(labels[1]).array.astype(np.float64))
            warped = warp(moving_labels[None, None], fields[precision].cpu().double(), "nearest")
            out[precision]["dice"] = mean_dice(fixed_labels, warped[0, 0], moving_labels)
        diff = (fields[precision] - fields["float32"]).abs()
        out[precision]["mean_diff_voxels"] = float(diff.mean())
        print(f"shipped model forward {precision}: {out[precision]}", flush=True)
    if device.type == "cpu" and not args.no_command:
        out["command"] = end_to_end(fixed_path, moving_path, args.repeats)
        print(f"eoir register end to end: {out['command']:.2f} s", flush=True)
    if device.type == "cpu" and args.ants:
        out["ants"] = ants_seconds(fixed_path, moving_path)
        if out["ants"] is not None:
            print(f"ANTs SyN: {out['ants']:.1f} s", flush=True)
    return out


def end_to_end(fixed: str, moving: str, repeats: int, extra: tuple[str, ...] = ()) -> float:
    """Median wall seconds of the whole ``eoir register`` command (a new process each time).

    The package's bytecode is compiled first, as ``pip install`` does (an editable checkout run
    with ``PYTHONDONTWRITEBYTECODE`` would otherwise compile eoir's modules in every run).
    """
    import compileall

    import eoir

    compileall.compile_dir(str(Path(eoir.__file__).parent), quiet=1)
    folder = Path(tempfile.mkdtemp(prefix="eoir-e2e-"))
    times = []
    for i in range(repeats + 1):
        command = [sys.executable, "-m", "eoir", "register", "--fixed", fixed, "--moving", moving]
        command += list(extra)
        command += [
            "--warped",
            str(folder / f"w{i}.nii.gz"),
            "--field",
            str(folder / f"f{i}.nii.gz"),
        ]
        began = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        if i:  # the first run warms the file cache
            times.append(time.perf_counter() - began)
    return statistics.median(times)


def ants_seconds(fixed: str, moving: str) -> float | None:
    """Seconds of the benchmarks' ANTs SyN (:mod:`ants_syn`) on the pair."""
    if not ants_syn.available():
        print("ANTs SyN: skipped (pip install antspyx)")
        return None
    import ants

    threads = int(os.environ.get("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", os.cpu_count() or 1))
    seconds, result = ants_syn.register(ants.image_read(fixed), ants.image_read(moving), threads)
    ants_syn.remove_files(result)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--widths", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2D and 96x80x128 only")
    parser.add_argument("--sizes", dest="sizes_only", nargs="+", help="e.g. 208x176x160")
    parser.add_argument("--no-network-table", action="store_true")
    parser.add_argument("--no-command", action="store_true", help="skip the end-to-end command")
    parser.add_argument(
        "--e2e", action="store_true", help="CPU: `eoir register` end to end per 3-D size and width"
    )
    parser.add_argument("--ants", action="store_true", help="time ANTs SyN on the pair too")
    parser.add_argument(
        "--variants", action="store_true", help="w32 160x192x224: layouts x precisions"
    )
    parser.add_argument("--compile", action="store_true", help="with --variants: torch.compile")
    parser.add_argument("--no-shipped", action="store_true", help="skip the shipped-model part")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/oasis-trt-20"))
    args = parser.parse_args()
    args.sizes = SIZES[:2] if args.quick else SIZES
    if args.sizes_only:
        args.sizes = [tuple(int(n) for n in s.split("x")) for s in args.sizes_only]
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{os.cpu_count()} CPU threads, torch {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}", flush=True)
    limits = machine_limits(device)
    for key, value in limits.items():
        unit = "GB/s" if key == "copy_bytes" else "TFLOP/s"
        scale = 1e9 if key == "copy_bytes" else 1e12
        print(f"limit {key}: {value / scale:,.2f} {unit}", flush=True)
    results: dict = {"device": name, "torch": torch.__version__, "limits": limits}
    if not args.no_network_table:
        e2e = " eoir register s |" if args.e2e else ""
        print(f"| input | width | precision | ms | peak MB | GMACs | TFLOP/s | of limit |{e2e}")
        print("|---|---|---|---|---|---|---|---|" + ("---|" if args.e2e else ""))
        results["networks"] = network_table(args, device, limits)
    if args.variants:
        print("| layout | mode | precision | ms | peak MB | of matmul limit |")
        print("|---|---|---|---|---|---|")
        results["variants"] = variants_table(args, device, limits)
    if not args.no_shipped:
        results["shipped"] = shipped_model(args, device, limits)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
