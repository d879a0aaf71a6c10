"""Instance optimisation: refine a displacement field on one image pair.

The field itself is optimised, not the network's weights: on a real inter-subject brain pair,
optimising the field reached a far higher Dice than fine-tuning a network's weights for the same
number of steps (whose loss stalled early), in a fraction of the time; fine-tuning stays an
option (:func:`finetune_network`). The refinement is a stationary velocity field ``v``,
integrated by scaling and squaring (so it stays diffeomorphic), composed onto the starting field
``u0`` (the network's prediction, or zero): ``disp = compose(u0, exp(v))``. It runs coarse to
fine: the images at 1/4 then 1/2 resolution (by default), ``v`` on a grid half as fine as the
images, each stage starting from the previous one's ``v``; loss = windowed
NCC + ``weight`` x diffusion (mean squared forward difference of ``v``, voxels of the stage
grid).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from eoir.losses import SIMILARITIES, Similarity, gradient_loss, multilevel_loss, similarity_loss
from eoir.nn import EOIR
from eoir.options import look_up_option
from eoir.spatial import compose, integrate, resize_field, warp

__all__ = ["finetune_network", "optimise_field"]


def _resize_image(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    if tuple(x.shape[2:]) == tuple(shape):
        return x
    mode = "trilinear" if x.dim() == 5 else "bilinear"
    return F.interpolate(x, size=tuple(shape), mode=mode, align_corners=True)


def _shape(shape: Sequence[int], factor: float) -> tuple[int, ...]:
    """Grid size for a ``1/factor`` resolution (align_corners spacing), at least 8 (or ``n``)."""
    return tuple(max(min(n, 8), round((n - 1) / factor) + 1) for n in shape)


def optimise_field(
    moving: torch.Tensor,
    fixed: torch.Tensor,
    init: torch.Tensor | None = None,
    steps: int = 150,
    factors: Sequence[int] | None = None,
    lr: float = 0.1,
    weight: float = 1.0,
    window: int = 5,
    similarity: Similarity = "ncc",
    eps: float = 1e-9,
    integration_steps: int = 7,
    callback: Callable[[int, float], None] | None = None,
) -> torch.Tensor:
    """Refine a displacement field on one pair, coarse to fine.

    Parameters
    ----------
    moving, fixed : torch.Tensor
        ``(1, 1, *spatial)`` normalised images on the fixed grid (3-D or 2-D).
    init : torch.Tensor, optional
        ``(1, ndim, *spatial)`` starting displacement (fixed voxels); zero if None.
    steps : int
        Adam steps in all, split evenly over the stages. 0 returns ``init``.
    factors : sequence of int, optional
        Downsampling factor of the images in each stage, coarse to fine. Default ``(4, 2)`` in
        3-D and ``(4, 2, 1)`` in 2-D, where the full-resolution stage is cheap. For very
        small images (tens of voxels per axis) ``(2, 1)`` can do better on textured anatomy
        (the demo) and worse on smooth images.
    lr : float
        Adam learning rate (voxels of the velocity grid per step).
    weight : float
        Weight of the diffusion penalty.
    window : int
        NCC window, voxels of the stage grid.
    similarity : {"ncc", "mse", "mind", "mi"}
        Image term (:data:`eoir.losses.SIMILARITIES`).
    eps : float
        NCC's stabiliser, far below training's :data:`eoir.losses.NCC_EPS` (1e-5): with that
        one the optimisation sharpened smooth images instead of aligning them (Dice of a
        smooth synthetic 2-D pair 0.89 -> 0.75, of a 3-D one 0.80 -> 0.75; with 1e-9 0.93 and
        0.87), while real brains (OASIS slices and volumes) score the same within 0.002
        (``benchmarks/ncc_eps.py``).
    integration_steps : int
        Scaling-and-squaring steps.
    callback : callable, optional
        Called as ``callback(step, loss)`` after every step.

    Returns
    -------
    torch.Tensor
        ``(1, ndim, *spatial)`` refined displacement in fixed voxels.
    """
    if moving.shape != fixed.shape or moving.dim() not in (4, 5):
        raise ValueError(
            f"need two (1, 1, X, Y, Z) or (1, 1, X, Y) images, got {moving.shape} and {fixed.shape}"
        )
    shape = tuple(fixed.shape[2:])
    ndim = len(shape)
    if factors is None:
        factors = (4, 2) if ndim == 3 else (4, 2, 1)
    if init is None:
        init = fixed.new_zeros(1, ndim, *shape)
    if steps <= 0:
        return init
    look_up_option("similarity", similarity, SIMILARITIES)
    per_stage = [
        steps // len(factors) + (1 if i < steps % len(factors) else 0) for i in range(len(factors))
    ]
    velocity: torch.Tensor | None = None
    done = 0
    stage_shape = shape
    for factor, stage_steps in zip(factors, per_stage, strict=True):
        stage_shape = _shape(shape, factor)
        grid_shape = _shape(stage_shape, 2)
        with torch.no_grad():
            m = _resize_image(moving, stage_shape)
            f = _resize_image(fixed, stage_shape)
            start = resize_field(init, stage_shape)
            v0 = (
                fixed.new_zeros(1, ndim, *grid_shape)
                if velocity is None
                else resize_field(velocity, grid_shape)
            )
        param = v0.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([param], lr=lr)
        for _ in range(stage_steps):
            v = resize_field(param, stage_shape)
            disp = compose(start, integrate(v, integration_steps))
            image_term = similarity_loss(similarity, warp(m, disp), f, window, eps)
            loss = image_term + weight * gradient_loss(v, "l2")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            done += 1
            if callback is not None:
                callback(done, float(loss.detach()))
        velocity = param.detach()
    with torch.no_grad():
        # upsample only the optimised diffeomorphism; the start keeps its full resolution
        refinement = integrate(resize_field(velocity, stage_shape), integration_steps)
        return compose(init, resize_field(refinement, shape))


def finetune_network(
    model: EOIR,
    moving: torch.Tensor,
    fixed: torch.Tensor,
    steps: int = 50,
    lr: float = 1e-4,
    callback: Callable[[int, float], None] | None = None,
    **loss_options,
) -> torch.Tensor:
    """Fine-tune a copy of the network's weights on one pair, then predict its field.

    Not the default refinement (see the module docstring); offered for comparison and for
    pairs unlike the training data. The given model is left unchanged.

    Parameters
    ----------
    model : EOIR
        The trained network.
    moving, fixed : torch.Tensor
        ``(1, 1, *spatial)`` normalised images on the fixed grid.
    steps : int
        Adam (amsgrad) steps of :func:`eoir.losses.multilevel_loss`.
    lr : float
        Learning rate.
    callback : callable, optional
        Called as ``callback(step, loss)`` after every step.
    **loss_options
        Passed to :func:`eoir.losses.multilevel_loss` (similarity, weights, ...).

    Returns
    -------
    torch.Tensor
        ``(1, ndim, *spatial)`` displacement of the fine-tuned network, fixed voxels.
    """
    tuned = copy.deepcopy(model).train()
    optimizer = torch.optim.Adam(tuned.parameters(), lr=lr, amsgrad=True)
    for step in range(1, steps + 1):
        out = tuned(moving, fixed, levels=True)
        loss, _ = multilevel_loss(out.fields, out.residuals, moving, fixed, **loss_options)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if callback is not None:
            callback(step, float(loss.detach()))
    tuned.eval()
    with torch.no_grad():
        return tuned(moving, fixed)
