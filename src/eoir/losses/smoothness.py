"""Smoothness penalties on displacement and velocity fields."""

from __future__ import annotations

from typing import Literal

import torch

from eoir.options import look_up_option

__all__ = ["PENALTIES", "Penalty", "gradient_loss"]

PENALTIES: dict[str, str] = {
    "l1": "mean absolute forward difference (EOIR)",
    "l2": "mean squared forward difference (diffusion)",
}
Penalty = Literal["l1", "l2"]


def gradient_loss(field: torch.Tensor, penalty: Penalty = "l1") -> torch.Tensor:
    """Smoothness: mean forward difference of a field along each axis, averaged over axes.

    Parameters
    ----------
    field : torch.Tensor
        ``(B, ndim, *spatial)`` displacement or velocity in voxel units of its grid.
    penalty : {"l1", "l2"}
        Absolute (EOIR default) or squared differences (LUMIR recipe; diffusion regulariser).

    Returns
    -------
    torch.Tensor
        Scalar, in voxels (l1) or voxels^2 (l2) per voxel step.
    """
    look_up_option("penalty", penalty, PENALTIES)
    ndim = field.dim() - 2
    total = field.new_zeros(())
    for axis in range(2, 2 + ndim):
        diff = torch.diff(field, dim=axis)
        total = total + (diff.abs() if penalty == "l1" else diff * diff).mean()
    return total / ndim
