"""Images of random contrast synthesised from label maps, for training a contrast-agnostic model.

The recipe follows SynthMorph (Hoffmann et al., IEEE TMI 2022; the 2024 joint model adds noise,
thick slices and cropping): every image of a pair is drawn afresh from a label map, so the two
images of a pair have unrelated contrasts and the network cannot rely on any one of them. One
image is, in order:

1. **geometry**: a random affine (rotation, scaling, shift) and a smooth random deformation (a
   stationary velocity drawn on a coarse grid, upsampled and integrated by scaling and squaring)
   place the output grid in the label map; labels are sampled there (nearest). Two images of
   one map drawn under two geometries correspond exactly (:func:`true_field`: a known field
   that can supervise training);
2. **contrast**: each label gets a mean and a standard deviation drawn afresh, voxels a Gaussian
   value of their label's; extra-cerebral labels are sometimes removed (skull stripping) and the
   background sometimes zero;
3. **artefacts**: blur, a smooth multiplicative bias field, a gamma curve, noise, thick slices
   along a random axis (partial volume: averaged slabs, resampled back), a cropped field of view;
4. **normalisation**: the ``mri`` preset's robust min-max (the 0.5th and 99.5th percentiles to 0
   and 1), as :func:`eoir.registration.preprocess.normalise` does to real images.

Every draw comes from a ``torch.Generator``, so an image is a pure function of its seed (a
resumed training run sees exactly the images an uninterrupted one would). Shapes are
``(1, 1, X, Y, Z)``; the generator is 3-D, runs on the label map's device, in float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn.functional as F

from eoir.losses.filters import gaussian_blur
from eoir.spatial import integrate, resize_field, sample

__all__ = [
    "EXTRA_CEREBRAL_FROM",
    "LEFT_RIGHT",
    "NON_BRAIN",
    "Geometry",
    "SynthOptions",
    "bias_field",
    "brain_labels",
    "random_affine",
    "random_contrast",
    "random_geometry",
    "random_velocity",
    "robust_minmax",
    "sample_labels",
    "source_positions",
    "synthesise_image",
    "thick_slices",
    "tissue_groups",
    "true_field",
]

# FreeSurfer label values: 24 is extra-ventricular CSF; 500 and above (SynthSeg's whole-head
# maps: 502-530) are skull, scalp, eyes and other head tissue. Neither is a brain structure.
EXTRA_CEREBRAL_FROM = 500
NON_BRAIN = (0, 24)
# left-right pairs of FreeSurfer structures (the left value, the right one): one tissue, so real
# images give them one contrast
LEFT_RIGHT = {
    2: 41, 3: 42, 4: 43, 5: 44, 7: 46, 8: 47, 10: 49, 11: 50, 12: 51, 13: 52, 17: 53, 18: 54,
    26: 58, 28: 60, 30: 62,
}  # fmt: skip


def tissue_groups(values: Sequence[int]) -> list[int]:
    """For each label value, the index of its tissue group (a right structure takes its left
    twin's index when the twin is among ``values``)."""
    index = {int(v): i for i, v in enumerate(values)}
    right_to_left = {r: left for left, r in LEFT_RIGHT.items()}
    return [index.get(right_to_left.get(int(v), -1), i) for i, v in enumerate(values)]


def brain_labels(values: Sequence[int]) -> list[int]:
    """The brain structures among label values (no background, CSF 24 or head tissue)."""
    return sorted(int(v) for v in values if v not in NON_BRAIN and v < EXTRA_CEREBRAL_FROM)


@dataclass
class SynthOptions:
    """Ranges of every random draw of :func:`synthesise_image` (one home for them).

    Sizes are in output voxels unless named ``_mm``; intensities on a 0-1 scale. A value drawn
    "up to x" is uniform in ``[0, x]``; a probability is per image.
    """

    shape: list[int] = field(default_factory=lambda: [104, 96, 80])  # output grid, voxels
    axes: str = "ASL"  # voxel axis codes of the output grid (nibabel's)
    rotation: float = 3.0  # degrees, up to, about each axis (residuals of an affine stage)
    scaling: float = 0.03  # up to +-, per axis (log-uniform)
    shift_mm: float = 3.0  # up to +-, per axis
    velocity_sd: float = 1.5  # up to, output voxels, drawn on a coarse grid
    velocity_spacing_mm: float = 32.0  # coarse grid spacing of the velocity
    mean: list[float] = field(default_factory=lambda: [0.1, 0.9])  # per-label mean range
    sd: list[float] = field(default_factory=lambda: [0.02, 0.1])  # per-label SD range
    background_zero: float = 0.5  # probability of a zero background
    skull_strip: float = 0.5  # probability of removing labels >= 500 (and CSF 24)
    blur: float = 1.0  # Gaussian sigma, up to, output voxels
    bias_sd: float = 0.3  # log bias field SD, up to
    bias_spacing_mm: float = 40.0
    gamma_sd: float = 0.25  # gamma = exp(N(0, gamma_sd))
    noise: float = 0.06  # Gaussian noise SD, up to, of the 0-1 range
    thick_slices: float = 0.3  # probability of thick slices along a random axis
    slice_stride: int = 4  # slab thickness, up to, output voxels (from 2)
    crop: float = 0.3  # probability of cropping the field of view along one axis
    crop_fraction: float = 0.2  # up to, of the axis
    same_map: float = 0.5  # probability that both images of a pair come from one label map
    same_contrast: float = 0.0  # probability that they share per-label intensities (a start)
    tissues: float = 0.5  # probability that left and right structures share a contrast

    @classmethod
    def from_dict(cls, values: dict) -> SynthOptions:
        """Options from a config section (keys of this class only)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def as_dict(self) -> dict:
        """The options as a plain mapping (a config section)."""
        return asdict(self)


def _uniform(generator: torch.Generator, low: float, high: float, n: int = 1) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


def _chance(generator: torch.Generator, p: float) -> bool:
    return bool(torch.rand((), generator=generator) < p)


def _coarse_noise(
    generator: torch.Generator,
    channels: int,
    shape: Sequence[int],
    sd: float,
    spacing: float,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Gaussian noise of SD ``sd`` drawn (on the CPU) on a grid ``spacing`` output voxels apart
    (at least 1), upsampled linearly onto ``shape`` on ``device``: ``(1, channels, *shape)``."""
    coarse = [max(2, math.ceil(n / max(spacing, 1.0)) + 1) for n in shape]
    values = torch.randn(1, channels, *coarse, generator=generator) * sd
    return F.interpolate(values.to(device), size=list(shape), mode="trilinear", align_corners=True)


def _smooth_exp(velocity: torch.Tensor, factor: int = 2, steps: int = 7) -> torch.Tensor:
    """Scaling and squaring of a smooth velocity on a grid ``factor`` times coarser per axis,
    the displacement resized back (``(1, 3, *shape)``, output voxels): for the synthetic
    velocities (drawn 8 or more output voxels apart) 5x faster than on the full grid, with the
    inverse built the same way consistent to 0.012 voxel on average (0.006 on the full grid;
    half resolution, velocity SD 1.5; benchmarks/kernel_swaps.py)."""
    shape = velocity.shape[2:]
    coarse = [max(2, math.ceil(n / factor)) for n in shape]
    return resize_field(integrate(resize_field(velocity, coarse), steps), shape)


def _centred_grid(shape: Sequence[int], device: torch.device | str) -> torch.Tensor:
    """``(1, 3, *shape)`` float32 voxel coordinates about the grid's centre."""
    axes = [torch.arange(n, device=device, dtype=torch.float32) - (n - 1) / 2 for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))[None]


def random_affine(
    generator: torch.Generator, options: SynthOptions, spacing_mm: float = 1.0
) -> torch.Tensor:
    """A random ``(4, 4)`` affine about the grid centre, in voxels of the output grid.

    Parameters
    ----------
    generator : torch.Generator
        Source of the draws.
    options : SynthOptions
        ``rotation`` (degrees), ``scaling`` and ``shift_mm`` ranges.
    spacing_mm : float
        Output voxel size, mm (converts the shift).

    Returns
    -------
    torch.Tensor
        ``(4, 4)`` float64 matrix acting on centred voxel coordinates.
    """
    angles = torch.deg2rad(_uniform(generator, -options.rotation, options.rotation, 3))
    matrix = torch.eye(3, dtype=torch.float64)
    for axis, angle in enumerate(angles):
        c, s = math.cos(float(angle)), math.sin(float(angle))
        i, j = [a for a in range(3) if a != axis]
        turn = torch.eye(3, dtype=torch.float64)
        turn[i, i], turn[i, j], turn[j, i], turn[j, j] = c, -s, s, c
        matrix = turn @ matrix
    log_scale = _uniform(generator, math.log1p(-options.scaling), math.log1p(options.scaling), 3)
    matrix = matrix @ torch.diag(torch.exp(log_scale))
    out = torch.eye(4, dtype=torch.float64)
    out[:3, :3] = matrix
    out[:3, 3] = _uniform(generator, -options.shift_mm, options.shift_mm, 3) / spacing_mm
    return out


def random_velocity(
    generator: torch.Generator,
    shape: Sequence[int],
    sd: float,
    spacing: float,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """A smooth random stationary velocity: Gaussian noise on a coarse grid, upsampled.

    Parameters
    ----------
    generator : torch.Generator
        Source of the draws (on the CPU).
    shape : sequence of int
        ``(X, Y, Z)`` output grid.
    sd : float
        Standard deviation of the coarse values, voxels of the output grid.
    spacing : float
        Coarse grid spacing, output voxels (at least 1).

    Returns
    -------
    torch.Tensor
        ``(1, 3, X, Y, Z)`` velocity in output voxels.
    """
    return _coarse_noise(generator, 3, shape, sd, spacing, device)


@dataclass(frozen=True)
class Geometry:
    """Where a synthetic image's voxels read its label map: ``p -> A (c + disp(p))``, with ``c``
    the voxel's coordinates about the output grid's centre (then the map's zoom, centre and head
    alignment, :func:`sample_labels`).

    Attributes
    ----------
    affine : torch.Tensor
        ``(4, 4)`` float64 on centred output voxel coordinates (:func:`random_affine`).
    velocity : torch.Tensor
        ``(1, 3, X, Y, Z)`` stationary velocity, output voxels (:func:`random_velocity`).
    disp : torch.Tensor
        ``(1, 3, X, Y, Z)`` its time-1 displacement (scaling and squaring, 7 steps, on a grid
        twice as coarse).
    """

    affine: torch.Tensor
    velocity: torch.Tensor
    disp: torch.Tensor


def random_geometry(
    generator: torch.Generator,
    options: SynthOptions,
    out_mm: float = 2.0,
    device: torch.device | str = "cpu",
) -> Geometry:
    """A random affine and smooth deformation of the output grid ``options.shape``.

    Parameters
    ----------
    generator : torch.Generator
        Source of the draws (on the CPU): the affine, the velocity's SD, the velocity.
    options : SynthOptions
        ``rotation``, ``scaling``, ``shift_mm``, ``velocity_sd``, ``velocity_spacing_mm``.
    out_mm : float
        Output voxel size, mm.
    device : torch.device or str
        Where the velocity is upsampled and integrated.

    Returns
    -------
    Geometry
    """
    shape = [int(n) for n in options.shape]
    affine = random_affine(generator, options, out_mm)
    sd = float(_uniform(generator, 0.0, options.velocity_sd))
    velocity = random_velocity(generator, shape, sd, options.velocity_spacing_mm / out_mm, device)
    return Geometry(affine, velocity, _smooth_exp(velocity))


def true_field(fixed: Geometry, moving: Geometry) -> torch.Tensor:
    """The exact correspondence of two images drawn from one label map (one head, two
    geometries): the displacement ``u`` with fixed voxel ``p`` showing what moving voxel
    ``p + u(p)`` shows, the convention of :func:`eoir.spatial.warp`.

    Both geometries read the map through the same zoom, centre and head alignment, which cancel:
    ``p + u(p) = psi_m^-1(A_m^-1 A_f psi_f(p))`` with ``psi = id + disp`` on centred
    coordinates, and ``psi_m^-1`` the integral of the negated velocity.

    Parameters
    ----------
    fixed, moving : Geometry
        The two images' geometries (:func:`random_geometry`), on one grid.

    Returns
    -------
    torch.Tensor
        ``(1, 3, X, Y, Z)`` float32 displacement, output voxels.
    """
    shape = fixed.disp.shape[2:]
    device = fixed.disp.device
    half = torch.tensor([(n - 1) / 2 for n in shape], device=device).view(1, 3, 1, 1, 1)
    grid = _centred_grid(shape, device)
    matrix = torch.linalg.inv(moving.affine) @ fixed.affine
    linear = matrix[:3, :3].to(device, torch.float32)
    offset = matrix[:3, 3].to(device, torch.float32).view(1, 3, 1, 1, 1)
    inside = torch.einsum("ij,bj...->bi...", linear, grid + fixed.disp) + offset
    inverse = _smooth_exp(-moving.velocity)
    target = inside + sample(inverse, inside + half, padding="border")
    return target - grid


def sample_labels(
    labels: torch.Tensor,
    shape: Sequence[int],
    affine: torch.Tensor,
    zoom: float | Sequence[float],
    centre: Sequence[float],
    disp: torch.Tensor | None = None,
    to_source: torch.Tensor | None = None,
) -> torch.Tensor:
    """Labels of a source map at the output grid's voxels mapped into it (nearest).

    Output voxel ``p`` reads source voxel ``centre + Z A (p + disp(p) - c_out)``, with ``c_out``
    the output grid's centre and ``Z = diag(zoom)``.

    Parameters
    ----------
    labels : torch.Tensor
        ``(1, 1, *source)`` label indices (any numeric dtype).
    shape : sequence of int
        ``(X, Y, Z)`` output grid.
    affine : torch.Tensor
        ``(4, 4)`` on centred output voxel coordinates (:func:`random_affine`).
    zoom : float or sequence of float
        Source voxels per output voxel (per axis).
    centre : sequence of float
        Source voxel that the output grid's centre maps to (before the affine's shift).
    disp : torch.Tensor, optional
        ``(1, 3, X, Y, Z)`` deformation in output voxels, applied before the affine.
    to_source : torch.Tensor, optional
        ``(4, 4)`` from the frame ``centre`` is given in (a reference map's voxels) to the
        source map's voxels (an alignment of the two heads); identity by default.

    Returns
    -------
    torch.Tensor
        ``(1, 1, X, Y, Z)`` int64 label indices (0 outside the source map).
    """
    positions = source_positions(shape, affine, zoom, centre, disp, to_source, labels.device)
    return _nearest(labels, positions)


def _nearest(labels: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``labels`` ``(1, 1, *source)`` at the nearest voxels of ``positions`` ``(1, 3, *out)``
    (0 outside): a gather from the map as stored, no float copy of it (the same labels as
    ``sample(labels.float(), positions, mode="nearest")``, 4x faster for a 256^3 uint8 map;
    benchmarks/kernel_swaps.py)."""
    size = labels.shape[2:]
    index = positions[0].round().long()
    inside = torch.ones(index.shape[1:], dtype=torch.bool, device=index.device)
    flat = torch.zeros(index.shape[1:], dtype=torch.long, device=index.device)
    for axis, n in enumerate(size):
        inside &= (index[axis] >= 0) & (index[axis] < n)
        flat = flat * n + index[axis].clamp(0, n - 1)
    values = labels.reshape(-1)[flat].long()
    return torch.where(inside, values, 0)[None, None]


def source_positions(
    shape: Sequence[int],
    affine: torch.Tensor,
    zoom: float | Sequence[float],
    centre: Sequence[float],
    disp: torch.Tensor | None = None,
    to_source: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """The source voxel each output voxel reads (:func:`sample_labels`, same parameters).

    Returns
    -------
    torch.Tensor
        ``(1, 3, X, Y, Z)`` float32 fractional source voxel coordinates.
    """
    grid = _centred_grid(shape, device)
    if disp is not None:
        grid = grid + disp.to(device)
    scale = torch.as_tensor(zoom, dtype=torch.float64).expand(3)[:, None]
    matrix = scale * affine[:3, :3]
    offset = torch.as_tensor(centre, dtype=torch.float64) + scale[:, 0] * affine[:3, 3]
    if to_source is not None:
        outer = torch.as_tensor(to_source, dtype=torch.float64)
        matrix, offset = outer[:3, :3] @ matrix, outer[:3, :3] @ offset + outer[:3, 3]
    matrix, offset = matrix.to(device, torch.float32), offset.to(device, torch.float32)
    return torch.einsum("ij,bj...->bi...", matrix, grid) + offset.view(1, 3, 1, 1, 1)


def random_contrast(
    generator: torch.Generator,
    labels: torch.Tensor,
    classes: int,
    options: SynthOptions,
    removed: torch.Tensor | None = None,
    groups: torch.Tensor | None = None,
    palette: torch.Generator | None = None,
) -> torch.Tensor:
    """Gaussian intensities per label: ``mean[l] + sd[l] * N(0, 1)`` with fresh means and SDs.

    Parameters
    ----------
    generator : torch.Generator
        Source of the draws.
    labels : torch.Tensor
        ``(1, 1, X, Y, Z)`` label indices ``0..classes-1`` (0: background).
    removed : torch.Tensor, optional
        ``(classes,)`` bool: indices to render as zero (skull stripping).
    groups : torch.Tensor, optional
        ``(classes,)`` int64 tissue group of each index (:func:`tissue_groups`): with
        probability ``options.tissues`` the labels of a group share a mean and SD.
    palette : torch.Generator, optional
        Source of the means, the SDs and the tissue and background choices instead of
        ``generator`` (the voxels' noise still comes from ``generator``): two images given
        palettes in the same state share their contrast.

    Returns
    -------
    torch.Tensor
        ``(1, 1, X, Y, Z)`` float32 image.
    """
    draw = generator if palette is None else palette
    means = _uniform(draw, *options.mean, classes).float()
    sds = _uniform(draw, *options.sd, classes).float()
    if groups is not None and _chance(draw, options.tissues):
        means, sds = means[groups], sds[groups]
    if _chance(draw, options.background_zero):
        means[0], sds[0] = 0.0, 0.0
    if removed is not None:
        means[removed], sds[removed] = 0.0, 0.0
    noise = torch.randn(labels.shape, generator=generator).to(labels.device)
    index = labels.clamp(0, classes - 1)
    return means.to(labels.device)[index] + sds.to(labels.device)[index] * noise


def bias_field(
    generator: torch.Generator, shape: Sequence[int], sd: float, spacing: float
) -> torch.Tensor:
    """A smooth positive multiplicative field: ``exp`` of upsampled coarse Gaussian noise.

    Returns
    -------
    torch.Tensor
        ``(1, 1, X, Y, Z)`` float32 on the CPU.
    """
    return torch.exp(_coarse_noise(generator, 1, shape, sd, spacing))


def thick_slices(image: torch.Tensor, axis: int, stride: int) -> torch.Tensor:
    """Simulate thick slices: average slabs of ``stride`` planes along ``axis`` (partial volume),
    then resample linearly back to the grid.

    Parameters
    ----------
    image : torch.Tensor
        ``(1, 1, X, Y, Z)``.
    axis : int
        Spatial axis, 0-2.
    stride : int
        Slab thickness, voxels.

    Returns
    -------
    torch.Tensor
        ``(1, 1, X, Y, Z)``.
    """
    if stride <= 1:
        return image
    kernel = [1, 1, 1]
    kernel[axis] = stride
    slabs = F.avg_pool3d(image, kernel, stride=kernel, ceil_mode=True)
    return F.interpolate(slabs, size=list(image.shape[2:]), mode="trilinear", align_corners=True)


def robust_minmax(image: torch.Tensor) -> torch.Tensor:
    """The ``mri`` preset: the 0.5th and 99.5th percentiles to 0 and 1, clipped."""
    flat = image.flatten()
    k_lo = max(1, round(0.005 * (flat.numel() - 1)) + 1)
    k_hi = max(1, round(0.995 * (flat.numel() - 1)) + 1)
    lo, hi = flat.kthvalue(k_lo).values, flat.kthvalue(k_hi).values
    if float(hi) <= float(lo):
        lo, hi = flat.min(), flat.max()
    if float(hi) <= float(lo):
        return torch.zeros_like(image)
    return ((image - lo) / (hi - lo)).clamp_(0.0, 1.0)


def synthesise_image(
    generator: torch.Generator,
    labels: torch.Tensor,
    extra_cerebral: torch.Tensor,
    options: SynthOptions,
    groups: torch.Tensor | None = None,
    spacing_mm: Sequence[float] = (1.0, 1.0, 1.0),
    out_mm: float = 2.0,
    centre: Sequence[float] | None = None,
    to_source: torch.Tensor | None = None,
    geometry: Geometry | None = None,
    palette: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One synthetic image and its label map from a source label map.

    Parameters
    ----------
    generator : torch.Generator
        Source of every draw (on the CPU); the image is a function of its state.
    labels : torch.Tensor
        ``(1, 1, *source)`` label indices ``0..K-1`` (0: background) of a map already in the
        output axis order (:class:`SynthOptions` ``axes``).
    extra_cerebral : torch.Tensor
        ``(K,)`` bool: the indices that skull stripping removes.
    options : SynthOptions
        The ranges.
    groups : torch.Tensor, optional
        ``(K,)`` tissue group of each index (:func:`tissue_groups`).
    spacing_mm : sequence of float
        Source voxel size per axis, mm.
    out_mm : float
        Output voxel size, mm (isotropic).
    centre : sequence of float, optional
        Voxel at the centre of the output grid (default: the source's centre).
    to_source : torch.Tensor, optional
        ``(4, 4)`` from the voxels ``centre`` is given in to the source's
        (:func:`sample_labels`).
    geometry : Geometry, optional
        The image's geometry, drawn beforehand by :func:`random_geometry` from the same
        generator (so that the caller knows it: :func:`true_field`); drawn here by default. The
        draws are the same either way.
    palette : torch.Generator, optional
        Source of the skull-stripping choice and the per-label contrast
        (:func:`random_contrast`); ``generator`` by default.

    Returns
    -------
    image : torch.Tensor
        ``(1, 1, *options.shape)`` float32 in [0, 1].
    label_map : torch.Tensor
        ``(1, 1, *options.shape)`` int64 label indices of the image's voxels (head tissue
        included even where stripped from the image: the caller picks the labels it scores).
    """
    shape = [int(n) for n in options.shape]
    classes = int(extra_cerebral.numel())
    device = labels.device
    if centre is None:
        centre = [(n - 1) / 2 for n in labels.shape[2:]]
    zoom = [out_mm / float(mm) for mm in spacing_mm]
    if geometry is None:
        geometry = random_geometry(generator, options, out_mm, device)
    label_map = sample_labels(
        labels, shape, geometry.affine, zoom, centre, geometry.disp, to_source
    )

    strip = _chance(generator if palette is None else palette, options.skull_strip)
    removed = extra_cerebral.clone() if strip else None
    image = random_contrast(generator, label_map, classes, options, removed, groups, palette)
    sigma = float(_uniform(generator, 0.0, options.blur))
    if sigma > 0.1:
        image = gaussian_blur(image, sigma, size=2 * math.ceil(2 * sigma) + 1)
    bias_sd = float(_uniform(generator, 0.0, options.bias_sd))
    bias = bias_field(generator, shape, bias_sd, options.bias_spacing_mm / out_mm)
    image = image.clamp_(min=0.0) * bias.to(device)
    image = image / image.max().clamp(min=1e-6)
    gamma = math.exp(float(torch.randn((), generator=generator)) * options.gamma_sd)
    image = image.pow(gamma)
    noise_sd = float(_uniform(generator, 0.0, options.noise))
    image = image + noise_sd * torch.randn(image.shape, generator=generator).to(device)
    if _chance(generator, options.thick_slices):
        axis = int(torch.randint(0, 3, (), generator=generator))
        stride = int(torch.randint(2, max(2, options.slice_stride) + 1, (), generator=generator))
        image = thick_slices(image, axis, stride)
    if _chance(generator, options.crop):
        axis = int(torch.randint(0, 3, (), generator=generator))
        cut = int(float(_uniform(generator, 0.0, options.crop_fraction)) * shape[axis])
        if cut > 0:
            index = [slice(None)] * 5
            index[2 + axis] = slice(0, cut) if _chance(generator, 0.5) else slice(-cut, None)
            image[tuple(index)] = 0.0
    return robust_minmax(image.clamp_(min=0.0)), label_map
