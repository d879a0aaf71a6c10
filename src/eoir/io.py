"""Images, fields and landmarks on disk, with their geometry.

Every image is held as an :class:`Image`: an array in voxel-index order ``(i, j, k)`` and the
4x4 voxel -> RAS mm affine (nibabel's convention). NIfTI files are read and written with
nibabel; every other format SimpleITK reads (``.mha``, ``.mhd``, ``.nrrd``, a DICOM series
folder, ...) with SimpleITK, converted to the same convention (ITK's LPS geometry becomes RAS;
ITK's ``(z, y, x)`` arrays become ``(x, y, z)``, which is ITK's index order).

Displacement fields on disk (``disp`` in memory follows :mod:`eoir.spatial`):

- ``itk`` (default): the ITK/ANTs/3D Slicer displacement field: NIfTI ``(X, Y, Z, 1, 3)`` float32,
  intent 1007 (vector), values in mm in **LPS**, header affine = the fixed image's; or, for
  ``.mha``/``.nrrd``, a 3-component vector image in LPS mm with the fixed geometry.
- ``l2r``: Learn2Reg: NIfTI ``(X, Y, Z, 3)`` float32, voxel units, channels last.

Outputs are written atomically: to a temporary file beside the target, renamed at the end
(:class:`OutputSet` commits several outputs together or none).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np
import torch

from eoir.errors import InputError, reason
from eoir.gzip_writer import GzipStream
from eoir.spatial import field_from_world, field_to_world, lps_affine

if TYPE_CHECKING:
    import SimpleITK as sitk

__all__ = [
    "FIELD_FORMATS",
    "Image",
    "OutputSet",
    "as_sitk_image",
    "check_field_target",
    "read_field",
    "read_image",
    "read_landmarks",
    "write_field",
    "write_image",
]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
WRITABLE_SUFFIXES = (".nii", ".nii.gz", ".mha", ".nrrd")
FIELD_FORMATS = ("itk", "l2r")


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


# --- atomic outputs ----------------------------------------------------------------------------


def check_field_target(target: str | os.PathLike, fmt: str) -> None:
    """Raise :class:`InputError` if ``target`` cannot hold a field of format ``fmt``."""
    if fmt not in FIELD_FORMATS:
        raise ValueError(f"field format must be one of {FIELD_FORMATS}, got {fmt!r}")
    if fmt == "l2r" and _suffix(target) not in NIFTI_SUFFIXES:
        raise InputError(f"{target}: the Learn2Reg field format is NIfTI (.nii.gz)")


class OutputSet:
    """Write several outputs so that either all appear or none does.

    Checks every target first (format, existing file without ``overwrite``, writable folder);
    :meth:`temp` gives the temporary path to write each one to; leaving the ``with`` block
    normally renames them all into place, an exception removes them.

    Parameters
    ----------
    targets : iterable of path
        Final output paths (None entries are ignored).
    overwrite : bool
        Replace existing files.
    suffixes : tuple of str
        Allowed file name endings.
    """

    def __init__(
        self,
        targets: Iterable[str | os.PathLike | None],
        overwrite: bool = False,
        suffixes: tuple[str, ...] = WRITABLE_SUFFIXES,
    ) -> None:
        self.targets = [Path(t) for t in targets if t is not None]
        self._temps: dict[Path, Path] = {}
        seen: set[Path] = set()
        for target in self.targets:
            resolved = target.resolve()
            if resolved in seen:
                raise InputError(f"{target}: named as two different outputs")
            seen.add(resolved)
            if _suffix(target) not in suffixes:
                raise InputError(
                    f"{target}: unsupported output type; use one of {', '.join(suffixes)}"
                )
            if target.is_dir():
                raise InputError(f"{target}: is a folder, not an output file")
            if target.exists() and not overwrite:
                raise InputError(f"{target}: exists (pass --overwrite to replace it)")
            folder = target.parent if str(target.parent) else Path(".")
            if not folder.is_dir():
                raise InputError(f"{target}: folder {folder} does not exist")
            try:  # a real probe: os.access says yes to root even on a read-only mount
                fd, probe = tempfile.mkstemp(prefix=".eoir-probe.", dir=folder)
                os.close(fd)
                os.unlink(probe)
            except OSError:
                raise InputError(f"{target}: folder {folder} is not writable") from None

    def temp(self, target: str | os.PathLike) -> Path:
        """The temporary path (same folder, same file type) to write ``target`` to."""
        target = Path(target)
        if target not in self.targets:
            raise ValueError(f"{target} was not declared as an output of this set")
        if target not in self._temps:
            suffix = _suffix(target)
            fd, name = tempfile.mkstemp(
                prefix=f".{target.name[: -len(suffix)]}.",
                suffix=f".eoir-tmp{suffix}",
                dir=target.parent if str(target.parent) else ".",
            )
            os.close(fd)
            self._temps[target] = Path(name)
        return self._temps[target]

    def write_image(self, target: str | os.PathLike, array: np.ndarray, reference: Image) -> None:
        """Write ``array`` on ``reference``'s grid to ``target``'s temporary file.

        Parameters
        ----------
        target : path
            A declared output: ``.nii``, ``.nii.gz``, ``.mha`` or ``.nrrd``.
        array : numpy.ndarray
            ``(X, Y, Z)`` on the reference grid, in the dtype to store.
        reference : Image
            The grid (normally the fixed image): its affine and, for NIfTI, its header.
        """
        if tuple(array.shape) != reference.shape:
            raise ValueError(f"array {array.shape} is not on the reference grid {reference.shape}")
        path = self.temp(target)
        if _suffix(path) in NIFTI_SUFFIXES:
            _save_nifti(path, array, reference)
        else:
            _save_sitk(path, array, reference)

    def write_field(
        self,
        target: str | os.PathLike,
        disp: torch.Tensor | np.ndarray,
        reference: Image,
        fmt: str = "itk",
    ) -> None:
        """Write a displacement field on ``reference``'s grid to ``target``'s temporary file.

        Parameters
        ----------
        target : path
            A declared output (formats in the module docstring).
        disp : torch.Tensor or numpy.ndarray
            ``(3, X, Y, Z)`` or ``(1, 3, X, Y, Z)`` displacement in voxel units of the
            reference (fixed) grid, :mod:`eoir.spatial` convention.
        reference : Image
            The fixed image.
        fmt : {"itk", "l2r"}
            ITK/ANTs world field (LPS mm) or Learn2Reg voxel field.
        """
        d = torch.as_tensor(disp).detach().cpu()
        if d.dim() == 4:
            d = d.unsqueeze(0)
        if tuple(d.shape[1:]) != (3, *reference.shape):
            raise ValueError(f"field {tuple(d.shape)} is not a 3-D field on grid {reference.shape}")
        check_field_target(target, fmt)
        path = self.temp(target)
        if _suffix(path) in NIFTI_SUFFIXES:
            matrix = np.eye(3) if fmt == "l2r" else lps_affine(reference.affine)[:3, :3]
            data = _nifti_vectors(d[0], matrix)  # (X, Y, Z, 3)
            if fmt == "itk":
                data = data[:, :, :, None, :]  # (X, Y, Z, 1, 3)
            _save_nifti(path, data, reference, intent="vector")
            return
        lps = field_to_world(d.double(), reference.affine, frame="lps")[0]
        _save_sitk(path, np.moveaxis(lps.numpy().astype(np.float32), 0, -1), reference, vector=True)

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            umask = os.umask(0)
            os.umask(umask)
            for target, temp in self._temps.items():
                os.chmod(temp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual mode
                os.replace(temp, target)
        else:
            for temp in self._temps.values():
                temp.unlink(missing_ok=True)
        self._temps.clear()


def _nifti_vectors(disp: torch.Tensor, matrix: np.ndarray) -> np.ndarray:
    """``matrix @ disp`` per voxel as NIfTI stores vectors, in one pass.

    Parameters
    ----------
    disp : torch.Tensor
        ``(3, X, Y, Z)`` field.
    matrix : numpy.ndarray
        ``(3, 3)``, e.g. the fixed grid's voxel -> LPS mm directions times spacing.

    Returns
    -------
    numpy.ndarray
        ``(X, Y, Z, 3)`` float32 in Fortran order (x fastest, the component slowest: NIfTI's
        order on disk, so the writer copies it as it is); computed in float32 (within one unit
        of the last place of a float64 product rounded to float32).
    """
    source = disp.to(torch.float32).permute(0, 3, 2, 1)  # (3, Z, Y, X) view
    out = torch.empty(source.shape, dtype=torch.float32)
    for c in range(3):
        terms = [(k, float(m)) for k, m in enumerate(matrix[c]) if m != 0] or [(0, 0.0)]
        (k, m), rest = terms[0], terms[1:]
        torch.mul(source[k], m, out=out[c])
        for k, m in rest:
            out[c].add_(source[k], alpha=m)
    return out.numpy().transpose(3, 2, 1, 0)


def _save_nifti(path: Path, data: np.ndarray, reference: Image, intent: str | None = None):
    header = reference.header.copy() if reference.header is not None else None
    image = nib.Nifti1Image(data, reference.affine, header=header)
    image.set_data_dtype(data.dtype)
    sform_code = int(header["sform_code"]) if header is not None else 0
    qform_code = int(header["qform_code"]) if header is not None else 0
    image.set_sform(reference.affine, code=sform_code or 1)
    image.set_qform(reference.affine, code=qform_code or 1)
    image.header.set_slope_inter(1.0, 0.0)
    image.header.set_xyzt_units("mm")
    if intent is not None:
        image.header.set_intent(intent)
    else:
        image.header.set_intent("none")
    if _suffix(path) == ".nii.gz":
        # nibabel writes the header and the data slice by slice into a parallel gzip stream
        # (~2.7x faster than its own gzip; no uncompressed copy of the file in memory)
        with path.open("wb") as target, GzipStream(target) as stream:
            image.to_file_map({"image": nib.FileHolder(fileobj=stream)})
    else:
        nib.save(image, str(path))


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


def _save_sitk(path: Path, data: np.ndarray, reference: Image, vector: bool = False) -> None:
    import SimpleITK as sitk  # imported on use: slow to import

    sitk.WriteImage(as_sitk_image(data, reference, vector), str(path), useCompression=True)


def write_image(
    path: str | os.PathLike, array: np.ndarray, reference: Image, overwrite: bool = False
) -> None:
    """Write one image atomically (see :meth:`OutputSet.write_image`)."""
    with OutputSet([path], overwrite=overwrite) as outputs:
        outputs.write_image(path, array, reference)


def write_field(
    path: str | os.PathLike,
    disp: torch.Tensor | np.ndarray,
    reference: Image,
    fmt: str = "itk",
    overwrite: bool = False,
) -> None:
    """Write one displacement field atomically (see :meth:`OutputSet.write_field`)."""
    with OutputSet([path], overwrite=overwrite) as outputs:
        outputs.write_field(path, disp, reference, fmt)


def read_field(path: str | os.PathLike) -> tuple[torch.Tensor, Image]:
    """Read a displacement field written by eoir, ANTs, ITK or for Learn2Reg.

    The format is detected from the file: a NIfTI of shape ``(X, Y, Z, 1, 3)`` or another
    format's 3-component vector image is an ITK field (LPS mm); a NIfTI ``(X, Y, Z, 3)`` is a
    Learn2Reg voxel field.

    Parameters
    ----------
    path : path
        The field file.

    Returns
    -------
    disp : torch.Tensor
        ``(1, 3, X, Y, Z)`` float32 displacement in voxel units of its grid.
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
            data = np.asarray(nifti.dataobj, dtype=np.float64)
            affine = np.asarray(nifti.affine, dtype=float)
            header = nifti.header.copy()
            itk = data.ndim == 5
            if itk and data.shape[3:] != (1, 3):
                raise InputError(f"{p}: 5-D field must be (X, Y, Z, 1, 3), got {data.shape}")
            if not itk and (data.ndim != 4 or data.shape[3] != 3):
                raise InputError(
                    f"{p}: not a displacement field (need (X, Y, Z, 1, 3) ITK or (X, Y, Z, 3) "
                    f"Learn2Reg), got {data.shape}"
                )
            vectors = data[:, :, :, 0, :] if itk else data
        else:
            image = sitk.ReadImage(str(p))
            if image.GetNumberOfComponentsPerPixel() != 3 or image.GetDimension() != 3:
                raise InputError(f"{p}: not a 3-D displacement field (3 components per voxel)")
            vectors = np.moveaxis(sitk.GetArrayFromImage(image), (0, 1, 2), (2, 1, 0))
            affine, header, itk = _affine_from_sitk(image), None, True
    except InputError:
        raise
    except (OSError, RuntimeError, ValueError, EOFError, nib.filebasedimages.ImageFileError) as err:
        raise InputError(f"{p}: cannot read field ({reason(err)})") from None
    if not np.isfinite(vectors).all():
        raise InputError(f"{p}: field has NaN or infinite values")
    disp = torch.from_numpy(np.moveaxis(vectors, -1, 0).copy()).unsqueeze(0)
    if itk:
        disp = field_from_world(disp, affine, frame="lps")
    grid = Image(np.zeros(disp.shape[2:], np.uint8), affine, str(p), header)
    return disp.float(), grid


def read_landmarks(path: str | os.PathLike) -> np.ndarray:
    """Read landmarks: an elastix point file (``point``/``index``, count, one point a line) or
    a plain text/CSV file of ``x y z`` rows.

    Parameters
    ----------
    path : path
        The landmark file. elastix ``point`` files hold world LPS mm; ``index`` files voxel
        indices.

    Returns
    -------
    numpy.ndarray
        ``(N, 3)`` coordinates as stored.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: landmark file not found")
    lines = [ln.replace(",", " ").split() for ln in p.read_text().splitlines() if ln.strip()]
    if lines and lines[0][0].lower() in ("point", "index"):
        count = int(lines[1][0])
        lines = lines[2 : 2 + count]
    try:
        points = np.array([[float(v) for v in ln[:3]] for ln in lines], dtype=float)
    except (ValueError, IndexError):
        raise InputError(f"{p}: not a landmark file (need x y z per line)") from None
    if points.ndim != 2 or points.shape[1] != 3 or len(points) == 0:
        raise InputError(f"{p}: not a landmark file (need x y z per line)")
    return points
