"""EOIR's multi-level training loss: similarity, smoothness and Dice on every pyramid level."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from eoir.losses.filters import pyramid
from eoir.losses.labels import dice_loss
from eoir.losses.similarity import SIMILARITIES, Similarity, similarity_loss
from eoir.losses.smoothness import Penalty, gradient_loss
from eoir.options import look_up_option
from eoir.spatial import warp

__all__ = ["multilevel_loss"]


def _pad_end(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Zero-pad at the high end to ``shape`` (the model's internal padding)."""
    pad: list[int] = []
    for have, want in reversed(list(zip(x.shape[2:], shape, strict=True))):
        pad += [0, int(want) - int(have)]
    return F.pad(x, pad) if any(pad) else x


def multilevel_loss(
    fields: Sequence[torch.Tensor],
    residuals: Sequence[torch.Tensor],
    moving: torch.Tensor,
    fixed: torch.Tensor,
    *,
    similarity: Similarity = "ncc",
    windows: Sequence[int] = (9, 5, 3),
    sim_weight: float = 1.0,
    reg_weight: float = 1.0,
    dice_weight: float = 1.0,
    penalty: Penalty = "l1",
    moving_labels: torch.Tensor | None = None,
    fixed_labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """EOIR's multi-level loss.

    ``L = sum_l 2^-l [ w_sim Sim_l(T_l(I_m^l, phi_l), I_f^l) + w_reg Grad(v_l)
    + w_dice Dice(T_l(S_m^l, phi_l), S_f^l) ]``, with Gaussian image and one-hot label pyramids
    built on the grids of the model's level fields. Each weight is applied once (the reference
    training script squares them; pass ``w**2`` to reproduce it).

    Parameters
    ----------
    fields : sequence of torch.Tensor
        Composed fields ``phi_l``, finest first, ``(B, ndim, *level_l)`` in voxels of level ``l``
        (``EOIROutput.fields``: ``model(moving, fixed, levels=True)``). Level 0 may be
        larger than the images (the model's high-end padding); images are padded to match.
    residuals : sequence of torch.Tensor
        Pre-integration residuals ``v_l``, finest first (``EOIROutput.residuals``).
    moving, fixed : torch.Tensor
        ``(B, 1, *spatial)`` the images the model saw.
    similarity : {"ncc", "mse", "mind"}
        Image term.
    windows : sequence of int
        NCC window per level, finest first; the last is reused for coarser levels.
    sim_weight, reg_weight, dice_weight : float
        Term weights.
    penalty : {"l1", "l2"}
        Smoothness penalty on each level's residual ``v_l``.
    moving_labels, fixed_labels : torch.Tensor, optional
        ``(B, K, *spatial)`` one-hot label maps (:func:`one_hot`); the Dice term is used when both
        are given and ``dice_weight > 0``.

    Returns
    -------
    total : torch.Tensor
        Scalar loss.
    terms : dict of str to torch.Tensor
        Detached level-weighted sums of each term, ``"similarity"``, ``"smoothness"`` and
        ``"dice"``, as scalar tensors (no device sync until the caller reads them).
    """
    look_up_option("similarity", similarity, SIMILARITIES)
    shapes = [tuple(f.shape[2:]) for f in fields]
    images_m = pyramid(_pad_end(moving, shapes[0]), shapes)
    images_f = pyramid(_pad_end(fixed, shapes[0]), shapes)
    use_dice = dice_weight > 0 and moving_labels is not None and fixed_labels is not None
    if use_dice:
        labels_m = pyramid(_pad_end(moving_labels, shapes[0]), shapes)
        labels_f = pyramid(_pad_end(fixed_labels, shapes[0]), shapes)
    total = moving.new_zeros((), dtype=torch.float32)
    terms = {name: total.detach().clone() for name in ("similarity", "smoothness", "dice")}
    for level, (field, velocity) in enumerate(zip(fields, residuals, strict=True)):
        weight = 2.0**-level
        if sim_weight > 0:
            warped = warp(images_m[level], field)
            window = windows[min(level, len(windows) - 1)]
            sim = similarity_loss(similarity, warped, images_f[level], window)
        else:  # label-supervised training (synthetic images of unrelated contrasts)
            sim = total.new_zeros(())
        reg = gradient_loss(velocity, penalty)
        level_loss = sim_weight * sim + reg_weight * reg
        terms["similarity"] += weight * sim.detach()
        terms["smoothness"] += weight * reg.detach()
        if use_dice:
            dsc = dice_loss(warp(labels_m[level], field), labels_f[level])
            level_loss = level_loss + dice_weight * dsc
            terms["dice"] += weight * dsc.detach()
        total = total + weight * level_loss
    return total, terms
