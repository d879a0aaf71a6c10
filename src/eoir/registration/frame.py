"""The network's training frame: images reoriented and resampled to what the model saw.

A model records the voxel axis codes (nibabel's, e.g. ``"ASL"``: the first voxel axis points
anterior, ...) and the voxel spacing of its training images (:mod:`eoir.nn.checkpoint`). Before
the forward pass the fixed grid is brought into that frame: its voxel axes permuted and flipped
to the model's axis order (exact: no interpolation), then resized (linear, corners aligned) so
that a voxel is as large as the model's training voxels times its resolution divisor. The
field predicted there is mapped back onto the fixed grid exactly: resized back and its axes and
components permuted and flipped back, so that the original moving image is still interpolated
once (:mod:`eoir.registration.resample`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

from eoir.image import Image, embedded

__all__ = ["Frame", "model_frame"]


@dataclass(frozen=True)
class Frame:
    """How the fixed grid's voxel axes map onto the model's.

    Attributes
    ----------
    order : tuple of int
        ``order[j]``: the fixed voxel axis that becomes the model's axis ``j``.
    flips : tuple of bool
        ``flips[i]``: whether fixed voxel axis ``i`` is reversed.
    shape : tuple of int
        The working grid's shape, in the model's axis order.
    """

    order: tuple[int, ...]
    flips: tuple[bool, ...]
    shape: tuple[int, ...]

    @property
    def reorients(self) -> bool:
        """Whether the axes are permuted or flipped at all."""
        return self.order != tuple(range(len(self.order))) or any(self.flips)

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *fixed_shape)`` image -> the same voxels in the model's axis order."""
        flipped = [2 + i for i, f in enumerate(self.flips) if f]
        if flipped:
            x = x.flip(flipped)
        return x.permute(0, 1, *(2 + i for i in self.order))

    def field_from_model(self, disp: torch.Tensor) -> torch.Tensor:
        """``(B, ndim, *model-ordered shape)`` displacement (voxels, model axes) -> the same
        field on the fixed voxel axes (components and spatial axes permuted and flipped)."""
        ndim = len(self.order)
        back = [0] * ndim
        for j, i in enumerate(self.order):
            back[i] = j
        spatial = disp.permute(0, 1, *(2 + back[i] for i in range(ndim)))
        components = [spatial[:, back[i]] for i in range(ndim)]
        components = [-c if self.flips[i] else c for i, c in enumerate(components)]
        out = torch.stack(components, 1)
        flipped = [2 + i for i, f in enumerate(self.flips) if f]
        return out.flip(flipped) if flipped else out


def model_frame(
    fixed: Image,
    axes: str | Sequence[str] | None,
    spacing: float | None,
    downsample: int,
) -> Frame:
    """The working grid of a model on ``fixed``.

    Parameters
    ----------
    fixed : Image
        The fixed grid.
    axes : str or None
        The model's voxel axis codes (``"ASL"``); None keeps the fixed image's axes.
    spacing : float or None
        The model's training voxel size (mm); None keeps the fixed image's.
    downsample : int
        The model's resolution divisor (the working voxel is ``downsample`` times larger).

    Returns
    -------
    Frame
        ``shape[j] = max(8, ceil(n * s / (spacing * downsample)))`` for the fixed axis of ``n``
        voxels of ``s`` mm that becomes the model's axis ``j`` (``ceil(n / downsample)`` for a
        fixed image already at the model's spacing, as without a frame).
    """
    ndim = fixed.ndim
    if axes is None or ndim != len(axes):
        order, flips = tuple(range(ndim)), (False,) * ndim
    else:
        affine = embedded(fixed.affine)  # a 2-D image's in-plane axes, as in 3-D
        transform = ornt_transform(io_orientation(affine)[:ndim], axcodes2ornt(tuple(axes)))
        order_list = [0] * ndim
        for i, (target, _) in enumerate(transform):
            order_list[int(target)] = i
        order = tuple(order_list)
        flips = tuple(bool(flip < 0) for _, flip in transform)
    sizes = []
    for i in order:
        n, s = fixed.shape[i], fixed.spacing[i]
        if spacing is None or abs(s - spacing) <= 0.05 * spacing:
            work = -(-n // downsample)  # at the model's spacing already: as without a frame
        else:
            work = int(np.ceil(n * s / (spacing * downsample) - 1e-6))
        sizes.append(max(min(8, n), work))
    return Frame(order, flips, tuple(sizes))
