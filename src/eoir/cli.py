"""The ``eoir`` command line.

Subcommands are added by the modules that implement them; this module only parses and dispatches.
Exit codes: 0 success, 2 bad usage or bad input (one line on stderr naming the problem).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from eoir import __version__
from eoir.complexity import count_multiply_adds, count_parameters
from eoir.model import EOIR


class UsageError(Exception):
    """Bad command-line input: reported as one line on stderr with exit code 2."""


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
        raise UsageError(str(err)) from None


def _run_info(args: argparse.Namespace) -> int:
    model = _model_from_args(args)
    shape = args.shape or ([160, 192, 224] if model.ndim == 3 else [256, 256])
    if len(shape) != model.ndim or min(shape) < 1:
        raise UsageError(f"--shape needs {model.ndim} positive sizes, got {shape}")
    macs = count_multiply_adds(model, shape)
    print(f"model: EOIR {model.config}")
    print(f"parameters: {count_parameters(model):,}")
    print(f"multiply-adds for one {'x'.join(map(str, shape))} pair: {macs / 1e9:,.2f} G")
    return 0


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``eoir`` command; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args))
    except UsageError as err:
        print(f"eoir {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
