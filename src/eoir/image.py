"""The :class:`Image` type: an array with its geometry, shared by every layer.

Reading and writing files is :mod:`eoir.io`'s; this module holds only the type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import nibabel as nib

__all__ = ["Image"]


@dataclass
class Image:
    """An image with its geometry.

    Attributes
    ----------
    array : numpy.ndarray
        ``(X, Y, Z)`` voxel values in their stored dtype (native byte order), voxel-index order.
    affine : numpy.ndarray
        ``(4, 4)`` voxel index -> RAS world (mm).
    path : str, optional
        Where it was read from (named in error messages).
    header : nibabel.Nifti1Header, optional
        The NIfTI header, kept so that outputs on this grid carry it.
    """

    array: np.ndarray
    affine: np.ndarray
    path: str | None = None
    header: nib.Nifti1Header | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial shape ``(X, Y, Z)``."""
        return tuple(self.array.shape)

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm along each array axis."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    def same_grid(self, other: Image, tol: float = 1e-4) -> bool:
        """Whether ``other`` has the same shape and voxel -> world map (within ``tol`` mm)."""
        return self.shape == other.shape and np.allclose(self.affine, other.affine, atol=tol)
