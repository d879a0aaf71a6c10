"""Dataset descriptions: Learn2Reg ``dataset.json`` files or folders of images.

A dataset is a list of training subjects (image + optional label map) and lists of evaluation
pairs (``registration_val`` / ``registration_test``). Only file names and headers are read here;
training reads the images (:mod:`eoir.training.data`).

Learn2Reg conventions: paths in ``dataset.json`` are relative to its folder; the label map of
``imagesTr/X.nii.gz`` is ``labelsTr/X.nii.gz``, for training entries and pair images alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np

from eoir.errors import InputError, reason
from eoir.io.images import IMAGE_2D_SUFFIXES, NIFTI_SUFFIXES, check_labels, read_image
from eoir.options import look_up_option

__all__ = ["SPLITS", "DatasetSpec", "Split", "Subject", "load_dataset"]

Split = Literal["val", "test"]
SPLITS: dict[str, str] = {"val": "registration_val", "test": "registration_test"}


IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd")


@dataclass(frozen=True)
class Subject:
    """One image and its optional label map."""

    image: Path
    label: Path | None = None

    @property
    def name(self) -> str:
        """The file name without its image suffix (``OASISTRT_0013_0000``)."""
        name = self.image.name
        for suffix in (*IMAGE_SUFFIXES, *IMAGE_2D_SUFFIXES):
            if name.lower().endswith(suffix):
                return name[: -len(suffix)]
        return name


@dataclass
class DatasetSpec:
    """What a dataset holds.

    Attributes
    ----------
    source : Path
        The ``dataset.json`` or folder it came from.
    training : list of Subject
        Subjects to train on: the file's ``training`` entries less every subject that appears
        in an evaluation pair.
    val, test : list of (Subject, Subject)
        ``(fixed, moving)`` evaluation pairs.
    labels : list of int
        Label values the dataset names (background included), or those found in the training
        label maps when the file names none.
    label_names : dict of int to str
        Names ``dataset.json`` gives the labels (several labels may share a name, e.g. a group
        such as "subcortical"); empty when it gives none.
    shape : tuple of int
        The common image shape.
    """

    source: Path
    training: list[Subject]
    val: list[tuple[Subject, Subject]] = field(default_factory=list)
    test: list[tuple[Subject, Subject]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    shape: tuple[int, ...] = ()
    label_names: dict[int, str] = field(default_factory=dict)

    def pairs(self, split: Split) -> list[tuple[Subject, Subject]]:
        """The ``val`` or ``test`` pairs."""
        look_up_option("split", split, SPLITS)
        pairs = self.val if split == "val" else self.test
        if not pairs:
            raise InputError(f"{self.source}: has no {split} pairs")
        return pairs


def _label_for(image: Path) -> Path | None:
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i].startswith("images"):
            parts[i] = "labels" + parts[i][len("images") :]
            candidate = Path(*parts)
            return candidate if candidate.is_file() else None
    return None


def _image_shape(path: Path) -> tuple[int, ...]:
    """The spatial shape from the header alone (no voxel data read)."""
    try:
        if path.name.lower().endswith(NIFTI_SUFFIXES):
            shape = nib.load(str(path)).shape
        else:
            import SimpleITK as sitk  # imported on use: slow to import

            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
            shape = reader.GetSize()
    except Exception as err:  # nibabel and SimpleITK raise many types
        raise InputError(f"{path}: cannot read image header ({reason(err)})") from None
    return tuple(int(n) for n in shape if n != 1 or len(shape) <= 3)


def _check(spec: DatasetSpec) -> DatasetSpec:
    subjects = list(spec.training)
    for fixed, moving in spec.val + spec.test:
        subjects += [fixed, moving]
    shape = None
    for subject in subjects:
        for path in (subject.image, subject.label):
            if path is None:
                continue
            if not path.is_file():
                raise InputError(f"{spec.source}: names {path}, which does not exist")
            this = _image_shape(path)
            if shape is None:
                shape = this
            elif this != shape:
                raise InputError(
                    f"{path}: shape {this} differs from the dataset's {shape} "
                    "(resample the images to one grid first)"
                )
    if not subjects:
        raise InputError(f"{spec.source}: lists no images (no training entries and no pairs)")
    spec.shape = shape or ()
    return spec


def _scan_labels(spec: DatasetSpec) -> list[int]:
    values: set[int] = {0}
    for subject in spec.training:
        if subject.label is not None:
            label_map = read_image(subject.label, "label map")
            check_labels(label_map, "label map")
            values |= {int(v) for v in np.unique(label_map.array)}
    return sorted(values)


def load_dataset(path: str | Path, label_maps: bool = False) -> DatasetSpec:
    """Read a Learn2Reg ``dataset.json`` or a folder of images.

    A folder holds images (``.nii.gz``, ``.nii``, ``.mha``, ``.mhd``, ``.nrrd``), directly or in
    ``images*/`` with label maps of the same names in ``labels*/``. Its last two subjects form
    the validation pairs (both orders) when it has five or more, the rest train.

    Parameters
    ----------
    path : path
        The ``dataset.json`` file, or a folder (with or without a ``dataset.json``).
    label_maps : bool
        A dataset of label maps for synthesis (:mod:`eoir.synth`): every subject needs a label
        map and its image is not used; the files of a folder without ``images*/`` are label
        maps themselves.

    Returns
    -------
    DatasetSpec

    Raises
    ------
    InputError
        Invalid JSON, missing files, images of different shapes, no images at all. (A
        dataset of evaluation pairs alone is valid: training refuses it, evaluation does not.)
    """
    p = Path(path)
    if p.is_dir() and (p / "dataset.json").is_file():
        p = p / "dataset.json"
    if p.is_file():
        try:
            meta = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise InputError(f"{p}: not valid JSON ({reason(err)})") from None
        if not isinstance(meta, dict) or not isinstance(meta.get("training"), list):
            raise InputError(f"{p}: not a Learn2Reg dataset (no 'training' list)")
        root = p.parent

        def subject(entry: str) -> Subject:
            image = (root / entry).resolve()
            return Subject(image, _label_for(image))

        try:
            training = [
                Subject(
                    (root / e["image"]).resolve(),
                    (root / e["label"]).resolve() if e.get("label") else None,
                )
                for e in meta["training"]
            ]
            val, test = (
                [(subject(e["fixed"]), subject(e["moving"])) for e in meta.get(key) or []]
                for key in ("registration_val", "registration_test")
            )
        except (KeyError, TypeError) as err:
            raise InputError(f"{p}: malformed entry (missing {reason(err)})") from None
        # subjects of the evaluation pairs never train (Learn2Reg lists them under training too)
        held_out = {image for pair in val + test for image in (pair[0].image, pair[1].image)}
        training = [t for t in training if t.image not in held_out]
        spec = _check(_as_label_maps(DatasetSpec(p, training, val, test), label_maps))
        label_meta = meta.get("labels")
        names = label_meta.get("0") if isinstance(label_meta, dict) else None
        spec.labels = sorted({0} | {int(k) for k in names}) if names else _scan_labels(spec)
        spec.label_names = {int(k): str(v) for k, v in (names or {}).items() if int(k) != 0}
        return spec
    if not p.is_dir():
        raise InputError(f"{p}: dataset not found (give a dataset.json or a folder)")
    folders = sorted(d for d in p.iterdir() if d.is_dir() and d.name.startswith("images"))
    image_dir = folders[0] if folders else p
    images = sorted(
        f for f in image_dir.iterdir() if f.is_file() and f.name.lower().endswith(IMAGE_SUFFIXES)
    )
    if not images:
        raise InputError(f"{p}: no images found (.nii.gz, .nii, .mha, .mhd, .nrrd)")
    subjects = [Subject(f.resolve(), _label_for(f.resolve())) for f in images]
    held = subjects[-2:] if len(subjects) >= 5 else []
    training = subjects[: len(subjects) - len(held)]
    val = [(held[0], held[1]), (held[1], held[0])] if held else []
    spec = _check(_as_label_maps(DatasetSpec(p, training, val, []), label_maps))
    spec.labels = _scan_labels(spec)
    return spec


def _as_label_maps(spec: DatasetSpec, label_maps: bool) -> DatasetSpec:
    """With ``label_maps``, every subject as its label map (a file with none is one itself)."""
    if not label_maps:
        return spec

    def as_map(subject: Subject) -> Subject:
        return Subject(subject.label or subject.image, subject.label or subject.image)

    spec.training = [as_map(s) for s in spec.training]
    spec.val = [(as_map(f), as_map(m)) for f, m in spec.val]
    spec.test = [(as_map(f), as_map(m)) for f, m in spec.test]
    return spec
