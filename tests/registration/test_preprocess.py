"""Intensity normalisation: robust percentiles, presets, inputs left as they were."""

from __future__ import annotations

import numpy as np
import pytest

from eoir.registration.preprocess import PRESETS, normalise, percentiles


@pytest.mark.parametrize("dtype", ["int16", ">i2", "uint8", "int8", "uint16", "int32", "int64"])
@pytest.mark.parametrize("size", [1, 2, 7, 1000, 30001])
def test_counted_percentiles_equal_numpys(dtype, size):
    info = np.iinfo(np.dtype(dtype))
    rng = np.random.default_rng(size)
    array = rng.integers(max(info.min, -3000), min(info.max, 3000), size, endpoint=True)
    array = array.astype(dtype)
    q = (0.5, 99.5, 0, 100, 37.3)
    want = [float(v) for v in np.percentile(array.astype(np.float64), q)]
    assert percentiles(array, q) == want
    # a Fortran-ordered volume (as nibabel reads NIfTI) is counted without a copy: same values
    volume = np.asfortranarray(np.resize(array, (3, 5, 7)))
    assert percentiles(volume, q) == [float(v) for v in np.percentile(volume.astype("f8"), q)]


def test_wide_integer_spans_and_floats_fall_back_to_numpy():
    wide = np.array([0, 5, 1 << 30, -(1 << 29)], dtype=np.int64)
    floats = np.random.default_rng(0).normal(size=999).astype(np.float32)
    for array in (wide, floats):
        want = [float(v) for v in np.percentile(array.astype(np.float64), (0.5, 99.5))]
        np.testing.assert_allclose(percentiles(array, (0.5, 99.5)), want, rtol=1e-6)


def test_percentiles_of_a_wide_integer_span_do_not_wrap_around():
    """CT stored as int16 with -32768 padding: numpy's interpolation in int16 would wrap."""
    array = np.full((10, 10, 10), -32768, np.int16)
    array[:, :, 5:] = np.arange(500, dtype=np.int16).reshape(10, 10, 5) * 6
    out = normalise(array, "mri")
    x = array.astype(np.float64)
    lo, hi = np.percentile(x, [0.5, 99.5])
    np.testing.assert_allclose(out, np.clip((x - lo) / (hi - lo), 0, 1), atol=1e-6)


def _reference_mri(array: np.ndarray) -> np.ndarray:
    x = np.asarray(array, dtype=np.float32)
    lo, hi = (float(v) for v in np.percentile(x, [0.5, 99.5]))
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


@pytest.mark.parametrize("dtype", ["int16", ">i2", "uint8", "int32", "float32", "float64"])
def test_mri_normalisation_is_the_clipped_robust_min_max_and_leaves_the_input(dtype):
    rng = np.random.default_rng(3)
    array = (rng.gamma(2.0, 300.0, (17, 19, 23)) - 50).astype(dtype)
    before = array.copy()
    out = normalise(array, "mri")
    assert out.dtype == np.float32 and out.shape == array.shape
    assert np.array_equal(out, _reference_mri(array))
    assert np.array_equal(array, before)  # a float32 input is not scaled in place
    assert out.min() == 0.0 and out.max() == 1.0


def test_ct_windows_none_and_constant_images():
    hu = np.array([[[-2000.0, -500.0, 150.0, 800.0, 3000.0]]], dtype=np.float32)
    lo, hi = PRESETS["ct"]
    np.testing.assert_array_equal(normalise(hu, "ct"), np.clip((hu - lo) / (hi - lo), 0, 1))
    assert np.array_equal(normalise(hu, "none"), hu)
    assert not np.shares_memory(normalise(hu, "none"), hu)
    assert np.array_equal(normalise(np.full((3, 4, 5), 7, np.int16), "mri"), np.zeros((3, 4, 5)))
    with pytest.raises(ValueError, match="preset"):
        normalise(hu, "pet")
