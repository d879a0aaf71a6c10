"""The ``eoir`` command line.

Subcommands are added by the modules that implement them; this module only parses and dispatches.
Exit codes: 0 success; 1 some pairs of ``eoir register --pairs`` failed (their rows in
``summary.csv`` say why; the others were written); 2 bad usage or bad input (one line on stderr
naming the problem; nothing written); 130 interrupted (Ctrl-C), 143 terminated (SIGTERM): the
outputs in progress are removed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import sys
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import numpy as np

from eoir._version import __version__
from eoir.errors import InputError, OptionError, reason
from eoir.io import (
    FIELD_FORMATS,
    SPLITS,
    TRANSFORM_SUFFIXES,
    WRITABLE_SUFFIXES,
    OutputSet,
    check_field_target,
    check_image_target,
    read_field,
    read_image,
    read_labels,
    read_transform,
)
from eoir.losses import SIMILARITIES
from eoir.metrics import determinant_stats
from eoir.nn import EOIR, count_multiply_adds, count_parameters
from eoir.options import PRECISIONS, positive
from eoir.registration.affine import AFFINE_MODELS
from eoir.registration.pipeline import OPTIMIZE_TARGETS
from eoir.registration.preprocess import PRESETS
from eoir.registration.resample import warp_image
from eoir.runtime import DEVICE_TYPES
from eoir.spatial import jacobian_determinant
from eoir.training.config import recipe_names

# options whose command-line flag is not "--" + the option's name with "-" for "_"
_FLAGS = {"overrides": "--set", "labels": "--moving-labels", "json": "--json"}


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model architecture")
    group.add_argument("--ndim", type=int, choices=(2, 3), default=3, help="2D or 3D (default 3)")
    group.add_argument("--width", type=int, default=32, help="encoder width N_s (default 32)")
    group.add_argument("--levels", type=int, default=5, help="pyramid levels (default 5)")
    group.add_argument(
        "--integration-steps", type=int, default=7, help="scaling-and-squaring steps, 0 = off"
    )
    group.add_argument(
        "--additive", action="store_true", help="add residuals instead of composing them"
    )
    group.add_argument(
        "--oasis", action="store_true", help="the OASIS variant: LK blocks, 4 levels from 1/2 res"
    )
    group.add_argument(
        "--factors", type=int, nargs="+", help="per-axis pyramid factors, e.g. 2 2 1 (default 2)"
    )


def _model_from_args(args: argparse.Namespace) -> EOIR:
    kwargs = {
        "ndim": args.ndim,
        "width": args.width,
        "integration_steps": args.integration_steps,
        "composition": "add" if args.additive else "compose",
        "factors": args.factors if args.factors else 2,
    }
    try:
        if args.oasis:
            return EOIR.oasis(**kwargs)
        return EOIR(levels=args.levels, **kwargs)
    except ValueError as err:
        raise InputError(str(err)) from None


def _run_info(args: argparse.Namespace) -> int:
    model = _model_from_args(args)
    shape = args.shape or ([160, 192, 224] if model.ndim == 3 else [256, 256])
    if len(shape) != model.ndim or min(shape) < 1:
        raise InputError(f"--shape needs {model.ndim} positive sizes, got {shape}")
    macs = count_multiply_adds(model, shape)
    print(f"model: EOIR {model.config}")
    print(f"parameters: {count_parameters(model):,}")
    print(f"multiply-adds for one {'x'.join(map(str, shape))} pair: {macs / 1e9:,.2f} G")
    return 0


def _register_options(args: argparse.Namespace, ndim: int = 3) -> dict:
    """The ``eoir.register`` options of the command line (single and batch alike).

    ``--model`` defaults to the shipped ``brain-mri`` for 3-D images with ``--preset mri`` and
    to none (instance optimisation alone) otherwise (2-D images: no 2-D model is shipped);
    ``args.model`` is set to the choice for the summary.
    """
    if args.model is None:
        args.model = "brain-mri" if args.preset == "mri" and ndim == 3 else "none"
    return {
        "model": None if args.model == "none" else args.model,
        "optimize_steps": args.optimize_steps,
        "optimize_target": args.optimize_target,
        "affine": args.affine,
        "optimize_options": {} if args.similarity is None else {"similarity": args.similarity},
        "preset": args.preset,
        "downsample": args.downsample,
        "device": args.device,
        "precision": args.precision,
        "progress": not args.quiet,
    }


def _run_register_pairs(args: argparse.Namespace) -> int:
    from eoir.registration.batch import read_pairs, register_pairs

    single = [args.fixed, args.moving, args.warped, args.field, args.figure, args.json_path]
    single += [args.inverse_field, args.initial_transform, args.affine_out]
    if any(v is not None for v in single) or args.moving_labels or args.fixed_labels:
        raise InputError("--pairs takes the place of --fixed/--moving and their outputs")
    if args.out_dir is None:
        raise InputError("--pairs needs --out-dir")
    positive("nproc", args.nproc)
    if args.nproc > 1:
        code = _relaunch(args.nproc, args.argv)
        if code == 0:  # the processes exit 0 when pairs failed: the summary says which
            with open(Path(args.out_dir) / "summary.csv", newline="") as summary:
                failed = sum(row["status"] == "failed" for row in csv.DictReader(summary))
            code = 1 if failed else 0
        return code
    jobs = read_pairs(args.pairs, args.split)
    ndim = 3
    if args.model is None and jobs:  # the default model follows the images' dimension
        try:
            ndim = read_image(jobs[0].fixed, "fixed image").ndim
        except InputError:
            pass  # that pair fails in its turn, with its own line
    rows = register_pairs(
        jobs,
        args.out_dir,
        field_format=args.field_format,
        overwrite=args.overwrite,
        skip_existing=args.skip_existing,
        **_register_options(args, ndim),
    )
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    counts = {status: sum(r["status"] == status for r in rows) for status in ("failed", "skipped")}
    line = f"registered {len(rows) - sum(counts.values())} pairs into {args.out_dir}"
    line += "".join(f", {n} {status}" for status, n in counts.items() if n)
    print(line + " (summary.csv)")
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return 1 if counts["failed"] and not distributed else 0


def _run_register(args: argparse.Namespace) -> int:
    from eoir.registration import dice_before_after, register

    if args.pairs is not None:
        return _run_register_pairs(args)
    if args.fixed is None or args.moving is None:
        raise InputError("give --fixed and --moving (or --pairs FILE --out-dir DIR)")
    if (args.moving_labels is None) != (args.warped_labels is None):
        raise InputError("--moving-labels and --warped-labels go together")
    if args.json_path is not None and not args.json_path.endswith(".json"):
        raise InputError(f"{args.json_path}: the --json output must end in .json")
    images = [args.warped, args.field, args.warped_labels, args.inverse_field]
    for target in (args.warped, args.warped_labels):
        if target is not None and not target.lower().endswith(WRITABLE_SUFFIXES):
            raise InputError(
                f"{target}: unsupported image output type; use one of "
                f"{', '.join(WRITABLE_SUFFIXES)}"
            )
    if args.figure is not None and not args.figure.endswith(".png"):
        raise InputError(f"{args.figure}: the --figure output must end in .png")
    if args.affine_out is not None and not args.affine_out.lower().endswith(TRANSFORM_SUFFIXES):
        raise InputError(
            f"{args.affine_out}: the --affine-out transform is written as "
            f"{', '.join(TRANSFORM_SUFFIXES)}"
        )
    # check every output before any work, so a bad path fails at once and writes nothing
    outputs = OutputSet(
        [*images, args.json_path, args.figure, args.affine_out],
        args.overwrite,
        suffixes=(*WRITABLE_SUFFIXES, *TRANSFORM_SUFFIXES, ".json", ".png"),
        inputs=[
            args.fixed,
            args.moving,
            args.moving_labels,
            args.fixed_labels,
            args.initial_transform,
        ],
    )
    for target in (args.field, args.inverse_field):
        if target is not None:
            check_field_target(target, args.field_format)
    if args.fixed_labels is not None and args.moving_labels is None:
        raise InputError("--fixed-labels needs --moving-labels to measure Dice")
    # every input read and checked before the registration runs
    fixed, moving = read_image(args.fixed, "fixed image"), read_image(args.moving, "moving image")
    labels = fixed_labels = None
    if args.moving_labels is not None:
        labels = read_labels(args.moving_labels, moving, "moving labels")
    if args.fixed_labels is not None:
        fixed_labels = read_labels(args.fixed_labels, fixed, "fixed labels")
    # and every output's format against what it will hold
    for target in (args.field, args.inverse_field):
        if target is not None:
            check_field_target(target, args.field_format, fixed.ndim)
    if args.warped is not None:
        check_image_target(args.warped, fixed.ndim, moving.array.dtype, "warped image")
    if labels is not None:
        check_image_target(args.warped_labels, fixed.ndim, labels.array.dtype, "label map")
    options = _register_options(args, fixed.ndim)
    model = options["model"]
    if args.initial_transform is not None:
        options["initial_transform"] = read_transform(args.initial_transform, fixed.ndim)
    result = register(fixed, moving, **options)
    dice = None
    if fixed_labels is not None:
        dice = dice_before_after(result, fixed_labels, labels)
    stats = result.jacobian_stats()
    summary = {
        "fixed": args.fixed,
        "moving": args.moving,
        "seconds": round(result.seconds, 3),
        "affine": args.affine,
        "model": args.model,
        "optimize_steps": result.info["optimize_steps"],
        "preset": args.preset,
        "folding_percent": stats["folding_percent"],
        "sdlogj": stats["sdlogj"],
        "dice_before": None if dice is None else dice[0],
        "dice_after": None if dice is None else dice[1],
        "warnings": result.info["warnings"],
        "outputs": {
            "warped": args.warped,
            "field": args.field,
            "warped_labels": args.warped_labels,
            "inverse_field": args.inverse_field,
            "affine_out": args.affine_out,
        },
    }
    with outputs:
        result.write(
            outputs,
            args.warped,
            args.field,
            args.field_format,
            labels,
            args.warped_labels,
            args.figure,
            title=f"{args.moving} -> {args.fixed}",
            inverse_field=args.inverse_field,
            affine_out=args.affine_out,
        )
        if args.json_path is not None:
            outputs.temp(args.json_path).write_text(json.dumps(summary, indent=2) + "\n")
    for message in result.info["warnings"]:  # after the outputs: a failure prints one line
        print(f"eoir register: warning: {message}", file=sys.stderr)
    stages = ["initial transform"] if args.initial_transform else []
    stages += [args.affine] if args.affine else []
    stages += [f"model {model}"] if model else []
    steps = result.info["optimize_steps"]
    if steps:
        target = "fine-tuning steps" if args.optimize_target == "weights" else "optimisation steps"
        stages.append(f"{steps} {target}")
    how = " + ".join(stages) or "identity"
    line = f"registered {args.moving} -> {args.fixed} in {result.seconds:.1f} s ({how})"
    if dice is not None:
        line += f"; Dice {dice[0]:.3f} -> {dice[1]:.3f}"
    line += f"; folding {stats['folding_percent']:.3f} %, SDlogJ {stats['sdlogj']:.3f}"
    print(line)
    return 0


def _run_apply(args: argparse.Namespace) -> int:
    outputs = OutputSet([args.out], args.overwrite, inputs=[args.field, args.moving])
    disp, grid = read_field(args.field)
    moving = read_image(args.moving, "moving image")
    check_image_target(args.out, grid.ndim, moving.array.dtype, "warped image")
    warped = warp_image(moving, grid, disp, mode="nearest" if args.nearest else "bilinear")
    with outputs:
        outputs.write_image(args.out, warped, grid)
    print(f"wrote {args.out} ({'nearest' if args.nearest else 'linear'}, grid {grid.shape})")
    return 0


def _run_jacobian(args: argparse.Namespace) -> int:
    outputs = OutputSet([args.out], args.overwrite, inputs=[args.field])
    disp, grid = read_field(args.field)
    det = jacobian_determinant(disp.double())[0]
    stats = determinant_stats(det)
    print(
        f"{args.field}: folding {stats['folding_percent']:.4f} % of voxels (|J| <= 0), "
        f"SDlogJ {stats['sdlogj']:.4f} (log(J+3), Learn2Reg), std log J {stats['std_log_j']:.4f}"
    )
    if args.out is not None:
        with outputs:
            outputs.write_image(args.out, det.numpy().astype(np.float32), grid)
    return 0


def _relaunch(nproc: int, argv: Sequence[str]) -> int:
    """Run this command again under torch.distributed.run with ``nproc`` processes."""
    import subprocess

    args = list(argv)
    i = args.index("--nproc")
    del args[i : i + 2]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "eoir",
        *args,
    ]
    return subprocess.run(command, check=False).returncode


def _run_train(args: argparse.Namespace) -> int:
    from eoir.training.config import load_config
    from eoir.training.train import train

    positive("nproc", args.nproc)
    if args.nproc > 1:
        return _relaunch(args.nproc, args.argv)
    if args.recipe and args.config:
        raise InputError("give --recipe or --config, not both (--set overrides either)")
    overrides = [*args.set, *([f"train.init={args.init}"] if args.init else [])]
    config = load_config(args.recipe, args.config, overrides)
    result = train(
        args.dataset,
        args.out,
        config,
        resume=args.resume,
        overwrite=args.overwrite,
        device=args.device,
        max_steps=args.max_steps,
        progress=not args.quiet,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        best = result["best"]
        score = "no validation pairs" if best is None else f"best validation {best:.4f}"
        print(
            f"trained {result['step']} steps into {args.out} ({result['seconds']:.0f} s; {score})"
        )
    return 0


def _run_evaluate(args: argparse.Namespace) -> int:
    from eoir.training.evaluate import evaluate

    positive("nproc", args.nproc)
    if args.nproc > 1:
        return _relaunch(args.nproc, args.argv)
    model = None if args.model == "none" else args.model
    evaluate(
        args.dataset,
        model,
        args.out,
        split=args.split,
        labels_csv=args.labels_out,
        save_fields=args.save_fields,
        optimize_steps=args.optimize_steps,
        device=args.device,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from eoir.demo import demo

    demo(args.out, optimize_steps=args.optimize_steps)
    return 0


_DEVICE_HELP = (
    f"{', '.join(DEVICE_TYPES)} or cuda:N (default auto: the GPU when CUDA is available, "
    "else the CPU; cpu forces the CPU)"
)


def _flag(parser: argparse.ArgumentParser, option: str) -> str | None:
    """The command's flag for a library option (``optimize_steps`` -> ``--optimize-steps``)."""
    flag = _FLAGS.get(option, "--" + option.replace("_", "-"))
    return flag if flag in parser._option_string_actions else None


def one_line(err: InputError, parser: argparse.ArgumentParser) -> str:
    """A library error as the command prints it: the command's flags in place of the library's
    argument names where the error is about an option."""
    if isinstance(err, OptionError) and (flag := _flag(parser, err.option)):
        return f"{flag} {err.value}: {err.problem}"
    if err.switches:
        flags = [_flag(parser, s) or s for s in err.switches]
        return f"{err.message}; pass {' or '.join(flags)}"
    return str(err)


def build_parser() -> argparse.ArgumentParser:
    """The ``eoir`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="eoir",
        description=(
            "EOIR: encoder-only deformable image registration for 2D and 3D medical images. "
            "Fields are displacements in voxel units of the fixed grid, "
            "warped(p) = moving(p + disp(p))."
        ),
    )
    parser.add_argument("--version", action="version", version=f"eoir {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = commands.add_parser(
        "info",
        help="parameters and multiply-adds of an EOIR architecture",
        description="Print the parameter count and the convolution multiply-adds of one "
        "registration (one image pair) for an EOIR architecture and input size.",
    )
    _add_model_arguments(info)
    info.add_argument(
        "--shape", type=int, nargs="+", help="input size (default 160 192 224, or 256 256 in 2D)"
    )
    info.set_defaults(func=_run_info)

    dm = commands.add_parser(
        "demo",
        help="register a real brain scan to a known deformation of itself; write a figure",
        description="Needs no download: deforms the small T1 brain scan nibabel ships with a "
        "random smooth diffeomorphism, registers it back, prints the time and the error against "
        "the known deformation, and writes the images, the field and figure.png into --out.",
    )
    dm.add_argument("--out", default="eoir-demo", help="output folder (default ./eoir-demo)")
    dm.add_argument("--optimize-steps", type=int, help="instance-optimisation steps")
    dm.set_defaults(func=_run_demo)

    reg = commands.add_parser(
        "register",
        help="register a moving image to a fixed image and write the results",
        description="Register MOVING to FIXED (any formats nibabel/SimpleITK read; the moving "
        "image may be on any grid). Outputs are on the fixed grid with its header; the warped "
        "image keeps the moving intensities and type. The field maps fixed to moving and "
        "includes the affine part.",
    )
    reg.add_argument("--fixed", help="fixed image (or DICOM folder)")
    reg.add_argument("--moving", help="moving image (or DICOM folder)")
    reg.add_argument(
        "--pairs",
        help="instead of --fixed/--moving: many pairs from a CSV (fixed,moving[,moving_labels]) "
        "or a Learn2Reg dataset.json (its --split pairs); outputs go to --out-dir",
    )
    reg.add_argument("--out-dir", help="with --pairs: folder for each pair's outputs")
    reg.add_argument("--split", choices=list(SPLITS), default="val", help="with --pairs JSON")
    reg.add_argument("--nproc", type=int, default=1, help="with --pairs: processes sharing them")
    reg.add_argument(
        "--skip-existing",
        action="store_true",
        help="with --pairs: skip the pairs whose outputs all exist (a rerun after failures)",
    )
    reg.add_argument("--warped", help="output: the moving image warped onto the fixed grid")
    reg.add_argument("--field", help="output: the displacement field")
    reg.add_argument(
        "--field-format",
        choices=list(FIELD_FORMATS),
        default="itk",
        help="itk: 5-D NIfTI/vector image in LPS mm for ANTs/ITK/Slicer (default); "
        "l2r: Learn2Reg voxel field (X, Y, Z, 3)",
    )
    reg.add_argument(
        "--inverse-field",
        help="output: the inverse field, on the moving grid (maps it to the fixed image: "
        "eoir apply warps fixed-space images and atlas labels onto the moving image with it); "
        "same --field-format",
    )
    reg.add_argument("--moving-labels", help="a label map on the moving grid to warp")
    reg.add_argument("--warped-labels", help="output: the warped label map (nearest neighbour)")
    reg.add_argument("--fixed-labels", help="fixed label map: report Dice before and after")
    reg.add_argument(
        "--model",
        help="a checkpoint, the name of a shipped model, or none (instance optimisation alone); "
        "default: the shipped brain-mri model with --preset mri, else none",
    )
    reg.add_argument(
        "--optimize-steps",
        type=int,
        help="instance-optimisation steps refining the field on this pair "
        "(default 0 with --model, else 150)",
    )
    reg.add_argument(
        "--optimize-target",
        choices=list(OPTIMIZE_TARGETS),
        default="field",
        help="what the optimisation steps refine: the field itself (default) or a copy of the "
        "model's weights (needs --model)",
    )
    reg.add_argument(
        "--affine",
        nargs="?",
        const="affine",
        default=False,
        choices=list(AFFINE_MODELS),
        help="align first: affine (the default with a bare --affine) or rigid; moments, then "
        "a 4 -> 2 mm optimisation",
    )
    reg.add_argument(
        "--similarity",
        choices=list(SIMILARITIES),
        help="ncc (one contrast, default); for different contrasts (T2 to T1, CT to MR) mind "
        "(MIND-SSC in optimisation steps) or mi (mutual information), both aligning the affine "
        "stage by mutual information and setting aside a network trained on one contrast "
        "(brain-mri): optimisation steps instead; mse for optimisation steps",
    )
    reg.add_argument(
        "--initial-transform",
        help="a starting alignment: an ITK transform (.tfm/.txt) or ANTs .mat mapping fixed to "
        "moving (as antsApplyTransforms applies it); --affine starts from it, else it is used",
    )
    reg.add_argument(
        "--affine-out",
        help="output: the linear part (affine stage or --initial-transform) as an ITK "
        "transform (.tfm/.txt) or ANTs .mat, for antsApplyTransforms, SimpleITK and 3D Slicer",
    )
    reg.add_argument(
        "--preset",
        choices=list(PRESETS),
        default="mri",
        help="intensity normalisation: mri (robust min-max), ct (HU -500..800, abdomen), "
        "lung (HU -1000..200), none (default mri)",
    )
    reg.add_argument(
        "--downsample",
        type=int,
        help="register at 1/N resolution (default: the model's training resolution, else 1)",
    )
    reg.add_argument("--device", default="auto", help=_DEVICE_HELP)
    reg.add_argument(
        "--precision",
        choices=list(PRECISIONS),
        default="float32",
        help="network arithmetic: bfloat16 is faster on recent CPUs and GPUs, float16 on GPUs "
        "(fields and warps stay float32; default float32)",
    )
    reg.add_argument("--json", dest="json_path", help="output: the summary as JSON")
    reg.add_argument(
        "--figure", help="output: a PNG of middle slices (images, differences, grid, Jacobian)"
    )
    reg.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    reg.add_argument(
        "--quiet", action="store_true", help="no progress lines (errors and results still print)"
    )
    reg.set_defaults(func=_run_register)

    apply = commands.add_parser(
        "apply",
        help="warp an image or label map with a saved field",
        description="Warp an image (or, with --nearest, a label map) with a displacement field "
        "saved by eoir, ANTs or ITK (itk format) or for Learn2Reg (l2r); the format is detected.",
    )
    apply.add_argument("--field", required=True, help="displacement field file")
    apply.add_argument("--moving", required=True, help="image or label map to warp")
    apply.add_argument("--out", required=True, help="output on the field's (fixed) grid")
    apply.add_argument("--nearest", action="store_true", help="nearest neighbour (label maps)")
    apply.add_argument("--overwrite", action="store_true", help="replace an existing output")
    apply.set_defaults(func=_run_apply)

    jac = commands.add_parser(
        "jacobian",
        help="folding and SDlogJ of a saved field; optionally the determinant map",
        description="Print the % of voxels with |J| <= 0 and SDlogJ of a displacement field; "
        "--out writes the Jacobian determinant map.",
    )
    jac.add_argument("--field", required=True, help="displacement field file")
    jac.add_argument("--out", help="output: the Jacobian determinant map")
    jac.add_argument("--overwrite", action="store_true", help="replace an existing output")
    jac.set_defaults(func=_run_jacobian)

    tr = commands.add_parser(
        "train",
        help="train an EOIR model on a dataset (Learn2Reg dataset.json or a folder)",
        description="Train with the multi-level loss (Dice supervision when label maps exist). "
        "RUN_DIR receives config.yaml, last.pt, best.pt, metrics.csv and TensorBoard scalars. "
        "Several processes: --nproc N, or torchrun --nproc_per_node N -m eoir train ...",
    )
    tr.add_argument("--dataset", required=True, help="dataset.json or a folder of images")
    tr.add_argument("--out", required=True, help="run folder")
    tr.add_argument("--recipe", help="a shipped recipe: " + ", ".join(recipe_names()))
    tr.add_argument("--config", help="your own YAML config (any subset of the keys)")
    tr.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one key, e.g. --set optim.lr=2e-4 (repeatable)",
    )
    tr.add_argument(
        "--init",
        metavar="MODEL",
        help="start from a checkpoint's or a shipped model's weights (sets train.init)",
    )
    tr.add_argument("--max-steps", type=int, help="stop after N optimizer steps in all")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out")
    tr.add_argument("--overwrite", action="store_true", help="replace a run in --out")
    tr.add_argument("--device", default="auto", help=_DEVICE_HELP)
    tr.add_argument("--nproc", type=int, default=1, help="processes (DDP, gloo/nccl)")
    tr.add_argument(
        "--quiet", action="store_true", help="no progress lines (errors and results still print)"
    )
    tr.set_defaults(func=_run_train)

    ev = commands.add_parser(
        "evaluate",
        help="register and score every pair of a dataset split",
        description="Register each validation (or test) pair at full resolution and write one "
        "row per pair (Dice, Dice per label group, HD95, %|J|<=0, SDlogJ, seconds) and Dice per "
        "label to a second CSV; prints mean +- sd.",
    )
    ev.add_argument("--dataset", required=True, help="dataset.json or a folder of images")
    ev.add_argument(
        "--model",
        default="brain-mri",
        help="a checkpoint, the name of a shipped model, or none for no registration "
        "(default: the shipped brain-mri model)",
    )
    ev.add_argument("--split", choices=list(SPLITS), default="val")
    ev.add_argument("--out", required=True, help="results CSV (one row per pair)")
    ev.add_argument("--labels-out", help="Dice per label CSV (default: OUT_labels.csv)")
    ev.add_argument("--save-fields", help="folder for Learn2Reg displacement files")
    ev.add_argument("--optimize-steps", type=int, default=0, help="instance optimisation steps")
    ev.add_argument("--device", default="auto", help=_DEVICE_HELP)
    ev.add_argument("--nproc", type=int, default=1, help="processes sharing the pairs")
    ev.add_argument("--overwrite", action="store_true", help="replace existing CSVs")
    ev.add_argument(
        "--quiet", action="store_true", help="no progress lines (errors and results still print)"
    )
    ev.set_defaults(func=_run_evaluate)
    return parser


# one-pair commands whose process may end without Python's teardown (see :func:`run`)
_QUICK_EXIT = frozenset({"info", "register", "apply", "jacobian"})


def run() -> NoReturn:
    """The ``eoir`` program (its console script and ``python -m eoir``): :func:`main`, then
    the process's exit.

    A one-pair command (``info``, ``register`` without ``--pairs``, ``apply``, ``jacobian``)
    has closed and renamed every output when it returns; its process then ends at once
    (``os._exit``, after flushing stdout and stderr) instead of through Python's teardown,
    which spends about 0.5 s unloading torch: a tenth of a registration of raw scans
    (``benchmarks/register_phases.py --native``, "Python's teardown"). Other commands
    (training's data workers and TensorBoard files, batches under torch.distributed) exit
    normally, as does every command under a profiler, a tracer or coverage (they write their
    results at exit).
    """
    parser, args = _parse(sys.argv[1:])
    code = _execute(parser, args)
    watched = sys.getprofile() or sys.gettrace() or "coverage" in sys.modules
    if args.command in _QUICK_EXIT and getattr(args, "pairs", None) is None and not watched:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe (`eoir ... | head`): nothing to lose
                pass
        os._exit(code)
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``eoir`` command; returns the process exit code."""
    return _execute(*_parse(sys.argv[1:] if argv is None else argv))


def _parse(argv: Sequence[str]) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """The parser and the parsed arguments (``args.argv``: the words given)."""
    parser = build_parser()
    args = parser.parse_args(list(argv))
    args.argv = list(argv)
    return parser, args


def _execute(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run the parsed command; returns the exit code (one line on stderr for an error)."""
    if args.command is None:
        parser.print_help()
        return 0
    command = parser._subparsers._group_actions[0].choices[args.command]
    previous = _on_terminate()
    try:
        with warnings.catch_warnings():
            # the commands report eoir's own warnings on stderr themselves
            warnings.filterwarnings("ignore", message=".*(registered as identity|one contrast)")
            return int(args.func(args))
    except InputError as err:
        return _fail(args.command, f"error: {one_line(err, command)}", 2)
    except KeyboardInterrupt:  # outputs not yet in place were removed on the way out
        return _fail(args.command, "interrupted (outputs in progress removed)", 130)
    except _Terminated:
        return _fail(args.command, "terminated (outputs in progress removed)", 143)
    except MemoryError:
        return _fail(args.command, "error: out of memory (try a smaller image or --downsample)", 2)
    except OSError as err:  # a full disk, a file that vanished: the file and the reason
        where = f"{err.filename}: " if err.filename else ""
        return _fail(args.command, f"error: {where}{err.strerror or reason(err)}", 2)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread so that outputs in progress are cleaned up (a
    BaseException, as KeyboardInterrupt: no ``except Exception`` on the way swallows it)."""


def _on_terminate():
    """Turn SIGTERM into :class:`_Terminated` (main thread only); returns the old handler."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise _Terminated()

    return signal.signal(signal.SIGTERM, handler)


def _fail(command: str, message: str, code: int) -> int:
    print(f"eoir {command}: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    run()
