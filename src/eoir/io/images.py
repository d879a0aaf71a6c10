"""Reading images with their geometry.

Every image is held as an :class:`~eoir.image.Image`: an array in voxel-index order
``(i, j, k)`` and the 4x4 voxel -> RAS mm affine (nibabel's convention). NIfTI files are read
with nibabel; every other format SimpleITK reads (``.mha``, ``.mhd``, ``.nrrd``, a DICOM series
folder, ...) with SimpleITK, converted to the same convention (ITK's LPS geometry becomes RAS;
ITK's ``(z, y, x)`` arrays become ``(x, y, z)``, which is ITK's index order).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np

from eoir.errors import InputError, reason
from eoir.image import Image
from eoir.spatial import lps_affine

if TYPE_CHECKING:
    import SimpleITK as sitk

__all__ = ["NIFTI_SUFFIXES", "ImageLike", "as_image", "as_sitk_image", "read_image"]


NIFTI_SUFFIXES = (".nii", ".nii.gz")


ImageLike = Image | str | os.PathLike | np.ndarray


def _suffix(path: str | os.PathLike) -> str:
    name = str(path).lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def _affine_from_sitk(image: sitk.Image) -> np.ndarray:
    ndim = image.GetDimension()
    direction = np.array(image.GetDirection(), dtype=float).reshape(ndim, ndim)
    affine = np.eye(4)
    affine[:ndim, :ndim] = direction @ np.diag(image.GetSpacing())
    affine[:ndim, 3] = image.GetOrigin()
    return lps_affine(affine)  # LPS -> RAS (the flip is its own inverse)


def _sitk_geometry(affine: np.ndarray) -> tuple[list[float], list[float], list[float]]:
    """Spacing, origin and direction (LPS) of a voxel -> RAS affine."""
    lps = lps_affine(affine)
    linear = lps[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    direction = linear / spacing
    return spacing.tolist(), lps[:3, 3].tolist(), direction.ravel().tolist()


def _read_sitk(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import SimpleITK as sitk  # imported on use: slow to import

    if path.is_dir():
        reader = sitk.ImageSeriesReader()
        files = reader.GetGDCMSeriesFileNames(str(path))
        if not files:
            raise InputError(f"{path}: folder holds no DICOM series")
        reader.SetFileNames(files)
        image = reader.Execute()
    else:
        image = sitk.ReadImage(str(path))
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{path}: has {image.GetNumberOfComponentsPerPixel()} components per voxel; "
            "give a scalar image"
        )
    array = sitk.GetArrayFromImage(image)  # (z, y, x)
    return np.ascontiguousarray(array.transpose()), _affine_from_sitk(image)


def read_image(path: str | os.PathLike, what: str = "image") -> Image:
    """Read a 3-D scalar image with its geometry.

    Parameters
    ----------
    path : str or PathLike
        A NIfTI file, any file SimpleITK reads, or a folder with one DICOM series.
    what : str
        What the file is for, used in error messages ("fixed image", "moving labels", ...).

    Returns
    -------
    Image
        Array in its stored dtype (NIfTI scaling applied), RAS affine.

    Raises
    ------
    InputError
        Missing or unreadable file, not 3-D, non-scalar voxels.

    Examples
    --------
    The small T1 brain scan nibabel ships (33x41x25 voxels of 2 mm):

    >>> from nibabel.testing import data_path
    >>> image = read_image(f"{data_path}/anatomical.nii")
    >>> image.shape, image.spacing
    ((33, 41, 25), (2.0, 2.0, 2.0))
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: {what} not found")
    header = None
    try:
        if not p.is_dir() and _suffix(p) in NIFTI_SUFFIXES:
            nifti = nib.load(str(p))
            array = np.asanyarray(nifti.dataobj)
            affine = np.asarray(nifti.affine, dtype=float)
            header = nifti.header.copy()
        else:
            array, affine = _read_sitk(p)
    except InputError:
        raise
    except (OSError, RuntimeError, ValueError, EOFError, nib.filebasedimages.ImageFileError) as err:
        raise InputError(f"{p}: cannot read {what} ({reason(err)})") from None
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 4:
        raise InputError(
            f"{p}: {what} is 4-D {array.shape}; give one 3-D volume (e.g. one time point)"
        )
    if array.ndim != 3:
        raise InputError(f"{p}: {what} is {array.ndim}-D {array.shape}; a 3-D volume is needed")
    if min(array.shape) < 2:
        raise InputError(f"{p}: {what} has shape {array.shape}; every axis needs 2 or more voxels")
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise InputError(f"{p}: {what} has voxel type {array.dtype}; a real scalar type is needed")
    if not array.dtype.isnative:  # e.g. big-endian NIfTI: torch takes native byte order only
        array = array.astype(array.dtype.newbyteorder("="))
    return Image(array=array, affine=affine, path=str(p), header=header)


def as_sitk_image(array: np.ndarray, reference: Image, vector: bool = False) -> sitk.Image:
    """A SimpleITK image of ``array`` with ``reference``'s geometry (LPS, as ITK wants it).

    Parameters
    ----------
    array : numpy.ndarray
        ``(X, Y, Z)`` scalars, or ``(X, Y, Z, C)`` vectors with ``vector=True``, on the
        reference grid.
    reference : Image
        The grid.
    vector : bool
        Whether the last axis holds vector components.

    Returns
    -------
    SimpleITK.Image
    """
    import SimpleITK as sitk  # imported on use: slow to import

    data = np.moveaxis(array, (0, 1, 2), (2, 1, 0)) if vector else array.transpose()
    image = sitk.GetImageFromArray(np.ascontiguousarray(data), isVector=vector)
    spacing, origin, direction = _sitk_geometry(reference.affine)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image


def as_image(source: ImageLike, affine: np.ndarray | None = None, what: str = "image") -> Image:
    """An :class:`~eoir.image.Image` from a path, an Image, or an array (+ optional affine).

    Parameters
    ----------
    source : path, Image or numpy.ndarray
        A file (read with :func:`read_image`), an Image (returned as it is) or an ``(X, Y, Z)``
        array.
    affine : numpy.ndarray, optional
        ``(4, 4)`` voxel -> RAS mm matrix of an array (identity if None).
    what : str
        What the image is for, used in error messages.

    Returns
    -------
    Image
    """
    if isinstance(source, Image):
        return source
    if isinstance(source, np.ndarray):
        if source.ndim != 3:
            raise InputError(
                f"{what}: array is {source.ndim}-D {source.shape}; a 3-D volume is needed"
            )
        return Image(source, np.eye(4) if affine is None else np.asarray(affine, float), what)
    return read_image(source, what)
