"""The EOIR network: a shared 3-layer encoder, a feature pyramid and per-level flow estimators.

Reference: X. Chen et al., "Encoder-Only Image Registration", IEEE TCSVT 2026, arXiv:2509.00451.
The architecture follows the authors' released code where the paper's figure and the code
disagree (3-conv estimators without normalisation; Hadamard pair ordered ``[f + m, f - m]``; x2
field rescale by 2).

Fields follow :mod:`eoir.spatial`: ``(B, ndim, *spatial)``, voxel units, channel ``k`` = array
axis ``k``, ``warped(p) = moving(p + disp(p))``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, overload

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from eoir.nn.blocks import FlowEstimator, SharedEncoder
from eoir.options import look_up_option
from eoir.spatial import compose, crop_to_shape, integrate, pad_to_multiple, resize_field, warp

__all__ = ["COMPOSITIONS", "EOIR", "Composition", "EOIROutput", "RegistrationNetwork"]

Composition = Literal["compose", "add"]
COMPOSITIONS: dict[str, str] = {
    "compose": "each level's residual composed with the upsampled coarser field (EOIR)",
    "add": "residuals added (the paper's EOIR (additive))",
}


@dataclass
class EOIROutput:
    """What ``model(moving, fixed, levels=True)`` returns: every level's field.

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


class RegistrationNetwork(nn.Module):
    """What every registration network of eoir is: ``model(moving, fixed)`` gives the field.

    Subclasses (:class:`EOIR`, :class:`eoir.nn.VoxelMorph`) set ``ndim`` and compute every
    level's field in ``_levels``; this class checks the inputs and chooses what to return.
    """

    ndim: int

    @overload
    def forward(
        self, moving: torch.Tensor, fixed: torch.Tensor, levels: Literal[False] = False
    ) -> torch.Tensor: ...

    @overload
    def forward(
        self, moving: torch.Tensor, fixed: torch.Tensor, levels: Literal[True]
    ) -> EOIROutput: ...

    def forward(
        self, moving: torch.Tensor, fixed: torch.Tensor, levels: bool = False
    ) -> torch.Tensor | EOIROutput:
        """Register ``moving`` to ``fixed``.

        Parameters
        ----------
        moving, fixed : torch.Tensor
            ``(B, 1, *spatial)`` intensity-normalised images on the same grid (e.g. in [0, 1]).
        levels : bool
            Return every level's field and residual (:class:`EOIROutput`, what the multi-level
            training loss needs) instead of the displacement alone.

        Returns
        -------
        torch.Tensor or EOIROutput
            ``levels=False``: the ``(B, ndim, *spatial)`` displacement in voxel units of the
            fixed grid. ``levels=True``: an :class:`EOIROutput`. The mode decides only how it
            is computed: training mode runs the pair as one batch for autograd; eval mode may
            take a leaner path (EOIR encodes one image at a time, in place where it can).

        Examples
        --------
        >>> model = EOIR(ndim=2, width=4, levels=2).eval()
        >>> with torch.no_grad():
        ...     disp = model(torch.rand(1, 1, 20, 24), torch.rand(1, 1, 20, 24))
        >>> tuple(disp.shape)
        (1, 2, 20, 24)
        >>> out = model.train()(torch.rand(1, 1, 20, 24), torch.rand(1, 1, 20, 24), levels=True)
        >>> [tuple(f.shape) for f in out.fields]
        [(1, 2, 20, 24), (1, 2, 10, 12)]
        """
        if moving.shape != fixed.shape:
            raise ValueError(
                f"moving {tuple(moving.shape)} and fixed {tuple(fixed.shape)} must have one shape"
            )
        if moving.dim() != self.ndim + 2 or moving.shape[1] != 1:
            raise ValueError(
                f"a {self.ndim}D {type(self).__name__} takes (B, 1, *spatial) images with "
                f"{self.ndim} spatial axes, got {tuple(moving.shape)}"
            )
        out = self._levels(moving, fixed)
        return out if levels else out.disp

    def _levels(self, moving: torch.Tensor, fixed: torch.Tensor) -> EOIROutput:
        raise NotImplementedError


class EOIR(RegistrationNetwork):
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
    cropped back. It returns the displacement ``(B, ndim, *spatial)`` (voxel units,
    :mod:`eoir.spatial` convention), or with ``levels=True`` an :class:`EOIROutput` (see
    :meth:`RegistrationNetwork.forward`).
    The constructor arguments are kept in :attr:`config`, so ``EOIR(**model.config)`` rebuilds it.

    Examples
    --------
    The paper's default network; any input size works:

    >>> model = EOIR(ndim=3, width=32, levels=5, integration_steps=7)
    >>> sum(p.numel() for p in model.parameters())
    909232
    """

    def __init__(
        self,
        ndim: int = 3,
        width: int = 32,
        levels: int = 5,
        ks: int = 1,
        integration_steps: int = 7,
        composition: Composition = "compose",
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
        look_up_option("composition", composition, COMPOSITIONS)
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

    def _channels_last(self, device: torch.device) -> bool:
        """Whether the encoder runs channels-last on ``device``: 3-D on a CPU, where oneDNN then
        works on the maps as they are instead of reordering copies (less memory and faster in
        inference and training on a CPU, slower on a GPU, as measured in
        ``benchmarks/results.md``). ``self.channels_last`` overrides."""
        wanted = self.channels_last
        if wanted is None:
            wanted = device.type == "cpu"
        return self.ndim == 3 and bool(wanted)

    def set_layout(self, device: torch.device | str) -> None:
        """Put the encoder's weights in the memory layout it runs fastest in on ``device``
        (channels-last 3-D on a CPU, see :meth:`_channels_last`); the values are unchanged.

        Training calls it once before its first step (before a DistributedDataParallel wrapper
        is made); the inference path calls it itself.
        """
        last = self._channels_last(torch.device(device))
        layout = torch.channels_last_3d if last else torch.contiguous_format
        weight = self.encoder[-1][0].weight  # (the first layer's, with 1 input channel, is both)
        if not weight.is_contiguous(memory_format=layout):
            # made outside inference mode so that the weights stay usable by autograd later
            # (fine-tuning, training)
            with torch.inference_mode(False), torch.no_grad():
                self.encoder.to(memory_format=layout)

    def _inference_layout(self, image: torch.Tensor) -> torch.Tensor:
        """``image`` (and, once, the encoder's weights) in the encoder's layout on its device."""
        if not self._channels_last(image.device):
            return image
        self.set_layout(image.device)
        return image.contiguous(memory_format=torch.channels_last_3d)

    def _training_layout(self, pair: torch.Tensor) -> torch.Tensor:
        """``pair`` in the layout of the encoder's weights as they are (:meth:`set_layout`
        chooses it; a training step never changes the weights' layout itself)."""
        weight = self.encoder[-1][0].weight
        if self.ndim == 3 and weight.is_contiguous(memory_format=torch.channels_last_3d):
            return pair.contiguous(memory_format=torch.channels_last_3d)
        return pair

    def _downsample(self, x: torch.Tensor) -> torch.Tensor:
        size = [n // f for n, f in zip(x.shape[2:], self.factors, strict=True)]
        mode = "trilinear" if self.ndim == 3 else "bilinear"
        return F.interpolate(x, size=size, mode=mode, align_corners=True)

    def _upsample_field(self, disp: torch.Tensor) -> torch.Tensor:
        size = [n * f for n, f in zip(disp.shape[2:], self.factors, strict=True)]
        return resize_field(disp, size, magnitude_scale=self.factors)

    def _levels(self, moving: torch.Tensor, fixed: torch.Tensor) -> EOIROutput:
        """Every level's field (see :meth:`RegistrationNetwork.forward`)."""
        recompute = self.training and self.activation_checkpointing and torch.is_grad_enabled()
        if self.training:
            pair, shape = pad_to_multiple(torch.cat([moving, fixed], dim=0), self.size_multiple)
            pair = self._training_layout(pair)
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
        return EOIROutput(disp=disp, fields=fields, residuals=residuals)
