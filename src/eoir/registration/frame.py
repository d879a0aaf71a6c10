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

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

from eoir.image import Image, embedded

__all__ = ["CROP_LEVEL", "CROP_MARGIN", "CROP_WORTH", "Frame", "foreground_box", "model_frame",
           "paste"]  # fmt: skip

# the working grid is cropped to the images' foreground when that pays (raw scans: a head fills a
# quarter of a 256x256x160 box): a voxel is foreground above this share of its image's range,
CROP_LEVEL = 0.1
# the box keeps this many working voxels of context on every side (the network's view of the
# surroundings; the field outside is the box's edge values),
CROP_MARGIN = 8
# and it is used only when it keeps at most this share of the working grid's voxels
CROP_WORTH = 0.8


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

    def voxels(self, fixed_shape: Sequence[int]) -> np.ndarray:
        """The ``(ndim+1, ndim+1)`` matrix from working-grid voxels to fixed voxels.

        The working grid is the fixed grid reordered (:meth:`to_model`) and resized with
        corners aligned to :attr:`shape`: working voxel ``j`` along model axis ``k`` is fixed
        voxel ``j (N - 1) / (n - 1)`` along fixed axis ``order[k]`` (of ``N`` voxels), counted
        from the far end when that axis is flipped.
        """
        ndim = len(self.order)
        matrix = np.zeros((ndim + 1, ndim + 1))
        matrix[ndim, ndim] = 1.0
        for k, i in enumerate(self.order):
            big, small = int(fixed_shape[i]), int(self.shape[k])
            step = (big - 1) / (small - 1) if small > 1 else 0.0
            matrix[i, k] = -step if self.flips[i] else step
            matrix[i, ndim] = big - 1 if self.flips[i] else 0.0
        return matrix

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


def foreground_box(
    *images: torch.Tensor,
    level: float = CROP_LEVEL,
    margin: int = CROP_MARGIN,
    worth: float = CROP_WORTH,
) -> tuple[slice, ...] | None:
    """The box of the working grid that holds the images' foreground, with a margin.

    A voxel is foreground in an image above ``min + level * (max - min)``; the box spans the
    slices (along each axis) that hold at least 0.02 % of the foreground voxels of the images
    together (so a stray bright voxel does not widen it), plus ``margin`` voxels on every side,
    clipped to the grid.

    Parameters
    ----------
    *images : torch.Tensor
        ``(1, 1, *shape)`` images on one grid (the fixed image and the moving one sampled onto
        it).
    level : float
        Foreground threshold, a share of each image's intensity range.
    margin : int
        Voxels kept around the foreground.
    worth : float
        The box is returned only when it holds at most this share of the grid's voxels.

    Returns
    -------
    tuple of slice or None
        One slice per spatial axis, or None: no foreground, or a box not worth cropping to.
    """
    shape = tuple(images[0].shape[2:])
    mask = torch.zeros(shape, dtype=torch.bool, device=images[0].device)
    for image in images:
        low, high = image.amin(), image.amax()
        mask |= image[0, 0] > low + level * (high - low)
    total = int(mask.sum())
    if total == 0:
        return None
    box = []
    for axis, n in enumerate(shape):
        profile = mask.sum(dim=[d for d in range(len(shape)) if d != axis])
        held = torch.nonzero(profile > 2e-4 * total).flatten()
        if held.numel() == 0:
            return None
        low = max(0, int(held[0]) - margin)
        high = min(n, int(held[-1]) + 1 + margin)
        least = min(8, n)  # as small as a working grid may be
        if high - low < least:
            high = min(n, low + least)
            low = high - least
        box.append(slice(low, high))
    kept = math.prod(s.stop - s.start for s in box)
    return tuple(box) if kept <= worth * math.prod(shape) else None


def paste(disp: torch.Tensor, box: tuple[slice, ...] | None, shape: Sequence[int]) -> torch.Tensor:
    """A field computed in ``box`` extended onto the whole working grid ``shape``: outside the
    box each voxel takes the value of the box's nearest edge voxel (continuous, no folding).

    Parameters
    ----------
    disp : torch.Tensor
        ``(B, ndim, *box_shape)`` displacement, working voxels.
    box : tuple of slice or None
        Where it lies in the grid (:func:`foreground_box`); None: ``disp`` is the whole grid.
    shape : sequence of int
        The working grid's shape.

    Returns
    -------
    torch.Tensor
        ``(B, ndim, *shape)``.
    """
    if box is None:
        return disp
    pad: list[int] = []
    for part, n in reversed(list(zip(box, shape, strict=True))):
        pad += [part.start, int(n) - part.stop]
    return F.pad(disp, pad, mode="replicate")
