"""Spatial core: grids, warping, integration, composition, resizing, Jacobians, world frames.

Every function here is size-free and works in 2D and 3D; nothing stores a grid in a module.

Conventions (the one home of each; the rest of the package imports them from here):

- Tensors are channel-first, ``(B, C, *spatial)``, spatial order = array order of the volume.
- A displacement field ``disp`` has shape ``(B, ndim, *spatial)``, is in **voxel units of the
  fixed grid**, channel ``k`` is the displacement along array axis ``k``, is defined on the fixed
  grid, and pulls the moving image back: ``warped(p) = moving(p + disp(p))``.
- An affine is the ``(ndim+1, ndim+1)`` voxel-index -> world (mm) matrix of an image, RAS as
  nibabel gives it. ``frame="lps"`` gives ITK's LPS world (x and y negated).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from eoir.options import look_up_option

__all__ = [
    "FRAMES",
    "INTERPOLATIONS",
    "PADDINGS",
    "Frame",
    "Interpolation",
    "Padding",
    "compose",
    "crop_to_shape",
    "field_from_world",
    "field_to_world",
    "identity_grid",
    "integrate",
    "invert",
    "jacobian_determinant",
    "jacobian_determinant_slabs",
    "lps_affine",
    "pad_to_multiple",
    "resize_field",
    "resize_scale",
    "reverse_axes",
    "sample",
    "sample_at_points",
    "solve_positions",
    "store_reversed",
    "stored_reversed",
    "transform_positions",
    "voxel_to_world",
    "warp",
    "world_to_voxel",
]

# interpolation: the mode name -> grid_sample's mode
INTERPOLATIONS: dict[str, str] = {
    "bilinear": "bilinear",
    "linear": "bilinear",
    "nearest": "nearest",
}
# values outside the image: zero, or the nearest border value
PADDINGS: dict[str, str] = {"zeros": "zeros", "border": "border"}
Interpolation = Literal["bilinear", "linear", "nearest"]
Padding = Literal["zeros", "border"]


@functools.lru_cache(maxsize=32)
def _identity_grid_cached(
    shape: tuple[int, ...], device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    with torch.inference_mode(False):  # cached: usable later by autograd too
        axes = [torch.arange(n, device=device, dtype=dtype) for n in shape]
        return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0).unsqueeze(0)


def identity_grid(
    shape: Sequence[int],
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Voxel coordinates of every grid point.

    Parameters
    ----------
    shape : sequence of int
        Spatial shape ``(*spatial)``, 2 or 3 entries.
    device, dtype
        Where and how the grid is made.

    Returns
    -------
    torch.Tensor
        ``(1, ndim, *spatial)``; channel ``k`` holds the index along array axis ``k`` (voxels).
        Cached per shape, device and dtype: treat it as read-only.
    """
    return _identity_grid_cached(tuple(int(n) for n in shape), torch.device(device or "cpu"), dtype)


def _check_field(disp: torch.Tensor, spatial: Sequence[int] | None = None) -> int:
    """Validate a ``(B, ndim, *spatial)`` field and return ``ndim``."""
    if disp.dim() not in (4, 5):
        raise ValueError(
            f"a displacement field must be (B, ndim, *spatial) with 2 or 3 spatial axes, "
            f"got shape {tuple(disp.shape)}"
        )
    ndim = disp.dim() - 2
    if disp.shape[1] != ndim:
        raise ValueError(
            f"a {ndim}D displacement field needs {ndim} channels, got shape {tuple(disp.shape)}"
        )
    if spatial is not None and tuple(disp.shape[2:]) != tuple(spatial):
        raise ValueError(
            f"field grid {tuple(disp.shape[2:])} does not match image grid {tuple(spatial)}"
        )
    return ndim


def _check_options(mode: str, padding: str) -> None:
    look_up_option("mode", mode, INTERPOLATIONS)
    look_up_option("padding", padding, PADDINGS)


def _normalising_scale(shape: Sequence[int]) -> list[float]:
    """Per-axis factor from voxels to grid_sample's ``[-1, 1]`` (align_corners=True: voxel 0 ->
    -1, voxel ``n-1`` -> +1), in array-axis order."""
    return [2.0 / max(n - 1, 1) for n in shape]


def _grid_sample_grid(
    positions: torch.Tensor, source_shape: Sequence[int], reverse: bool = False
) -> torch.Tensor:
    """Turn voxel positions ``(B, ndim, *grid)`` into grid_sample's normalised grid
    ``(B, *grid, ndim)``, the last axis reversed to (x, y[, z]) (:func:`_normalising_scale`).

    With ``reverse`` (no autograd) the grid is that of the reversed frame
    (:func:`stored_reversed`): ``(B, *grid[::-1], ndim)``, the last axis in array-axis order.
    """
    ndim = positions.shape[1]
    factors = _normalising_scale(source_shape)
    if not (positions.requires_grad and torch.is_grad_enabled()):
        # the same two roundings as below, one component after the other (no flip copy)
        source = reverse_axes(positions) if reverse else positions
        planes = torch.empty_like(source, memory_format=torch.contiguous_format)
        for k in range(ndim):
            torch.mul(source[:, k], factors[k], out=planes[:, k if reverse else ndim - 1 - k])
        return planes.sub_(1.0).movedim(1, -1)
    scale = torch.tensor(factors, device=positions.device, dtype=positions.dtype)
    scale = scale.view(1, ndim, *([1] * (positions.dim() - 2)))
    return (positions * scale - 1.0).movedim(1, -1).flip(-1)


def _planar_grid(
    values: torch.Tensor,
    factors: Sequence[float],
    offsets: Sequence[torch.Tensor],
    reverse: bool = False,
) -> torch.Tensor:
    """grid_sample's grid ``(B, *grid, ndim)`` whose component ``ndim - 1 - k`` is
    ``offsets[k] + factors[k] * values[:, k]`` (an offset broadcasting against ``(B, *grid)``;
    rounded as ``torch.addcmul``), made in one pass without autograd; with ``reverse``, the
    reversed frame's grid ``(B, *grid[::-1], ndim)``, component ``k`` that sum.

    The components are stored one after the other (the last axis is a view across them):
    grid_sample reads such a grid as fast as an interleaved one, and the reversed order costs
    no copy (``flip`` copies a tensor; ``benchmarks/kernel_swaps.py``).
    """
    ndim = values.shape[1]
    if reverse:
        values = reverse_axes(values)
        offsets = [o.permute(*range(o.dim() - 1, -1, -1)) for o in offsets]
    planes = torch.empty_like(values, memory_format=torch.contiguous_format)
    for k in range(ndim):
        target = planes[:, k if reverse else ndim - 1 - k]
        torch.add(offsets[k], values[:, k], alpha=factors[k], out=target)
    return planes.movedim(1, -1)


def reverse_axes(t: torch.Tensor) -> torch.Tensor:
    """``t`` ``(B, C, *spatial)`` seen with its spatial axes in reverse order (a view; its own
    inverse): a tensor stored in NIfTI's order (:func:`stored_reversed`) is contiguous so."""
    return t.permute(0, 1, *range(t.dim() - 1, 1, -1))


def stored_reversed(t: torch.Tensor) -> bool:
    """Whether ``t`` ``(B, C, *spatial)`` stores its spatial axes last to first: NIfTI's order,
    the first axis varying fastest (and not also first to last, as a single voxel does).

    A field on a NIfTI image's grid kept so (:func:`eoir.registration.resample.total_field`)
    is warped in that reversed frame (:func:`warp`, :func:`sample`): reading a NIfTI image in
    its own order and writing a result NIfTI writes without reordering it, to the values of
    the ordinary frame up to float rounding in the interpolation weights.
    """
    return t.dim() > 3 and not t.is_contiguous() and reverse_axes(t).is_contiguous()


def store_reversed(t: torch.Tensor) -> torch.Tensor:
    """``t`` ``(B, C, *spatial)`` with its spatial axes stored last to first
    (:func:`stored_reversed`): the same values, a copy unless it is stored so."""
    if t.dim() <= 3 or stored_reversed(t):
        return t
    return reverse_axes(reverse_axes(t).contiguous())


def _working_dtype(image: torch.Tensor) -> torch.dtype:
    """The dtype an image is sampled in: float32 for reduced-precision images (bf16/fp16
    features under autocast; a bf16 position is off by up to half a voxel at a hundred voxels),
    else its own."""
    return torch.float32 if image.dtype in (torch.bfloat16, torch.float16) else image.dtype


def _grid_sample(image: torch.Tensor, grid: torch.Tensor, mode: str, padding: str) -> torch.Tensor:
    """``F.grid_sample`` (align_corners=True) of ``image`` at a normalised ``grid`` made in
    :func:`_working_dtype`; the result has the image's dtype.

    PyTorch's CPU kernels share their work among threads by batch item only, so a batch of one
    runs on one core. On a CPU with several threads, a batch of one is sampled as a batch of
    slabs of the output grid (along its first axis; the image expanded, not copied): the same
    values, bit for bit, on all cores, forward and backward.
    """
    source = image.to(grid.dtype)
    parts = min(torch.get_num_threads(), grid.shape[1])
    if grid.device.type != "cpu" or grid.shape[0] != 1 or source.shape[0] != 1 or parts < 2:
        out = F.grid_sample(
            source, grid, mode=INTERPOLATIONS[mode], padding_mode=padding, align_corners=True
        )
        return out.to(image.dtype)
    planes = grid.shape[1]
    per_part = -(-planes // parts)
    extra = per_part * parts - planes
    if extra:  # pad the last slab with copies of the first planes, cropped from the result
        grid = torch.cat([grid, grid[:, :extra]], dim=1)
    slabs = grid.reshape(parts, per_part, *grid.shape[2:])
    out = F.grid_sample(
        source.expand(parts, *source.shape[1:]),
        slabs,
        mode=INTERPOLATIONS[mode],
        padding_mode=padding,
        align_corners=True,
    )
    # (parts, C, per_part, ...) -> (1, C, parts * per_part, ...): one reordering copy
    out = out.movedim(0, 1).reshape(1, out.shape[1], parts * per_part, *out.shape[3:])
    return out[:, :, :planes].contiguous().to(image.dtype)


def _sample(image: torch.Tensor, positions: torch.Tensor, mode: str, padding: str) -> torch.Tensor:
    """:func:`sample` without checks (in the reversed frame for positions stored so, without
    autograd: :func:`stored_reversed`)."""
    positions = positions.to(_working_dtype(image))
    if _in_reversed_frame(positions):
        grid = _grid_sample_grid(positions, image.shape[2:], reverse=True)
        return reverse_axes(_grid_sample(reverse_axes(image), grid, mode, padding))
    return _grid_sample(image, _grid_sample_grid(positions, image.shape[2:]), mode, padding)


def _in_reversed_frame(field: torch.Tensor) -> bool:
    """Whether to sample at ``field``'s points in the reversed frame: it is stored so and needs
    no autograd."""
    return not (field.requires_grad and torch.is_grad_enabled()) and stored_reversed(field)


@functools.lru_cache(maxsize=32)
def _normalised_identity(
    shape: tuple[int, ...], device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """grid_sample's identity grid ``(1, *shape, ndim)`` (last axis (x, y[, z])) and the
    per-axis voxel -> normalised scale ``(ndim,)`` in the same order (align_corners=True)."""
    scale = _normalising_scale(shape)
    with torch.inference_mode(False):  # cached: usable later by autograd too
        axes = [
            torch.arange(n, device=device, dtype=dtype) * f - 1.0
            for n, f in zip(shape, scale, strict=True)
        ]
        grid = torch.stack(torch.meshgrid(*axes, indexing="ij")[::-1], dim=-1).unsqueeze(0)
        return grid, torch.tensor(scale[::-1], device=device, dtype=dtype)


def _resample(image: torch.Tensor, disp: torch.Tensor, mode: str, padding: str) -> torch.Tensor:
    """:func:`warp` without checks, for callers that validated their inputs (the hot loops).

    Without autograd through ``disp`` the sampling grid is made in one pass from per-axis
    ramps (:func:`_planar_grid`); with it, in two (a reordering copy and one multiply-add onto
    a cached normalised identity), to the same values.
    """
    dtype = _working_dtype(image)
    if not (disp.requires_grad and torch.is_grad_enabled()):  # one pass, no identity grid
        shape = tuple(disp.shape[2:])
        ndim = len(shape)
        factors = _normalising_scale(shape)
        ramps = [
            (torch.arange(n, device=disp.device, dtype=dtype) * f - 1.0).view(
                [n if j == k else 1 for j in range(ndim)]
            )
            for k, (n, f) in enumerate(zip(shape, factors, strict=True))
        ]
        disp = disp.to(dtype)
        if stored_reversed(disp):
            grid = _planar_grid(disp, factors, ramps, reverse=True)
            return reverse_axes(_grid_sample(reverse_axes(image), grid, mode, padding))
        return _grid_sample(image, _planar_grid(disp, factors, ramps), mode, padding)
    base, scale = _normalised_identity(tuple(disp.shape[2:]), disp.device, dtype)
    grid = torch.addcmul(base, disp.to(dtype).movedim(1, -1).flip(-1), scale)
    return _grid_sample(image, grid, mode, padding)


def sample(
    image: torch.Tensor,
    positions: torch.Tensor,
    mode: Interpolation = "bilinear",
    padding: Padding = "zeros",
) -> torch.Tensor:
    """Sample an image at voxel positions of its own grid (the general form of :func:`warp`).

    Parameters
    ----------
    image : torch.Tensor
        ``(B, C, *spatial_in)``.
    positions : torch.Tensor
        ``(B, ndim, *spatial_out)`` fractional voxel coordinates into ``image``, channel ``k``
        along its array axis ``k``. The output grid may differ from the image's in size and
        geometry (e.g. positions of a fixed grid mapped into a moving image's voxels).
    mode : {"bilinear", "nearest"}
        Interpolation.
    padding : {"zeros", "border"}
        Value outside the image.

    Returns
    -------
    torch.Tensor
        ``(B, C, *spatial_out)``.
    """
    ndim = image.dim() - 2
    if positions.dim() != ndim + 2 or positions.shape[1] != ndim:
        raise ValueError(
            f"positions must be (B, {ndim}, *spatial) for a {ndim}D image, "
            f"got {tuple(positions.shape)}"
        )
    _check_options(mode, padding)
    return _sample(image, positions, mode, padding)


def transform_positions(matrix: np.ndarray | torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Apply an ``(ndim+1, ndim+1)`` homogeneous matrix to a grid of positions.

    Parameters
    ----------
    matrix : array
        Maps the positions' frame to another (e.g. ``inv(A_moving) @ A_fixed``: fixed voxels to
        moving voxels).
    positions : torch.Tensor
        ``(B, ndim, *spatial)`` coordinates.

    Returns
    -------
    torch.Tensor
        ``(B, ndim, *spatial)`` transformed coordinates.
    """
    ndim = positions.shape[1]
    a = _as_affine(matrix, ndim)
    m = torch.as_tensor(a, dtype=positions.dtype, device=positions.device)
    shift = m[:ndim, ndim].view(1, ndim, *([1] * ndim))
    linear = a[:ndim, :ndim]
    if not np.any(linear - np.diag(np.diag(linear))):  # axis-aligned: a scale and a shift
        scale = torch.diagonal(m[:ndim, :ndim]).view(1, ndim, *([1] * ndim))
        return torch.addcmul(shift, positions, scale)
    if stored_reversed(positions):  # the same products per point, in the stored order
        moved = torch.einsum("ij,bj...->bi...", m[:ndim, :ndim], reverse_axes(positions))
        return reverse_axes(moved + shift)
    return torch.einsum("ij,bj...->bi...", m[:ndim, :ndim], positions) + shift


def warp(
    image: torch.Tensor,
    disp: torch.Tensor,
    mode: Interpolation = "bilinear",
    padding: Padding = "zeros",
) -> torch.Tensor:
    """Pull ``image`` back through a displacement field: ``warped(p) = image(p + disp(p))``.

    Parameters
    ----------
    image : torch.Tensor
        ``(B, C, *spatial)`` moving image, features or field, on the field's grid (resample a
        moving image onto the fixed grid first).
    disp : torch.Tensor
        ``(B, ndim, *spatial)`` displacement in voxel units of the fixed grid (module docstring).
        A batch of 1 is broadcast against the image's batch and vice versa.
    mode : {"bilinear", "nearest"}
        Linear (bi/trilinear) interpolation, or nearest neighbour for label maps.
    padding : {"zeros", "border"}
        Value outside the image: zero, or the nearest border voxel.

    Returns
    -------
    torch.Tensor
        ``(B, C, *spatial)``, same dtype as ``image``. Differentiable in ``image`` and ``disp``.
        An all-zero field returns (a copy of) the image exactly; otherwise sample positions carry
        float rounding of about 1e-7 voxel per voxel of extent.

    Examples
    --------
    A constant field of +1 voxel along the last axis reads each voxel's right neighbour:

    >>> image = torch.arange(5.0).view(1, 1, 1, 5)
    >>> disp = torch.zeros(1, 2, 1, 5)
    >>> disp[:, 1] = 1.0
    >>> warp(image, disp)
    tensor([[[[1., 2., 3., 4., 0.]]]])
    """
    ndim = _check_field(disp)
    if image.dim() != ndim + 2 or image.shape[2:] != disp.shape[2:]:
        raise ValueError(
            f"image {tuple(image.shape)} must be (B, C, *spatial) on the field's grid "
            f"{tuple(disp.shape[2:])}"
        )
    _check_options(mode, padding)
    if disp.shape[0] != image.shape[0]:
        if disp.shape[0] == 1:
            disp = disp.expand(image.shape[0], *disp.shape[1:])
        elif image.shape[0] == 1:
            image = image.expand(disp.shape[0], *image.shape[1:])
        else:
            raise ValueError(f"batch sizes differ: image {image.shape[0]}, field {disp.shape[0]}")
    if not disp.requires_grad and disp.device.type != "meta" and not torch.any(disp):
        # the identity: no interpolation, so no rounding of the normalised sampling grid
        return image.clone()
    return _resample(image, disp, mode, padding)


def integrate(velocity: torch.Tensor, steps: int = 7, padding: Padding = "zeros") -> torch.Tensor:
    """Exponentiate a stationary velocity field by scaling and squaring.

    ``u = v / 2**steps``, then ``steps`` times ``u <- u + warp(u, u)``.

    Parameters
    ----------
    velocity : torch.Tensor
        ``(B, ndim, *spatial)`` velocity in voxel units of its own grid.
    steps : int
        Number of squarings; 0 returns the velocity unchanged (no integration).
    padding : {"zeros", "border"}
        How the field is extended outside the grid while squaring ("zeros" as in EOIR and
        VoxelMorph).

    Returns
    -------
    torch.Tensor
        ``(B, ndim, *spatial)`` displacement of the time-1 flow, voxel units.

    Examples
    --------
    A constant velocity integrates to the same translation (away from the borders):

    >>> velocity = torch.full((1, 3, 16, 16, 16), 0.5)
    >>> disp = integrate(velocity)
    >>> round(float(disp[0, 0, 8, 8, 8]), 4)
    0.5
    """
    _check_field(velocity)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    _check_options("bilinear", padding)
    disp = velocity / (2.0**steps)
    for _ in range(steps):
        # added into the fresh warped field (grid_sample's backward does not need its output)
        disp = _resample(disp, disp, "bilinear", padding).add_(disp)
    return disp


def compose(first: torch.Tensor, second: torch.Tensor, padding: Padding = "zeros") -> torch.Tensor:
    """Compose two displacement fields on the same grid.

    Warping an image by ``first`` and the result by ``second`` equals one warp by the composed
    field: ``warp(warp(I, first), second) == warp(I, compose(first, second))`` (up to
    interpolation). As maps, ``id + out = (id + first) o (id + second)``, that is
    ``out(p) = second(p) + first(p + second(p))``.

    Parameters
    ----------
    first, second : torch.Tensor
        ``(B, ndim, *spatial)`` displacements in voxel units of the same grid.
    padding : {"zeros", "border"}
        How ``first`` is extended outside the grid.

    Returns
    -------
    torch.Tensor
        ``(B, ndim, *spatial)`` composed displacement, voxel units.

    Examples
    --------
    Two translations add up:

    >>> first, second = torch.full((1, 2, 8, 8), 1.0), torch.full((1, 2, 8, 8), 2.0)
    >>> compose(first, second)[0, :, 4, 4]
    tensor([3., 3.])
    """
    _check_field(first)
    _check_field(second, first.shape[2:])
    _check_options("bilinear", padding)
    out = _resample(first, second, "bilinear", padding)
    if out.dtype != torch.promote_types(out.dtype, second.dtype):
        return out + second
    return out.add_(second)  # into the fresh warped field (grid_sample's backward keeps none)


def solve_positions(
    disp: torch.Tensor,
    targets: torch.Tensor,
    iterations: int = 20,
    tolerance: float = 1e-3,
    coarse_start: bool = False,
) -> torch.Tensor:
    """The positions ``p`` with ``p + disp(p) = targets``, by Newton's method.

    ``p <- p - (I + J(p))^-1 (p + disp(p) - targets)`` from ``p = targets``, with ``disp`` and
    its Jacobian ``J`` (central differences) sampled linearly, border values outside the grid,
    until no position moves by more than ``tolerance`` voxels or after ``iterations`` steps.
    Where ``I + J`` is singular (a fold) the step falls back to the fixed-point one
    (``p <- targets - disp(p)``); no step is longer than the residual plus 2 voxels (near a
    singular ``I + J`` a full step can run off the grid). Newton converges where
    ``id + disp`` is locally invertible, also where the field stretches by more than 2 (the
    fixed-point iteration does not).

    Parameters
    ----------
    disp : torch.Tensor
        ``(1, ndim, *grid)`` displacement in voxel units of its grid.
    targets : torch.Tensor
        ``(1, ndim, *out)`` coordinates in voxels of that grid (any output grid).
    iterations : int
        Most iterations.
    tolerance : float
        Largest step of a position, voxels, at which it stops.
    coarse_start : bool
        Solve for every second target along each axis first and start the rest from that
        (interpolated): fewer full-size iterations for large, smooth grids of targets.

    Returns
    -------
    torch.Tensor
        ``(1, ndim, *out)`` positions in voxels of ``disp``'s grid.
    """
    ndim = disp.shape[1]
    spatial = tuple(range(2, 2 + ndim))
    jacobian = torch.cat(
        [torch.stack(torch.gradient(disp[:, i], dim=tuple(a - 1 for a in spatial)), 1)
         for i in range(ndim)], 1
    )  # (1, ndim * ndim, *grid): channel i * ndim + j = d disp_i / d x_j  # fmt: skip
    both = torch.cat([disp, jacobian], 1)
    initial = None
    if coarse_start:
        coarse = targets[(..., *[slice(None, None, 2)] * ndim)]
        offset = _newton(both, coarse, coarse, iterations, tolerance) - coarse
        half = identity_grid(targets.shape[2:], targets.device, targets.dtype) / 2
        initial = targets + sample(offset, half, padding="border")
    return _newton(both, targets, initial, iterations, tolerance)


def _newton(
    both: torch.Tensor,
    targets: torch.Tensor,
    initial: torch.Tensor | None,
    iterations: int,
    tolerance: float,
) -> torch.Tensor:
    """:func:`solve_positions`' iterations on the field and its Jacobian stacked (``both``)."""
    ndim = targets.shape[1]
    flat = targets.reshape(ndim, -1)
    positions = (targets if initial is None else initial).reshape(ndim, -1).clone()
    active = torch.arange(flat.shape[1], device=flat.device)
    for _ in range(iterations):
        if not len(active):
            break
        # only the positions that still move: most converge in a few steps
        points = positions[:, active].reshape(1, ndim, -1, *[1] * (ndim - 1))
        values = sample(both, points, padding="border").reshape(1, ndim + ndim * ndim, -1)
        residual = positions[:, active] + values[0, :ndim] - flat[:, active]
        matrix = values[:, ndim:].unflatten(1, (ndim, ndim))  # (1, ndim, ndim, M)
        for k in range(ndim):
            matrix[:, k, k] += 1.0
        step, invertible = _solve_small(matrix, residual[None])
        step = torch.where(invertible, step, residual[None])[0]
        # a trust region: near a singular I + J (a strong compression at the grid's edge, say)
        # a full Newton step can leave for infinity; no step moves further than the residual
        # is long plus 2 voxels
        longest = residual.norm(dim=0) + 2.0
        length = step.norm(dim=0)
        step = step * torch.clamp(longest / length.clamp_min(1e-12), max=1.0)
        positions[:, active] -= step
        active = active[step.abs().amax(0) >= tolerance]
    return positions.reshape(targets.shape)


def _solve_small(matrix: torch.Tensor, vector: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``matrix^-1 vector`` per voxel for ``(1, n, n, *out)`` and ``(1, n, *out)``, n = 2 or 3,
    by cofactors; and where the matrix is invertible (a determinant above 1e-3)."""
    m = matrix[0]
    if m.shape[0] == 2:
        det = m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]
        inverse = [[m[1, 1], -m[0, 1]], [-m[1, 0], m[0, 0]]]
    else:
        cof = [[m[(i + 1) % 3, (j + 1) % 3] * m[(i + 2) % 3, (j + 2) % 3]
                - m[(i + 1) % 3, (j + 2) % 3] * m[(i + 2) % 3, (j + 1) % 3]
                for j in range(3)] for i in range(3)]  # fmt: skip
        det = m[0, 0] * cof[0][0] + m[0, 1] * cof[0][1] + m[0, 2] * cof[0][2]
        inverse = [[cof[j][i] for j in range(3)] for i in range(3)]  # the adjugate
    invertible = det > 1e-3
    safe = torch.where(invertible, det, torch.ones_like(det))
    v = vector[0]
    out = torch.stack([sum(inverse[i][j] * v[j] for j in range(len(v))) / safe
                       for i in range(len(v))])  # fmt: skip
    return out[None], invertible[None, None]


def invert(disp: torch.Tensor, iterations: int = 20, tolerance: float = 1e-3) -> torch.Tensor:
    """The inverse of a displacement on its own grid: ``v`` with ``compose(disp, v) ~ 0``.

    Found numerically (:func:`solve_positions`): ``v(q) = p - q`` where ``p + disp(p) = q``.
    Warping by ``disp`` and then by ``v`` (or the other way round) is the identity, up to the
    tolerance and interpolation, where both grids overlap.

    Parameters
    ----------
    disp : torch.Tensor
        ``(1, ndim, *spatial)`` displacement in voxels.
    iterations, tolerance
        As :func:`solve_positions`.

    Returns
    -------
    torch.Tensor
        ``(1, ndim, *spatial)`` inverse displacement in voxels.

    Examples
    --------
    >>> shift = torch.full((1, 2, 8, 8), 1.5)
    >>> invert(shift)[0, :, 4, 4]
    tensor([-1.5000, -1.5000])
    """
    grid = identity_grid(disp.shape[2:], disp.device, disp.dtype)
    return solve_positions(disp, grid, iterations, tolerance) - grid


def resize_scale(shape: Sequence[int], old_shape: Sequence[int]) -> list[float]:
    """Per-axis factor from voxels of a grid of ``old_shape`` to voxels of a grid of ``shape``
    covering the same extent with first and last voxel centres shared (``align_corners=True``):
    ``(new - 1) / (old - 1)``, 1 for an axis of one voxel."""
    return [
        (new - 1) / (old - 1) if old > 1 else 1.0 for new, old in zip(shape, old_shape, strict=True)
    ]


def resize_field(
    disp: torch.Tensor,
    shape: Sequence[int],
    magnitude_scale: Sequence[float] | None = None,
) -> torch.Tensor:
    """Resample a displacement field onto a grid of another size covering the same extent.

    The field is interpolated (linear, ``align_corners=True``: first and last voxel centres stay
    put) and each channel ``k`` is multiplied by ``magnitude_scale[k]``, the factor that converts
    a length in old voxels to new voxels along axis ``k``.

    Parameters
    ----------
    disp : torch.Tensor
        ``(B, ndim, *spatial)`` displacement, voxel units of its grid.
    shape : sequence of int
        New spatial shape.
    magnitude_scale : sequence of float, optional
        Per-axis factor. Default: the exact one for ``align_corners=True``,
        ``(new_k - 1) / (old_k - 1)``. EOIR's pyramid passes ``2`` per halved axis, as the
        method does.

    Returns
    -------
    torch.Tensor
        ``(B, ndim, *shape)`` displacement, voxel units of the new grid.
    """
    ndim = _check_field(disp)
    shape = tuple(int(n) for n in shape)
    if len(shape) != ndim:
        raise ValueError(f"shape must have {ndim} entries, got {shape}")
    if magnitude_scale is None:
        magnitude_scale = resize_scale(shape, disp.shape[2:])
    if len(magnitude_scale) != ndim:
        raise ValueError(f"magnitude_scale must have {ndim} entries, got {magnitude_scale}")
    mode = "trilinear" if ndim == 3 else "bilinear"
    out = disp
    if shape != tuple(disp.shape[2:]):
        out = F.interpolate(disp, size=shape, mode=mode, align_corners=True)
    if any(s != 1 for s in magnitude_scale):
        factors = torch.tensor(magnitude_scale, device=disp.device, dtype=disp.dtype)
        out = out * factors.view(1, ndim, *([1] * ndim))
    return out


def jacobian_determinant(
    disp: torch.Tensor, spacing: Sequence[float] | None = None
) -> torch.Tensor:
    """Determinant of the Jacobian of the map ``x -> x + disp(x)``.

    Derivatives are central differences inside the grid and one-sided at its faces (as
    ``numpy.gradient``, which the Learn2Reg evaluation uses).

    Parameters
    ----------
    disp : torch.Tensor
        ``(B, ndim, *spatial)`` displacement. In voxel units when ``spacing`` is None; in
        millimetres along each array axis when ``spacing`` is given. (Both describe the same
        map: a voxel field ``u`` and its mm version ``u * spacing`` have the same determinant.)
    spacing : sequence of float, optional
        Voxel size in mm along each array axis, used as the step of the differences.

    Returns
    -------
    torch.Tensor
        ``(B, *spatial)`` determinant (dimensionless: 1 = volume kept, <= 0 = folding).
    """
    out = disp.new_empty(disp.shape[0], *disp.shape[2:])
    for start, det in jacobian_determinant_slabs(disp, spacing):
        out[:, start : start + det.shape[1]] = det
    return out


def jacobian_determinant_slabs(
    disp: torch.Tensor,
    spacing: Sequence[float] | None = None,
    dtype: torch.dtype | None = None,
    components_reversed: bool = False,
) -> Iterator[tuple[int, torch.Tensor]]:
    """:func:`jacobian_determinant` slab by slab along the first spatial axis, in order.

    Each slab of a few planes is differenced with a one-plane halo, so its values are those of
    the whole grid; the temporaries stay in cache (faster than whole-grid differences). A
    consumer can reduce the slabs without the whole map ever existing.

    ``dtype`` (default: the field's) is the arithmetic's: each slab is converted on its own
    (e.g. a float32 field, float64 determinants, without a float64 copy of the field).
    ``components_reversed``: channel ``k`` is the displacement along spatial axis
    ``ndim - 1 - k`` (a field stored in NIfTI's order seen with its axes reversed, its
    components not: the same determinants without reordering them).

    Yields
    ------
    (int, torch.Tensor)
        First plane of the slab and its ``(B, planes, *rest)`` determinant.
    """
    ndim = _check_field(disp)
    steps = [1.0] * ndim if spacing is None else [float(s) for s in spacing]
    if len(steps) != ndim:
        raise ValueError(f"spacing must have {ndim} entries, got {spacing}")
    dims = tuple(range(2, 2 + ndim))
    size = disp.shape[2]
    for start in range(0, size, _JACOBIAN_PLANES):
        stop = min(size, start + _JACOBIAN_PLANES)
        low, high = max(0, start - 1), min(size, stop + 1)
        # grads[j][:, i] = d disp_i / d x_j on the slab's own planes
        grads = [
            g[:, :, start - low : stop - low]
            for g in torch.gradient(
                disp[:, :, low:high].to(dtype or disp.dtype), spacing=steps, dim=dims
            )
        ]
        component = [ndim - 1 - i for i in range(ndim)] if components_reversed else range(ndim)
        jac = [[grads[j][:, c] for j in range(ndim)] for c in component]
        for i in range(ndim):
            jac[i][i] = jac[i][i] + 1.0
        yield start, _determinant(jac)


_JACOBIAN_PLANES = 8


def _determinant(jac: list[list[torch.Tensor]]) -> torch.Tensor:
    """Determinant of a 2x2 or 3x3 matrix given as nested lists of equal-shape tensors."""
    if len(jac) == 2:
        return jac[0][0] * jac[1][1] - jac[0][1] * jac[1][0]
    return (
        jac[0][0] * (jac[1][1] * jac[2][2] - jac[1][2] * jac[2][1])
        - jac[0][1] * (jac[1][0] * jac[2][2] - jac[1][2] * jac[2][0])
        + jac[0][2] * (jac[1][0] * jac[2][1] - jac[1][1] * jac[2][0])
    )


# --- padding (the model's "any size" promise) --------------------------------------------------


def pad_to_multiple(
    x: torch.Tensor, multiple: Sequence[int], value: float = 0.0
) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Pad the spatial axes at their high end up to a multiple of ``multiple`` per axis.

    Padding only at the high end keeps voxel ``p`` at index ``p``, so displacements computed on
    the padded grid are valid on the original one after :func:`crop_to_shape`.

    Parameters
    ----------
    x : torch.Tensor
        ``(B, C, *spatial)``.
    multiple : sequence of int
        Required divisor per spatial axis.
    value : float
        Fill value.

    Returns
    -------
    padded : torch.Tensor
        ``(B, C, *padded_spatial)``.
    shape : tuple of int
        The original spatial shape, for :func:`crop_to_shape`.
    """
    shape = tuple(x.shape[2:])
    if len(multiple) != len(shape):
        raise ValueError(f"multiple must have {len(shape)} entries, got {multiple}")
    extra = [(-n) % int(m) for n, m in zip(shape, multiple, strict=True)]
    if not any(extra):
        return x, shape
    pad: list[int] = []
    for e in reversed(extra):  # F.pad takes the last axis first
        pad += [0, e]
    return F.pad(x, pad, value=value), shape


def crop_to_shape(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Undo :func:`pad_to_multiple`: keep the first ``shape[k]`` voxels of spatial axis ``k``.

    Parameters
    ----------
    x : torch.Tensor
        ``(B, C, *padded_spatial)``.
    shape : sequence of int
        Original spatial shape.

    Returns
    -------
    torch.Tensor
        ``(B, C, *shape)`` (a view).
    """
    if tuple(x.shape[2:]) == tuple(shape):
        return x
    return x[(slice(None), slice(None), *(slice(0, int(n)) for n in shape))]


# --- world coordinates -------------------------------------------------------------------------

FRAMES: dict[str, str] = {"ras": "nibabel's world", "lps": "ITK's world (x and y negated)"}
Frame = Literal["ras", "lps"]


def _as_affine(affine: np.ndarray | torch.Tensor, ndim: int) -> np.ndarray:
    a = np.asarray(affine.detach().cpu() if isinstance(affine, torch.Tensor) else affine, float)
    if a.shape != (ndim + 1, ndim + 1):
        raise ValueError(f"a {ndim}D affine must be {(ndim + 1, ndim + 1)}, got {a.shape}")
    return a


def lps_affine(affine: np.ndarray | torch.Tensor) -> np.ndarray:
    """Convert a voxel -> RAS affine into the voxel -> LPS affine (ITK's world), or back.

    Parameters
    ----------
    affine : array
        ``(ndim+1, ndim+1)`` voxel-index -> world (mm) matrix.

    Returns
    -------
    numpy.ndarray
        The same matrix with the world x and y axes negated.
    """
    a = np.asarray(affine, dtype=float)
    flip = np.ones(a.shape[0])
    flip[:2] = -1.0
    return flip[:, None] * a


def _linear_part(affine: np.ndarray | torch.Tensor, ndim: int, frame: str) -> np.ndarray:
    look_up_option("frame", frame, FRAMES)
    a = _as_affine(affine, ndim)
    if frame == "lps":
        a = lps_affine(a)
    return a[:ndim, :ndim]


def field_to_world(
    disp: torch.Tensor, affine: np.ndarray | torch.Tensor, frame: Frame = "ras"
) -> torch.Tensor:
    """Convert a voxel-unit displacement into a world displacement in mm.

    ``d_world = A[:ndim, :ndim] @ d_vox`` per voxel (a displacement is a vector: no translation).

    Parameters
    ----------
    disp : torch.Tensor
        ``(B, ndim, *spatial)`` displacement in voxel units of the grid ``affine`` describes.
    affine : array
        ``(ndim+1, ndim+1)`` voxel -> RAS mm matrix of that grid.
    frame : {"ras", "lps"}
        World frame of the result; ITK/ANTs fields are LPS.

    Returns
    -------
    torch.Tensor
        ``(B, ndim, *spatial)``; channel ``k`` is the world (x, y[, z]) component in mm.

    Examples
    --------
    One voxel along the first axis of a 2 mm grid is 2 mm along RAS x, -2 mm along LPS x:

    >>> disp = torch.zeros(1, 3, 4, 4, 4)
    >>> disp[:, 0] = 1.0
    >>> affine = np.diag([2.0, 2.0, 2.0, 1.0])
    >>> field_to_world(disp, affine)[0, :, 0, 0, 0]
    tensor([2., 0., 0.])
    >>> field_to_world(disp, affine, frame="lps")[0, :, 0, 0, 0]
    tensor([-2., 0., 0.])
    """
    ndim = _check_field(disp)
    m = torch.as_tensor(_linear_part(affine, ndim, frame), dtype=disp.dtype, device=disp.device)
    return torch.einsum("ij,bj...->bi...", m, disp)


def field_from_world(
    disp: torch.Tensor, affine: np.ndarray | torch.Tensor, frame: Frame = "ras"
) -> torch.Tensor:
    """Inverse of :func:`field_to_world`: world displacement in mm -> voxel units.

    Parameters
    ----------
    disp : torch.Tensor
        ``(B, ndim, *spatial)`` world displacement in mm (frame given by ``frame``).
    affine : array
        ``(ndim+1, ndim+1)`` voxel -> RAS mm matrix of the grid.
    frame : {"ras", "lps"}
        World frame of ``disp``.

    Returns
    -------
    torch.Tensor
        ``(B, ndim, *spatial)`` displacement in voxel units, channel ``k`` = array axis ``k``.
    """
    ndim = _check_field(disp)
    inv = np.linalg.inv(_linear_part(affine, ndim, frame))
    m = torch.as_tensor(inv, dtype=disp.dtype, device=disp.device)
    return torch.einsum("ij,bj...->bi...", m, disp)


def voxel_to_world(points: np.ndarray, affine: np.ndarray | torch.Tensor) -> np.ndarray:
    """Map voxel coordinates to world coordinates.

    Parameters
    ----------
    points : array
        ``(N, ndim)`` voxel coordinates (array axis order, may be fractional).
    affine : array
        ``(ndim+1, ndim+1)`` voxel -> world matrix (the world frame of the result is the affine's).

    Returns
    -------
    numpy.ndarray
        ``(N, ndim)`` world coordinates in mm.
    """
    p = np.atleast_2d(np.asarray(points, dtype=float))
    a = _as_affine(affine, p.shape[1])
    return p @ a[:-1, :-1].T + a[:-1, -1]


def world_to_voxel(points: np.ndarray, affine: np.ndarray | torch.Tensor) -> np.ndarray:
    """Map world coordinates (mm, the affine's frame) to fractional voxel coordinates.

    Parameters
    ----------
    points : array
        ``(N, ndim)`` world coordinates.
    affine : array
        ``(ndim+1, ndim+1)`` voxel -> world matrix.

    Returns
    -------
    numpy.ndarray
        ``(N, ndim)`` voxel coordinates in array axis order.
    """
    p = np.atleast_2d(np.asarray(points, dtype=float))
    inv = np.linalg.inv(_as_affine(affine, p.shape[1]))
    return p @ inv[:-1, :-1].T + inv[:-1, -1]


def sample_at_points(field: torch.Tensor, points: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Linearly interpolate a field (or image) at fractional voxel positions.

    Parameters
    ----------
    field : torch.Tensor
        ``(1, C, *spatial)``.
    points : array
        ``(N, ndim)`` voxel coordinates, array axis order. Outside the grid the border value is
        used.

    Returns
    -------
    torch.Tensor
        ``(N, C)`` interpolated values.
    """
    ndim = field.dim() - 2
    pts = torch.as_tensor(np.asarray(points, dtype=float), dtype=field.dtype, device=field.device)
    if pts.dim() != 2 or pts.shape[1] != ndim:
        raise ValueError(f"points must be (N, {ndim}), got {tuple(pts.shape)}")
    # the points as a (1, ndim, N, 1[, 1]) grid of positions
    positions = pts.T.reshape(1, ndim, pts.shape[0], *([1] * (ndim - 1)))
    out = _sample(field, positions, "bilinear", "border")
    return out.reshape(field.shape[1], pts.shape[0]).T
