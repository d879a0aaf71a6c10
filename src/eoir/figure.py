"""A picture of a registration: images, differences, the deformed grid and the Jacobian.

One row per array axis (the middle slice across it; a 2-D registration has one row, the
image itself), seven panels: fixed, moving (on the fixed
grid, before registration), warped moving, |fixed - moving|, |fixed - warped|, the deformed grid
(the in-plane part of ``p + disp(p)``) and the Jacobian determinant (blue < 1 < red; black where
``J <= 0``).
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure

from eoir.spatial import jacobian_determinant

__all__ = ["registration_figure"]


def _display(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((x - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(x, dtype=float)


def registration_figure(
    path: str | os.PathLike,
    fixed: np.ndarray,
    moving: np.ndarray,
    warped: np.ndarray,
    disp: torch.Tensor,
    spacing: tuple[float, ...] = (1.0, 1.0, 1.0),
    title: str | None = None,
    grid_every: int = 4,
) -> None:
    """Write the registration figure as a PNG.

    Parameters
    ----------
    path : path
        Output PNG (written as given; wrap it in :class:`eoir.io.OutputSet` for atomicity).
    fixed, moving, warped : numpy.ndarray
        ``(X, Y, Z)`` (or ``(X, Y)``) images on the fixed grid (moving mapped by geometry
        only).
    disp : torch.Tensor
        ``(1, ndim, *spatial)`` displacement in fixed voxels.
    spacing : tuple of float
        Voxel size (mm) per array axis, for the aspect ratio.
    title : str, optional
        Figure title.
    grid_every : int
        Spacing of the drawn grid lines, voxels.
    """
    # one display range (the fixed image's robust one) for all three, so differences compare
    lo, hi = (float(v) for v in np.percentile(fixed, [0.5, 99.5]))
    f, m, w = (_display(np.asarray(a, dtype=float), lo, hi) for a in (fixed, moving, warped))
    d = disp.detach().double().cpu()
    jac = jacobian_determinant(d)[0].numpy()
    d = d[0].numpy()
    names = [
        "fixed",
        "moving",
        "warped",
        "|fixed - moving|",
        "|fixed - warped|",
        "deformed grid",
        "Jacobian det.",
    ]
    ndim = f.ndim
    # (slice, the two in-plane axes: rows, columns, row label) of each row of panels
    views = []
    for axis in range(ndim) if ndim == 3 else ():
        index: list[int | slice] = [slice(None)] * 3
        index[axis] = f.shape[axis] // 2
        plane = [k for k in range(3) if k != axis]
        views.append((tuple(index), plane, f"middle slice across axis {axis}"))
    if ndim == 2:  # shown as a picture is: the second axis down the rows
        views.append(((slice(None), slice(None)), [1, 0], "the image"))
    # a Figure of its own, no pyplot: the caller's backend and open figures are left alone
    fig = Figure(figsize=(21, max(4.2, 0.5 + 3.0 * len(views))))
    axes = fig.subplots(len(views), 7, squeeze=False)
    for axis, (index, plane, label) in enumerate(views):
        aspect = spacing[plane[0]] / spacing[plane[1]]

        def cut(a: np.ndarray, index=index, plane=plane) -> np.ndarray:
            """The view's plane of ``a``, rows along ``plane[0]``."""
            return a[index].T if plane[0] > plane[1] else a[index]

        panels = [cut(f), cut(m), cut(w), np.abs(cut(f) - cut(m)), np.abs(cut(f) - cut(w))]
        for col, image in enumerate(panels):
            ax = axes[axis, col]
            ax.imshow(image, cmap="gray", vmin=0, vmax=1, aspect=aspect, interpolation="nearest")
        ax = axes[axis, 5]
        ax.imshow(cut(f), cmap="gray", vmin=0, vmax=1, aspect=aspect, alpha=0.35)
        rows, cols = np.meshgrid(
            np.arange(cut(f).shape[0]), np.arange(cut(f).shape[1]), indexing="ij"
        )
        r = rows + cut(d[plane[0]])
        c = cols + cut(d[plane[1]])
        for i in range(0, r.shape[0], grid_every):
            ax.plot(c[i, :], r[i, :], color="tab:orange", linewidth=0.7)
        for j in range(0, r.shape[1], grid_every):
            ax.plot(c[:, j], r[:, j], color="tab:orange", linewidth=0.7)
        ax.set_xlim(-0.5, r.shape[1] - 0.5)
        ax.set_ylim(r.shape[0] - 0.5, -0.5)
        ax.set_aspect(aspect)
        ax = axes[axis, 6]
        shown = np.ma.masked_where(cut(jac) <= 0, cut(jac))
        cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="black")
        im = ax.imshow(shown, cmap=cmap, vmin=0, vmax=2, aspect=aspect, interpolation="nearest")
        if axis == 0:
            fig.colorbar(im, ax=axes[:, 6].tolist(), fraction=0.04, pad=0.02)
        for col in range(7):
            axes[axis, col].set_xticks([])
            axes[axis, col].set_yticks([])
            if axis == 0:
                axes[axis, col].set_title(names[col], fontsize=11)
        axes[axis, 0].set_ylabel(label, fontsize=10)
    if title:
        fig.suptitle(title, fontsize=13)
    fig.savefig(str(Path(path)), dpi=80, format="png")
