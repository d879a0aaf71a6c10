"""Supervision by a known correspondence: the endpoint error of a predicted field."""

from __future__ import annotations

import torch

__all__ = ["endpoint_error"]


def endpoint_error(
    field: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean Euclidean distance between a predicted and a true displacement (endpoint error).

    Parameters
    ----------
    field, target : torch.Tensor
        ``(B, ndim, *spatial)`` displacements, voxel units.
    mask : torch.Tensor, optional
        ``(B, 1, *spatial)`` voxel weights in [0, 1] (e.g. the fixed image's brain); every voxel
        counts by default.
    weights : torch.Tensor, optional
        ``(B,)`` per-pair weights (0 for a pair whose field is unknown); the result is their
        weighted mean, 0 when they are all 0.

    Returns
    -------
    torch.Tensor
        Scalar, voxels.
    """
    if field.shape != target.shape:
        raise ValueError(f"shapes differ: {tuple(field.shape)} vs {tuple(target.shape)}")
    # a small floor keeps the gradient of the norm finite where the error is exactly zero
    error = ((field - target).square().sum(1, keepdim=True) + 1e-12).sqrt()
    dims = tuple(range(1, field.dim()))
    if mask is None:
        per_pair = error.mean(dims)
    else:
        per_pair = (error * mask).sum(dims) / mask.sum(dims).clamp(min=1e-6)
    if weights is None:
        return per_pair.mean()
    weights = weights.to(per_pair)
    return (per_pair * weights).sum() / weights.sum().clamp(min=1e-6)
