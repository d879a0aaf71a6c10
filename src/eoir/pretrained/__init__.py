"""Models that ship inside the package, found by name and checked against a recorded checksum.

``eoir register`` uses ``brain-mri`` by default for MRI (``--preset mri``); any API or command
that takes a checkpoint path also takes one of these names. Each model has a model card
(``<name>.md`` beside it: training data and licence, preprocessing, expected inputs, measured
accuracy).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from eoir.errors import InputError

__all__ = ["PRETRAINED", "Pretrained", "file_sha256", "pretrained_path"]


@dataclass(frozen=True)
class Pretrained:
    """A shipped model: its file in this folder, the file's SHA-256 and one line about it."""

    file: str
    sha256: str
    summary: str

    @property
    def card(self) -> str:
        """The model card's file name."""
        return self.file.rsplit(".", 1)[0] + ".md"


PRETRAINED: dict[str, Pretrained] = {
    "brain-mri": Pretrained(
        file="brain-mri.pt",
        sha256="4b078cf3937cb9ab571e0ffcbd1498c7f137dd5dc9669bcaca7fc8eae5c0c854",
        summary="EOIR width 16, diffeomorphic, for skull-stripped T1w brain MRI at 1 mm, "
        "affinely pre-aligned; registers at half resolution",
    ),
}


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pretrained_path(name: str) -> Path:
    """The file of the shipped model ``name``, after checking its SHA-256.

    Raises
    ------
    InputError
        Unknown name, missing file, or a file whose checksum is not the recorded one.
    """
    if name not in PRETRAINED:
        raise InputError(f"{name}: no such shipped model (have: {', '.join(sorted(PRETRAINED))})")
    entry = PRETRAINED[name]
    path = Path(str(resources.files("eoir.pretrained") / entry.file))
    if not path.is_file():
        raise InputError(f"{path}: the shipped model {name} is missing from the installation")
    actual = file_sha256(path)
    if actual != entry.sha256:
        raise InputError(
            f"{path}: checksum {actual[:12]}... is not the recorded {entry.sha256[:12]}... "
            f"(the shipped model {name} is corrupt or was replaced; reinstall eoir)"
        )
    return path
