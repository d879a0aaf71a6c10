"""Linear transforms on disk: ITK's text files (``.tfm``, ``.txt``) and ANTs' ``.mat``.

In memory an alignment is eoir's ``world`` matrix: ``(ndim+1, ndim+1)``, mapping fixed RAS
world points (mm) to moving RAS world points (:mod:`eoir.registration.resample`). On disk it is
an ITK transform, which maps fixed **LPS** points to moving LPS points (the registration
direction: it resamples the moving image onto the fixed grid), as ``antsApplyTransforms``,
SimpleITK, ITK and 3D Slicer read it. ``.mat`` is ITK's MATLAB-format transform, ANTs' own.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from eoir.errors import InputError, reason
from eoir.spatial import lps_affine

__all__ = ["TRANSFORM_SUFFIXES", "read_transform", "transform_to_sitk", "world_from_sitk"]

TRANSFORM_SUFFIXES = (".tfm", ".txt", ".mat")


def _flip(ndim: int) -> np.ndarray:
    return lps_affine(np.eye(ndim + 1))  # diag(-1, -1[, 1], 1): RAS <-> LPS


def read_transform(path: str | os.PathLike, ndim: int = 3) -> np.ndarray:
    """Read a linear ITK or ANTs transform as eoir's fixed -> moving RAS world matrix.

    Parameters
    ----------
    path : path
        An ITK transform file (``.tfm``, ``.txt``) or an ANTs ``.mat`` (any linear ITK type:
        translation, rigid, similarity, affine; a composite of linear ones).
    ndim : int
        The images' dimension (2 or 3); the file must hold a transform of that dimension.

    Returns
    -------
    numpy.ndarray
        ``(ndim+1, ndim+1)`` fixed RAS world (mm) -> moving RAS world.

    Raises
    ------
    InputError
        Missing or unreadable file, another dimension, or a transform that is not linear (a
        displacement field or B-spline: give those as ``eoir apply --field``).
    """
    import SimpleITK as sitk  # imported on use: slow to import

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: transform not found")
    try:
        transform = sitk.ReadTransform(str(p))
    except (RuntimeError, OSError) as err:
        raise InputError(f"{p}: cannot read transform ({reason(err)})") from None
    if transform.GetDimension() != ndim:
        raise InputError(
            f"{p}: is a {transform.GetDimension()}-D transform; the images are {ndim}-D"
        )
    # the matrix read off ndim + 1 points, then checked on others: linear, or refused
    world = world_from_sitk(transform)
    flip = _flip(ndim)
    lps = flip @ world @ flip
    probes = np.random.default_rng(0).uniform(-150, 150, (8, ndim))
    for point in probes:
        expected = lps[:ndim, :ndim] @ point + lps[:ndim, ndim]
        if not np.allclose(transform.TransformPoint(tuple(point)), expected, atol=1e-3):
            raise InputError(
                f"{p}: is not a linear transform ({transform.GetName()}); give an affine, "
                "rigid or translation transform"
            )
    if not np.isfinite(lps).all() or abs(np.linalg.det(lps[:ndim, :ndim])) < 1e-6:
        raise InputError(f"{p}: the transform's matrix is singular or not finite")
    return world


def world_from_sitk(transform) -> np.ndarray:
    """eoir's fixed -> moving RAS world matrix of a linear SimpleITK transform (fixed LPS ->
    moving LPS), read off the images of ``ndim + 1`` points.

    Parameters
    ----------
    transform : SimpleITK.Transform
        Linear (a non-linear one gives its linearisation at the origin).

    Returns
    -------
    numpy.ndarray
        ``(ndim+1, ndim+1)``.
    """
    ndim = transform.GetDimension()
    origin = np.array(transform.TransformPoint((0.0,) * ndim))
    lps = np.eye(ndim + 1)
    for axis in range(ndim):
        unit = [0.0] * ndim
        unit[axis] = 1.0
        lps[:ndim, axis] = np.array(transform.TransformPoint(tuple(unit))) - origin
    lps[:ndim, ndim] = origin
    flip = _flip(ndim)
    return flip @ lps @ flip


def transform_to_sitk(world: np.ndarray, centre: np.ndarray | None = None):
    """eoir's fixed -> moving RAS world matrix as a SimpleITK ``AffineTransform`` (LPS).

    Parameters
    ----------
    world : numpy.ndarray
        ``(ndim+1, ndim+1)`` fixed RAS world (mm) -> moving RAS world.
    centre : numpy.ndarray, optional
        The transform's centre, LPS mm (the origin if None): the same map, parametrised
        about it (better conditioned for an optimiser).

    Returns
    -------
    SimpleITK.AffineTransform
        Maps fixed LPS points to moving LPS points.
    """
    import SimpleITK as sitk

    a = np.asarray(world, dtype=float)
    ndim = a.shape[0] - 1
    flip = _flip(ndim)
    lps = flip @ a @ flip
    transform = sitk.AffineTransform(ndim)
    matrix, shift = lps[:ndim, :ndim], lps[:ndim, ndim]
    if centre is not None:  # y = A (x - c) + c + t = A x + b  =>  t = b - c + A c
        centre = np.asarray(centre, dtype=float)
        transform.SetCenter(centre.tolist())
        shift = shift - centre + matrix @ centre
    transform.SetMatrix(matrix.ravel().tolist())
    transform.SetTranslation(shift.tolist())
    return transform
