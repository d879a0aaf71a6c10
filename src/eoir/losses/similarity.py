"""Image similarity: windowed NCC, MSE, MIND-SSC and mutual information, and the table that
names them.

All take ``(B, C, *spatial)`` tensors (2-D or 3-D) and return a scalar to minimise.

Multimodal similarity: MIND-SSC (Heinrich et al., MICCAI 2013) was chosen over NGF. It describes
each voxel by its local self-similarity pattern, which is the same in CT and MR wherever the two
show the same structure, it is robust to noise and to intensity inhomogeneity (NGF relies on
gradient directions, which noise and bias fields disturb, and needs an edge-noise parameter tuned
per modality), and it is what the strongest Learn2Reg multimodal entries (ConvexAdam, deeds) use.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from eoir.losses.filters import box_filter
from eoir.options import look_up_option

__all__ = [
    "NCC_EPS",
    "SIMILARITIES",
    "Similarity",
    "mind_loss",
    "mind_ssc",
    "mse_loss",
    "mutual_information_loss",
    "ncc_loss",
    "similarity_loss",
]


NCC_EPS = 1e-5  # NCC's stabiliser in training (VoxelMorph's and EOIR's)


def ncc_loss(
    warped: torch.Tensor, fixed: torch.Tensor, window: int = 9, eps: float = NCC_EPS
) -> torch.Tensor:
    """Local (windowed) normalised cross-correlation loss, ``1 - mean(cc)``.

    ``cc = cov^2 / (var_w var_f + eps)`` with window sums (VoxelMorph/EOIR form), so
    ``cc`` is in [0, 1] and the loss is 0 for images that match up to a local affine intensity map.

    Parameters
    ----------
    warped, fixed : torch.Tensor
        ``(B, 1, *spatial)`` images.
    window : int
        Window side in voxels (odd; EOIR uses 9, 5, 3 from fine to coarse).
    eps : float
        Stabiliser of the denominator. Where the variance product of low-contrast regions
        (smooth images in [0, 1], small windows, 2-D) is not far above it, ``cc`` grows with
        local contrast rather than with correlation, and an optimiser gains by sharpening the
        warped image there instead of aligning it; instance optimisation therefore uses a far
        smaller one (``benchmarks/ncc_eps.py``).

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
    cc = cross * cross / (var_a * var_b + eps)
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


def mutual_information_loss(
    warped: torch.Tensor, fixed: torch.Tensor, bins: int = 32, sigma: float = 1.0
) -> torch.Tensor:
    """Negative global mutual information with Gaussian Parzen windows (multimodal).

    Each value is spread over ``bins`` centres evenly spaced on [0, 1] by a Gaussian of SD
    ``sigma / bins``; the joint histogram is their outer product summed over voxels
    (differentiable).

    Parameters
    ----------
    warped, fixed : torch.Tensor
        Tensors of the same number of elements with values in about [0, 1] (images
        ``(B, 1, *spatial)``, or samples ``(N,)``); all their elements are one sample.
    bins : int
        Histogram bins per image.
    sigma : float
        Parzen window SD, in units of ``1 / bins``.

    Returns
    -------
    torch.Tensor
        Scalar ``-MI`` in nats.
    """
    a, b = warped.reshape(-1).float(), fixed.reshape(-1).float()
    centres = torch.linspace(0, 1, bins, device=a.device)
    wa = torch.exp(-0.5 * ((a[:, None] - centres) * bins / sigma) ** 2)
    wb = torch.exp(-0.5 * ((b[:, None] - centres) * bins / sigma) ** 2)
    wa = wa / wa.sum(1, keepdim=True).clamp(min=1e-12)
    wb = wb / wb.sum(1, keepdim=True).clamp(min=1e-12)
    joint = wa.T @ wb / a.shape[0]
    outer = joint.sum(1)[:, None] * joint.sum(0)[None]
    return -(joint * (torch.log(joint + 1e-10) - torch.log(outer + 1e-10))).sum()


Similarity = Literal["ncc", "mse", "mind", "mi"]


def similarity_loss(
    similarity: Similarity,
    warped: torch.Tensor,
    fixed: torch.Tensor,
    window: int = 9,
    eps: float = NCC_EPS,
) -> torch.Tensor:
    """The image term named by ``similarity`` (a key of :data:`SIMILARITIES`).

    Parameters
    ----------
    similarity : {"ncc", "mse", "mind", "mi"}
        Windowed NCC, mean squared difference, MIND-SSC or global mutual information (the last
        two multimodal).
    warped, fixed : torch.Tensor
        ``(B, 1, *spatial)`` images.
    window : int
        NCC window side in voxels (ignored by the others).
    eps : float
        NCC's stabiliser (:func:`ncc_loss`; ignored by the others).

    Returns
    -------
    torch.Tensor
        Scalar loss to minimise.
    """
    return look_up_option("similarity", similarity, SIMILARITIES)(warped, fixed, window, eps)


# similarity name -> loss(warped, fixed, window, eps)
SIMILARITIES: dict[str, Callable[[torch.Tensor, torch.Tensor, int, float], torch.Tensor]] = {
    "ncc": ncc_loss,
    "mse": lambda warped, fixed, window, eps: mse_loss(warped, fixed),
    "mind": lambda warped, fixed, window, eps: mind_loss(warped, fixed),
    "mi": lambda warped, fixed, window, eps: mutual_information_loss(warped, fixed),
}
# the image terms that compare two contrasts (the others assume one: NCC's linear relation, MSE's
# equal intensities)
MULTIMODAL = frozenset({"mind", "mi"})
