"""Training data: the pairs of each step, and the images of a pair ready for the network.

Pairs for training are drawn per epoch by a pairing mode (``PAIRINGS``), in an order fixed by
``(seed, epoch)`` so that a resumed run sees exactly the pairs an uninterrupted one would.
Datasets themselves are described by :mod:`eoir.io.datasets`.
"""

from __future__ import annotations

import random
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from nibabel.orientations import (
    apply_orientation,
    axcodes2ornt,
    inv_ornt_aff,
    io_orientation,
    ornt_transform,
)

from eoir.errors import InputError
from eoir.image import Image
from eoir.io import Subject, check_labels, read_image
from eoir.options import look_up_option
from eoir.registration.affine import linear_align
from eoir.registration.preprocess import check_finite, normalise
from eoir.synth import (
    EXTRA_CEREBRAL_FROM,
    NON_BRAIN,
    Geometry,
    SynthOptions,
    brain_labels,
    random_geometry,
    synthesise_image,
    tissue_groups,
    true_field,
)

__all__ = ["PAIRINGS", "PairDataset", "Pairing", "StepPairs", "SynthPairDataset", "epoch_pairs"]

Pairing = Literal["all", "random", "atlas"]
PAIRINGS: dict[str, str] = {
    "all": "every ordered pair once per epoch",
    "random": "each subject once as moving, with a random other fixed",
    "atlas": "one atlas subject fixed, every other moving",
}


def epoch_pairs(
    n: int, mode: Pairing, epoch: int, seed: int, atlas: int = 0
) -> list[tuple[int, int]]:
    """The ``(fixed, moving)`` subject indices of one epoch, in training order.

    Parameters
    ----------
    n : int
        Number of training subjects.
    mode : {"all", "random", "atlas"}
        ``all``: every ordered pair once, shuffled; ``random``: each subject once as moving
        with a random other fixed; ``atlas``: subject ``atlas`` fixed, every other moving.
    epoch, seed : int
        The order depends on these only.
    atlas : int
        Index of the atlas subject.

    Returns
    -------
    list of (int, int)
    """
    look_up_option("pairing", mode, PAIRINGS)
    if n < 2:
        raise InputError("training needs at least 2 subjects")
    rng = random.Random(seed * 100_003 + epoch)
    if mode == "all":
        pairs = [(f, m) for f in range(n) for m in range(n) if f != m]
    elif mode == "random":
        pairs = [(rng.choice([f for f in range(n) if f != m]), m) for m in range(n)]
    else:
        if not 0 <= atlas < n:
            raise InputError(f"atlas index {atlas}: the dataset has {n} training subjects")
        pairs = [(atlas, m) for m in range(n) if m != atlas]
    rng.shuffle(pairs)
    return pairs


class StepPairs:
    """The ``(fixed, moving)`` pair of every global training step, for one process.

    Step ``s`` belongs to epoch ``s // steps_per_epoch``; the epoch's pairs
    (:func:`epoch_pairs`) are dealt to ``world`` processes in turn and this one (``rank``)
    takes every ``world``-th. A pure function of the step: resuming at any step reproduces the
    uninterrupted order.
    """

    def __init__(
        self, n: int, mode: str, seed: int, rank: int = 0, world: int = 1, atlas: int = 0
    ) -> None:
        self.n, self.mode, self.seed, self.rank, self.world, self.atlas = (
            n,
            mode,
            seed,
            rank,
            world,
            atlas,
        )
        self.steps_per_epoch = max(1, len(epoch_pairs(n, mode, 0, seed, atlas)) // world)
        self._epoch: tuple[int, list[tuple[int, int]]] | None = None

    def __getitem__(self, step: int) -> tuple[int, int]:
        epoch, position = divmod(step, self.steps_per_epoch)
        if self._epoch is None or self._epoch[0] != epoch:
            self._epoch = (epoch, epoch_pairs(self.n, self.mode, epoch, self.seed, self.atlas))
        return self._epoch[1][position * self.world + self.rank]


class PairDataset(torch.utils.data.Dataset):
    """Image pairs for training or validation, preprocessed and cached per worker.

    Items are dicts with ``fixed``/``moving`` ``(1, *shape)`` float32 normalised images and,
    when both subjects have label maps, ``fixed_labels``/``moving_labels`` ``(1, *shape)``
    int64 maps. Images are normalised with ``preset`` and, with ``downsample > 1``, resized to
    ``ceil(n / downsample)`` per axis (linear for images, nearest for labels; align_corners).

    Parameters
    ----------
    subjects : list of Subject
        The subjects the pairs index.
    pairs : sequence of (int, int)
        ``(fixed, moving)`` indices (a list, or :class:`StepPairs` indexed by global step).
    preset : str
        Intensity preset (:func:`eoir.registration.preprocess.normalise`).
    downsample : int
        Resolution divisor.
    cache : bool
        Keep decoded volumes in memory (each DataLoader worker has its own cache).
    """

    def __init__(
        self,
        subjects: list[Subject],
        pairs: list[tuple[int, int]] | StepPairs,
        preset: str = "mri",
        downsample: int = 1,
        cache: bool = True,
    ) -> None:
        self.subjects = subjects
        self.pairs = pairs
        self.preset = preset
        self.downsample = downsample
        self.cache = cache
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def __len__(self) -> int:
        # StepPairs is indexed by global step without end: the DataLoader's sampler bounds it
        return len(self.pairs) if isinstance(self.pairs, list) else 2**62

    def _resize(self, x: torch.Tensor, mode: str) -> torch.Tensor:
        if self.downsample <= 1:
            return x
        size = [-(-n // self.downsample) for n in x.shape[1:]]
        if mode == "trilinear" and x.dim() == 3:  # a 2-D image
            mode = "bilinear"
        kwargs = {"align_corners": True} if mode != "nearest" else {}
        return F.interpolate(x[None], size=size, mode=mode, **kwargs)[0]

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Normalised image and label map of subject ``index`` (cached)."""
        if index in self._cache:
            return self._cache[index]
        subject = self.subjects[index]
        image = read_image(subject.image, "training image")
        check_finite(image, "training image")
        values = torch.from_numpy(normalise(image.array, self.preset))[None]
        volume = self._resize(values, "trilinear")
        labels = None
        if subject.label is not None:
            label_map = read_image(subject.label, "label map")
            check_labels(label_map, "label map")
            lab = label_map.array.astype(np.int64)
            labels = self._resize(torch.from_numpy(lab)[None].double(), "nearest").long()
        if self.cache:
            self._cache[index] = (volume, labels)
        return volume, labels

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        fixed_index, moving_index = self.pairs[item]
        fixed, fixed_labels = self.load(fixed_index)
        moving, moving_labels = self.load(moving_index)
        out = {"fixed": fixed, "moving": moving}
        if fixed_labels is not None and moving_labels is not None:
            out["fixed_labels"] = fixed_labels
            out["moving_labels"] = moving_labels
        return out


def _draw(generator: torch.Generator) -> float:
    """A uniform number in [0, 1)."""
    return float(torch.rand((), generator=generator))


class SynthPairDataset(torch.utils.data.Dataset):
    """Image pairs synthesised from label maps (:mod:`eoir.synth`), for training without images.

    Item ``i`` is a pure function of ``(seed, i)``: its fixed and moving label maps come from
    ``pairs[i]`` (both from the fixed subject's map with probability ``options.same_map``: one
    head under two deformations), each image is drawn by :func:`eoir.synth.synthesise_image`
    (both with one contrast with probability ``options.same_contrast``: an image term such as
    NCC then applies).
    Items are dicts with ``fixed``/``moving`` ``(1, *options.shape)`` float32 images in [0, 1]
    and ``fixed_labels``/``moving_labels`` ``(1, *options.shape)`` int64 label values of the
    brain structures (background, CSF and head tissue are 0: the network is scored on brains);
    with ``fields``, also ``field``, the ``(3, *options.shape)`` true displacement (output
    voxels, :func:`eoir.synth.true_field`) where the pair is one head, and ``known``, 1.0 then
    and 0.0 for two heads (whose field is zeros: labels alone supervise them); always
    ``one_contrast``, 1.0 where both images share their contrast (``options.same_contrast``)
    and 0.0 otherwise (a one-contrast image term applies to the first kind only).

    Parameters
    ----------
    subjects : list of Subject
        Their ``label`` maps are read (the images, if any, are not).
    pairs : sequence of (int, int)
        ``(fixed, moving)`` indices (a list, or :class:`StepPairs` indexed by global step).
    values : sequence of int
        Every label value of the maps (values not listed are read as background).
    options : SynthOptions
        The generator's ranges.
    downsample : int
        Resolution divisor: output voxels are ``downsample`` x the maps' finest spacing.
    seed : int
        Seed of the draws.
    cache : bool
        Keep the decoded (reoriented, indexed) maps in memory.
    fields : bool
        Add the true field of one-head pairs (for a supervised field term).
    device : torch.device or str
        Where pairs are drawn (the maps are kept there): the CPU in DataLoader workers, or the
        training GPU in the training process. The draws themselves come from CPU generators
        either way.
    """

    def __init__(
        self,
        subjects: list[Subject],
        pairs: list[tuple[int, int]] | StepPairs,
        values: list[int],
        options: SynthOptions,
        downsample: int = 2,
        seed: int = 0,
        cache: bool = True,
        fields: bool = False,
        device: torch.device | str = "cpu",
    ) -> None:
        self.subjects, self.pairs, self.options = subjects, pairs, options
        self.fields, self.device = fields, torch.device(device)
        self.values = np.asarray(sorted({0, *(int(v) for v in values)}), dtype=np.int64)
        self.downsample, self.seed, self.cache = downsample, seed, cache
        self.extra = torch.tensor(
            [v in NON_BRAIN or v >= EXTRA_CEREBRAL_FROM for v in self.values.tolist()]
        )
        self.extra[0] = False  # the background is not stripped, it is zeroed by its own draw
        self.groups = torch.tensor(tissue_groups(self.values.tolist()))
        brain = set(brain_labels(self.values.tolist()))
        self.scored = torch.tensor([v if v in brain else 0 for v in self.values.tolist()])
        self._scored_here = self.scored.to(self.device)
        # an image to align heads by: white matter bright, grey matter mid, CSF dark
        tissue = {2: 1.0, 41: 1.0, 7: 1.0, 46: 1.0, 16: 0.9, 28: 0.9, 60: 0.9}
        csf = {4, 5, 14, 15, 24, 43, 44}
        self._render = np.array(
            [0.0 if not b else tissue.get(v, 0.1 if v in csf else 0.6)
             for v, b in zip(self.values.tolist(), self.scored.tolist(), strict=True)]
            , dtype=np.float32,
        )  # fmt: skip
        self._ref: tuple[Image, np.ndarray, np.ndarray] | None = None
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.pairs) if isinstance(self.pairs, list) else 2**62

    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Label indices of subject ``index`` in the output axis order and their voxel -> RAS
        affine."""
        subject = self.subjects[index]
        path = subject.label if subject.label is not None else subject.image
        label_map = read_image(path, "label map")
        check_labels(label_map, "label map")
        if label_map.ndim != 3:
            raise InputError(f"{path}: label maps for synthesis must be 3-D")
        turn = ornt_transform(io_orientation(label_map.affine), axcodes2ornt(self.options.axes))
        array = apply_orientation(np.asarray(label_map.array), turn).astype(np.int64)
        affine = label_map.affine @ inv_ornt_aff(turn, label_map.shape)
        found = np.searchsorted(self.values, array).clip(0, len(self.values) - 1)
        return np.where(self.values[found] == array, found, 0), affine

    def _reference(self) -> tuple[Image, np.ndarray, np.ndarray]:
        """The head every map is aligned to (the first subject's): its grid, rendered
        tissue image and the centre (voxels) of its brain structures."""
        if self._ref is None:
            indices, affine = self._read(0)
            render = self._render[indices]
            brain = self.scored.numpy()[indices] > 0
            centre = (
                np.argwhere(brain).mean(0) if brain.any() else (np.array(indices.shape) - 1) / 2
            )
            self._ref = (Image(render, affine), render, centre)
        return self._ref

    @property
    def spacing(self) -> float:
        """The reference head's finest voxel size, mm: images are drawn at ``downsample`` x
        this (the training spacing a checkpoint records)."""
        return float(min(self._reference()[0].spacing))

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Label indices ``(1, 1, *source)`` of subject ``index`` in the output axis order and
        the ``(4, 4)`` map from the reference head's voxels to its voxels: an affine alignment
        of the two brains (:func:`eoir.registration.affine.linear_align` on tissue images
        rendered from the labels), so that two heads scanned in different positions make a
        pair as affinely aligned as ``eoir register --affine`` makes real ones (cached)."""
        if index in self._cache:
            return self._cache[index]
        indices, affine = self._read(index)
        reference, ref_values, _ = self._reference()
        if index == 0:
            to_source = np.eye(4)
        else:
            values = self._render[indices]
            world = linear_align(reference, Image(values, affine), ref_values, values)
            to_source = np.linalg.inv(affine) @ world @ reference.affine
        dtype = torch.uint8 if len(self.values) < 256 else torch.int16
        entry = (
            torch.from_numpy(indices).to(dtype)[None, None].to(self.device),
            torch.from_numpy(to_source),
        )
        if self.cache:
            self._cache[index] = entry
        return entry

    def preload(self) -> None:
        """Load and align every map now (with ``cache``): DataLoader workers forked afterwards
        share them instead of each aligning every map again (1-2 s a map)."""
        for index in range(len(self.subjects)):
            self.load(index)

    def _image(
        self, generator: torch.Generator, index: int, palette: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, Geometry]:
        labels, to_source = self.load(index)
        reference, _, centre = self._reference()
        spacing = reference.spacing
        out_mm = self.downsample * min(spacing)
        geometry = random_geometry(generator, self.options, out_mm, self.device)
        image, label_map = synthesise_image(
            generator, labels, self.extra, self.options, self.groups, spacing, out_mm, centre,
            to_source, geometry, palette,
        )  # fmt: skip
        return image[0], self._scored_here[label_map[0]], geometry

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        fixed_index, moving_index = self.pairs[item]
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + int(item))
        if _draw(generator) < self.options.same_map:
            moving_index = fixed_index
        palettes: list[torch.Generator | None] = [None, None]
        one_contrast = False
        if self.options.same_contrast > 0 and _draw(generator) < self.options.same_contrast:
            one_contrast = True
            seed = int(torch.randint(0, 2**62, (), generator=generator))
            palettes = [torch.Generator().manual_seed(seed) for _ in range(2)]  # one contrast
        fixed, fixed_labels, fixed_geometry = self._image(generator, fixed_index, palettes[0])
        moving, moving_labels, moving_geometry = self._image(generator, moving_index, palettes[1])
        out = {
            "fixed": fixed,
            "moving": moving,
            "fixed_labels": fixed_labels,
            "moving_labels": moving_labels,
            "one_contrast": torch.tensor(float(one_contrast)),
        }
        if self.fields:
            known = moving_index == fixed_index
            shape = (3, *(int(n) for n in self.options.shape))
            out["field"] = (
                true_field(fixed_geometry, moving_geometry)[0]
                if known
                else torch.zeros(shape, device=self.device)
            )
            out["known"] = torch.tensor(float(known))
        return out
