"""Training losses: similarity (NCC, MSE, MIND-SSC), smoothness, soft Dice, the multi-level loss.

All losses take ``(B, C, *spatial)`` tensors (2D or 3D) and return a scalar to minimise.

Multimodal similarity: MIND-SSC (Heinrich et al., MICCAI 2013) was chosen over NGF. It describes
each voxel by its local self-similarity pattern, which is the same in CT and MR wherever the two
show the same structure, it is robust to noise and to intensity inhomogeneity (NGF relies on
gradient directions, which noise and bias fields disturb, and needs an edge-noise parameter tuned
per modality), and it is what the strongest Learn2Reg multimodal entries (ConvexAdam, deeds) use.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from eoir.spatial import warp

__all__ = [
    "box_filter",
    "dice_loss",
    "gaussian_blur",
    "gradient_loss",
    "mind_loss",
    "mind_ssc",
    "mse_loss",
    "multilevel_loss",
    "ncc_loss",
    "one_hot",
    "pyramid",
]


def _pool(ndim: int):
    return F.avg_pool3d if ndim == 3 else F.avg_pool2d


def box_filter(x: torch.Tensor, window: int) -> torch.Tensor:
    """Windowed mean, separable, zero padded, constant divisor ``window**ndim`` at borders.

    Parameters
    ----------
    x : torch.Tensor
        ``(B, C, *spatial)``.
    window : int
        Odd window side in voxels.

    Returns
    -------
    torch.Tensor
        ``(B, C, *spatial)`` local means.
    """
    if window % 2 != 1:
        raise ValueError(f"window must be odd, got {window}")
    ndim = x.dim() - 2
    pool = _pool(ndim)
    for axis in range(ndim):
        kernel = [1] * ndim
        kernel[axis] = window
        pad = [k // 2 for k in kernel]
        if x.shape[2 + axis] < window:  # pooling refuses a kernel larger than the input
            explicit = [0] * (2 * ndim)
            explicit[2 * (ndim - 1 - axis)] = explicit[2 * (ndim - 1 - axis) + 1] = window // 2
            x, pad = F.pad(x, explicit), [0] * ndim
        x = pool(x, kernel, stride=1, padding=pad, count_include_pad=True)
    return x


def ncc_loss(warped: torch.Tensor, fixed: torch.Tensor, window: int = 9) -> torch.Tensor:
    """Local (windowed) normalised cross-correlation loss, ``1 - mean(cc)``.

    ``cc = cov^2 / (var_w var_f + 1e-5)`` with window sums (VoxelMorph/EOIR form), so
    ``cc`` is in [0, 1] and the loss is 0 for images that match up to a local affine intensity map.

    Parameters
    ----------
    warped, fixed : torch.Tensor
        ``(B, 1, *spatial)`` images.
    window : int
        Window side in voxels (odd; EOIR uses 9, 5, 3 from fine to coarse).

    Returns
    -------
    torch.Tensor
        Scalar loss in [0, 1].
    """
    if warped.shape != fixed.shape:
        raise ValueError(f"shapes differ: {tuple(warped.shape)} vs {tuple(fixed.shape)}")
    ndim = fixed.dim() - 2
    n = float(window**ndim)
    a, b = warped.float(), fixed.float()
    # one pass of the box filter over the five stacked moments
    mean_a, mean_b, mean_aa, mean_bb, mean_ab = box_filter(
        torch.cat([a, b, a * a, b * b, a * b], dim=1), window
    ).chunk(5, dim=1)
    cross = n * (mean_ab - mean_a * mean_b)
    var_a = n * (mean_aa - mean_a * mean_a)
    var_b = n * (mean_bb - mean_b * mean_b)
    cc = cross * cross / (var_a * var_b + 1e-5)
    return 1.0 - cc.mean()


def mse_loss(warped: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
    """Mean squared intensity difference. ``(B, C, *spatial)`` pair -> scalar."""
    return F.mse_loss(warped, fixed)


def _shift(x: torch.Tensor, offset: Sequence[int]) -> torch.Tensor:
    """``out(p) = x(p + offset)`` with replicate padding; offset in voxels per spatial axis."""
    ndim = len(offset)
    r = max(abs(o) for o in offset)
    pad = [r] * (2 * ndim)
    padded = F.pad(x, pad, mode="replicate")
    index = [slice(None), slice(None)]
    index += [slice(r + o, r + o + n) for o, n in zip(offset, x.shape[2:], strict=True)]
    return padded[tuple(index)]


def mind_ssc(image: torch.Tensor, radius: int = 2, dilation: int = 2) -> torch.Tensor:
    """MIND-SSC descriptor (self-similarity context), generalised to 2D and 3D.

    Each channel compares two voxels of the ``2 ndim`` neighbourhood (``+-dilation`` along each
    axis) that are ``sqrt(2) dilation`` apart: 12 channels in 3D, 4 in 2D. A channel is the patch
    SSD of the two shifted images (box of side ``2 radius + 1``), turned into
    ``exp(-(SSD - min SSD) / V)`` with ``V`` the voxel's mean SSD.

    Parameters
    ----------
    image : torch.Tensor
        ``(B, 1, *spatial)``.
    radius, dilation : int
        Patch radius and neighbourhood distance, voxels.

    Returns
    -------
    torch.Tensor
        ``(B, 12 or 4, *spatial)`` descriptor with values in (0, 1].
    """
    ndim = image.dim() - 2
    neighbours = []
    for axis in range(ndim):
        for sign in (-1, 1):
            offset = [0] * ndim
            offset[axis] = sign * dilation
            neighbours.append(offset)
    pairs = [
        (a, b)
        for a, b in itertools.combinations(neighbours, 2)
        if sum((x - y) ** 2 for x, y in zip(a, b, strict=True)) == 2 * dilation**2
    ]
    x = image.float()
    ssd = torch.cat([(_shift(x, a) - _shift(x, b)) ** 2 for a, b in pairs], dim=1)
    ssd = box_filter(ssd, 2 * radius + 1)
    ssd = ssd - ssd.amin(dim=1, keepdim=True)
    var = ssd.mean(dim=1, keepdim=True)
    mean_var = var.mean()
    var = torch.minimum(torch.maximum(var, mean_var * 1e-3 + 1e-12), mean_var * 1e3 + 1e-12)
    return torch.exp(-ssd / var)


def mind_loss(warped: torch.Tensor, fixed: torch.Tensor, radius: int = 2, dilation: int = 2):
    """Modality-independent similarity: mean squared difference of MIND-SSC descriptors.

    Parameters
    ----------
    warped, fixed : torch.Tensor
        ``(B, 1, *spatial)`` images of any two modalities.
    radius, dilation : int
        See :func:`mind_ssc`.

    Returns
    -------
    torch.Tensor
        Scalar loss, 0 for images with identical local structure.
    """
    return F.mse_loss(mind_ssc(warped, radius, dilation), mind_ssc(fixed, radius, dilation))


def gradient_loss(field: torch.Tensor, penalty: str = "l1") -> torch.Tensor:
    """Smoothness: mean forward difference of a field along each axis, averaged over axes.

    Parameters
    ----------
    field : torch.Tensor
        ``(B, ndim, *spatial)`` displacement or velocity in voxel units of its grid.
    penalty : {"l1", "l2"}
        Absolute (EOIR default) or squared differences (LUMIR recipe; diffusion regulariser).

    Returns
    -------
    torch.Tensor
        Scalar, in voxels (l1) or voxels^2 (l2) per voxel step.
    """
    if penalty not in ("l1", "l2"):
        raise ValueError(f"penalty must be 'l1' or 'l2', got {penalty!r}")
    ndim = field.dim() - 2
    total = field.new_zeros(())
    for axis in range(2, 2 + ndim):
        diff = torch.diff(field, dim=axis)
        total = total + (diff.abs() if penalty == "l1" else diff * diff).mean()
    return total / ndim


def one_hot(labels: torch.Tensor, classes: Sequence[int] | int) -> torch.Tensor:
    """One-hot encode an integer label map.

    Parameters
    ----------
    labels : torch.Tensor
        ``(B, 1, *spatial)`` integer (or integer-valued float) label map.
    classes : int or sequence of int
        Either the number of classes ``K`` (labels are ``0..K-1``) or the label values to encode,
        background included, in channel order. Voxels whose value is not listed are all-zero.

    Returns
    -------
    torch.Tensor
        ``(B, K, *spatial)`` float32.
    """
    values = list(range(classes)) if isinstance(classes, int) else [int(c) for c in classes]
    lab = labels.long()
    lookup_size = max(max(values), int(lab.max().item()) if lab.numel() else 0) + 1
    if min(values) < 0 or (lab.numel() and int(lab.min().item()) < 0):
        raise ValueError("one_hot needs non-negative label values")
    lookup = torch.full((lookup_size,), len(values), dtype=torch.long, device=labels.device)
    lookup[torch.tensor(values, device=labels.device)] = torch.arange(
        len(values), device=labels.device
    )
    index = lookup[lab[:, 0]]  # (B, *spatial); unlisted -> extra class dropped below
    out = F.one_hot(index, len(values) + 1)[..., : len(values)]
    return out.movedim(-1, 1).float()


def dice_loss(warped: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
    """Soft Dice loss on one-hot (possibly soft) label maps, background included.

    ``1 - mean over batch and classes of 2|A.B| / (|A| + |B| + 1e-5)``.

    Parameters
    ----------
    warped, fixed : torch.Tensor
        ``(B, K, *spatial)`` one-hot or soft label maps in [0, 1].

    Returns
    -------
    torch.Tensor
        Scalar in [0, 1].
    """
    if warped.shape != fixed.shape:
        raise ValueError(f"shapes differ: {tuple(warped.shape)} vs {tuple(fixed.shape)}")
    dims = tuple(range(2, warped.dim()))
    inter = (warped * fixed).sum(dims)
    sizes = warped.sum(dims) + fixed.sum(dims)
    return 1.0 - (2.0 * inter / (sizes + 1e-5)).mean()


def gaussian_blur(
    x: torch.Tensor, sigma: float = 1.0, size: int = 5, axes: Sequence[int] | None = None
) -> torch.Tensor:
    """Separable normalised Gaussian blur with zero padding, per channel.

    Parameters
    ----------
    x : torch.Tensor
        ``(B, C, *spatial)``.
    sigma : float
        Standard deviation, voxels.
    size : int
        Odd kernel side, voxels.
    axes : sequence of int, optional
        Spatial axes (0-based) to blur; all by default.

    Returns
    -------
    torch.Tensor
        ``(B, C, *spatial)``.
    """
    ndim = x.dim() - 2
    channels = x.shape[1]
    r = torch.arange(size, device=x.device, dtype=x.dtype) - size // 2
    kernel = torch.exp(-(r * r) / (2 * sigma * sigma))
    kernel = kernel / kernel.sum()
    conv = F.conv3d if ndim == 3 else F.conv2d
    for axis in range(ndim) if axes is None else axes:
        shape = [1] * ndim
        shape[axis] = size
        weight = kernel.view(1, 1, *shape).expand(channels, 1, *shape)
        padding = [s // 2 for s in shape]
        x = conv(x, weight, padding=padding, groups=channels)
    return x


def pyramid(x: torch.Tensor, shapes: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """Gaussian pyramid onto given level shapes (finest first; ``shapes[0]`` = ``x``'s shape).

    Level ``i+1`` = blur(level ``i``) (sigma 1, 5-tap, only along axes that shrink) resampled
    linearly with ``align_corners=True`` to ``shapes[i+1]``.

    Parameters
    ----------
    x : torch.Tensor
        ``(B, C, *spatial)`` image or one-hot labels.
    shapes : sequence of shapes
        Spatial shape of every level.

    Returns
    -------
    list of torch.Tensor
        One ``(B, C, *shapes[i])`` tensor per level.
    """
    if tuple(x.shape[2:]) != tuple(shapes[0]):
        raise ValueError(f"level 0 shape {tuple(shapes[0])} != input {tuple(x.shape[2:])}")
    mode = "trilinear" if x.dim() == 5 else "bilinear"
    levels = [x]
    for shape in shapes[1:]:
        prev = levels[-1]
        axes = [k for k, (a, b) in enumerate(zip(prev.shape[2:], shape, strict=True)) if b < a]
        blurred = gaussian_blur(prev, axes=axes)
        levels.append(F.interpolate(blurred, size=tuple(shape), mode=mode, align_corners=True))
    return levels


def _pad_end(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Zero-pad at the high end to ``shape`` (the model's internal padding)."""
    pad: list[int] = []
    for have, want in reversed(list(zip(x.shape[2:], shape, strict=True))):
        pad += [0, int(want) - int(have)]
    return F.pad(x, pad) if any(pad) else x


def multilevel_loss(
    fields: Sequence[torch.Tensor],
    residuals: Sequence[torch.Tensor],
    moving: torch.Tensor,
    fixed: torch.Tensor,
    *,
    similarity: str = "ncc",
    windows: Sequence[int] = (9, 5, 3),
    sim_weight: float = 1.0,
    reg_weight: float = 1.0,
    dice_weight: float = 1.0,
    penalty: str = "l1",
    moving_labels: torch.Tensor | None = None,
    fixed_labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """EOIR's multi-level loss.

    ``L = sum_l 2^-l [ w_sim Sim_l(T_l(I_m^l, phi_l), I_f^l) + w_reg Grad(v_l)
    + w_dice Dice(T_l(S_m^l, phi_l), S_f^l) ]``, with Gaussian image and one-hot label pyramids
    built on the grids of the model's level fields. Each weight is applied once (the reference
    training script squares them; pass ``w**2`` to reproduce it).

    Parameters
    ----------
    fields : sequence of torch.Tensor
        Composed fields ``phi_l``, finest first, ``(B, ndim, *level_l)`` in voxels of level ``l``
        (``EOIROutput.fields`` of a training-mode :class:`eoir.model.EOIR` pass). Level 0 may be
        larger than the images (the model's high-end padding); images are padded to match.
    residuals : sequence of torch.Tensor
        Pre-integration residuals ``v_l``, finest first (``EOIROutput.residuals``).
    moving, fixed : torch.Tensor
        ``(B, 1, *spatial)`` the images the model saw.
    similarity : {"ncc", "mse", "mind"}
        Image term.
    windows : sequence of int
        NCC window per level, finest first; the last is reused for coarser levels.
    sim_weight, reg_weight, dice_weight : float
        Term weights.
    penalty : {"l1", "l2"}
        Smoothness penalty on each level's residual ``v_l``.
    moving_labels, fixed_labels : torch.Tensor, optional
        ``(B, K, *spatial)`` one-hot label maps (:func:`one_hot`); the Dice term is used when both
        are given and ``dice_weight > 0``.

    Returns
    -------
    total : torch.Tensor
        Scalar loss.
    terms : dict of str to torch.Tensor
        Detached level-weighted sums of each term, ``"similarity"``, ``"smoothness"`` and
        ``"dice"``, as scalar tensors (no device sync until the caller reads them).
    """
    if similarity not in ("ncc", "mse", "mind"):
        raise ValueError(f"similarity must be 'ncc', 'mse' or 'mind', got {similarity!r}")
    shapes = [tuple(f.shape[2:]) for f in fields]
    images_m = pyramid(_pad_end(moving, shapes[0]), shapes)
    images_f = pyramid(_pad_end(fixed, shapes[0]), shapes)
    use_dice = dice_weight > 0 and moving_labels is not None and fixed_labels is not None
    if use_dice:
        labels_m = pyramid(_pad_end(moving_labels, shapes[0]), shapes)
        labels_f = pyramid(_pad_end(fixed_labels, shapes[0]), shapes)
    total = moving.new_zeros((), dtype=torch.float32)
    terms = {name: total.detach().clone() for name in ("similarity", "smoothness", "dice")}
    for level, (field, velocity) in enumerate(zip(fields, residuals, strict=True)):
        weight = 2.0**-level
        warped = warp(images_m[level], field)
        if similarity == "ncc":
            sim = ncc_loss(warped, images_f[level], windows[min(level, len(windows) - 1)])
        elif similarity == "mse":
            sim = mse_loss(warped, images_f[level])
        else:
            sim = mind_loss(warped, images_f[level])
        reg = gradient_loss(velocity, penalty)
        level_loss = sim_weight * sim + reg_weight * reg
        terms["similarity"] += weight * sim.detach()
        terms["smoothness"] += weight * reg.detach()
        if use_dice:
            dsc = dice_loss(warp(labels_m[level], field), labels_f[level])
            level_loss = level_loss + dice_weight * dsc
            terms["dice"] += weight * dsc.detach()
        total = total + weight * level_loss
    return total, terms
