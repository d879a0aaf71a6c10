"""Reading landmark files (elastix point files, plain ``x y z`` rows)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from eoir.errors import InputError

__all__ = ["read_landmarks"]


def read_landmarks(path: str | os.PathLike) -> np.ndarray:
    """Read landmarks: an elastix point file (``point``/``index``, count, one point a line) or
    a plain text/CSV file of ``x y z`` rows.

    Parameters
    ----------
    path : path
        The landmark file. elastix ``point`` files hold world LPS mm; ``index`` files voxel
        indices.

    Returns
    -------
    numpy.ndarray
        ``(N, 3)`` coordinates as stored.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: landmark file not found")
    lines = [ln.replace(",", " ").split() for ln in p.read_text().splitlines() if ln.strip()]
    if lines and lines[0][0].lower() in ("point", "index"):
        count = int(lines[1][0])
        lines = lines[2 : 2 + count]
    try:
        points = np.array([[float(v) for v in ln[:3]] for ln in lines], dtype=float)
    except (ValueError, IndexError):
        raise InputError(f"{p}: not a landmark file (need x y z per line)") from None
    if points.ndim != 2 or points.shape[1] != 3 or len(points) == 0:
        raise InputError(f"{p}: not a landmark file (need x y z per line)")
    return points
