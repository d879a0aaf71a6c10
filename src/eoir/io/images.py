"""Reading images with their geometry.

Every image is held as an :class:`~eoir.image.Image`: an array in voxel-index order
``(i, j, k)`` and the 4x4 voxel -> RAS mm affine (nibabel's convention). NIfTI files are read
with nibabel; every other format SimpleITK reads (``.mha``, ``.mhd``, ``.nrrd``, a DICOM series
folder, ...) with SimpleITK, converted to the same convention (ITK's LPS geometry becomes RAS;
ITK's ``(z, y, x)`` arrays become ``(x, y, z)``, which is ITK's index order).

2-D images (:data:`IMAGE_2D_SUFFIXES`: PNG, JPEG, TIFF, BMP; a 2-D NIfTI; a 3-D file with one
slice) are held as ``(X, Y)`` arrays, ``X`` along the image's columns as ITK orders them, with
the ``(3, 3)`` in-plane affine (:func:`eoir.image.in_plane`); colour pixels become grey
(ITU-R BT.601 luma, ITK's weights; an alpha channel is dropped).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import nibabel as nib
import numpy as np
from isal import igzip, isal_zlib

from eoir.errors import InputError, reason
from eoir.image import Image, embedded, in_plane
from eoir.spatial import lps_affine

if TYPE_CHECKING:
    import SimpleITK as sitk

__all__ = [
    "IMAGE_2D_SUFFIXES",
    "NIFTI_SUFFIXES",
    "ImageLike",
    "as_image",
    "as_sitk_image",
    "available_memory",
    "check_labels",
    "image_frame",
    "read_image",
    "read_labels",
]


NIFTI_SUFFIXES = (".nii", ".nii.gz")
# formats that hold 2-D pictures (read and written with SimpleITK)
IMAGE_2D_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
# luma weights of red, green and blue (ITU-R BT.601, as ITK's RGBToLuminance)
_LUMA = (0.299, 0.587, 0.114)


ImageLike = Image | str | os.PathLike | np.ndarray


def _suffix(path: str | os.PathLike) -> str:
    name = str(path).lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def _affine_from_sitk(image: sitk.Image | sitk.ImageFileReader) -> np.ndarray:
    """The voxel -> RAS affine of a SimpleITK image (or of a reader that has read the image's
    information): ``(4, 4)`` in 3-D, ``(3, 3)`` in 2-D."""
    ndim = image.GetDimension()
    direction = np.array(image.GetDirection(), dtype=float).reshape(ndim, ndim)
    affine = np.eye(ndim + 1)
    affine[:ndim, :ndim] = direction @ np.diag(image.GetSpacing())
    affine[:ndim, ndim] = image.GetOrigin()
    return lps_affine(affine)  # LPS -> RAS (the flip is its own inverse)


def _sitk_geometry(affine: np.ndarray) -> tuple[list[float], list[float], list[float]]:
    """Spacing, origin and direction (LPS) of a voxel -> RAS affine (3-D or 2-D)."""
    lps = lps_affine(affine)
    ndim = lps.shape[0] - 1
    linear = lps[:ndim, :ndim]
    spacing = np.linalg.norm(linear, axis=0)
    direction = linear / spacing
    return spacing.tolist(), lps[:ndim, ndim].tolist(), direction.ravel().tolist()


@contextlib.contextmanager
def _quiet_itk():
    """ITK prints its warnings straight to the process's stderr; eoir's own line says enough."""
    import SimpleITK as sitk  # imported on use: slow to import

    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield sitk
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def _read_sitk(path: Path, what: str) -> tuple[np.ndarray, np.ndarray]:
    with _quiet_itk() as sitk:
        if path.is_dir():
            if not any(path.iterdir()):
                raise InputError(f"{path}: {what} is an empty folder")
            reader = sitk.ImageSeriesReader()
            files = reader.GetGDCMSeriesFileNames(str(path))
            if not files:
                raise InputError(f"{path}: folder holds no DICOM series")
            reader.SetFileNames(files)
            info = sitk.ImageFileReader()
            info.SetFileName(files[0])
            info.ReadImageInformation()
            size = (*info.GetSize()[:2], len(files))
            _check_size(path, what, size, info.GetNumberOfComponents(), None, None)
            image = reader.Execute()
        else:
            info = sitk.ImageFileReader()
            info.SetFileName(str(path))
            info.ReadImageInformation()
            size = info.GetSize()
            bytes_per = sitk.GetPixelIDValueAsString(info.GetPixelID())
            itemsize = _SITK_BYTES.get(bytes_per.split()[-1], 8) * info.GetNumberOfComponents()
            _check_size(path, what, size, itemsize, None, None)
            image = sitk.ReadImage(str(path))
    components = image.GetNumberOfComponentsPerPixel()
    array = sitk.GetArrayFromImage(image)  # (z, y, x[, c])
    if components != 1:
        if image.GetDimension() != 2 or components not in (3, 4):
            raise InputError(f"{path}: has {components} components per voxel; give a scalar image")
        array = _grey(array[..., :3])
    return np.ascontiguousarray(array.transpose()), _affine_from_sitk(image)


def _grey(rgb: np.ndarray) -> np.ndarray:
    """Luma of ``(..., 3)`` colour pixels, in their integer type when they have one."""
    luma = rgb.astype(np.float32) @ np.asarray(_LUMA, dtype=np.float32)
    if np.issubdtype(rgb.dtype, np.integer):
        info = np.iinfo(rgb.dtype)
        return np.clip(np.rint(luma), info.min, info.max).astype(rgb.dtype)
    return luma.astype(rgb.dtype, copy=False)


# bytes per voxel of SimpleITK's pixel types, by the last word of their names
_SITK_BYTES = {"8-bit": 1, "16-bit": 2, "32-bit": 4, "64-bit": 8, "float": 4, "double": 8}
# deflate never compresses by more than this ratio (a stream of one repeated byte)
_DEFLATE_MAX_RATIO = 1032


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``), or None."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _gigabytes(n: float) -> str:
    if n >= 1e8:
        return f"{n / 1e9:.2f} GB"
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _check_size(
    path: Path,
    what: str,
    shape: Sequence[int],
    itemsize: int,
    offset: int | None,
    compressed: bool | None,
) -> None:
    """Refuse a header whose voxel count the file cannot hold, or memory cannot, before any
    voxel is read.

    A raw file (``compressed=False``) must hold ``offset + voxels * itemsize`` bytes; a gzip file
    at most :data:`_DEFLATE_MAX_RATIO` times its own size (deflate's largest ratio); any image
    must fit twice into the available memory (the array and the float32 copy registration
    makes). ``compressed=None``: the format decides (SimpleITK's), memory alone is checked.
    """
    dims = [int(n) for n in shape]
    if any(n < 1 for n in dims):
        raise InputError(f"{path}: {what} header gives the size {tuple(dims)}: sizes must be >= 1")
    needed = math.prod(dims) * int(itemsize)
    if not path.is_dir():
        size = path.stat().st_size
        if compressed is False and (offset or 0) + needed > size:
            raise InputError(
                f"{path}: {what} header says {'x'.join(map(str, dims))} voxels "
                f"({_gigabytes(needed)}) but the file holds {_gigabytes(size)}: truncated, or a "
                "wrong header"
            )
        if compressed and needed > _DEFLATE_MAX_RATIO * size:
            raise InputError(
                f"{path}: {what} header says {'x'.join(map(str, dims))} voxels "
                f"({_gigabytes(needed)}), more than a {_gigabytes(size)} gzip file can hold: "
                "a wrong header"
            )
    memory = available_memory()
    if memory is not None and 2 * needed > memory:
        raise InputError(
            f"{path}: {what} of {'x'.join(map(str, dims))} voxels needs {_gigabytes(2 * needed)} "
            f"to read and register; {_gigabytes(memory)} of memory is available"
        )


def _check_geometry(path: Path, what: str, affine: np.ndarray, header=None) -> None:
    """Refuse a voxel -> world matrix that maps no volume: non-finite, a zero or singular
    spacing (NIfTI: also a zero ``pixdim`` that nibabel would silently take as 1 mm)."""
    ndim = affine.shape[0] - 1
    linear = affine[:ndim, :ndim]
    if not np.isfinite(affine).all():
        raise InputError(f"{path}: {what} has NaN or infinite values in its voxel -> world matrix")
    if header is not None and int(header.get("sform_code", 0)) == 0:
        pixdim = np.asarray(header["pixdim"][1 : 1 + ndim], dtype=float)
        if not (np.isfinite(pixdim) & (pixdim != 0)).all():
            raise InputError(
                f"{path}: {what} has voxel spacing {tuple(float(v) for v in pixdim)} in its "
                "header (pixdim): every spacing must be non-zero"
            )
    spacing = np.linalg.norm(linear, axis=0)
    if (spacing <= 0).any():
        raise InputError(
            f"{path}: {what} has voxel spacing {tuple(float(v) for v in spacing)} mm: every "
            "spacing must be positive"
        )
    if abs(np.linalg.det(linear)) <= 1e-6 * float(np.prod(spacing)):
        raise InputError(
            f"{path}: {what} has a singular voxel -> world matrix (its axes are not independent "
            "in world space)"
        )


def _read_nifti(path: Path, what: str):
    # nibabel's warnings and log lines on odd headers (it "fixes" some as it loads): the raw
    # header is checked below and eoir says what is wrong in its own one line
    log = logging.getLogger("nibabel.global")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nifti = nib.load(str(path))  # the header (the voxels are read below)
            with _open_decompressed(path) as stream:
                raw = type(nifti.header).from_fileobj(stream, check=False)
    finally:
        log.setLevel(level)
    header = nifti.header
    _check_size(
        path,
        what,
        raw.get_data_shape(),
        header.get_data_dtype().itemsize,
        int(raw.get("vox_offset", 0)),
        _suffix(path) == ".nii.gz",
    )
    affine = np.asarray(nifti.affine, dtype=float)
    shape = list(raw.get_data_shape())
    while len(shape) > 3 and shape[-1] == 1:
        shape.pop()
    if len(shape) == 2 or (len(shape) == 3 and shape[2] == 1):  # 2-D: its in-plane geometry
        affine = in_plane(affine)
    _check_geometry(path, what, affine, raw)
    return nifti_voxels(path, nifti), affine, header.copy()


def nifti_voxels(
    path: Path, nifti: nib.Nifti1Image, dtype: np.dtype | type | None = None
) -> np.ndarray:
    """The voxels of the NIfTI file ``path`` (``nifti``: its image as ``nib.load`` gives it,
    header only), scaled as nibabel scales them (into ``dtype`` when given), read through
    :func:`_open_decompressed`."""
    with _open_decompressed(path) as stream:
        return np.asarray(type(nifti).from_stream(stream).dataobj, dtype=dtype)


def _open_decompressed(path: Path) -> BinaryIO:
    """A NIfTI file's bytes as a stream: ``.nii.gz`` decompressed by ISA-L (python-isal, 2-3x
    zlib's speed: 0.11 -> 0.05 s for a 256x256x160 label map; ``benchmarks/kernel_swaps.py``),
    ``.nii`` as they are."""
    if _suffix(path) == ".nii.gz":
        return igzip.open(path, "rb")
    return open(path, "rb")


def read_image(path: str | os.PathLike, what: str = "image") -> Image:
    """Read a 3-D or 2-D scalar image with its geometry.

    Parameters
    ----------
    path : str or PathLike
        A NIfTI file, any file SimpleITK reads (PNG, JPEG and TIFF pictures included), or a
        folder with one DICOM series. A 3-D file with one slice is read as a 2-D image; colour
        pictures as grey.
    what : str
        What the file is for, used in error messages ("fixed image", "moving labels", ...).

    Returns
    -------
    Image
        Array in its stored dtype (NIfTI scaling applied), RAS affine (``(4, 4)``, or the
        ``(3, 3)`` in-plane one of a 2-D image).

    Raises
    ------
    InputError
        Missing or unreadable file, neither 3-D nor 2-D, non-scalar voxels; a header whose
        voxel count the file (or the available memory) cannot hold, checked before any voxel is
        read; a voxel -> world matrix with NaN, zero spacing or singular axes.

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
            array, affine, header = _read_nifti(p, what)
        else:
            array, affine = _read_sitk(p, what)
            _check_geometry(p, what, affine)
    except InputError:
        raise
    except (
        OSError,
        RuntimeError,
        ValueError,
        OverflowError,
        MemoryError,
        EOFError,
        nib.filebasedimages.ImageFileError,
        nib.spatialimages.HeaderDataError,
        zlib.error,
        isal_zlib.error,
    ) as err:
        raise InputError(f"{p}: cannot read {what} ({reason(err)})") from None
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 3 and array.shape[2] == 1:  # one slice: a 2-D image
        array = array[..., 0]
    if affine.shape == (4, 4) and array.ndim == 2:
        affine = in_plane(affine)
    if array.ndim == 4:
        raise InputError(
            f"{p}: {what} is 4-D {array.shape}; give one 3-D volume (e.g. one time point)"
        )
    if array.ndim not in (2, 3):
        raise InputError(
            f"{p}: {what} is {array.ndim}-D {array.shape}; a 3-D volume or a 2-D image is needed"
        )
    if min(array.shape) < 2:
        raise InputError(f"{p}: {what} has shape {array.shape}; every axis needs 2 or more voxels")
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise InputError(f"{p}: {what} has voxel type {array.dtype}; a real scalar type is needed")
    if not array.dtype.isnative:  # e.g. big-endian NIfTI: torch takes native byte order only
        array = array.astype(array.dtype.newbyteorder("="))
    return Image(array=array, affine=affine, path=str(p), header=header)


def image_frame(path: str | os.PathLike) -> tuple[str, float | None]:
    """The voxel axis codes and voxel size of an image file, from its header alone.

    Parameters
    ----------
    path : path
        A NIfTI file or another format SimpleITK reads.

    Returns
    -------
    axes : str
        nibabel's axis codes (``"ASL"``: the first voxel axis points anterior, ...).
    spacing : float or None
        The voxel size in mm when every axis has it within 5 %, else None.

    Raises
    ------
    InputError
        An unreadable header.
    """
    p = Path(path)
    try:
        if _suffix(p) in NIFTI_SUFFIXES:
            nifti = nib.load(str(p))
            affine = np.asarray(nifti.affine, dtype=float)
            shape = [int(n) for n in nifti.shape]
        else:
            with _quiet_itk() as sitk:
                reader = sitk.ImageFileReader()
                reader.SetFileName(str(p))
                reader.ReadImageInformation()
                affine = _affine_from_sitk(reader)  # the reader has the image's geometry
                shape = list(reader.GetSize())
    except Exception as err:  # nibabel and SimpleITK raise many types
        raise InputError(f"{p}: cannot read image header ({reason(err)})") from None
    full = embedded(affine)
    while len(shape) > 2 and shape[-1] == 1:  # a one-slice volume is a 2-D image
        shape.pop()
    ndim = min(len(shape), 3)
    axes = "".join(nib.aff2axcodes(full)[:ndim])
    sizes = np.linalg.norm(full[:3, :ndim], axis=0)
    isotropic = sizes.max() <= 1.05 * sizes.min()
    return axes, float(np.median(sizes)) if isotropic else None


def check_labels(image: Image, what: str = "label map") -> None:
    """Raise :class:`InputError` naming the file unless every voxel is an integer label.

    A float label map is accepted when its values are whole numbers (many tools store labels
    as float32); NaN, infinite or fractional values are refused (a warped or resampled
    intensity image given as labels, say).
    """
    array = image.array
    if np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_:
        return
    if not np.issubdtype(array.dtype, np.floating):
        raise InputError(f"{image.path or what}: {what} has voxel type {array.dtype}")
    finite = np.isfinite(array)
    if not finite.all():
        raise InputError(
            f"{image.path or what}: {what} has {int((~finite).sum())} NaN or infinite voxels"
        )
    fractional = array != np.round(array)
    if fractional.any():
        examples = ", ".join(f"{v:g}" for v in np.unique(array[fractional])[:3])
        raise InputError(
            f"{image.path or what}: {what} holds non-integer values ({examples}, ...): "
            "a label map holds integer labels"
        )


def read_labels(source: ImageLike, image: Image, what: str = "labels") -> Image:
    """A label map that belongs to ``image``: read (or taken as given), integer-valued
    (:func:`check_labels`) and on ``image``'s grid.

    Parameters
    ----------
    source : path, Image or numpy.ndarray
        The label map (an array takes ``image``'s affine).
    image : Image
        The image the labels belong to.
    what : str
        What they are, for messages (``"moving labels"``).

    Raises
    ------
    InputError
        Unreadable, non-integer values, or another grid than ``image``'s.
    """
    labels = as_image(source, image.affine, what)
    check_labels(labels, what)
    if not labels.same_grid(image):
        raise InputError(
            f"{labels.path or what}: {what} grid {labels.shape} does not match the image's grid "
            f"{image.shape} (shape or affine differ)"
        )
    return labels


def as_sitk_image(array: np.ndarray, reference: Image, vector: bool = False) -> sitk.Image:
    """A SimpleITK image of ``array`` with ``reference``'s geometry (LPS, as ITK wants it).

    Parameters
    ----------
    array : numpy.ndarray
        ``(X, Y, Z)`` (or ``(X, Y)``) scalars, or ``(X, Y, Z, C)`` (``(X, Y, C)``) vectors
        with ``vector=True``, on the reference grid.
    reference : Image
        The grid.
    vector : bool
        Whether the last axis holds vector components.

    Returns
    -------
    SimpleITK.Image
    """
    import SimpleITK as sitk  # imported on use: slow to import

    axes = tuple(range(reference.ndim))
    data = np.moveaxis(array, axes, axes[::-1]) if vector else array.transpose()
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
        (or 2-D ``(X, Y)``) array.
    affine : numpy.ndarray, optional
        ``(ndim+1, ndim+1)`` voxel -> RAS mm matrix of an array (identity if None).
    what : str
        What the image is for, used in error messages.

    Returns
    -------
    Image
    """
    if isinstance(source, Image):
        return source
    if isinstance(source, np.ndarray):
        if source.ndim not in (2, 3):
            raise InputError(
                f"{what}: array is {source.ndim}-D {source.shape}; a 3-D volume or a 2-D image "
                "is needed"
            )
        n = source.ndim + 1
        matrix = np.eye(n) if affine is None else np.asarray(affine, float)
        if matrix.shape != (n, n):
            raise InputError(
                f"{what}: a {source.ndim}-D array needs a {n}x{n} affine, got {matrix.shape}"
            )
        return Image(source, matrix, what)
    return read_image(source, what)
