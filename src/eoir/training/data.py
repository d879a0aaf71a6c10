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

from eoir.errors import InputError
from eoir.io import Subject, check_labels, read_image
from eoir.options import look_up_option
from eoir.registration.preprocess import check_finite, normalise

__all__ = ["PAIRINGS", "PairDataset", "Pairing", "StepPairs", "epoch_pairs"]

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
