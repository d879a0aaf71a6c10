"""A fast CPU training kernel of the EOIR blocks (private to :mod:`eoir.nn`).

:func:`instance_norm_prelu` is the instance norm (no affine, no running statistics) + PReLU (one
shared slope) of :class:`eoir.nn.blocks.ConvNormAct` as one autograd function: it works on the
map in the layout it comes in (channels-last included, where ``F.instance_norm`` makes a
contiguous copy in and out of every call), in cache-sized blocks, and keeps one full-size map for
the backward pass (the normalised one) instead of two. Measured in ``benchmarks/results.md``
(issue 15); a test compares it, values and gradients, with the module path.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from eoir.nn._inference import _cpu_autocast

__all__ = ["instance_norm_prelu", "uses_fused_norm"]

_BLOCK = 1 << 18  # elements per block (1 MiB of float32: stays in a core's cache)


def uses_fused_norm(x: torch.Tensor, slope: torch.Tensor) -> bool:
    """Whether :func:`instance_norm_prelu` takes ``x`` (a CPU float map, no autocast, one slope)."""
    if x.device.type != "cpu" or x.is_meta or x.dtype not in (torch.float32, torch.float64):
        return False
    return not _cpu_autocast() and slope.numel() == 1 and x.dim() >= 3


def _rows(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``x`` ``(B, C, *spatial)`` as per-sample tables without a copy: ``(B, V, C)`` for a
    channels-last map (reduced along axis 0 of a sample), else ``(B, C, V)`` (axis 1)."""
    n, c = x.shape[:2]
    last = x.permute(0, *range(2, x.dim()), 1)
    if last.is_contiguous():
        return last.reshape(n, -1, c), 0
    return x.reshape(n, c, -1), 1


def _dense(x: torch.Tensor) -> torch.Tensor:
    """``x`` itself if contiguous or channels-last, else a contiguous copy."""
    if x.is_contiguous() or x.permute(0, *range(2, x.dim()), 1).is_contiguous():
        return x
    return x.contiguous()


class _InstanceNormPReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, slope: torch.Tensor, eps: float) -> torch.Tensor:  # type: ignore[override]
        x = _dense(x)
        normed, out = torch.empty_like(x), torch.empty_like(x)
        tx, axis = _rows(x)
        tn, to = _rows(normed)[0], _rows(out)[0]
        count = tx.shape[axis + 1]
        step = max(1, _BLOCK // x.shape[1])
        a = float(slope)
        scales = []
        for s in range(x.shape[0]):
            mean = tx[s].mean(axis, keepdim=True)
            squares = torch.zeros_like(mean)
            for src, dst in zip(tx[s].split(step, axis), tn[s].split(step, axis), strict=True):
                torch.sub(src, mean, out=dst)
                squares += dst.square().sum(axis, keepdim=True)
            scale = torch.rsqrt(squares / count + eps)
            for src, dst in zip(tn[s].split(step, axis), to[s].split(step, axis), strict=True):
                torch._C._nn.leaky_relu(src.mul_(scale), a, out=dst)
            scales.append(scale)
        ctx.save_for_backward(normed, slope, torch.stack(scales))
        ctx.axis, ctx.step, ctx.a = axis, step, a
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        normed, slope, scales = ctx.saved_tensors
        axis, step, a = ctx.axis, ctx.step, ctx.a
        if grad.stride() != normed.stride():
            grad = torch.empty_like(normed).copy_(grad)
        grad_x = torch.empty_like(normed)
        tg, tn, tx = _rows(grad)[0], _rows(normed)[0], _rows(grad_x)[0]
        count = tn.shape[axis + 1]
        grad_slope = torch.zeros((), dtype=torch.float64)
        for s in range(normed.shape[0]):
            mean_g = torch.zeros_like(scales[s])
            mean_gn = torch.zeros_like(mean_g)
            blocks = list(
                zip(
                    tg[s].split(step, axis),
                    tn[s].split(step, axis),
                    tx[s].split(step, axis),
                    strict=True,
                )
            )
            for g, n, gx in blocks:
                # through the activation: g where n > 0, else a * g
                torch.ops.aten.leaky_relu_backward.grad_input(g, n, a, False, grad_input=gx)
                if ctx.needs_input_grad[1]:
                    grad_slope += n.clamp(max=0).mul_(g).sum(dtype=torch.float64)
                mean_g += gx.sum(axis, keepdim=True)
                mean_gn += (gx * n).sum(axis, keepdim=True)
            mean_g /= count
            mean_gn /= count
            # through the norm: scale * (g - mean(g) - n * mean(g * n))
            for _, n, gx in blocks:
                gx.sub_(mean_g).addcmul_(n, mean_gn, value=-1).mul_(scales[s])
        return grad_x, grad_slope.to(slope.dtype).reshape(slope.shape), None


def instance_norm_prelu(x: torch.Tensor, slope: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Instance norm then PReLU of ``x`` ``(B, C, *spatial)`` with autograd, on a CPU.

    Equals ``F.prelu(F.instance_norm(x, eps=eps), slope)`` up to float rounding; the output has
    ``x``'s layout (contiguous or channels-last). ``slope`` is PReLU's one shared parameter
    ``(1,)``. See :func:`uses_fused_norm` for what it takes.
    """
    return _InstanceNormPReLU.apply(x, slope, eps)
