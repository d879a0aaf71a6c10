"""The EOIR network: a shared 3-layer encoder, a feature pyramid and per-level flow estimators.

Reference: X. Chen et al., "Encoder-Only Image Registration", IEEE TCSVT 2026, arXiv:2509.00451.
The architecture follows the authors' released code where the paper figure and code disagree
(3-conv estimators without normalisation; Hadamard pair ordered ``[f + m, f - m]``; x2 field
rescale by 2), as recommended in the project's method notes.

Fields follow :mod:`eoir.spatial`: ``(B, ndim, *spatial)``, voxel units, channel ``k`` = array
axis ``k``, ``warped(p) = moving(p + disp(p))``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from eoir.spatial import compose, crop_to_shape, integrate, pad_to_multiple, resize_field, warp

__all__ = ["EOIR", "EOIROutput", "FlowEstimator", "LargeKernelBlock", "SharedEncoder"]


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` that runs oneDNN for every float32 inference call on a CPU.

    PyTorch sends a batch of one with ``C * D * H <= 20480`` (the coarse pyramid levels) to its
    reference kernel: 32 -> 32 channels at 26x22x20 take 25 ms there and 2.6 ms in oneDNN. The
    same parameters and state dict as ``nn.Conv3d``; training and autocast take the usual path.
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


def _conv(ndim: int, cin: int, cout: int, k: int) -> nn.Module:
    conv = Conv3d if ndim == 3 else nn.Conv2d
    return conv(cin, cout, kernel_size=k, padding=k // 2)


def _norm(ndim: int, channels: int) -> nn.Module:
    # PyTorch defaults: affine=False, no running statistics
    return (nn.InstanceNorm3d if ndim == 3 else nn.InstanceNorm2d)(channels)


class ConvNormAct(nn.Sequential):
    """Conv (k=3, stride 1, bias) -> InstanceNorm -> PReLU (one shared slope, init 0.25).

    Without autograd (inference) the norm (and on a CPU the activation) runs in place on the
    convolution's output, so the block holds its input and one output and no more (the
    encoder's widest maps dominate peak memory at full resolution).
    """

    def __init__(self, ndim: int, cin: int, cout: int) -> None:
        super().__init__(_conv(ndim, cin, cout, 3), _norm(ndim, cout), nn.PReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or torch.is_grad_enabled():
            return super().forward(x)
        conv, norm, act = self
        x = conv(x)
        if x.is_meta:
            return act(norm(x))
        if x.device.type == "cpu":
            slope = float(act.weight)
            for sample in x:  # (C, *spatial) views, normalised in place
                _instance_norm_act_(sample, norm.eps, slope)
            return x
        return _instance_norm_prelu(x, norm.eps, act.weight)


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
    ``var_mean``, which reduces a channels-last map at ~1.5 GB/s (width 16 at 104x88x80: 33 ms
    -> 8 ms per call). Reduced-precision maps are processed block by block in float32.
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


@dataclass
class EOIROutput:
    """What a training-mode forward pass returns.

    Attributes
    ----------
    disp : torch.Tensor
        ``(B, ndim, *spatial)`` full-resolution displacement on the input grid, voxel units.
    fields : list of torch.Tensor
        Composed fields ``phi_l`` finest (l = 0) to coarsest, each ``(B, ndim, *level_l)`` in
        voxels of level ``l`` of the *padded* input grid. Level 0 is the padded full resolution.
        These feed the multi-level similarity and Dice losses.
    residuals : list of torch.Tensor
        Pre-integration residual (velocity) fields ``v_l``, finest to coarsest, each in voxels of
        the level where it was estimated. These feed the smoothness loss.
    """

    disp: torch.Tensor
    fields: list[torch.Tensor]
    residuals: list[torch.Tensor]


class EOIR(nn.Module):
    """Encoder-Only Image Registration network, 2D or 3D.

    Parameters
    ----------
    ndim : {2, 3}
        Spatial dimensionality.
    width : int
        Encoder width ``N_s`` (32 in the paper; 8 and 16 are its light variants).
    levels : int
        Number of pyramid levels with a flow estimator (5 in the paper; 4 for the OASIS variant).
    ks : int
        ``k_s``: the penultimate estimator layer has ``(2 ks + 1)**ndim`` channels.
    integration_steps : int
        Scaling-and-squaring steps for each level's residual (7 = diffeomorphic residuals);
        0 turns integration off.
    composition : {"compose", "add"}
        How a level's residual joins the upsampled coarser field: exact composition (EOIR) or
        addition (the paper's "EOIR (additive)").
    large_kernel : bool
        Use LK blocks in the encoder and as each estimator's first layer (OASIS variant).
    lk_size : int
        Kernel size of the LK branch.
    finest_level : int
        Pyramid level of the finest estimator: 0 estimates at full resolution; 1 estimates from
        half resolution and upsamples every field x2 (OASIS variant).
    factors : int or sequence of int
        Per-axis downsampling factor between pyramid levels: 2 everywhere by default; e.g.
        ``(2, 2, 1)`` keeps the through-plane axis of thick-slice cardiac MRI. Upsampled fields
        are rescaled by the same per-axis factors (so a through-plane displacement is not doubled).

    Notes
    -----
    ``model(moving, fixed)`` takes ``(B, 1, *spatial)`` images of any size: they are padded at the
    high end to a multiple of ``factors**(levels - 1 + finest_level)`` inside and the field is
    cropped back. In eval mode it returns the displacement ``(B, ndim, *spatial)`` (voxel units,
    :mod:`eoir.spatial` convention); in training mode an :class:`EOIROutput`.
    The constructor arguments are kept in :attr:`config`, so ``EOIR(**model.config)`` rebuilds it.
    """

    def __init__(
        self,
        ndim: int = 3,
        width: int = 32,
        levels: int = 5,
        ks: int = 1,
        integration_steps: int = 7,
        composition: str = "compose",
        large_kernel: bool = False,
        lk_size: int = 5,
        finest_level: int = 0,
        factors: int | Sequence[int] = 2,
    ) -> None:
        super().__init__()
        if ndim not in (2, 3):
            raise ValueError(f"ndim must be 2 or 3, got {ndim}")
        if width < 1 or levels < 1 or ks < 0 or integration_steps < 0 or finest_level < 0:
            raise ValueError(
                "width and levels must be >= 1; ks, integration_steps, finest_level >= 0"
            )
        if composition not in ("compose", "add"):
            raise ValueError(f"composition must be 'compose' or 'add', got {composition!r}")
        fac = (int(factors),) * ndim if isinstance(factors, int) else tuple(int(f) for f in factors)
        if len(fac) != ndim or any(f < 1 for f in fac):
            raise ValueError(f"factors must be {ndim} positive integers, got {factors}")
        self.config: dict[str, Any] = {
            "ndim": ndim,
            "width": width,
            "levels": levels,
            "ks": ks,
            "integration_steps": integration_steps,
            "composition": composition,
            "large_kernel": large_kernel,
            "lk_size": lk_size,
            "finest_level": finest_level,
            "factors": list(fac),
        }
        self.ndim = ndim
        self.levels = levels
        self.integration_steps = integration_steps
        self.composition = composition
        self.finest_level = finest_level
        self.factors = fac
        self.encoder = SharedEncoder(ndim, width, large_kernel, lk_size)
        # inference only: estimate levels larger than this many voxels over slabs of 32 planes
        # (0: never); training always runs whole volumes
        self.slab_above = 2**22
        # inference: channels-last 3-D maps (None: where measured faster, see _inference_layout)
        self.channels_last: bool | None = None
        # training: recompute each encoder layer and estimator in the backward pass instead of
        # keeping their activations (less memory, more time; train.checkpointing)
        self.activation_checkpointing = False
        self.estimators = nn.ModuleList(
            FlowEstimator(ndim, width, ks, large_kernel, lk_size) for _ in range(levels)
        )

    @classmethod
    def oasis(cls, width: int = 32, **overrides: Any) -> EOIR:
        """The paper's OASIS variant: LK blocks, 4 levels from half resolution, no integration."""
        kwargs: dict[str, Any] = {
            "ndim": 3,
            "width": width,
            "levels": 4,
            "integration_steps": 0,
            "large_kernel": True,
            "finest_level": 1,
        }
        kwargs.update(overrides)
        return cls(**kwargs)

    @property
    def size_multiple(self) -> tuple[int, ...]:
        """Per-axis divisor the padded input must have (``factors**(levels - 1 + finest)``)."""
        depth = self.levels - 1 + self.finest_level
        return tuple(f**depth for f in self.factors)

    def _inference_layout(self, image: torch.Tensor) -> torch.Tensor:
        """Channels-last for 3-D convolutions on a CPU: oneDNN then works on the tensors as they
        are instead of reordering copies (at 208x176x160, width 32: encoder peak 2.5 GB instead
        of 4.0 GB, and 8 % faster; benchmarks/speed.py). ``self.channels_last`` overrides."""
        wanted = self.channels_last
        if wanted is None:
            wanted = image.device.type == "cpu"
        if self.ndim != 3 or not wanted:
            return image
        weight = self.encoder[-1][0].weight  # (the first layer's, with 1 input channel, is both)
        if not weight.is_contiguous(memory_format=torch.channels_last_3d):
            # the weights too, once; made outside inference mode so that they stay usable by
            # autograd later (fine-tuning, training)
            with torch.inference_mode(False), torch.no_grad():
                self.encoder.to(memory_format=torch.channels_last_3d)
        return image.contiguous(memory_format=torch.channels_last_3d)

    def _downsample(self, x: torch.Tensor) -> torch.Tensor:
        size = [n // f for n, f in zip(x.shape[2:], self.factors, strict=True)]
        mode = "trilinear" if self.ndim == 3 else "bilinear"
        return F.interpolate(x, size=size, mode=mode, align_corners=True)

    def _upsample_field(self, disp: torch.Tensor) -> torch.Tensor:
        size = [n * f for n, f in zip(disp.shape[2:], self.factors, strict=True)]
        return resize_field(disp, size, magnitude_scale=self.factors)

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor | EOIROutput:
        """Register ``moving`` to ``fixed``.

        Parameters
        ----------
        moving, fixed : torch.Tensor
            ``(B, 1, *spatial)`` intensity-normalised images on the same grid (e.g. in [0, 1]).

        Returns
        -------
        torch.Tensor or EOIROutput
            Eval mode: ``(B, ndim, *spatial)`` displacement in voxel units of the fixed grid.
            Training mode: :class:`EOIROutput` with the per-level fields and residuals as well.
        """
        if moving.shape != fixed.shape:
            raise ValueError(
                f"moving {tuple(moving.shape)} and fixed {tuple(fixed.shape)} must have one shape"
            )
        if moving.dim() != self.ndim + 2 or moving.shape[1] != 1:
            raise ValueError(
                f"a {self.ndim}D EOIR takes (B, 1, *spatial) images with {self.ndim} spatial "
                f"axes, got {tuple(moving.shape)}"
            )
        recompute = self.training and self.activation_checkpointing and torch.is_grad_enabled()
        if self.training:
            pair, shape = pad_to_multiple(torch.cat([moving, fixed], dim=0), self.size_multiple)
            if recompute:
                for layer in self.encoder:
                    pair = checkpoint(layer, pair, use_reentrant=False)
            else:
                pair = self.encoder(pair)
            feat_m, feat_f = pair.chunk(2, dim=0)
        else:  # one image at a time: the widest activations exist for one image only
            padded, shape = pad_to_multiple(moving, self.size_multiple)
            feat_m = self.encoder(self._inference_layout(padded))
            feat_f = self.encoder(
                self._inference_layout(pad_to_multiple(fixed, self.size_multiple)[0])
            )
            del padded
        for _ in range(self.finest_level):
            feat_m, feat_f = self._downsample(feat_m), self._downsample(feat_f)
        pyramid = [(feat_m, feat_f)]
        for _ in range(self.levels - 1):
            feat_m, feat_f = pyramid[-1]
            pyramid.append((self._downsample(feat_m), self._downsample(feat_f)))

        fields: list[torch.Tensor] = []
        residuals: list[torch.Tensor] = []
        upsampled: torch.Tensor | None = None
        for level in reversed(range(self.levels)):
            feat_m, feat_f = pyramid.pop()  # coarsest first; frees each level once used
            warped_m = feat_m if upsampled is None else warp(feat_m, upsampled)
            del feat_m  # the warped copy replaces it: one fewer full-size map while estimating
            # fields stay float32 under autocast: integration and composition accumulate error
            big = not self.training and 0 < self.slab_above < feat_f[0, 0].numel()
            if recompute:
                estimator = self.estimators[level]
                velocity = checkpoint(estimator, feat_f, warped_m, use_reentrant=False).float()
            else:
                velocity = self.estimators[level](feat_f, warped_m, 32 if big else 0).float()
            del warped_m
            step = integrate(velocity, self.integration_steps)
            if upsampled is None:
                field = step
            elif self.composition == "compose":
                field = compose(upsampled, step)
            else:
                field = upsampled + step
            fields.append(field)
            residuals.append(velocity)
            if level > 0:
                upsampled = self._upsample_field(field)

        fields.reverse()
        residuals.reverse()
        for _ in range(self.finest_level):
            fields = [self._upsample_field(f) for f in fields]
        disp = crop_to_shape(fields[0], shape)
        if not self.training:
            return disp
        return EOIROutput(disp=disp, fields=fields, residuals=residuals)
