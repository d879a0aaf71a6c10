"""Getting a user's images ready: checks, intensity presets and affine pre-alignment.

Normalisation is internal only: outputs keep the moving image's own intensities.
"""

from __future__ import annotations

import numpy as np
import torch

from eoir.errors import InputError
from eoir.io import Image, as_sitk_image
from eoir.spatial import lps_affine

__all__ = ["PRESETS", "affine_align", "check_finite", "is_constant", "normalise", "percentiles"]

PRESETS = ("mri", "ct", "lung", "none")
CT_WINDOWS = {
    "ct": (-500.0, 800.0),  # HU, the paper's abdomen window
    "lung": (-1000.0, 200.0),  # HU, keeps the parenchyma and its vessels (at -900..-500 HU)
}


def check_finite(image: Image, what: str = "image") -> None:
    """Raise :class:`InputError` naming the file if any voxel is NaN or infinite."""
    if np.issubdtype(image.array.dtype, np.floating) and not np.isfinite(image.array).all():
        count = int((~np.isfinite(image.array)).sum())
        raise InputError(f"{image.path or what}: {what} has {count} NaN or infinite voxels")


def is_constant(array: np.ndarray) -> bool:
    """Whether every voxel has the same value (nothing to register)."""
    return array.size == 0 or bool(array.min() == array.max())


def normalise(array: np.ndarray, preset: str = "mri") -> np.ndarray:
    """Map intensities to about [0, 1] for the network and the similarity losses.

    Parameters
    ----------
    array : numpy.ndarray
        ``(X, Y, Z)`` intensities in any dtype (not modified).
    preset : {"mri", "ct", "lung", "none"}
        ``mri``: robust min-max, the 0.5th and 99.5th percentiles to 0 and 1, clipped;
        ``ct``: the HU window [-500, 800] to [0, 1], clipped (the paper's, for abdomen CT: it
        blanks the lungs); ``lung``: the HU window [-1000, 200] for thorax CT;
        ``none``: unchanged (as float32).

    Returns
    -------
    numpy.ndarray
        ``(X, Y, Z)`` float32, a new array.
    """
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
    x = np.array(array, dtype=np.float32)  # a native-order copy, scaled in place below
    if preset == "none":
        return x
    if preset in CT_WINDOWS:
        lo, hi = CT_WINDOWS[preset]
    else:
        lo, hi = percentiles(array if array.dtype.kind in "iu" else x, (0.5, 99.5))
        if hi <= lo:
            lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return np.zeros_like(x)
    # in place and on all cores (numpy's three passes took 0.13 s for a brain volume); the
    # scalars are float32 values, so the arithmetic is numpy's float32 arithmetic
    scale = float(np.float32(hi) - np.float32(lo))
    torch.from_numpy(x).sub_(float(np.float32(lo))).div_(scale).clamp_(0.0, 1.0)
    return x


_HISTOGRAM_LEVELS = 1 << 20  # integer images spanning at most this many values: a histogram


def percentiles(array: np.ndarray, q: tuple[float, ...]) -> tuple[float, ...]:
    """``numpy.percentile(array, q)`` (linear interpolation) as floats.

    Integer images spanning up to 2**20 values (MR and CT volumes) take their order statistics
    from a histogram (one counting pass; exact) instead of numpy's partial sorts of a copy.
    """
    if array.dtype.kind not in "iu" or array.size == 0:
        return tuple(float(v) for v in np.percentile(array, q))
    low, high = int(array.min()), int(array.max())
    if high - low >= _HISTOGRAM_LEVELS:  # in float64: numpy's integer b - a can wrap around
        return tuple(float(v) for v in np.percentile(array.astype(np.float64), q))
    native = np.asarray(array, dtype=array.dtype.newbyteorder("="))
    # offsets from the minimum in the same width (a signed difference wraps to the right
    # unsigned value), counted
    offsets = (native.ravel() - native.dtype.type(low)).view(f"u{native.dtype.itemsize}")
    if offsets.dtype.itemsize == 8:
        offsets = offsets.astype(np.intp)
    cumulative = np.cumsum(np.bincount(offsets))
    n = array.size
    out = []
    for quantile in np.asarray(q, dtype=np.float64) / 100:
        virtual = (n - 1) * quantile  # numpy's "linear" method
        previous = int(min(max(np.floor(virtual), 0), n - 1))
        following = min(previous + 1, n - 1)
        a, b = (
            float(low + np.searchsorted(cumulative, k, side="right")) for k in (previous, following)
        )
        t = float(virtual - previous)
        out.append(b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t)  # numpy's lerp
    return tuple(out)


def affine_align(
    fixed: Image,
    moving: Image,
    fixed_values: np.ndarray,
    moving_values: np.ndarray,
    iterations: int = 200,
    seed: int = 1,
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

    Returns
    -------
    numpy.ndarray
        ``(4, 4)`` matrix mapping fixed RAS world points (mm) to moving RAS world points.
    """
    import SimpleITK as sitk  # imported on use: slow to import

    f = as_sitk_image(fixed_values.astype(np.float32), fixed)
    m = as_sitk_image(moving_values.astype(np.float32), moving)
    initial = sitk.CenteredTransformInitializer(
        f, m, sitk.AffineTransform(3), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.1, seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-4, numberOfIterations=iterations, relaxationFactor=0.5
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([4, 2, 1])
    method.SetSmoothingSigmasPerLevel([2, 1, 0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    method.SetInitialTransform(initial, inPlace=False)
    transform = method.Execute(f, m)
    # the transform maps fixed LPS points to moving LPS points; read its matrix off 4 points
    origin = np.array(transform.TransformPoint((0.0, 0.0, 0.0)))
    lps = np.eye(4)
    for axis in range(3):
        unit = [0.0, 0.0, 0.0]
        unit[axis] = 1.0
        lps[:3, axis] = np.array(transform.TransformPoint(tuple(unit))) - origin
    lps[:3, 3] = origin
    flip = lps_affine(np.eye(4))  # diag(-1, -1, 1, 1)
    return flip @ lps @ flip
