"""Linear pre-alignment of a pair in world space: eoir's own (torch) and SimpleITK's.

:func:`linear_align` (the default of ``--affine``): moments first, the centres of mass and
principal axes of both images at 8 mm; each rotation the principal axes leave open (their four
sign choices, and none) is refined rigidly at 8 mm and the best kept; then the transform is
optimised (Adam) at 4 mm and 2 mm on a fixed random sample of the fixed image's foreground
voxels, with global NCC (one contrast) or mutual information (``similarity="mind"`` or ``"mi"``:
contrasts differ). :func:`sitk_affine_align`:
SimpleITK's registration method (Mattes mutual information, 3 resolutions), kept for comparison
and for 2-D images. ``benchmarks/affine_native.py`` measures both.
"""

from __future__ import annotations

import itertools
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from eoir.image import Image
from eoir.io import as_sitk_image
from eoir.io.transforms import transform_to_sitk, world_from_sitk
from eoir.losses import mutual_information_loss
from eoir.options import look_up_option
from eoir.progress import ProgressLike, progress_for
from eoir.spatial import sample

__all__ = ["AFFINE_MODELS", "AffineModel", "affine_align", "linear_align", "sitk_affine_align"]

AffineModel = Literal["affine", "rigid"]
AFFINE_MODELS: dict[str, str] = {
    "affine": "12 parameters: rotation, scaling, shearing, translation",
    "rigid": "6 parameters: rotation and translation",
}


def _pyramid(values: np.ndarray, image: Image) -> dict[float, tuple[torch.Tensor, np.ndarray]]:
    """The image averaged down to about 2, 4 and 8 mm voxels (each from the previous):
    ``(1, 1, *shape)`` values and their voxel -> RAS affine, by level."""
    array = np.asarray(values, dtype=np.float32)
    # a Fortran-ordered volume (as nibabel reads NIfTI) is averaged as its transpose, a C-ordered
    # view, and only the small result is turned back: no full-size transposing copy (0.1 s a
    # 256x256x160 image, benchmarks/kernel_swaps.py)
    transposed = array.flags.f_contiguous and not array.flags.c_contiguous
    x = torch.from_numpy(array.T if transposed else np.ascontiguousarray(array))[None, None]
    shape = array.shape
    affine, spacing = np.asarray(image.affine, float), np.array(image.spacing)
    levels = {}
    for mm in (2.0, 4.0, 8.0):
        factors = [max(1, min(round(mm / s), n)) for s, n in zip(spacing, shape, strict=True)]
        if any(k > 1 for k in factors):
            x = F.avg_pool3d(x, factors[::-1] if transposed else factors)
            scale = np.diag([*map(float, factors), 1.0])
            scale[:3, 3] = (np.array(factors) - 1) / 2
            affine, spacing = affine @ scale, spacing * factors
        if transposed:  # back to the array's axis order (small now, or never averaged)
            x, transposed = x.permute(0, 1, 4, 3, 2).contiguous(), False
        shape = tuple(x.shape[2:])
        levels[mm] = (x, affine)
    return levels


def _points(shape: tuple[int, ...], affine: np.ndarray) -> torch.Tensor:
    """World positions (mm) of every voxel of a grid: ``(3, N)``."""
    axes = [torch.arange(n, dtype=torch.float32) for n in shape]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), 0).reshape(3, -1)
    a = torch.as_tensor(affine, dtype=torch.float32)
    return a[:3, :3] @ grid + a[:3, 3:]


def _moments(x: torch.Tensor, affine: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre of mass (mm) and principal axes (columns, largest first) of the voxels above a
    tenth of the brightest (the background left out)."""
    w = x.flatten().clamp_min(0)
    w = torch.where(w > 0.1 * w.max(), w, torch.zeros_like(w))
    p = _points(tuple(x.shape[2:]), affine)
    centre = (p * w).sum(1) / w.sum()
    d = p - centre[:, None]
    _, axes = torch.linalg.eigh((d * w) @ d.T / w.sum())
    return centre, axes.flip(1)


def _foreground(x: torch.Tensor, affine: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """World positions ``(3, N)`` and values ``(N,)`` of the voxels above 5 % of the range:
    the similarity is measured where the fixed image shows something, so that what only the
    moving image shows (a skull and scalp against a skull-stripped brain) does not pull."""
    values = x.flatten()
    keep = values > 0.05 * float(values.max())
    return _points(tuple(x.shape[2:]), affine)[:, keep], values[keep]


def _ncc(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a - a.mean(), b - b.mean()
    return -(a * b).sum() / (a.norm() * b.norm() + 1e-8)


# the instance-optimisation similarity -> the affine stage's (MIND needs neighbourhoods that
# 4 mm voxels blur away: mutual information serves the multimodal case)
_SIMILARITIES = {
    "ncc": _ncc,
    "mse": _ncc,
    "mind": mutual_information_loss,
    "mi": mutual_information_loss,
}


def _sampler(x: torch.Tensor, affine: np.ndarray):
    """World points ``(3, N)`` -> linearly sampled values ``(N,)`` (zero outside)."""
    inverse = torch.as_tensor(np.linalg.inv(affine), dtype=torch.float32)

    def values(points: torch.Tensor) -> torch.Tensor:
        voxels = inverse[:3, :3] @ points + inverse[:3, 3:]
        return sample(x, voxels.reshape(1, 3, -1, 1, 1), padding="zeros").flatten()

    return values


def _rotation(vector: torch.Tensor) -> torch.Tensor:
    """The rotation matrix of an axis-angle vector (radians)."""
    zero = vector.new_zeros(())
    skew = torch.stack([
        torch.stack([zero, -vector[2], vector[1]]),
        torch.stack([vector[2], zero, -vector[0]]),
        torch.stack([-vector[1], vector[0], zero]),
    ])  # fmt: skip
    return torch.linalg.matrix_exp(skew)


class _Adam:
    """Adam for a few small tensors. ``torch.optim.Adam``'s first construction in a process
    imports about 800 modules (1.5 s on 2 cores, three times the whole affine stage); this is
    the same update (Kingma & Ba, bias-corrected) without them."""

    def __init__(self, parameters: list[torch.Tensor], lr: float, betas=(0.9, 0.999)) -> None:
        self.parameters, self.lr, self.betas, self.t = parameters, lr, betas, 0
        self.moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in parameters]

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        for p, (m, v) in zip(self.parameters, self.moments, strict=True):
            g = p.grad
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denominator = (v / (1 - b2**self.t)).sqrt_().add_(1e-8)
            p.addcdiv_(m, denominator, value=-self.lr / (1 - b1**self.t))
            p.grad = None


@torch.enable_grad()  # it optimises: autograd on, whatever the caller's mode (validation)
def linear_align(
    fixed: Image,
    moving: Image,
    fixed_values: np.ndarray,
    moving_values: np.ndarray,
    model: AffineModel = "affine",
    similarity: str = "ncc",
    steps: tuple[int, int] = (60, 30),
    points: int = 20000,
    seed: int = 0,
    progress: ProgressLike = False,
    initial: np.ndarray | None = None,
) -> np.ndarray:
    """Rigid or affine alignment in torch: moments, then Adam at 4 and 2 mm.

    Parameters
    ----------
    fixed, moving : Image
        The grids (3-D; 2-D images go to :func:`sitk_affine_align`).
    fixed_values, moving_values : numpy.ndarray
        Their normalised intensities (about [0, 1]), on their own grids.
    model : {"affine", "rigid"}
        The transform's degrees of freedom.
    similarity : {"ncc", "mse", "mind", "mi"}
        Instance optimisation's similarity: ``ncc`` and ``mse`` align by global NCC,
        ``mind`` and ``mi`` (different contrasts) by mutual information.
    steps : tuple of int
        Adam steps at 4 mm and at 2 mm.
    points : int
        Fixed-image voxels sampled (once, with ``seed``) at each level.
    seed : int
        The sample's seed (the result is reproducible).
    progress : bool or callable
        Show the steps (:mod:`eoir.progress`).
    initial : numpy.ndarray, optional
        ``(4, 4)`` fixed RAS world -> moving RAS world start, in place of the moments.

    Returns
    -------
    numpy.ndarray
        ``(4, 4)`` matrix mapping fixed RAS world points (mm) to moving RAS world points.
    """
    look_up_option("affine", model, AFFINE_MODELS)
    loss_of = _SIMILARITIES[similarity]
    f_levels, m_levels = _pyramid(fixed_values, fixed), _pyramid(moving_values, moving)
    f8, f8_affine = f_levels[8.0]
    centre_f, axes_f = _moments(f8, f8_affine)
    radius = float((_points(tuple(f8.shape[2:]), f8_affine) - centre_f[:, None]).norm(dim=0).mean())
    if initial is None:
        centre_m, axes_m = _moments(*m_levels[8.0])
        # the rotations the principal axes allow (four sign choices) and none
        candidates = [torch.eye(3)]
        for signs in itertools.product((1.0, -1.0), repeat=3):
            rotation = axes_m @ torch.diag(torch.tensor(signs)) @ axes_f.T
            if torch.det(rotation) > 0:
                candidates.append(rotation)
        grid8, values8 = _foreground(*f_levels[8.0])
        relative8 = grid8 - centre_f[:, None]
        moving8 = _sampler(*m_levels[8.0])
        best = (np.inf, candidates[0], torch.zeros(3))
        for candidate in candidates:  # each refined rigidly at 8 mm, then compared
            turn = torch.zeros(3, requires_grad=True)
            move = torch.zeros(3, requires_grad=True)
            optimizer = _Adam([turn, move], lr=0.02)
            for step in range(16):
                target = centre_m[:, None] + _rotation(turn) @ candidate @ relative8
                loss = loss_of(values8, moving8(target + radius * move[:, None]))
                if step == 15:  # the last evaluation scores the candidate
                    break
                loss.backward()
                optimizer.step()
            if float(loss.detach()) < best[0]:
                best = (float(loss.detach()), (_rotation(turn) @ candidate).detach(), move.detach())
        _, start, move = best
        centre_m = centre_m + radius * move
    else:
        given = torch.as_tensor(np.asarray(initial, float)[:3], dtype=torch.float32)
        start, centre_m = given[:, :3], given[:, :3] @ centre_f + given[:, 3]
    matrix = start.clone().requires_grad_(True)
    rotation = torch.zeros(3, requires_grad=True)
    shift = torch.zeros(3, requires_grad=True)  # in units of the radius

    def linear() -> torch.Tensor:
        return _rotation(rotation) @ start if model == "rigid" else matrix

    generator = torch.Generator().manual_seed(seed)
    with progress_for(progress, sum(steps), "affine") as shown:
        for mm, count in zip((4.0, 2.0), steps, strict=True):
            grid, values = _foreground(*f_levels[mm])
            if grid.shape[1] > points:
                chosen = torch.randperm(grid.shape[1], generator=generator)[:points]
                grid, values = grid[:, chosen], values[chosen]
            relative = grid - centre_f[:, None]
            moving_at = _sampler(*m_levels[mm])
            parameters = [rotation, shift] if model == "rigid" else [matrix, shift]
            optimizer = _Adam(parameters, lr=0.01)
            for _ in range(count):
                warped = moving_at(
                    centre_m[:, None] + linear() @ relative + radius * shift[:, None]
                )
                loss = loss_of(values, warped)
                loss.backward()
                optimizer.step()
                shown.update(note=f"loss {float(loss.detach()):.4f}")
    with torch.no_grad():
        m = linear()
        world = np.eye(4)
        world[:3, :3] = m.numpy()
        world[:3, 3] = (centre_m - m @ centre_f + radius * shift).numpy()
    return world


def affine_align(
    fixed: Image,
    moving: Image,
    fixed_values: np.ndarray,
    moving_values: np.ndarray,
    model: AffineModel = "affine",
    similarity: str = "ncc",
    progress: ProgressLike = False,
    initial: np.ndarray | None = None,
) -> np.ndarray:
    """The affine stage: :func:`linear_align` for 3-D images, :func:`sitk_affine_align` for
    2-D ones (rigid as affine there).

    Returns
    -------
    numpy.ndarray
        ``(ndim+1, ndim+1)`` fixed RAS world -> moving RAS world (mm).
    """
    if fixed.ndim == 3:
        return linear_align(fixed, moving, fixed_values, moving_values, model, similarity,
                            progress=progress, initial=initial)  # fmt: skip
    return sitk_affine_align(
        fixed, moving, fixed_values, moving_values, progress=progress, initial=initial
    )


def sitk_affine_align(
    fixed: Image,
    moving: Image,
    fixed_values: np.ndarray,
    moving_values: np.ndarray,
    iterations: int = 200,
    seed: int = 1,
    progress: ProgressLike = False,
    initial: np.ndarray | None = None,
    sampling: float = 0.1,
) -> np.ndarray:
    """Affine pre-alignment with SimpleITK (Mattes mutual information, 3 resolutions).

    The transform is initialised by aligning the intensity centres of mass, then optimised
    (regular-step gradient descent, physical-shift scales, shrink 4/2/1 with smoothing 2/1/0
    voxels, 10 % of voxels sampled with a fixed seed).

    Parameters
    ----------
    fixed, moving : Image
        The grids (geometry only).
    fixed_values, moving_values : numpy.ndarray
        Their normalised intensities, on their own grids.
    iterations : int
        Optimiser iterations per resolution.
    seed : int
        Sampling seed (the result is reproducible for a given seed and thread count).
    progress : bool or callable
        Show the optimiser's iterations (at most ``3 * iterations``; see
        :mod:`eoir.progress`).
    initial : numpy.ndarray, optional
        ``(ndim+1, ndim+1)`` fixed RAS world -> moving RAS world start (instead of the centres
        of mass).
    sampling : float
        Fraction of the voxels the metric samples.

    Returns
    -------
    numpy.ndarray
        ``(ndim+1, ndim+1)`` matrix mapping fixed RAS world points (mm) to moving RAS world
        points (in 2-D, in-plane points).
    """
    import SimpleITK as sitk  # imported on use: slow to import

    f = as_sitk_image(fixed_values.astype(np.float32), fixed)
    m = as_sitk_image(moving_values.astype(np.float32), moving)
    ndim = fixed.ndim
    if initial is None:
        start = sitk.CenteredTransformInitializer(
            f, m, sitk.AffineTransform(ndim), sitk.CenteredTransformInitializerFilter.MOMENTS
        )
    else:  # the given start, centred on the fixed image (better conditioned for the optimiser)
        centre = f.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in f.GetSize()])
        start = transform_to_sitk(initial, np.array(centre))
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(sampling, seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-4, numberOfIterations=iterations, relaxationFactor=0.5
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([4, 2, 1])
    method.SetSmoothingSigmasPerLevel([2, 1, 0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    method.SetInitialTransform(start, inPlace=False)
    shown = progress_for(progress, 3 * iterations, "affine")
    method.AddCommand(sitk.sitkIterationEvent, lambda: shown.update())
    with shown:
        transform = method.Execute(f, m)
        shown.total = shown.done  # it stops when it converges
        shown.update(shown.done)
    return world_from_sitk(transform)
