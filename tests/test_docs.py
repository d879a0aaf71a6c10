"""The docstrings' examples run (doctest) on every module of the package."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

import eoir

SOURCE = Path(eoir.__file__).parent
MODULES = sorted(
    ".".join(["eoir", *p.relative_to(SOURCE).with_suffix("").parts]).removesuffix(".__init__")
    for p in SOURCE.rglob("*.py")
    if p.name != "__main__.py"
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


def test_the_public_functions_a_user_calls_first_have_examples():
    for function in (
        eoir.register,
        eoir.warp,
        eoir.integrate,
        eoir.compose,
        eoir.jacobian_stats,
        eoir.load_model,
        eoir.EOIR,
        eoir.dice_per_label,
        eoir.field_to_world,
        eoir.read_image,
    ):
        assert ">>> " in (function.__doc__ or ""), f"{function.__qualname__} has no example"
