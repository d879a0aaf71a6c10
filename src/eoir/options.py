"""One lookup for every named option, with one error message.

Each option's choices are declared once, in one table beside the code that gives them meaning
(``PRECISIONS`` here; ``PRESETS`` in :mod:`eoir.registration.preprocess`, ``SIMILARITIES`` in
:mod:`eoir.losses.similarity`, ``FIELD_FORMATS`` in :mod:`eoir.io.fields`, ``INTERPOLATIONS``
in :mod:`eoir.spatial`, ...). Code reads a choice with :func:`look_up_option`; the command line
builds its ``choices`` from the same tables (MONAI's ``look_up_option`` is the model).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, TypeVar

import torch

from eoir.errors import OptionError

__all__ = ["PRECISIONS", "Precision", "look_up_option", "non_negative", "positive"]

V = TypeVar("V")

Precision = Literal["float32", "bfloat16", "float16"]
# arithmetic of the network's convolutions: the autocast dtype (None: no autocast)
PRECISIONS: dict[str, torch.dtype | None] = {
    "float32": None,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def look_up_option(option: str, value: object, table: Mapping[str, V]) -> V:
    """The entry of ``table`` chosen by ``value``.

    Parameters
    ----------
    option : str
        The option's name, for the message (``"precision"``).
    value : object
        The choice given.
    table : mapping
        The option's table: choice name -> what it means.

    Returns
    -------
    The table's entry for ``value``.

    Raises
    ------
    OptionError
        ``value`` is not one of the table's choices.

    Examples
    --------
    >>> look_up_option("precision", "bfloat16", PRECISIONS)
    torch.bfloat16
    >>> look_up_option("precision", "float64", PRECISIONS)
    Traceback (most recent call last):
    ...
    eoir.errors.OptionError: precision 'float64': choose one of float32, bfloat16, float16
    """
    if isinstance(value, str) and value in table:
        return table[value]
    raise OptionError(option, value, f"choose one of {', '.join(table)}")


def positive(option: str, value: int | None) -> int | None:
    """``value`` if it is None or an integer >= 1, else :class:`OptionError`."""
    if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
        raise OptionError(option, value, "must be 1 or more")
    return value


def non_negative(option: str, value: int | None) -> int | None:
    """``value`` if it is None or an integer >= 0, else :class:`OptionError`."""
    if value is not None and (isinstance(value, bool) or int(value) != value or value < 0):
        raise OptionError(option, value, "must be 0 or more")
    return value
