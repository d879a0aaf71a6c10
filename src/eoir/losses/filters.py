"""Filters the losses are built from: box (windowed mean) and Gaussian filters, image pyramids.

All take ``(B, C, *spatial)`` tensors, 2-D or 3-D.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["box_filter", "gaussian_blur", "pyramid"]


def _pool(ndim: int):
    return F.avg_pool3d if ndim == 3 else F.avg_pool2d


def box_filter(x: torch.Tensor, window: int) -> torch.Tensor:
    """Windowed mean, separable, zero padded, constant divisor ``window**ndim`` at borders.

    Parameters
    ----------
    x : torch.Tensor
        ``(B, C, *spatial)``.
    window : int
        Odd window side in voxels.

    Returns
    -------
    torch.Tensor
        ``(B, C, *spatial)`` local means.
    """
    if window % 2 != 1:
        raise ValueError(f"window must be odd, got {window}")
    ndim = x.dim() - 2
    pool = _pool(ndim)
    for axis in range(ndim):
        kernel = [1] * ndim
        kernel[axis] = window
        pad = [k // 2 for k in kernel]
        if x.shape[2 + axis] < window:  # pooling refuses a kernel larger than the input
            explicit = [0] * (2 * ndim)
            explicit[2 * (ndim - 1 - axis)] = explicit[2 * (ndim - 1 - axis) + 1] = window // 2
            x, pad = F.pad(x, explicit), [0] * ndim
        x = pool(x, kernel, stride=1, padding=pad, count_include_pad=True)
    return x


def gaussian_blur(
    x: torch.Tensor, sigma: float = 1.0, size: int = 5, axes: Sequence[int] | None = None
) -> torch.Tensor:
    """Separable normalised Gaussian blur with zero padding, per channel.

    Parameters
    ----------
    x : torch.Tensor
        ``(B, C, *spatial)``.
    sigma : float
        Standard deviation, voxels.
    size : int
        Odd kernel side, voxels.
    axes : sequence of int, optional
        Spatial axes (0-based) to blur; all by default.

    Returns
    -------
    torch.Tensor
        ``(B, C, *spatial)``.
    """
    ndim = x.dim() - 2
    channels = x.shape[1]
    r = torch.arange(size, device=x.device, dtype=x.dtype) - size // 2
    kernel = torch.exp(-(r * r) / (2 * sigma * sigma))
    kernel = kernel / kernel.sum()
    conv = F.conv3d if ndim == 3 else F.conv2d
    for axis in range(ndim) if axes is None else axes:
        shape = [1] * ndim
        shape[axis] = size
        weight = kernel.view(1, 1, *shape).expand(channels, 1, *shape)
        padding = [s // 2 for s in shape]
        x = conv(x, weight, padding=padding, groups=channels)
    return x


def pyramid(x: torch.Tensor, shapes: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """Gaussian pyramid onto given level shapes (finest first; ``shapes[0]`` = ``x``'s shape).

    Level ``i+1`` = blur(level ``i``) (sigma 1, 5-tap, only along axes that shrink) resampled
    linearly with ``align_corners=True`` to ``shapes[i+1]``.

    Parameters
    ----------
    x : torch.Tensor
        ``(B, C, *spatial)`` image or one-hot labels.
    shapes : sequence of shapes
        Spatial shape of every level.

    Returns
    -------
    list of torch.Tensor
        One ``(B, C, *shapes[i])`` tensor per level.
    """
    if tuple(x.shape[2:]) != tuple(shapes[0]):
        raise ValueError(f"level 0 shape {tuple(shapes[0])} != input {tuple(x.shape[2:])}")
    mode = "trilinear" if x.dim() == 5 else "bilinear"
    levels = [x]
    for shape in shapes[1:]:
        prev = levels[-1]
        axes = [k for k, (a, b) in enumerate(zip(prev.shape[2:], shape, strict=True)) if b < a]
        blurred = gaussian_blur(prev, axes=axes)
        levels.append(F.interpolate(blurred, size=tuple(shape), mode=mode, align_corners=True))
    return levels
