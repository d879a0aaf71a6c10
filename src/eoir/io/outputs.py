"""Writing outputs atomically: images and fields on a reference grid, all or none.

Every output is written to a temporary file beside its target and moved into place at the end;
:class:`OutputSet` commits several outputs together or none, never over an input of the run,
and (without ``overwrite``) never over a file that appeared while it ran.
"""

from __future__ import annotations

import glob
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from eoir.errors import InputError
from eoir.image import Image, embedded, in_plane
from eoir.io.fields import FieldFormat, _nifti_vectors, check_field_target
from eoir.io.gzip_stream import GzipStream
from eoir.io.images import IMAGE_2D_SUFFIXES, NIFTI_SUFFIXES, _suffix, as_sitk_image
from eoir.io.transforms import TRANSFORM_SUFFIXES, transform_to_sitk
from eoir.spatial import field_to_world, lps_affine

__all__ = [
    "PICTURE_DTYPES",
    "WRITABLE_SUFFIXES",
    "OutputSet",
    "check_image_target",
    "remove_stale_temps",
    "write_field",
    "write_image",
]


WRITABLE_SUFFIXES = (".nii", ".nii.gz", ".mha", ".nrrd", *IMAGE_2D_SUFFIXES)

# what each picture format stores (2-D only); TIFF stores any real scalar type
PICTURE_DTYPES: dict[str, tuple[str, ...]] = {
    ".png": ("uint8", "uint16"),
    ".jpg": ("uint8",),
    ".jpeg": ("uint8",),
    ".bmp": ("uint8",),
}


def check_image_target(
    target: str | os.PathLike, ndim: int, dtype: np.dtype, what: str = "output"
) -> None:
    """Raise :class:`InputError` unless ``target``'s format can hold an image of ``ndim``
    spatial axes and ``dtype`` (checked before any work, so that nothing is computed for an
    output that cannot be written).

    Picture formats (PNG, JPEG, TIFF, BMP) hold 2-D images only; PNG holds 8- and 16-bit
    unsigned integers, JPEG and BMP 8-bit ones (a warped image keeps the moving image's type).
    """
    suffix = _suffix(target)
    if suffix not in IMAGE_2D_SUFFIXES:
        return
    if ndim != 2:
        raise InputError(
            f"{target}: a {suffix} file holds 2-D images; the {what} is {ndim}-D: write "
            ".nii.gz, .mha or .nrrd"
        )
    allowed = PICTURE_DTYPES.get(suffix)
    name = np.dtype(dtype).name
    if allowed is not None and name not in allowed:
        raise InputError(
            f"{target}: a {suffix} file holds {' or '.join(allowed)} pixels; the {what} is "
            f"{name}: write .tif, .nii.gz or .mha"
        )


class OutputSet:
    """Write several outputs so that either all appear or none does, and never over an input.

    Checks every target first (format, an input of the same run, an existing file without
    ``overwrite``, writable folder) and removes stale temporary files of this target left by a
    killed eoir process; :meth:`temp` gives the temporary path to write each one to; leaving the
    ``with`` block normally moves them all into place, an exception (Ctrl-C, a full disk)
    removes them. Without ``overwrite`` a file that appeared at a target while eoir ran is left
    as it is and the set fails (the move is a link, which refuses to replace).

    Parameters
    ----------
    targets : iterable of path
        Final output paths (None entries are ignored).
    overwrite : bool
        Replace existing files (never an input).
    suffixes : tuple of str
        Allowed file name endings.
    inputs : iterable of path
        The run's input files (None entries are ignored): a target that is one of them is
        refused, with or without ``overwrite``.
    """

    def __init__(
        self,
        targets: Iterable[str | os.PathLike | None],
        overwrite: bool = False,
        suffixes: tuple[str, ...] = WRITABLE_SUFFIXES,
        inputs: Iterable[str | os.PathLike | None] = (),
    ) -> None:
        self.targets = [Path(t) for t in targets if t is not None]
        self.overwrite = overwrite
        self._temps: dict[Path, Path] = {}
        sources = [Path(i) for i in inputs if i is not None]
        seen: set[Path] = set()
        for target in self.targets:
            resolved = target.resolve()
            if resolved in seen:
                raise InputError(f"{target}: named as two different outputs")
            seen.add(resolved)
            if any(_same_file(target, source) for source in sources):
                raise InputError(f"{target}: is an input of this run; give another output path")
            if _suffix(target) not in suffixes:
                raise InputError(
                    f"{target}: unsupported output type; use one of {', '.join(suffixes)}"
                )
            if target.is_dir():
                raise InputError(f"{target}: is a folder, not an output file")
            if target.exists() and not overwrite:
                raise InputError(f"{target}: exists", switches=("overwrite",))
            folder = _folder(target)
            if not folder.is_dir():
                raise InputError(f"{target}: folder {folder} does not exist")
            try:  # a real probe: os.access says yes to root even on a read-only mount
                fd, probe = tempfile.mkstemp(prefix=".eoir-probe.", dir=folder)
                os.close(fd)
                os.unlink(probe)
            except OSError:
                raise InputError(f"{target}: folder {folder} is not writable") from None
            remove_stale_temps(target)

    def temp(self, target: str | os.PathLike) -> Path:
        """The temporary path (same folder, same file type) to write ``target`` to.

        Named ``.<name>.<pid>.<random>.eoir-tmp<suffix>``, so that a later run can tell the
        temporary files of a process that is gone (:func:`remove_stale_temps`).
        """
        target = Path(target)
        if target not in self.targets:
            raise ValueError(f"{target} was not declared as an output of this set")
        if target not in self._temps:
            suffix = _suffix(target)
            fd, name = tempfile.mkstemp(
                prefix=f"{_temp_prefix(target)}{os.getpid()}.",
                suffix=f"{_TEMP_TAG}{suffix}",
                dir=_folder(target),
            )
            os.close(fd)
            self._temps[target] = Path(name)
        return self._temps[target]

    def write_image(self, target: str | os.PathLike, array: np.ndarray, reference: Image) -> None:
        """Write ``array`` on ``reference``'s grid to ``target``'s temporary file.

        Parameters
        ----------
        target : path
            A declared output: ``.nii``, ``.nii.gz``, ``.mha``, ``.nrrd``, or for 2-D images a
            picture (:func:`check_image_target`).
        array : numpy.ndarray
            ``(X, Y, Z)`` (or ``(X, Y)``) on the reference grid, in the dtype to store.
        reference : Image
            The grid (normally the fixed image): its affine and, for NIfTI, its header.
        """
        if tuple(array.shape) != reference.shape:
            raise ValueError(f"array {array.shape} is not on the reference grid {reference.shape}")
        check_image_target(target, array.ndim, array.dtype)
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
        field_format: FieldFormat = "itk",
    ) -> None:
        """Write a displacement field on ``reference``'s grid to ``target``'s temporary file.

        Parameters
        ----------
        target : path
            A declared output (formats: :mod:`eoir.io.fields`).
        disp : torch.Tensor or numpy.ndarray
            ``(3, X, Y, Z)`` or ``(1, 3, X, Y, Z)`` displacement in voxel units of the
            reference (fixed) grid, :mod:`eoir.spatial` convention (in 2-D ``(1, 2, X, Y)``:
            an ITK 2-D field, NIfTI ``(X, Y, 1, 1, 2)``).
        reference : Image
            The fixed image.
        field_format : {"itk", "l2r"}
            ITK/ANTs world field (LPS mm) or Learn2Reg voxel field.
        """
        ndim = reference.ndim
        d = torch.as_tensor(disp).detach().cpu()
        if d.dim() == ndim + 1:
            d = d.unsqueeze(0)
        if tuple(d.shape[1:]) != (ndim, *reference.shape):
            raise ValueError(
                f"field {tuple(d.shape)} is not a {ndim}-D field on grid {reference.shape}"
            )
        check_field_target(target, field_format, ndim)
        path = self.temp(target)
        if _suffix(path) in NIFTI_SUFFIXES:
            if field_format == "l2r":
                matrix = np.eye(ndim)
            else:
                matrix = lps_affine(reference.affine)[:ndim, :ndim]
            data = _nifti_vectors(d[0], matrix)  # (X, Y, Z, 3) or (X, Y, 2)
            if field_format == "itk":  # (X, Y, Z, 1, 3), or (X, Y, 1, 1, 2) in 2-D
                data = data[:, :, :, None, :] if ndim == 3 else data[:, :, None, None, :]
            _save_nifti(path, data, reference, intent="vector")
            return
        lps = field_to_world(d.double(), reference.affine, frame="lps")[0]
        _save_sitk(path, np.moveaxis(lps.numpy().astype(np.float32), 0, -1), reference, vector=True)

    def write_transform(self, target: str | os.PathLike, world: np.ndarray) -> None:
        """Write a linear alignment as an ITK transform file to ``target``'s temporary file.

        Parameters
        ----------
        target : path
            A declared output: ``.tfm``/``.txt`` (ITK text) or ``.mat`` (ANTs).
        world : numpy.ndarray
            ``(ndim+1, ndim+1)`` fixed RAS world -> moving RAS world (mm)
            (:mod:`eoir.io.transforms`).
        """
        import SimpleITK as sitk  # imported on use: slow to import

        if _suffix(target) not in TRANSFORM_SUFFIXES:
            raise InputError(f"{target}: a transform is written as {', '.join(TRANSFORM_SUFFIXES)}")
        sitk.WriteTransform(transform_to_sitk(world), str(self.temp(target)))

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._commit()
        finally:
            for temp in self._temps.values():
                temp.unlink(missing_ok=True)
            self._temps.clear()

    def _commit(self) -> None:
        """Move every temporary file into place; without ``overwrite``, never over a file."""
        umask = os.umask(0)
        os.umask(umask)
        placed: list[Path] = []
        try:
            for target, temp in self._temps.items():
                os.chmod(temp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual mode
                if self.overwrite:
                    os.replace(temp, target)
                    continue
                try:
                    os.link(temp, target)  # fails if the target exists: no clobbering
                except FileExistsError:
                    raise InputError(
                        f"{target}: appeared while eoir was running; left as it is "
                        "(nothing was written)"
                    ) from None
                except OSError:  # no hard links here: an exclusive create, then the move
                    os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
                    os.replace(temp, target)
                placed.append(target)
        except BaseException:
            for target in placed:  # all or none: what this set placed goes again
                target.unlink(missing_ok=True)
            raise


_TEMP_TAG = ".eoir-tmp"


def _folder(target: Path) -> Path:
    return target.parent if str(target.parent) else Path(".")


def _temp_prefix(target: Path) -> str:
    return f".{target.name[: -len(_suffix(target))]}."


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process: not ours to judge
    return True


def remove_stale_temps(target: str | os.PathLike) -> list[Path]:
    """Remove temporary files of ``target`` left by eoir processes that no longer run.

    Only files named as :meth:`OutputSet.temp` names them (``.<name>.<pid>.<random>.eoir-tmp``
    plus the target's suffix) whose process id is not a running process are removed.

    Returns
    -------
    list of Path
        The files removed.
    """
    target = Path(target)
    prefix, suffix = _temp_prefix(target), f"{_TEMP_TAG}{_suffix(target)}"
    removed = []
    for path in _folder(target).glob(f"{glob.escape(prefix)}*{glob.escape(suffix)}"):
        pid = path.name[len(prefix) :].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _nifti_affine(reference: Image) -> np.ndarray:
    """The ``(4, 4)`` affine a NIfTI output on ``reference``'s grid stores: a 2-D grid's
    header's own one when it agrees with the in-plane geometry (the slice keeps its place in
    3-D space), else the in-plane one with a unit third axis."""
    if reference.ndim == 3:
        return reference.affine
    if reference.header is not None:
        full = np.asarray(reference.header.get_best_affine(), dtype=float)
        if np.allclose(in_plane(full), reference.affine, atol=1e-4):
            return full
    return embedded(reference.affine)


def _save_nifti(path: Path, data: np.ndarray, reference: Image, intent: str | None = None):
    header = reference.header.copy() if reference.header is not None else None
    affine = _nifti_affine(reference)
    image = nib.Nifti1Image(data, affine, header=header)
    image.set_data_dtype(data.dtype)
    sform_code = int(header["sform_code"]) if header is not None else 0
    qform_code = int(header["qform_code"]) if header is not None else 0
    image.set_sform(affine, code=sform_code or 1)
    image.set_qform(affine, code=qform_code or 1)
    image.header.set_slope_inter(1.0, 0.0)
    image.header.set_xyzt_units("mm")
    if intent is not None:
        image.header.set_intent(intent)
    else:
        image.header.set_intent("none")
    if _suffix(path) == ".nii.gz":
        # nibabel writes the header and the data slice by slice into a multi-threaded gzip
        # stream (no uncompressed copy of the file in memory)
        with path.open("wb") as target, GzipStream(target) as stream:
            image.to_file_map({"image": nib.FileHolder(fileobj=stream)})
    else:
        nib.save(image, str(path))


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
    field_format: FieldFormat = "itk",
    overwrite: bool = False,
) -> None:
    """Write one displacement field atomically (see :meth:`OutputSet.write_field`)."""
    with OutputSet([path], overwrite=overwrite) as outputs:
        outputs.write_field(path, disp, reference, field_format)
