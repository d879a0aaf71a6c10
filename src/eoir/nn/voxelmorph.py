"""The VoxelMorph baseline: a U-Net on the concatenated pair and a scaling-and-squaring field.

Reference: G. Balakrishnan et al., "VoxelMorph: A Learning Framework for Deformable Medical Image
Registration", IEEE TMI 2019, and A. Dalca et al., MICCAI 2018 (diffeomorphic variant). The
defaults are the ``vm2`` network of the reference code: encoder widths 16-32-32-32 (max-pooling),
decoder 32-32-32-32 with skips, then 32-16-16 at full resolution, 3x3(x3) convolutions with
LeakyReLU(0.2), a flow layer initialised to N(0, 1e-5); the velocity is integrated with 7
scaling-and-squaring steps at half resolution (``int_downsize=2``). 327,331 parameters in 3D.

It takes and returns what :class:`eoir.nn.EOIR` does, so training, checkpoints, evaluation
and registration treat both alike: with ``levels=True`` it returns an
:class:`eoir.nn.EOIROutput` with one level (``fields = [phi]``, ``residuals = [v]``, the
half-resolution velocity that VoxelMorph's smoothness loss penalises).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from eoir.nn.model import EOIROutput, RegistrationNetwork
from eoir.spatial import crop_to_shape, integrate, pad_to_multiple, resize_field

__all__ = ["VoxelMorph"]


def _conv_block(ndim: int, cin: int, cout: int) -> nn.Sequential:
    conv = nn.Conv3d if ndim == 3 else nn.Conv2d
    return nn.Sequential(conv(cin, cout, 3, padding=1), nn.LeakyReLU(0.2))


class VoxelMorph(RegistrationNetwork):
    """VoxelMorph U-Net registration network, 2D or 3D.

    Parameters
    ----------
    ndim : {2, 3}
        Spatial dimensionality.
    encoder : sequence of int
        Encoder widths, one per resolution (each followed by 2x max-pooling).
    decoder : sequence of int
        Decoder widths: the first ``len(encoder)`` are upsampling levels with skip
        connections, the rest run at full resolution.
    integration_steps : int
        Scaling-and-squaring steps (0: the velocity is the displacement).
    int_downsize : int
        Factor the velocity is downsampled by before integration.

    Notes
    -----
    Inputs of any size are padded at the high end to a multiple of ``2**len(encoder)`` and the
    field is cropped back. It returns the displacement ``(B, ndim, *spatial)`` in voxels
    (:mod:`eoir.spatial` convention), or with ``levels=True`` an :class:`eoir.nn.EOIROutput`.
    """

    def __init__(
        self,
        ndim: int = 3,
        encoder: Sequence[int] = (16, 32, 32, 32),
        decoder: Sequence[int] = (32, 32, 32, 32, 32, 16, 16),
        integration_steps: int = 7,
        int_downsize: int = 2,
    ) -> None:
        super().__init__()
        if ndim not in (2, 3):
            raise ValueError(f"ndim must be 2 or 3, got {ndim}")
        encoder, decoder = [int(n) for n in encoder], [int(n) for n in decoder]
        if len(decoder) < len(encoder) or integration_steps < 0 or int_downsize < 1:
            raise ValueError(
                "decoder needs at least as many widths as encoder; "
                "integration_steps >= 0, int_downsize >= 1"
            )
        self.config: dict[str, Any] = {
            "architecture": "voxelmorph",
            "ndim": ndim,
            "encoder": encoder,
            "decoder": decoder,
            "integration_steps": integration_steps,
            "int_downsize": int_downsize,
        }
        self.ndim = ndim
        self.integration_steps = integration_steps
        self.int_downsize = int_downsize
        self.down = nn.ModuleList()
        skips, previous = [], 2
        for width in encoder:
            self.down.append(_conv_block(ndim, previous, width))
            skips.append(width)
            previous = width
        self.up = nn.ModuleList()
        for width in decoder[: len(encoder)]:
            self.up.append(_conv_block(ndim, previous, width))
            previous = width + skips.pop()
        self.full = nn.Sequential(
            *(
                _conv_block(ndim, cin, cout)
                for cin, cout in _pairs(previous, decoder[len(encoder) :])
            )
        )
        last = decoder[-1] if len(decoder) > len(encoder) else previous
        self.flow = (nn.Conv3d if ndim == 3 else nn.Conv2d)(last, ndim, 3, padding=1)
        nn.init.normal_(self.flow.weight, 0.0, 1e-5)
        nn.init.zeros_(self.flow.bias)

    @property
    def size_multiple(self) -> tuple[int, ...]:
        """Per-axis divisor the padded input must have."""
        return (2 ** len(self.down),) * self.ndim

    def _levels(self, moving: torch.Tensor, fixed: torch.Tensor) -> EOIROutput:
        """The one level's field (see :meth:`eoir.nn.model.RegistrationNetwork.forward`)."""
        x, shape = pad_to_multiple(torch.cat([moving, fixed], dim=1), self.size_multiple)
        pool = F.max_pool3d if self.ndim == 3 else F.max_pool2d
        history = []
        for block in self.down:
            x = block(x)
            history.append(x)
            x = pool(x, 2)
        for block in self.up:
            x = block(x)
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = torch.cat([x, history.pop()], dim=1)
        flow = self.flow(self.full(x)).float()  # fields stay float32 under autocast
        padded = tuple(flow.shape[2:])
        velocity = flow
        if self.int_downsize > 1:
            small = [n // self.int_downsize for n in padded]
            velocity = resize_field(flow, small)
        disp = integrate(velocity, self.integration_steps)
        if self.int_downsize > 1:
            disp = resize_field(disp, padded)
        out = crop_to_shape(disp, shape)
        return EOIROutput(disp=out, fields=[disp], residuals=[velocity])


def _pairs(first: int, widths: Sequence[int]) -> list[tuple[int, int]]:
    """``[(first, w0), (w0, w1), ...]``: input and output widths of consecutive blocks."""
    ins = [first, *widths[:-1]]
    return list(zip(ins, widths, strict=True))
