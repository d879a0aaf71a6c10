"""The building blocks of EOIR: convolution blocks, the shared encoder, the flow estimator.

Shapes are channel-first, ``(B, C, *spatial)``, 2-D or 3-D.
"""

from __future__ import annotations

import torch
from torch import nn

from eoir.nn._inference import (
    OneDNNConv3d,
    _instance_norm_act_,
    _instance_norm_prelu,
)
from eoir.nn._training import instance_norm_prelu, uses_fused_norm

__all__ = ["ConvNormAct", "FlowEstimator", "LargeKernelBlock", "SharedEncoder"]


def _conv(ndim: int, cin: int, cout: int, k: int) -> nn.Module:
    conv = OneDNNConv3d if ndim == 3 else nn.Conv2d
    return conv(cin, cout, kernel_size=k, padding=k // 2)


def _norm(ndim: int, channels: int) -> nn.Module:
    # PyTorch defaults: affine=False, no running statistics
    return (nn.InstanceNorm3d if ndim == 3 else nn.InstanceNorm2d)(channels)


class ConvNormAct(nn.Sequential):
    """Conv (k=3, stride 1, bias) -> InstanceNorm -> PReLU (one shared slope, init 0.25).

    Without autograd (inference) the norm (and on a CPU the activation) runs in place on the
    convolution's output, so the block holds its input and one output and no more (the
    encoder's widest maps dominate peak memory at full resolution). With autograd on a CPU the
    norm and activation are one function that keeps the map's layout
    (:func:`eoir.nn._training.instance_norm_prelu`).
    """

    def __init__(self, ndim: int, cin: int, cout: int) -> None:
        super().__init__(_conv(ndim, cin, cout, 3), _norm(ndim, cout), nn.PReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, norm, act = self
        x = conv(x)
        if self.training or torch.is_grad_enabled():
            if torch.is_grad_enabled() and uses_fused_norm(x, act.weight):
                return instance_norm_prelu(x, act.weight, norm.eps)
            return act(norm(x))
        if x.is_meta:
            return act(norm(x))
        if x.device.type == "cpu":
            slope = float(act.weight)
            for sample in x:  # (C, *spatial) views, normalised in place
                _instance_norm_act_(sample, norm.eps, slope)
            return x
        return _instance_norm_prelu(x, norm.eps, act.weight)


class LargeKernelBlock(nn.Module):
    """LKU-Net style parallel block: (k3 + IN) + (k_lk + IN) + (k1 + IN) [+ identity] -> PReLU.

    The identity is added when ``cin == cout`` (the block keeps resolution).
    """

    def __init__(self, ndim: int, cin: int, cout: int, lk_size: int = 5) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(_conv(ndim, cin, cout, k), _norm(ndim, cout)) for k in (3, lk_size, 1)
        )
        self.residual = cin == cout
        self.act = nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = sum(branch(x) for branch in self.branches)
        if self.residual:
            out = out + x
        return self.act(out)


class SharedEncoder(nn.Sequential):
    """The Siamese encoder, run at full resolution on moving and fixed images alike.

    Widths ``1 -> N_s -> 2 N_s [-> LK 2 N_s] -> N_s``; output ``(B, N_s, *spatial)``.
    """

    def __init__(self, ndim: int, width: int, large_kernel: bool = False, lk_size: int = 5):
        layers: list[nn.Module] = [
            ConvNormAct(ndim, 1, width),
            ConvNormAct(ndim, width, 2 * width),
        ]
        if large_kernel:
            layers.append(LargeKernelBlock(ndim, 2 * width, 2 * width, lk_size))
        layers.append(ConvNormAct(ndim, 2 * width, width))
        super().__init__(*layers)


class FlowEstimator(nn.Module):
    """Per-level estimator: ``[f + m, f - m]`` (2 N_s) -> 2 N_s -> (2 k_s + 1)^ndim -> ndim.

    Three 3x3(x3) convs with ReLU after the first two and a linear output (default init, as the
    method's code); in the large-kernel variant the first conv is a :class:`LargeKernelBlock`.
    """

    def __init__(
        self, ndim: int, width: int, ks: int = 1, large_kernel: bool = False, lk_size: int = 5
    ) -> None:
        super().__init__()
        hidden = (2 * ks + 1) ** ndim
        first: nn.Module
        if large_kernel:
            first = LargeKernelBlock(ndim, 2 * width, 2 * width, lk_size)
        else:
            first = nn.Sequential(_conv(ndim, 2 * width, 2 * width, 3), nn.ReLU(inplace=True))
        self.layers = nn.Sequential(
            first,
            _conv(ndim, 2 * width, hidden, 3),
            nn.ReLU(inplace=True),
            _conv(ndim, hidden, ndim, 3),
        )

        self.chunkable = not large_kernel  # no normalisation: each output voxel sees 3 voxels

    def forward(
        self, fixed: torch.Tensor, warped_moving: torch.Tensor, slab: int = 0
    ) -> torch.Tensor:
        """Residual field ``(B, ndim, *level)`` in voxels of this level from two feature maps.

        With ``slab > 0`` (and no normalisation inside) the field is computed over slabs of
        ``slab`` planes along the first spatial axis, each with 3 planes of context on either
        side, so the wide intermediate maps never exist for the whole volume; the result equals
        the unchunked one up to float rounding.
        """
        n = fixed.shape[2]
        if slab <= 0 or not self.chunkable or n <= slab:
            return self.layers(torch.cat([fixed + warped_moving, fixed - warped_moving], dim=1))
        halo, parts = 3, []
        for start in range(0, n, slab):
            low, high = max(start - halo, 0), min(start + slab + halo, n)
            f, m = fixed[:, :, low:high], warped_moving[:, :, low:high]
            out = self.layers(torch.cat([f + m, f - m], dim=1))
            parts.append(out[:, :, start - low : start - low + min(slab, n - start)])
        return torch.cat(parts, dim=2)
