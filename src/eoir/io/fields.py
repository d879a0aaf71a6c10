"""Displacement fields on disk: the ITK/ANTs/3D Slicer format and Learn2Reg's.

``disp`` in memory follows :mod:`eoir.spatial`. On disk (``FIELD_FORMATS``):

- ``itk`` (default): the ITK/ANTs/3D Slicer displacement field: NIfTI ``(X, Y, Z, 1, 3)`` float32,
  intent 1007 (vector), values in mm in **LPS**, header affine = the fixed image's; or, for
  ``.mha``/``.nrrd``, a 3-component vector image in LPS mm with the fixed geometry.
- ``l2r``: Learn2Reg: NIfTI ``(X, Y, Z, 3)`` float32, voxel units, channels last.

A 2-D field (of 2-D images) is an ITK 2-D displacement field: NIfTI ``(X, Y, 1, 1, 2)`` (how
ANTs writes them; SimpleITK reads it as a 2-D image of 2-vectors) or a 2-component ``.mha``/
``.nrrd``, LPS mm; Learn2Reg's format is 3-D only.

Fields are written by :meth:`eoir.io.OutputSet.write_field`.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np
import torch
from isal import isal_zlib

from eoir.errors import InputError, reason
from eoir.image import Image, in_plane
from eoir.io.images import NIFTI_SUFFIXES, _affine_from_sitk, _suffix, nifti_voxels
from eoir.options import look_up_option
from eoir.spatial import field_from_world

__all__ = ["FIELD_FORMATS", "FieldFormat", "check_field_target", "read_field"]

FieldFormat = Literal["itk", "l2r"]


FIELD_FORMATS: dict[str, str] = {
    "itk": "5-D NIfTI (or vector .mha/.nrrd) in LPS mm for ANTs, ITK and 3D Slicer",
    "l2r": "Learn2Reg: NIfTI (X, Y, Z, 3) in voxels",
}


def check_field_target(target: str | os.PathLike, field_format: FieldFormat, ndim: int = 3) -> None:
    """Raise :class:`InputError` if ``target`` cannot hold an ``ndim``-D field of
    ``field_format``."""
    look_up_option("field_format", field_format, FIELD_FORMATS)
    suffix = _suffix(target)
    if suffix not in (*NIFTI_SUFFIXES, ".mha", ".mhd", ".nrrd", ".nhdr"):
        raise InputError(f"{target}: a displacement field is written as .nii.gz, .mha or .nrrd")
    if field_format == "l2r" and suffix not in NIFTI_SUFFIXES:
        raise InputError(f"{target}: the Learn2Reg field format is NIfTI (.nii.gz)")
    if field_format == "l2r" and ndim != 3:
        raise InputError(
            f"{target}: the Learn2Reg field format is 3-D; a 2-D field is written as ITK's"
        )


def _nifti_vectors(disp: torch.Tensor, matrix: np.ndarray) -> np.ndarray:
    """``matrix @ disp`` per voxel as NIfTI stores vectors, in one pass.

    Parameters
    ----------
    disp : torch.Tensor
        ``(3, X, Y, Z)`` field (or ``(2, X, Y)``).
    matrix : numpy.ndarray
        ``(3, 3)`` (``(2, 2)``), e.g. the fixed grid's voxel -> LPS mm directions times
        spacing.

    Returns
    -------
    numpy.ndarray
        ``(X, Y, Z, 3)`` (``(X, Y, 2)``) float32 in Fortran order (x fastest, the component
        slowest: NIfTI's order on disk, so the writer copies it as it is); computed in float32
        (within one unit of the last place of a float64 product rounded to float32).
    """
    ndim = disp.shape[0]
    reverse = (0, *range(ndim, 0, -1))
    source = disp.to(torch.float32).permute(*reverse)  # (3, Z, Y, X) view
    out = torch.empty(source.shape, dtype=torch.float32)
    for c in range(ndim):
        terms = [(k, float(m)) for k, m in enumerate(matrix[c]) if m != 0] or [(0, 0.0)]
        (k, m), rest = terms[0], terms[1:]
        torch.mul(source[k], m, out=out[c])
        for k, m in rest:
            out[c].add_(source[k], alpha=m)
    return out.numpy().transpose(*range(ndim, -1, -1))


def read_field(path: str | os.PathLike) -> tuple[torch.Tensor, Image]:
    """Read a displacement field written by eoir, ANTs, ITK or for Learn2Reg.

    The format is detected from the file: a NIfTI of shape ``(X, Y, Z, 1, 3)`` or another
    format's 3-component vector image is an ITK field (LPS mm); a NIfTI ``(X, Y, Z, 3)`` is a
    Learn2Reg voxel field.

    Parameters
    ----------
    path : path
        The field file.

    A 2-D ITK field (NIfTI ``(X, Y, 1, 1, 2)``, or a 2-D image of 2-vectors) is read as
    a 2-D field on the in-plane grid (:func:`eoir.image.in_plane`).

    Returns
    -------
    disp : torch.Tensor
        ``(1, 3, X, Y, Z)`` (or ``(1, 2, X, Y)``) float32 displacement in voxel units of its
        grid.
    grid : Image
        The field's grid (a zero array with the geometry and header), i.e. the fixed image's.
    """
    import SimpleITK as sitk  # imported on use: slow to import

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: field not found")
    try:
        if _suffix(p) in NIFTI_SUFFIXES:
            nifti = nib.load(str(p))
            data = nifti_voxels(p, nifti, np.float64)
            affine = np.asarray(nifti.affine, dtype=float)
            header = nifti.header.copy()
            itk = data.ndim == 5
            if itk and data.shape[3:] == (1, 2) and data.shape[2] == 1:  # a 2-D ITK field
                affine = in_plane(affine)
                vectors = data[:, :, 0, 0, :]
            elif itk and data.shape[3:] != (1, 3):
                raise InputError(
                    f"{p}: 5-D field must be (X, Y, Z, 1, 3) (or 2-D (X, Y, 1, 1, 2)), got "
                    f"{data.shape}"
                )
            elif not itk and (data.ndim != 4 or data.shape[3] != 3):
                raise InputError(
                    f"{p}: not a displacement field (need (X, Y, Z, 1, 3) ITK or (X, Y, Z, 3) "
                    f"Learn2Reg), got {data.shape}"
                )
            else:
                vectors = data[:, :, :, 0, :] if itk else data
        else:
            image = sitk.ReadImage(str(p))
            ndim = image.GetDimension()
            if image.GetNumberOfComponentsPerPixel() != ndim or ndim not in (2, 3):
                raise InputError(
                    f"{p}: not a displacement field (a 3-D image of 3-vectors or a 2-D image of "
                    "2-vectors)"
                )
            axes = tuple(range(ndim))
            vectors = np.moveaxis(sitk.GetArrayFromImage(image), axes, axes[::-1])
            affine, header, itk = _affine_from_sitk(image), None, True
    except InputError:
        raise
    except (
        OSError,
        RuntimeError,
        ValueError,
        EOFError,
        nib.filebasedimages.ImageFileError,
        zlib.error,  # nibabel's header read of a damaged .nii.gz
        isal_zlib.error,
    ) as err:
        raise InputError(f"{p}: cannot read field ({reason(err)})") from None
    if not np.isfinite(vectors).all():
        raise InputError(f"{p}: field has NaN or infinite values")
    disp = torch.from_numpy(np.moveaxis(vectors, -1, 0).copy()).unsqueeze(0)
    if itk:
        disp = field_from_world(disp, affine, frame="lps")
    grid = Image(np.zeros(disp.shape[2:], np.uint8), affine, str(p), header)
    return disp.float(), grid
