"""Filters the losses are built from: box (windowed mean) and Gaussian filters, image pyramids.

All take ``(B, C, *spatial)`` tensors, 2-D or 3-D.
"""

from __future__ import annotations

import functools
import math
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


def _gaussian_taps(sigma: float, size: int) -> torch.Tensor:
    """The normalised 1-D Gaussian kernel of :func:`gaussian_blur`, float64 ``(size,)``."""
    r = torch.arange(size, dtype=torch.float64) - size // 2
    kernel = torch.exp(-(r * r) / (2 * sigma * sigma))
    return kernel / kernel.sum()


@functools.lru_cache(maxsize=64)
def _level_matrix(
    n_in: int, n_out: int, blur: bool, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """One axis of a pyramid step as a matrix: linear resampling (``align_corners=True``, as
    ``F.interpolate``) after the 5-tap sigma-1 zero-padded blur when ``blur``.

    Returns
    -------
    torch.Tensor
        ``(n_out, n_in)``: output sample ``i`` is ``sum_j M[i, j] x[j]``.
    """
    matrix = torch.zeros(n_out, n_in, dtype=torch.float64)
    scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    for i in range(n_out):
        source = scale * i
        low = min(int(source), n_in - 1)
        high = min(low + 1, n_in - 1)
        frac = source - low
        matrix[i, low] += 1.0 - frac
        matrix[i, high] += frac
    if blur:
        taps = _gaussian_taps(1.0, 5)
        band = torch.zeros(n_in, n_in, dtype=torch.float64)
        for offset, weight in zip(range(-2, 3), taps.tolist(), strict=True):
            band += torch.diag(torch.full((n_in - abs(offset),), weight), offset)
        matrix = matrix @ band
    return matrix.to(dtype=dtype, device=device)


def _along(x: torch.Tensor, axis: int, matrix: torch.Tensor) -> torch.Tensor:
    """``matrix`` (``(n_out, n)``) applied along spatial ``axis`` of ``(B, C, *spatial)`` ``x``
    as one matrix product on ``x``'s memory as it lies: contiguous, or channels-last (as
    :func:`eoir.losses.one_hot` makes label maps, which grid_sample reads faster), kept so."""
    ndim = x.dim() - 2
    last = {3: torch.channels_last_3d, 2: torch.channels_last}.get(ndim)
    order = [0, 1, *range(2, 2 + ndim)]  # dims in memory order, outermost first
    if not x.is_contiguous() and last is not None and x.is_contiguous(memory_format=last):
        order = [0, *range(2, 2 + ndim), 1]
    else:
        x = x.contiguous()
    y = x.permute(order)  # contiguous
    shape = list(y.shape)
    dim = order.index(2 + axis)
    lead, tail = math.prod(shape[:dim]), math.prod(shape[dim + 1 :])
    if tail == 1:
        out = y.reshape(lead, shape[dim]) @ matrix.T
    else:
        out = torch.matmul(matrix, y.reshape(lead, shape[dim], tail))
    shape[dim] = matrix.shape[0]
    return out.reshape(shape).permute([order.index(d) for d in range(x.dim())])


def pyramid(x: torch.Tensor, shapes: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """Gaussian pyramid onto given level shapes (finest first; ``shapes[0]`` = ``x``'s shape).

    Level ``i+1`` = blur(level ``i``) (sigma 1, 5-tap, zero padded, only along axes that
    shrink) resampled linearly with ``align_corners=True`` to ``shapes[i+1]``: the same values
    as :func:`gaussian_blur` followed by ``F.interpolate`` (to float32 rounding), computed as
    one matrix product per axis (blur and resampling folded into one ``(n_out, n_in)``
    matrix), which many channels (one-hot label maps) need: a grouped convolution of 41
    channels took 10x longer.

    Parameters
    ----------
    x : torch.Tensor
        ``(B, C, *spatial)`` image or one-hot labels, floating point.
    shapes : sequence of shapes
        Spatial shape of every level.

    Returns
    -------
    list of torch.Tensor
        One ``(B, C, *shapes[i])`` tensor per level.
    """
    if tuple(x.shape[2:]) != tuple(shapes[0]):
        raise ValueError(f"level 0 shape {tuple(shapes[0])} != input {tuple(x.shape[2:])}")
    levels = [x]
    for shape in shapes[1:]:
        level = levels[-1]
        for axis, (n_in, n_out) in enumerate(zip(level.shape[2:], shape, strict=True)):
            if n_in == n_out:  # no blur, and resampling onto the same grid is the identity
                continue
            matrix = _level_matrix(n_in, n_out, n_out < n_in, level.dtype, level.device)
            level = _along(level, axis, matrix)
        levels.append(level)
    return levels
