"""The :class:`Image` type: an array with its geometry, shared by every layer.

Reading and writing files is :mod:`eoir.io`'s; this module holds only the type.

A 3-D image has a ``(4, 4)`` voxel -> RAS mm affine; a 2-D image (a PNG, a 2-D NIfTI, one
slice) an ``(3, 3)`` in-plane one: its first two world axes, as ITK keeps them for 2-D images
(:func:`in_plane`). Registration works in the images' own dimension: both images of a pair
have the same one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import nibabel as nib

__all__ = ["Image", "embedded", "in_plane"]


@dataclass
class Image:
    """An image with its geometry.

    Attributes
    ----------
    array : numpy.ndarray
        ``(X, Y, Z)`` (or ``(X, Y)`` in 2-D) voxel values in their stored dtype (native byte
        order), voxel-index order.
    affine : numpy.ndarray
        ``(ndim+1, ndim+1)`` voxel index -> RAS world (mm).
    path : str, optional
        Where it was read from (named in error messages).
    header : nibabel.Nifti1Header, optional
        The NIfTI header, kept so that outputs on this grid carry it (in 2-D it also keeps the
        slice's place in 3-D space, which the in-plane affine leaves out).
    """

    array: np.ndarray
    affine: np.ndarray
    path: str | None = None
    header: nib.Nifti1Header | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial shape ``(X, Y, Z)`` or ``(X, Y)``."""
        return tuple(self.array.shape)

    @property
    def ndim(self) -> int:
        """Number of spatial axes: 2 or 3."""
        return self.array.ndim

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm along each array axis."""
        n = self.ndim
        return tuple(float(s) for s in np.linalg.norm(self.affine[:n, :n], axis=0))

    def same_grid(self, other: Image, tol: float = 1e-4) -> bool:
        """Whether ``other`` has the same shape and voxel -> world map (within ``tol`` mm)."""
        return (
            self.shape == other.shape
            and self.affine.shape == other.affine.shape
            and np.allclose(self.affine, other.affine, atol=tol)
        )


def in_plane(affine: np.ndarray) -> np.ndarray:
    """The ``(3, 3)`` in-plane affine of a 2-D image stored with a ``(4, 4)`` one.

    Keeps the first two world axes of the first two voxel axes (ITK's reading of a 2-D image
    from a 3-D header). When those span no plane (a sagittal slice: its axes lie along y and
    z), the voxel spacing alone is kept, with the origin at zero.

    Parameters
    ----------
    affine : numpy.ndarray
        ``(4, 4)`` voxel -> RAS mm.

    Returns
    -------
    numpy.ndarray
        ``(3, 3)`` voxel ``(i, j)`` -> in-plane world ``(x, y)`` mm.

    Examples
    --------
    >>> in_plane(np.diag([2.0, 3.0, 4.0, 1.0]))
    array([[2., 0., 0.],
           [0., 3., 0.],
           [0., 0., 1.]])
    """
    a = np.asarray(affine, dtype=float)
    out = np.eye(3)
    out[:2, :2] = a[:2, :2]
    out[:2, 2] = a[:2, 3]
    spacing = np.linalg.norm(a[:3, :2], axis=0)
    if abs(np.linalg.det(out[:2, :2])) <= 1e-3 * float(np.prod(spacing)):
        out = np.diag([*spacing, 1.0])
    return out


def embedded(affine: np.ndarray) -> np.ndarray:
    """A ``(4, 4)`` affine for a file format that stores one (NIfTI): a 2-D image's ``(3, 3)``
    in-plane affine with a unit third axis; a ``(4, 4)`` one unchanged."""
    a = np.asarray(affine, dtype=float)
    if a.shape == (4, 4):
        return a
    out = np.eye(4)
    out[:2, :2] = a[:2, :2]
    out[:2, 3] = a[:2, 2]
    return out
