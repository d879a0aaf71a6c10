"""Shared fixtures: the real data beside the checkout, skipped with a reason when absent."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


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
