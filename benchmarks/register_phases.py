"""Seconds of each phase of ``eoir register`` on one pair, in one process (median of repeats).

The phases ``eoir register`` goes through after start-up: reading the two images, normalising
their intensities, the registration (``eoir.register``: resampling, network, field upsampling),
the folding statistics of the summary line, warping the moving image, writing the field and
the warped image as ``.nii.gz``, and the figure (``--figure``). Each is timed on its own, after a
warm-up round. The script runs on this tree's layout and on the flat one before it.

"import eoir.cli" is timed inside a new Python process (torch's import included); "Python's
teardown" is what a process that imported it spends ending normally rather than with
``os._exit`` (as ``eoir``'s one-pair commands end: :func:`eoir.cli.run`), not in the sum.
To compare two versions of the code, run it with each tree's ``src`` first on the path::

    git worktree add /tmp/before HEAD~1
    PYTHONPATH=/tmp/before/src python benchmarks/register_phases.py
    python benchmarks/register_phases.py
    python benchmarks/register_phases.py --import-ab /tmp/before/src --repeats 10

The pair is OASIS-TRT-20 14 -> 13 from ``../shared/data`` (skipped when absent).

``--native`` times the raw-scan path instead (``eoir register --affine`` with labels, on the
native 256x256x160 scans of ``oasis-trt-20-native``), stage by stage as
:func:`eoir.register` runs them (:mod:`eoir.registration.pipeline`): reading (images are read
lazily: their voxels are decompressed in the first stage that touches them, normalising),
the affine stage, sampling both images onto the working grid, the network, the field on the
fixed grid with the affine folded in, the folding statistics of the summary line, the warped
image and labels, and writing the three outputs; ``--stages`` times the same stages on the
aligned pair (``oasis-trt-20``, no affine stage)::

    python benchmarks/register_phases.py --native
    python benchmarks/register_phases.py --stages
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import eoir
from eoir import register
from eoir.io import OutputSet, read_image

try:
    from eoir.io import read_labels
    from eoir.nn import load_model
    from eoir.registration import pipeline
    from eoir.registration.preprocess import normalise
except ImportError:  # a tree from before the package's subpackages
    from eoir.checkpoint import load_model
    from eoir.preprocess import normalise

# a new Python process timing its import of what the command imports
IMPORT = [
    sys.executable,
    "-c",
    "import time; t = time.perf_counter(); import eoir.cli; print(time.perf_counter() - t)",
]


TEARDOWN = "Python's teardown at exit (eoir's one-pair commands skip it; not in the sum)"


def teardown_seconds() -> float:
    """Seconds Python's teardown adds to a process that imported ``eoir.cli``: the wall time of
    such a process ending normally less that of one ending with ``os._exit`` (as ``eoir``'s
    one-pair commands end, :func:`eoir.cli.run`), each timed once."""
    walls = []
    for code in ("import eoir.cli", "import eoir.cli, os; os._exit(0)"):
        began = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        walls.append(time.perf_counter() - began)
    return walls[0] - walls[1]


def import_seconds(source: str | None = None) -> float:
    """Seconds a new process takes to import ``eoir.cli`` (torch included), from the ``src``
    folder ``source`` (default: this process's eoir)."""
    env = None if source is None else {**os.environ, "PYTHONPATH": source}
    run = subprocess.run(IMPORT, check=True, capture_output=True, text=True, env=env)
    return float(run.stdout)


def import_ab(before: str, rounds: int) -> None:
    """The import alone, a tree's ``src`` and this eoir alternately (below run-to-run noise)."""
    here = str(Path(eoir.__file__).parent.parent)
    for source in (before, here):
        compileall.compile_dir(str(Path(source) / "eoir"), quiet=1)
    pairs = [(import_seconds(before), import_seconds(here)) for _ in range(rounds)]
    faster = sum(after < first for first, after in pairs)
    print(
        f"import eoir.cli, {rounds} alternating rounds: {before} median "
        f"{statistics.median(p[0] for p in pairs):.3f} s, {here} median "
        f"{statistics.median(p[1] for p in pairs):.3f} s (faster in {faster} of {rounds})"
    )


def stage_phases(data: Path, repeats: int, affine: bool) -> None:
    """``eoir register``'s stages on pair 14 -> 13 of ``data`` with labels, with or without the
    affine stage (medians after a warm-up round)."""
    images, labels = data / "imagesTr", data / "labelsTr"
    fixed_path = images / "OASISTRT_0013_0000.nii.gz"
    moving_path = images / "OASISTRT_0014_0000.nii.gz"
    labels_path = labels / "OASISTRT_0014_0000.nii.gz"
    if not all(p.is_file() for p in (fixed_path, moving_path, labels_path)):
        print(f"skipped: the pair 14 -> 13 is not in {data}")
        return
    print(
        f"eoir from {Path(eoir.__file__).parent}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; {data.name} 14 -> 13{', --affine' if affine else ''}"
    )
    folder = Path(tempfile.mkdtemp(prefix="eoir-phases-"))
    outputs = [folder / name for name in ("w.nii.gz", "f.nii.gz", "l.nii.gz")]
    times: dict[str, list[float]] = {}

    def timed(name: str, function, *arguments):
        began = time.perf_counter()
        value = function(*arguments)
        times.setdefault(name, []).append(time.perf_counter() - began)
        return value

    def write(result, warped, warped_labels) -> None:
        with OutputSet(outputs, overwrite=True) as out:
            out.write_image(outputs[0], warped, result.fixed)
            out.write_field(outputs[1], result.disp, result.fixed, "itk")
            out.write_image(outputs[2], warped_labels, result.fixed)

    for round_ in range(repeats + 1):
        if round_ == 1:
            times.clear()
        times.setdefault("import eoir.cli (in a new process)", []).append(import_seconds())
        times.setdefault(TEARDOWN, []).append(teardown_seconds())
        model = timed("load the shipped model", load_model, "brain-mri", torch.device("cpu"))
        fixed = timed("read the fixed image (header)", read_image, fixed_path, "fixed image")
        moving = timed("read the moving image (header)", read_image, moving_path, "moving image")
        moving_labels = timed("read the moving labels", read_labels, labels_path, moving, "labels")
        net, settings = pipeline.configure(
            model, pipeline.Settings(affine=affine, device="cpu", progress=False)
        )
        pair = timed("decompress and normalise both", pipeline.prepare, fixed, moving, settings)
        world = timed("affine stage", pipeline.align, pair, settings)
        frame = pipeline.frame_for(net, fixed, settings)
        work = timed("both onto the working grid", pipeline.sample_pair, pair, world, settings,
                     frame)  # fmt: skip
        disp = timed("network", pipeline.predict, work, net, settings)
        result = timed("field on the fixed grid, affine folded in", pipeline.finish, pair, work,
                       disp, world, 0.0, {})  # fmt: skip
        timed("folding statistics", result.jacobian_stats)
        warped = timed("warp the moving image", result.warped)
        warped_labels = timed("warp the labels", result.warp_labels, moving_labels)
        timed("write image, field, labels (.nii.gz)", write, result, warped, warped_labels)
    cropped = " (cropped to the foreground)" if work.box is not None else ""
    print(f"working grid {tuple(work.fixed.shape[2:])}{cropped}")
    print("| phase | median s |")
    print("|---|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.3f} |")
    total = sum(statistics.median(v) for name, v in times.items() if name != TEARDOWN)
    print(f"| sum | {total:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--import-ab", metavar="SRC", help="only time the import against SRC")
    parser.add_argument("--native", action="store_true", help="the raw-scan path (--affine)")
    parser.add_argument("--stages", action="store_true", help="the aligned pair, stage by stage")
    args = parser.parse_args()
    if args.import_ab:
        import_ab(args.import_ab, max(args.repeats, 2))
        return
    if args.native or args.stages:
        default = "oasis-trt-20-native" if args.native else "oasis-trt-20"
        stage_phases(args.data or Path("../shared/data") / default, args.repeats, args.native)
        return
    args.data = args.data or Path("../shared/data/oasis-trt-20")
    images = args.data / "imagesTr"
    fixed_path = images / "OASISTRT_0013_0000.nii.gz"
    moving_path = images / "OASISTRT_0014_0000.nii.gz"
    if not (fixed_path.is_file() and moving_path.is_file()):
        print(f"skipped: {fixed_path} and {moving_path} are not there")
        return
    print(
        f"eoir from {Path(eoir.__file__).parent}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; OASIS-TRT-20 14 -> 13"
    )
    # bytecode compiled, as pip install leaves a package (see speed.end_to_end)
    compileall.compile_dir(str(Path(eoir.__file__).parent), quiet=1)
    folder = Path(tempfile.mkdtemp(prefix="eoir-phases-"))
    times: dict[str, list[float]] = {}

    def timed(name: str, function, *arguments, **options):
        began = time.perf_counter()
        value = function(*arguments, **options)
        times.setdefault(name, []).append(time.perf_counter() - began)
        return value

    def read_both() -> tuple:
        return read_image(fixed_path, "fixed image"), read_image(moving_path, "moving image")

    def normalise_both(fixed, moving) -> list:
        return [normalise(image.array) for image in (fixed, moving)]

    def write_field(result, path: Path) -> None:
        with OutputSet([path], overwrite=True) as outputs:
            outputs.write_field(path, result.disp, result.fixed, "itk")

    def write_image(result, array, path: Path) -> None:
        with OutputSet([path], overwrite=True) as outputs:
            outputs.write_image(path, array, result.fixed)

    for round_ in range(args.repeats + 1):
        if round_ == 1:
            times.clear()  # the first round warms up
        times.setdefault("import eoir.cli (in a new process)", []).append(import_seconds())
        times.setdefault(TEARDOWN, []).append(teardown_seconds())
        model = timed("load the shipped model", load_model, "brain-mri", torch.device("cpu"))
        fixed, moving = timed("read both images", read_both)
        timed("normalise both (also inside register)", normalise_both, fixed, moving)
        result = timed(
            "register (normalise, resample, network, field)", register, fixed, moving, model=model
        )
        timed("folding statistics", result.jacobian_stats)
        warped = timed("warp the moving image", result.warped)
        timed("write the field (.nii.gz)", write_field, result, folder / "field.nii.gz")
        timed("write the warped image (.nii.gz)", write_image, result, warped, folder / "w.nii.gz")
        timed("write the figure (.png)", result.figure, folder / "figure.png")
    print("| phase | median s |")
    print("|---|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.3f} |")
    field_mb = (folder / "field.nii.gz").stat().st_size / 1e6
    print(
        f"field file {field_mb:.1f} MB, warped image "
        f"{(folder / 'w.nii.gz').stat().st_size / 1e6:.2f} MB"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
