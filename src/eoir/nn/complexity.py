"""Model size and cost: parameter and multiply-add counts.

Multiply-adds count, per convolution, the multiply-accumulates plus one bias addition per output
value, for one image pair (the shared encoder sees both images), as torchinfo does; this
reproduces the EOIR paper's Table IV (114.21 G and 11.02 G). Warps, interpolation, integration
and normalisation are not counted. The count runs on the meta device: no memory, no compute.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["count_multiply_adds", "count_parameters"]


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_multiply_adds(model: nn.Module, shape: Sequence[int]) -> int:
    """Convolution multiply-adds of one registration of an image pair.

    Parameters
    ----------
    model : nn.Module
        A registration network called as ``model(moving, fixed)``.
    shape : sequence of int
        Spatial input shape ``(*spatial)``.

    Returns
    -------
    int
        Multiply-adds (MACs + bias additions) for one pair.
    """
    probe = copy.deepcopy(model).to("meta").eval()
    total = 0

    def hook(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        conv: nn.modules.conv._ConvNd = module  # type: ignore[assignment]
        per_output = conv.in_channels // conv.groups * math.prod(conv.kernel_size)
        total += output.numel() * (per_output + (1 if conv.bias is not None else 0))

    for module in probe.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            module.register_forward_hook(hook)
    image = torch.empty(1, 1, *[int(n) for n in shape], device="meta")
    with torch.no_grad():
        probe(image, image)
    return total
