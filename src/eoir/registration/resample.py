"""Map images between grids in world space: the bridge between files and fields.

A registration result is one displacement ``disp`` on the fixed grid (voxel units of the fixed
grid, :mod:`eoir.spatial` convention) that already includes any affine part. It means: fixed
voxel ``p`` corresponds to the moving image's world point ``A_f (p + disp(p))``, i.e. to moving
voxel ``A_m^-1 A_f (p + disp(p))``. A moving image on another grid is therefore sampled once,
from its own voxels, with no intermediate resampling.

An affine pre-alignment is a 4x4 ``world`` matrix mapping fixed RAS world points to moving RAS
world points (3x3 in 2-D, on the in-plane world); :func:`total_field` folds it into ``disp``.
Both images of a pair have the same dimension (:meth:`eoir.image.Image.ndim`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from eoir.errors import InputError
from eoir.image import Image
from eoir.spatial import (
    Interpolation,
    identity_grid,
    resize_field,
    resize_scale,
    reverse_axes,
    sample,
    store_reversed,
    stored_reversed,
    transform_positions,
    warp,
)

__all__ = ["moving_positions", "to_fixed_grid", "total_field", "warp_image"]


def _matrix(fixed: Image, moving_affine: np.ndarray, world: np.ndarray | None) -> np.ndarray:
    """Fixed voxel -> moving voxel matrix ``A_m^-1 [world] A_f``."""
    middle = np.eye(fixed.ndim + 1) if world is None else np.asarray(world, dtype=float)
    return np.linalg.inv(moving_affine) @ middle @ fixed.affine


def moving_positions(
    fixed: Image,
    moving_affine: np.ndarray,
    disp: torch.Tensor | None = None,
    world: np.ndarray | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Moving-image voxel coordinates of every fixed voxel.

    Parameters
    ----------
    fixed : Image
        The fixed grid.
    moving_affine : numpy.ndarray
        ``(ndim+1, ndim+1)`` voxel -> RAS matrix of the moving image.
    disp : torch.Tensor, optional
        ``(1, ndim, *fixed.shape)`` displacement in fixed voxels (applied before ``world``).
    world : numpy.ndarray, optional
        ``(ndim+1, ndim+1)`` fixed world -> moving world (RAS mm) affine.
    dtype : torch.dtype
        Dtype of the result.

    Returns
    -------
    torch.Tensor
        ``(1, ndim, *fixed.shape)`` fractional voxel coordinates into the moving array.
    """
    device = disp.device if disp is not None else torch.device("cpu")
    positions = identity_grid(fixed.shape, device, dtype)
    if disp is not None:
        positions = torch.add(disp.to(dtype), positions)  # stored as disp is (stored_reversed)
    return transform_positions(_matrix(fixed, moving_affine, world), positions)


def to_fixed_grid(
    moving: Image,
    fixed: Image,
    disp: torch.Tensor | None = None,
    world: np.ndarray | None = None,
    values: np.ndarray | None = None,
    mode: Interpolation = "bilinear",
    positions: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sample the moving image onto the fixed grid (optionally through ``world`` and ``disp``).

    Parameters
    ----------
    moving : Image
        Image to sample.
    fixed : Image
        Target grid.
    disp : torch.Tensor, optional
        ``(1, ndim, *fixed.shape)`` displacement in fixed voxels.
    world : numpy.ndarray, optional
        ``(ndim+1, ndim+1)`` fixed world -> moving world affine.
    values : numpy.ndarray, optional
        Array to sample instead of ``moving.array`` (same grid), e.g. normalised intensities.
    mode : {"bilinear", "nearest"}
        Interpolation; outside the moving image the value is 0.
    positions : torch.Tensor, optional
        :func:`moving_positions` of this fixed grid, moving grid, ``disp`` and ``world``,
        made once for several images on one moving grid (an image and its labels).

    Returns
    -------
    torch.Tensor
        ``(1, 1, *fixed.shape)``: float32, or float64 for nearest sampling of integers too
        large for float32 to hold exactly.

    Raises
    ------
    InputError
        The two have different dimensions (a 2-D image and a 3-D grid).
    """
    if moving.ndim != fixed.ndim:
        raise InputError(
            f"{moving.path or 'moving image'}: is {moving.ndim}-D and the grid of "
            f"{fixed.path or 'the fixed image'} {fixed.ndim}-D: both must have the same dimension"
        )
    array = moving.array if values is None else values
    dtype = torch.float32
    if mode == "nearest" and np.issubdtype(array.dtype, np.integer) and array.size:
        if max(abs(int(array.min())), abs(int(array.max()))) >= 2**24:
            dtype = torch.float64
    device = disp.device if disp is not None else torch.device("cpu")
    if not (array.flags.c_contiguous or array.flags.f_contiguous):
        array = np.ascontiguousarray(array)
    # A NIfTI volume is stored first axis fastest (Fortran order). grid_sample reads any
    # strides (the same values), but gathers read memory far apart when the output is visited
    # in another order than the image is stored: for as many samples as voxels (a warp onto a
    # grid like its own) the image is stored as the field is (total_field keeps NIfTI's order;
    # the warp then runs in that frame, stored_reversed), reordered with the float conversion
    # if it is not; for few (the network's working grid) it is read as it is, without a copy
    # (benchmarks/kernel_swaps.py --only reading)
    image = torch.from_numpy(array).to(device=device, dtype=dtype)[None, None]
    if math.prod(fixed.shape) * 2 >= array.size:
        field = positions if positions is not None else disp
        if field is not None and stored_reversed(field):
            image = store_reversed(image)
        else:
            image = image.contiguous()
    if positions is None and world is None and moving.same_grid(fixed):
        if disp is None:
            return image
        # one grid: the field's own warp (a sampling grid in one pass, no position map)
        return warp(image, disp.to(dtype), mode=mode, padding="zeros")
    if positions is None:
        positions = moving_positions(fixed, moving.affine, disp, world, dtype)
    return sample(image, positions.to(dtype), mode=mode, padding="zeros")


def warp_image(
    moving: Image,
    fixed: Image,
    disp: torch.Tensor | None = None,
    mode: Interpolation = "bilinear",
    positions: torch.Tensor | None = None,
) -> np.ndarray:
    """Warp an original moving image (or label map) onto the fixed grid, keeping its dtype.

    Parameters
    ----------
    moving : Image
        The image as read (any grid, any dtype).
    fixed : Image
        The fixed grid.
    disp : torch.Tensor, optional
        ``(1, ndim, *fixed.shape)`` total displacement in fixed voxels (affine part included);
        None maps the image by geometry alone (before any registration).
    mode : {"bilinear", "nearest"}
        Linear for intensities, nearest for label maps (values are kept exactly).
    positions : torch.Tensor, optional
        The moving voxel of each fixed voxel, made once for several images on one moving grid
        (see :func:`to_fixed_grid`).

    Returns
    -------
    numpy.ndarray
        ``(*fixed.shape)`` in ``moving.array``'s dtype (rounded and clipped for integer types).
    """
    warped = to_fixed_grid(moving, fixed, disp=disp, mode=mode, positions=positions)[0, 0].cpu()
    dtype = moving.array.dtype
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        warped = warped.round_().clamp_(info.min, info.max)  # half to even, as numpy.rint
    elif dtype == np.bool_:
        warped = warped > 0.5
    return warped.numpy().astype(dtype, copy=False)


def total_field(
    fixed: Image, disp: torch.Tensor | None = None, world: np.ndarray | None = None
) -> torch.Tensor:
    """Fold an affine pre-alignment into a displacement on the fixed grid.

    Parameters
    ----------
    fixed : Image
        The fixed grid.
    disp : torch.Tensor, optional
        ``(1, ndim, *shape)`` deformable displacement (zero if None): on the fixed grid in fixed
        voxels, or on a coarser grid of the same extent (first and last voxel centres shared,
        a network's working grid) in that grid's voxels, then brought onto the fixed grid by
        linear interpolation as :func:`eoir.spatial.resize_field` does, in the same pass.
    world : numpy.ndarray, optional
        ``(ndim+1, ndim+1)`` fixed world -> moving world affine (identity if None).

    Returns
    -------
    torch.Tensor
        ``(1, ndim, *fixed.shape)`` float32: ``A_f^-1 world A_f (p + disp(p)) - p``, fixed
        voxels.
    """
    ndim, shape = fixed.ndim, tuple(fixed.shape)
    device = disp.device if disp is not None else torch.device("cpu")
    full = None  # the fixed voxel -> moving voxel matrix through world
    if world is not None:
        full = torch.as_tensor(_matrix(fixed, fixed.affine, world), dtype=torch.float64)
    if disp is None:
        out = torch.zeros(1, ndim, *shape, device=device)
    else:
        # the interpolation is linear, so the matrix (with the coarse grid's voxel lengths
        # converted to fixed voxels) goes onto the coarse field before it: one full-size pass
        scale = resize_scale(shape, disp.shape[2:])
        matrix = torch.diag(torch.tensor(scale, dtype=torch.float64))
        if full is not None:
            matrix = full[:ndim, :ndim] @ matrix
        if torch.equal(matrix, torch.eye(ndim, dtype=torch.float64)):
            # a copy only where nothing below makes one (the ramps are added in place)
            out = disp.to(torch.float32, copy=tuple(disp.shape[2:]) == shape)
        else:
            out = torch.einsum("ij,bj...->bi...", matrix.to(device, torch.float32), disp.float())
        if tuple(out.shape[2:]) != shape:
            # resized in NIfTI's order (the first axis fastest, stored_reversed): the warps of
            # the images then read them in their own order and the outputs are written as
            # they are stored (benchmarks/kernel_swaps.py --only reading)
            out = resize_field(reverse_axes(out), shape[::-1], magnitude_scale=[1.0] * ndim)
            out = reverse_axes(out)
    if full is None:  # A_f^-1 A_f (p + disp) - p
        return out
    # + (M - I) p + t, M and t the voxel matrix: per component a sum of one ramp per axis,
    # added by broadcasting (no grid of positions); float32 sums of small terms, as exact as
    # float64 positions less the grid (benchmarks/kernel_swaps.py)
    change = full[:ndim, :ndim] - torch.eye(ndim, dtype=torch.float64)
    ramps = [torch.arange(n, dtype=torch.float64) for n in shape]
    along = [[-1 if k == j else 1 for k in range(ndim - 1)] for j in range(ndim - 1)]
    for i in range(ndim):
        # all axes but the last summed on a small grid, then the last axis's ramp
        head = full[i, ndim].clone().reshape([1] * (ndim - 1))
        for j in range(ndim - 1):
            head = head + (change[i, j] * ramps[j]).reshape(along[j])
        tail = change[i, ndim - 1] * ramps[ndim - 1]
        component = out[0, i]
        component += head.to(device, torch.float32).unsqueeze(-1)
        component += tail.to(device, torch.float32)
    return out
