"""Synthetic images, fields and datasets shared by the tests, and the real data beside the
checkout (skipped with a reason when absent). Imported by the tests as ``helpers``."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_dataset(name: str) -> Path:
    """Path of ``../shared/data/<name>``, or skip the test saying what is missing."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"real data not found: {path} (tests on real data need ../shared/data)")
    return path


def smooth_field(shape: tuple[int, ...], amplitude: float, seed: int = 0) -> torch.Tensor:
    """A smooth random displacement ``(1, ndim, *shape)`` in voxels (low-frequency sinusoids)."""
    gen = torch.Generator().manual_seed(seed)
    ndim = len(shape)
    axes = torch.meshgrid(
        *[torch.linspace(0, 1, n, dtype=torch.float64) for n in shape], indexing="ij"
    )
    channels = []
    for _ in range(ndim):
        phase = torch.rand(ndim, generator=gen, dtype=torch.float64) * 6.28
        freq = 1 + torch.rand(ndim, generator=gen, dtype=torch.float64) * 1.5
        value = torch.ones(shape, dtype=torch.float64)
        for k in range(ndim):
            value = value * torch.sin(3.14159 * freq[k] * axes[k] + phase[k])
        channels.append(amplitude * value)
    return torch.stack(channels).unsqueeze(0).float()


def smooth_image(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """A smooth random image ``(1, 1, *shape)`` in [0, 1]."""
    field = smooth_field(shape, 1.0, seed)
    return (0.5 + 0.25 * field.sum(1, keepdim=True) / len(shape)).clamp(0, 1)


def write_l2r_dataset(folder, subjects: int = 5, shape=(24, 24, 24), val: int = 2):
    """A tiny Learn2Reg dataset: blob images with 3 labels, each a deformed copy of subject 1
    (3-D, or 2-D NIfTI files for a 2-D ``shape``).

    The last ``val`` subjects form the ``registration_val`` pairs (both orders).
    """
    import json

    import numpy as np

    from eoir.image import Image
    from eoir.io import write_image
    from eoir.spatial import integrate, warp

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "imagesTr").mkdir(exist_ok=True)
    (folder / "labelsTr").mkdir(exist_ok=True)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    labels = np.zeros(shape, np.int16)
    labels[(grid**2).sum(0) < 0.6] = 1
    labels[((grid - 0.25) ** 2).sum(0) < 0.12] = 2
    labels[((grid + 0.3) ** 2).sum(0) < 0.08] = 3
    base = torch.from_numpy(np.array([0.0, 0.5, 1.0, 0.2], np.float32)[labels])[None, None]
    base_labels = torch.from_numpy(labels.astype(np.float32))[None, None]
    affine = np.eye(len(shape) + 1)
    names = []
    for i in range(1, subjects + 1):
        disp = (
            integrate(smooth_field(shape, 2.0, seed=i), 7)
            if i > 1
            else torch.zeros(1, len(shape), *shape)
        )
        image = (warp(base, disp)[0, 0].numpy() * 1000).astype(np.float32)
        label = warp(base_labels, disp, mode="nearest")[0, 0].numpy().astype(np.int16)
        name = f"SYN_{i:04d}_0000.nii.gz"
        write_image(folder / "imagesTr" / name, image, Image(image, affine))
        write_image(folder / "labelsTr" / name, label, Image(label, affine))
        names.append(name)
    held = names[-val:] if val else []
    meta = {
        "name": "synthetic",
        "labels": {"0": {"0": "background", "1": "outer", "2": "inner", "3": "inner"}},
        "training": [{"image": f"./imagesTr/{n}", "label": f"./labelsTr/{n}"} for n in names],
        "registration_val": [
            {"fixed": f"./imagesTr/{a}", "moving": f"./imagesTr/{b}"}
            for a in held
            for b in held
            if a != b
        ],
    }
    (folder / "dataset.json").write_text(json.dumps(meta, indent=1))
    return folder / "dataset.json"


def oblique_affine(spacing, angles, flips, origin) -> np.ndarray:
    """Voxel -> RAS: rotation about three axes, an axis permutation, flips, anisotropic spacing."""
    a, b, c = angles
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    permute = np.eye(3)[:, [1, 2, 0]]
    affine = np.eye(4)
    affine[:3, :3] = rx @ ry @ rz @ permute @ np.diag(flips) @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


def blob_volume(shape, seed=0) -> np.ndarray:
    """Six Gaussian blobs in a 3-D (or 2-D) image of ``shape``, values 0-1000 float32."""
    rng = np.random.default_rng(seed)
    ndim = len(shape)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    volume = np.zeros(shape)
    for _ in range(6):
        center = rng.uniform(-0.6, 0.6, ndim).reshape(ndim, *[1] * ndim)
        volume += np.exp(-((grid - center) ** 2).sum(0) / 0.08)
    return (1000 * volume).astype(np.float32)


@dataclass
class Ran:
    """What a command returned and printed (the fields of ``subprocess.CompletedProcess``)."""

    returncode: int
    stdout: str
    stderr: str


def eoir_cli(*args) -> Ran:
    """Run ``eoir ARGS`` in this process (``eoir.cli.main``), capturing what it prints.

    For tests of what a command does; tests of the process itself (exit on a signal, the
    ``python -m eoir`` entry point, several processes) run it with :func:`eoir_process`.
    """
    from eoir.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exit_:  # argparse's own usage errors
            code = exit_.code if isinstance(exit_.code, int) else 1
    return Ran(code, out.getvalue(), err.getvalue())


def eoir_process(*args, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m eoir ARGS`` in a new process."""
    command = [sys.executable, "-m", "eoir", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def head_and_brain(path) -> tuple:
    """A T1-like image of a whole-head label map (SynthSeg's) and the same image with
    everything outside the brain removed (a skull-stripped field of view)."""
    import eoir
    from eoir.image import Image

    labels = eoir.read_image(path)
    codes = np.rint(labels.array).astype(np.int32)
    table = {2: 0.9, 41: 0.9, 7: 0.85, 46: 0.85, 16: 0.8, 3: 0.6, 42: 0.6, 8: 0.55, 47: 0.55}
    table |= dict.fromkeys((4, 5, 14, 15, 24, 43, 44), 0.2)
    values = np.full(codes.max() + 1, 0.5, np.float32)
    values[0] = 0.0
    for code, value in table.items():
        values[code] = value
    extra = np.arange(500, codes.max() + 1)
    values[extra] = 0.1 + 0.8 * ((extra * 0.618) % 1.0)  # skull, scalp, eyes: varied
    head = values[codes]
    brain = np.where(codes < 500, head, 0.0).astype(np.float32)
    return Image(head, labels.affine), Image(brain, labels.affine)
