"""Fast CPU and GPU inference kernels of the EOIR blocks (private to :mod:`eoir.nn`).

Each computes exactly what the module path computes (tests compare them), without autograd and
in place where that saves memory: a 3-D convolution that always takes oneDNN on a CPU, and the
instance norm + PReLU of :class:`eoir.nn.blocks.ConvNormAct` on a CPU (blocked, in place) and on
a GPU (float32 statistics under autocast).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["OneDNNConv3d"]


class OneDNNConv3d(nn.Conv3d):
    """``nn.Conv3d`` that runs oneDNN for every float32 inference call on a CPU.

    PyTorch sends a batch of one with ``C * D * H <= 20480`` (the coarse pyramid levels) to its
    slow reference kernel; oneDNN computes the same convolution several times faster. The same
    parameters and state dict as ``nn.Conv3d``; training and autocast take the usual path.
    """

    def _conv_forward(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        if (
            _ONEDNN
            and torch.backends.mkldnn.enabled
            and x.device.type == "cpu"
            and x.dtype == weight.dtype == torch.float32
            and not torch.is_grad_enabled()
            and not _cpu_autocast()
            and self.padding_mode == "zeros"
            and not isinstance(self.padding, str)
        ):
            return torch.ops.aten.mkldnn_convolution(
                x, weight, bias, self.padding, self.stride, self.dilation, self.groups
            )
        return super()._conv_forward(x, weight, bias)


_ONEDNN = torch.backends.mkldnn.is_available()


def _cpu_autocast() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


def _instance_norm_prelu(x: torch.Tensor, eps: float, weight: torch.Tensor) -> torch.Tensor:
    """Instance norm (in place on ``x``, ``(B, C, *spatial)``) then PReLU, on a GPU.

    Statistics are accumulated in float32 whatever the dtype: under bf16/fp16 autocast the
    module path runs a float32 batch-norm kernel that took half of an H100 forward pass
    (width 32, 160x192x224). The slope stays a tensor (reading it would sync the GPU).
    """
    dims = tuple(range(2, x.dim()))
    mean = x.mean(dims, keepdim=True, dtype=torch.float32)
    x.sub_(mean)
    squares = torch.linalg.vector_norm(x, 2, dims, keepdim=True, dtype=torch.float32) ** 2
    x.mul_(torch.rsqrt(squares / x[0, 0].numel() + eps))
    return F.prelu(x, weight.to(x.dtype))


_NORM_BLOCK = 1 << 19  # elements per cache-sized block of the CPU instance norm (2 MiB float32)


def _instance_norm_act_(x: torch.Tensor, eps: float, slope: float) -> None:
    """Instance norm + leaky ReLU of one sample ``(C, *spatial)`` in place, on a CPU.

    Two passes over cache-sized blocks (centre and sum squares; scale and activate) instead of
    ``var_mean``, which reduces a channels-last map slowly. Reduced-precision maps are processed
    block by block in float32.
    """
    channels = x.shape[0]
    if x.permute(*range(1, x.dim()), 0).is_contiguous():  # channels-last: (voxels, C) rows
        table, axis = x.permute(*range(1, x.dim()), 0).reshape(-1, channels), 0
    else:
        table, axis = x.reshape(channels, -1), 1  # a view for a contiguous sample
    blocks = table.split(max(1, _NORM_BLOCK // channels), dim=axis)
    mean = table.mean(axis, keepdim=True, dtype=torch.float32)
    squares = torch.zeros_like(mean)
    for block in blocks:
        wide = block.float()  # the block itself in float32
        squares += wide.sub_(mean).square().sum(axis, keepdim=True)
        if wide is not block:
            block.copy_(wide)
    scale = torch.rsqrt(squares / table.shape[axis] + eps)
    for block in blocks:
        wide = block.float()
        F.leaky_relu_(wide.mul_(scale), slope)
        if wide is not block:
            block.copy_(wide)
