"""Label maps in losses: one-hot encoding and soft Dice."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch

from eoir.spatial import identity_grid

__all__ = ["dice_loss", "one_hot", "warped_dice_loss"]

DOT_CLASSES = 256  # dice_loss computes overlaps as a matrix product up to this many classes


def one_hot(labels: torch.Tensor, classes: Sequence[int] | int) -> torch.Tensor:
    """One-hot encode an integer label map.

    Parameters
    ----------
    labels : torch.Tensor
        ``(B, 1, *spatial)`` integer (or integer-valued float) label map.
    classes : int or sequence of int
        Either the number of classes ``K`` (labels are ``0..K-1``) or the label values to encode,
        background included, in channel order. Voxels whose value is not listed are all-zero.

    Returns
    -------
    torch.Tensor
        ``(B, K, *spatial)`` float32, channels-last in memory (the classes of a voxel side by
        side: grid_sample warps such a map faster than a contiguous one).
    """
    values = list(range(classes)) if isinstance(classes, int) else [int(c) for c in classes]
    lab = labels.long()
    lookup_size = max(max(values), int(lab.max().item()) if lab.numel() else 0) + 1
    if min(values) < 0 or (lab.numel() and int(lab.min().item()) < 0):
        raise ValueError("one_hot needs non-negative label values")
    lookup = torch.full((lookup_size,), len(values), dtype=torch.long, device=labels.device)
    lookup[torch.tensor(values, device=labels.device)] = torch.arange(
        len(values), device=labels.device
    )
    index = lookup[lab[:, 0]]  # (B, *spatial); unlisted -> len(values), no class
    k = len(values)
    # written straight into float32 (no int64 one-hot of every voxel, then a float copy)
    out = torch.zeros((*index.shape, k), dtype=torch.float32, device=labels.device)
    listed = (index < k).unsqueeze(-1).to(torch.float32)
    out.scatter_(-1, index.clamp(max=k - 1).unsqueeze(-1), listed)
    return out.movedim(-1, 1)


def dice_loss(warped: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
    """Soft Dice loss on one-hot (possibly soft) label maps, background included.

    ``1 - mean over batch and classes of 2|A.B| / (|A| + |B| + 1e-5)``.

    Parameters
    ----------
    warped, fixed : torch.Tensor
        ``(B, K, *spatial)`` one-hot or soft label maps in [0, 1].

    Returns
    -------
    torch.Tensor
        Scalar in [0, 1].
    """
    if warped.shape != fixed.shape:
        raise ValueError(f"shapes differ: {tuple(warped.shape)} vs {tuple(fixed.shape)}")
    dims = tuple(range(2, warped.dim()))
    if warped.shape[1] <= DOT_CLASSES:
        # every class's overlap at once: the diagonal of one (K, V) x (V, K) product per pair,
        # which reads each map in its own memory layout (a one-hot map is channels-last, a
        # warped one contiguous); their elementwise product is 2-3x slower across layouts
        products = torch.bmm(warped.flatten(2), fixed.flatten(2).transpose(1, 2))
        inter = products.diagonal(dim1=1, dim2=2)
    else:  # the K x K products would cost more than they save
        inter = (warped * fixed).sum(dims)
    sizes = warped.sum(dims) + fixed.sum(dims)
    return 1.0 - (2.0 * inter / (sizes + 1e-5)).mean()


def hard_classes(labels: torch.Tensor) -> torch.Tensor | None:
    """The class of every voxel of a hard one-hot map, or None when the map is soft.

    Parameters
    ----------
    labels : torch.Tensor
        ``(B, K, *spatial)`` label map: one-hot (each voxel all zero, or one channel at 1 and
        the rest 0) or soft (a blurred pyramid level).

    Returns
    -------
    torch.Tensor or None
        ``(B, *spatial)`` int64 channel index, ``K`` where a voxel has no class; None when some
        voxel is not of that form.
    """
    top, index = labels.max(dim=1)
    if not (((top == 0) | (top == 1)).all() and torch.equal(labels.sum(dim=1), top)):
        return None
    return torch.where(top > 0, index, labels.shape[1])


def warped_dice_loss(
    moving: torch.Tensor, fixed: torch.Tensor, disp: torch.Tensor
) -> torch.Tensor | None:
    """``dice_loss(warp(moving, disp), fixed)`` for hard one-hot maps, without warping them.

    Each class's overlap, and the size of the warped map's class, are sums of the linear
    (bi/trilinear, zero outside) interpolation weights of the moving voxels around each sample
    position, binned by those voxels' classes: ``2^ndim`` gathers of class indices instead of
    interpolating all K channels (the K-channel warp and its backward were most of a Dice
    term's cost). The same value and gradient as the warp (to float rounding of the positions).

    Parameters
    ----------
    moving, fixed : torch.Tensor
        ``(B, K, *spatial)`` one-hot maps on the field's grid (voxels of no class are all zero).
    disp : torch.Tensor
        ``(B, ndim, *spatial)`` displacement in voxels (as :func:`eoir.spatial.warp`).

    Returns
    -------
    torch.Tensor or None
        The scalar loss, differentiable in ``disp``; None when a map is soft or the field's
        batch differs from the maps' (use :func:`dice_loss` of the warped map then).
    """
    if disp.shape[0] != moving.shape[0] or moving.shape != fixed.shape:
        return None  # a field broadcast over a batch: the warp's general form
    moving_class, fixed_class = hard_classes(moving), hard_classes(fixed)
    if moving_class is None or fixed_class is None:
        return None
    b, k = moving.shape[:2]
    spatial = tuple(moving.shape[2:])
    ndim = len(spatial)
    grid = identity_grid(spatial, disp.device, disp.dtype)
    positions = (grid + disp).reshape(b, ndim, -1)
    low = positions.detach().floor()
    frac = positions - low
    low = low.long()
    # per axis and side (the voxel below the position, the one above): the interpolation
    # factor, whether the voxel is inside the grid, and its share of the flat index
    stride = 1
    sides: list[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = [[]] * ndim
    for axis in reversed(range(ndim)):
        n = spatial[axis]
        below = low[:, axis]
        above = below + 1
        sides[axis] = [
            (1.0 - frac[:, axis], (below >= 0) & (below < n), below.clamp(0, n - 1) * stride),
            (frac[:, axis], (above >= 0) & (above < n), above.clamp(0, n - 1) * stride),
        ]
        stride *= n
    moving_class = moving_class.reshape(b, -1)
    fixed_class = fixed_class.reshape(b, -1)
    bins = torch.zeros(b, k + 1, device=disp.device, dtype=disp.dtype)  # class k: none
    overlap, warped_size = bins, bins
    for corner in itertools.product((0, 1), repeat=ndim):
        weight, inside, flat = sides[0][corner[0]]
        for axis in range(1, ndim):
            factor, ok, part = sides[axis][corner[axis]]
            weight, inside, flat = weight * factor, inside & ok, flat + part
        found = torch.where(inside, moving_class.gather(1, flat), k)
        warped_size = warped_size.scatter_add(1, found, weight)
        overlap = overlap.scatter_add(1, fixed_class, weight * (found == fixed_class))
    fixed_size = torch.zeros_like(bins).scatter_add_(
        1, fixed_class, torch.ones_like(fixed_class, dtype=bins.dtype)
    )
    inter, sizes = overlap[:, :k], warped_size[:, :k] + fixed_size[:, :k]
    return 1.0 - (2.0 * inter / (sizes + 1e-5)).mean()
