"""EOIR's multi-level training loss: similarity, smoothness and Dice on every pyramid level."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from eoir.losses.filters import pyramid
from eoir.losses.labels import dice_loss, warped_dice_loss
from eoir.losses.similarity import SIMILARITIES, Similarity, similarity_loss
from eoir.losses.smoothness import Penalty, gradient_loss
from eoir.losses.supervision import endpoint_error
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
    field_weight: float = 0.0,
    true_field: torch.Tensor | None = None,
    known: torch.Tensor | None = None,
    image_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """EOIR's multi-level loss.

    ``L = sum_l 2^-l [ w_sim Sim_l(T_l(I_m^l, phi_l), I_f^l) + w_reg Grad(v_l)
    + w_dice Dice(T_l(S_m^l, phi_l), S_f^l) + w_field EPE(phi_l, u^l) ]``, with Gaussian image
    and one-hot label pyramids built on the grids of the model's level fields. Each weight is
    applied once (the reference training script squares them; pass ``w**2`` to reproduce it).
    The last term (not in the paper) supervises pairs whose correspondence ``u`` is known
    (synthetic images of one head): the endpoint error in voxels of each level, over the fixed
    labels' voxels when they are given.

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
    field_weight : float
        Weight of the endpoint error (used when ``> 0`` and ``true_field`` is given).
    true_field : torch.Tensor, optional
        ``(B, ndim, *spatial)`` true displacement, voxels of the images' grid.
    known : torch.Tensor, optional
        ``(B,)`` 1.0 for pairs whose ``true_field`` is real, 0.0 for the others (all real by
        default).
    image_weights : torch.Tensor, optional
        ``(B,)`` weight of each pair's image term (1 by default): 0 leaves a pair to the other
        terms (synthetic pairs of two contrasts under a one-contrast similarity such as NCC).

    Returns
    -------
    total : torch.Tensor
        Scalar loss.
    terms : dict of str to torch.Tensor
        Detached level-weighted sums of each term, ``"similarity"``, ``"smoothness"`` and
        ``"dice"`` (and ``"field"`` when it is used), as scalar tensors (no device sync until the
        caller reads them).
    """
    look_up_option("similarity", similarity, SIMILARITIES)
    shapes = [tuple(f.shape[2:]) for f in fields]
    images_m = pyramid(_pad_end(moving, shapes[0]), shapes)
    images_f = pyramid(_pad_end(fixed, shapes[0]), shapes)
    use_dice = dice_weight > 0 and moving_labels is not None and fixed_labels is not None
    if use_dice:
        labels_m = pyramid(_pad_end(moving_labels, shapes[0]), shapes)
        labels_f = pyramid(_pad_end(fixed_labels, shapes[0]), shapes)
    use_field = field_weight > 0 and true_field is not None
    if use_field:
        truth = pyramid(_pad_end(true_field, shapes[0]), shapes)
        # the pyramid's grids (align_corners=True): a level-0 voxel is (n_l - 1) / (n_0 - 1)
        ratio = [
            [(new - 1) / max(old - 1, 1) for new, old in zip(shape, shapes[0], strict=True)]
            for shape in shapes
        ]
        masks = [None] * len(shapes)
        if use_dice:
            masks = [level.sum(1, keepdim=True).clamp(max=1.0) for level in labels_f]
    pair_weights = None if image_weights is None else [float(w) for w in image_weights.tolist()]
    total = moving.new_zeros((), dtype=torch.float32)
    names = ("similarity", "smoothness", "dice") + (("field",) if use_field else ())
    terms = {name: total.detach().clone() for name in names}
    for level, (field, velocity) in enumerate(zip(fields, residuals, strict=True)):
        weight = 2.0**-level
        if sim_weight > 0:
            warped = warp(images_m[level], field)
            window = windows[min(level, len(windows) - 1)]
            sim = _weighted_similarity(similarity, warped, images_f[level], window, pair_weights)
        else:  # label-supervised training (synthetic images of unrelated contrasts)
            sim = total.new_zeros(())
        reg = gradient_loss(velocity, penalty)
        level_loss = sim_weight * sim + reg_weight * reg
        terms["similarity"] += weight * sim.detach()
        terms["smoothness"] += weight * reg.detach()
        if use_dice:
            # the finest level's maps are one-hot: their Dice without warping K channels
            dsc = warped_dice_loss(labels_m[0], labels_f[0], field) if level == 0 else None
            if dsc is None:
                dsc = dice_loss(warp(labels_m[level], field), labels_f[level])
            level_loss = level_loss + dice_weight * dsc
            terms["dice"] += weight * dsc.detach()
        if use_field:
            scale = torch.tensor(ratio[level], dtype=field.dtype, device=field.device)
            target = truth[level] * scale.view(1, -1, *([1] * (field.dim() - 2)))
            epe = endpoint_error(field, target, masks[level], known)
            level_loss = level_loss + field_weight * epe
            terms["field"] += weight * epe.detach()
        total = total + weight * level_loss
    return total, terms


def _weighted_similarity(
    similarity: Similarity,
    warped: torch.Tensor,
    fixed: torch.Tensor,
    window: int,
    weights: list[float] | None,
) -> torch.Tensor:
    """The batch mean of ``weights[b] * Sim(warped[b], fixed[b])`` (the plain term without
    weights); pairs of weight 0 cost nothing."""
    if weights is None:
        return similarity_loss(similarity, warped, fixed, window)
    total = warped.new_zeros((), dtype=torch.float32)
    for b, weight in enumerate(weights):
        if weight != 0:
            sim = similarity_loss(similarity, warped[b : b + 1], fixed[b : b + 1], window)
            total = total + weight * sim
    return total / len(weights)
