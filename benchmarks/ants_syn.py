"""The benchmarks' ANTs SyN: one configuration, timed the same way by every script.

antspyx (optional: ``pip install -e ".[bench]"``), ``SyNOnly`` (the benchmark pairs are
pre-aligned), CC metric with radius 2, antspy's default SyN schedule 40x20x0 (shrink 4/2/1),
``threads`` ITK threads.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def available() -> bool:
    """Whether antspyx can be imported."""
    try:
        import ants  # noqa: F401
    except ImportError:
        return False
    return True


def register(fixed, moving, threads: int) -> tuple[float, dict]:
    """Run SyN on two ``ants`` images: (seconds of the registration alone, antspy's result)."""
    import ants

    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(threads)
    began = time.perf_counter()
    result = ants.registration(
        fixed,
        moving,
        type_of_transform="SyNOnly",
        syn_metric="CC",
        syn_sampling=2,
        reg_iterations=(40, 20, 0),
        initial_transform="Identity",
    )
    return time.perf_counter() - began, result


def warp_file(result: dict) -> str:
    """The forward displacement field file of a result."""
    return next(p for p in result["fwdtransforms"] if p.endswith(".nii.gz"))


def remove_files(result: dict) -> None:
    """Delete the transform files antspy wrote to the temporary folder."""
    for path in result["fwdtransforms"] + result["invtransforms"]:
        Path(path).unlink(missing_ok=True)
