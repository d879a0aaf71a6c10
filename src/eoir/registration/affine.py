"""Affine pre-alignment of a pair in world space (SimpleITK, mutual information)."""

from __future__ import annotations

import numpy as np

from eoir.image import Image
from eoir.io import as_sitk_image
from eoir.progress import ProgressLike, progress_for
from eoir.spatial import lps_affine

__all__ = ["affine_align"]


def affine_align(
    fixed: Image,
    moving: Image,
    fixed_values: np.ndarray,
    moving_values: np.ndarray,
    iterations: int = 200,
    seed: int = 1,
    progress: ProgressLike = False,
    initial: np.ndarray | None = None,
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
        flip = lps_affine(np.eye(ndim + 1))
        lps = flip @ np.asarray(initial, dtype=float) @ flip
        centre = np.array(
            f.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in f.GetSize()])
        )
        start = sitk.AffineTransform(ndim)
        start.SetCenter(centre.tolist())
        start.SetMatrix(lps[:ndim, :ndim].ravel().tolist())
        # y = A (x - c) + c + t = A x + b  =>  t = b - c + A c
        start.SetTranslation((lps[:ndim, ndim] - centre + lps[:ndim, :ndim] @ centre).tolist())
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
    method.SetInitialTransform(start, inPlace=False)
    shown = progress_for(progress, 3 * iterations, "affine")
    method.AddCommand(sitk.sitkIterationEvent, lambda: shown.update())
    with shown:
        transform = method.Execute(f, m)
        shown.total = shown.done  # it stops when it converges
        shown.update(shown.done)
    # the transform maps fixed LPS points to moving LPS points; read its matrix off ndim + 1
    # points
    origin = np.array(transform.TransformPoint((0.0,) * ndim))
    lps = np.eye(ndim + 1)
    for axis in range(ndim):
        unit = [0.0] * ndim
        unit[axis] = 1.0
        lps[:ndim, axis] = np.array(transform.TransformPoint(tuple(unit))) - origin
    lps[:ndim, ndim] = origin
    flip = lps_affine(np.eye(ndim + 1))  # diag(-1, -1[, 1], 1)
    return flip @ lps @ flip
