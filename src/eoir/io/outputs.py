"""Writing outputs atomically: images and fields on a reference grid, all or none.

Every output is written to a temporary file beside its target and renamed at the end;
:class:`OutputSet` commits several outputs together or none.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from eoir.errors import InputError
from eoir.image import Image
from eoir.io.fields import FieldFormat, _nifti_vectors, check_field_target
from eoir.io.gzip_stream import GzipStream
from eoir.io.images import NIFTI_SUFFIXES, _suffix, as_sitk_image
from eoir.spatial import field_to_world, lps_affine

__all__ = ["WRITABLE_SUFFIXES", "OutputSet", "write_field", "write_image"]


WRITABLE_SUFFIXES = (".nii", ".nii.gz", ".mha", ".nrrd")


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
                raise InputError(f"{target}: exists", switches=("overwrite",))
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
        field_format: FieldFormat = "itk",
    ) -> None:
        """Write a displacement field on ``reference``'s grid to ``target``'s temporary file.

        Parameters
        ----------
        target : path
            A declared output (formats: :mod:`eoir.io.fields`).
        disp : torch.Tensor or numpy.ndarray
            ``(3, X, Y, Z)`` or ``(1, 3, X, Y, Z)`` displacement in voxel units of the
            reference (fixed) grid, :mod:`eoir.spatial` convention.
        reference : Image
            The fixed image.
        field_format : {"itk", "l2r"}
            ITK/ANTs world field (LPS mm) or Learn2Reg voxel field.
        """
        d = torch.as_tensor(disp).detach().cpu()
        if d.dim() == 4:
            d = d.unsqueeze(0)
        if tuple(d.shape[1:]) != (3, *reference.shape):
            raise ValueError(f"field {tuple(d.shape)} is not a 3-D field on grid {reference.shape}")
        check_field_target(target, field_format)
        path = self.temp(target)
        if _suffix(path) in NIFTI_SUFFIXES:
            matrix = np.eye(3) if field_format == "l2r" else lps_affine(reference.affine)[:3, :3]
            data = _nifti_vectors(d[0], matrix)  # (X, Y, Z, 3)
            if field_format == "itk":
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
