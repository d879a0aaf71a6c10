"""Label maps in losses: one-hot encoding and soft Dice."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["dice_loss", "one_hot"]

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
