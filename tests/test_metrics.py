"""Metrics on hand-made inputs with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from eoir.metrics import (
    determinant_stats,
    dice_per_label,
    evaluation_labels,
    hd95,
    jacobian_stats,
    mean_dice,
    mean_hd95,
    tre,
)
from eoir.spatial import lps_affine
from helpers import smooth_field


def _maps():
    fixed = np.zeros((10, 12), dtype=np.int16)
    warped = np.zeros_like(fixed)
    moving = np.zeros_like(fixed)
    fixed[1:5, 1:5] = 1  # 16 voxels
    warped[1:5, 3:7] = 1  # 16 voxels, 8 shared -> Dice 0.5
    fixed[6:8, 6:8] = 2
    warped[6:8, 6:8] = 2  # identical -> 1
    fixed[9, 0:3] = 3  # only in fixed -> skipped by l2r, 0 in paper
    moving[:] = warped
    moving[0, 11] = 4  # only in moving; vanishes after warping
    return fixed, warped, moving


def test_dice_per_label_known_values():
    fixed, warped, _ = _maps()
    scores = dice_per_label(fixed, warped)
    assert scores == {1: 0.5, 2: 1.0, 3: 0.0}
    assert math.isnan(dice_per_label(fixed, warped, [9])[9])
    assert dice_per_label(fixed, warped, [9], empty=0.0)[9] == 0.0
    assert dice_per_label(torch.as_tensor(fixed), torch.as_tensor(warped), [1]) == {1: 0.5}


def test_mean_dice_conventions():
    fixed, warped, moving = _maps()
    # l2r: labels in both fixed and moving = {1, 2}
    assert evaluation_labels(fixed, moving) == [1, 2]
    assert mean_dice(fixed, warped, moving) == pytest.approx(0.75)
    # paper: union {1, 2, 3, 4}, absent labels count 0
    assert mean_dice(fixed, warped, moving, convention="paper") == pytest.approx(1.5 / 4)
    assert mean_dice(
        fixed, warped, moving, labels=[1, 2, 3, 4, 5], convention="paper"
    ) == pytest.approx(1.5 / 5)
    # a label present in both fixed and moving that vanishes after warping counts 0 in l2r
    vanished = warped.copy()
    vanished[vanished == 2] = 0
    assert mean_dice(fixed, vanished, moving) == pytest.approx(0.25)


def test_hd95_known_distances_with_anisotropic_spacing():
    a = np.zeros((12, 10, 8), bool)
    b = np.zeros_like(a)
    a[2] = True
    b[5] = True  # two full planes 3 voxels apart along axis 0
    assert hd95(a, b, spacing=(2.5, 1.0, 1.0)) == pytest.approx(7.5)
    assert hd95(a, b, spacing=(1.0, 2.5, 1.0)) == pytest.approx(3.0)
    c, d = np.zeros_like(a), np.zeros_like(a)
    c[:, 4] = True
    d[:, 6] = True  # planes 2 voxels apart along axis 1
    assert hd95(c, d, spacing=(1.0, 0.7, 3.0)) == pytest.approx(1.4)
    p, q = np.zeros_like(a), np.zeros_like(a)
    p[1, 1, 1] = True
    q[2, 3, 3] = True
    assert hd95(p, q, spacing=(1.0, 2.0, 0.5)) == pytest.approx(math.sqrt(1 + 16 + 1))
    assert hd95(a, a) == 0.0
    assert math.isnan(hd95(a, np.zeros_like(a)))


def test_hd95_of_shifted_box_is_the_shift():
    a = np.zeros((30, 30, 30), bool)
    a[8:20, 8:20, 8:20] = True
    b = np.roll(a, 2, axis=2)
    # every face point is within 2 voxels; the moved faces are exactly 2 away: 95th pct = 2 mm * 1.5
    assert hd95(a, b, spacing=(1.0, 1.0, 1.5)) == pytest.approx(3.0)


def test_mean_hd95_counts_l2r_labels_and_uses_moving_when_vanished():
    fixed = np.zeros((20, 20), np.int32)
    moving = np.zeros_like(fixed)
    fixed[2:6, 2:6] = 1
    moving[2:6, 5:9] = 1  # shifted 3 along axis 1
    fixed[10:14, 10:14] = 2
    moving[10:14, 10:14] = 2
    warped = moving.copy()
    assert mean_hd95(fixed, warped, moving) == pytest.approx((3.0 + 0.0) / 2)
    vanished = np.where(warped == 1, 0, warped)
    assert mean_hd95(fixed, vanished, moving) == pytest.approx(1.5)


def _l2r_sdlogj(disp: np.ndarray) -> float:
    """The Learn2Reg evaluator's formula (central differences, crop 2, log(J + 3))."""
    grad = np.array([-0.5, 0.0, 0.5])
    jac = np.zeros((3, 3, *disp.shape[1:]))
    for j in range(3):
        kernel = grad.reshape([3 if k == j else 1 for k in range(3)])
        for i in range(3):
            jac[i, j] = ndimage.correlate(disp[i], kernel, mode="constant", cval=0.0)
    jac += np.eye(3).reshape(3, 3, 1, 1, 1)
    jac = jac[:, :, 2:-2, 2:-2, 2:-2]
    det = (
        jac[0, 0] * (jac[1, 1] * jac[2, 2] - jac[1, 2] * jac[2, 1])
        - jac[0, 1] * (jac[1, 0] * jac[2, 2] - jac[1, 2] * jac[2, 0])
        + jac[0, 2] * (jac[1, 0] * jac[2, 1] - jac[1, 1] * jac[2, 0])
    )
    return float(np.log(np.clip(det + 3, 1e-9, 1e9)).std())


def test_jacobian_stats_identity_fold_and_l2r_convention():
    stats = jacobian_stats(np.zeros((3, 8, 8, 8)))
    assert stats == {"folding_percent": 0.0, "sdlogj": 0.0, "std_log_j": 0.0}
    # u_0 = -2 x_0 everywhere: J = -1, every voxel folds
    folded = np.zeros((3, 8, 8, 8))
    folded[0] = -2.0 * np.arange(8).reshape(8, 1, 1)
    assert jacobian_stats(folded)["folding_percent"] == 100.0
    assert math.isnan(jacobian_stats(folded)["std_log_j"])
    disp = smooth_field((20, 22, 24), 2.5, seed=3)[0].double().numpy()
    stats = jacobian_stats(torch.as_tensor(disp).unsqueeze(0))
    assert stats["sdlogj"] == pytest.approx(_l2r_sdlogj(disp), rel=1e-9)
    assert 0 < stats["sdlogj"] < stats["std_log_j"]


@pytest.mark.parametrize("shape", [(21, 9, 4), (3, 30, 7), (19, 23)])
@pytest.mark.parametrize("amplitude", [0.3, 4.0])  # no folding / many folded voxels
def test_jacobian_stats_over_slabs_equal_whole_map_statistics(shape, amplitude):
    """The statistics are accumulated slab by slab (8 planes); they equal those of the whole
    determinant map computed with numpy, crop (axes longer than 4) and masks included."""
    disp = smooth_field(shape, amplitude, seed=5)[0].double().numpy()
    det = np.asarray(_numpy_determinant(disp))
    crop = det[tuple(slice(2, -2) if n > 4 else slice(None) for n in shape)]
    want = {
        "folding_percent": 100.0 * float((det <= 0).mean()),
        "sdlogj": float(np.log(np.clip(crop + 3, 1e-9, 1e9)).std()),
        "std_log_j": float(np.log(crop[crop > 0]).std()),
    }
    got = jacobian_stats(torch.as_tensor(disp, dtype=torch.float32))
    assert got["folding_percent"] == pytest.approx(want["folding_percent"], abs=1e-12)
    assert got["sdlogj"] == pytest.approx(want["sdlogj"], rel=1e-5)  # a float32 field
    assert got["std_log_j"] == pytest.approx(want["std_log_j"], rel=1e-5)
    exact = determinant_stats(torch.as_tensor(det))
    for key, value in want.items():
        assert exact[key] == pytest.approx(value, rel=1e-10, abs=1e-14)
    if amplitude > 1:
        assert want["folding_percent"] > 0


def _numpy_determinant(disp: np.ndarray) -> np.ndarray:
    ndim = disp.shape[0]
    grads = [np.gradient(disp[i]) for i in range(ndim)]  # grads[i][j] = d u_i / d x_j
    jac = np.empty((ndim, ndim, *disp.shape[1:]))
    for i in range(ndim):
        for j in range(ndim):
            jac[i, j] = grads[i][j] + (i == j)
    return np.linalg.det(np.moveaxis(jac, (0, 1), (-2, -1)))


def test_tre_through_a_translation_field_in_lps():
    affine = np.array(
        [[0.0, 0.0, -1.5, 30.0], [2.0, 0.0, 0.0, -10.0], [0.0, 0.8, 0.0, 4.0], [0, 0, 0, 1]]
    )
    lps = lps_affine(affine)
    shift = torch.tensor([1.0, -2.0, 0.5]).view(1, 3, 1, 1, 1)
    disp = shift.expand(1, 3, 10, 12, 14).contiguous()
    vox = np.array([[2.0, 3.0, 4.0], [5.5, 6.0, 7.25]])
    fixed_points = vox @ lps[:3, :3].T + lps[:3, 3]
    moving_points = (vox + shift.view(3).numpy()) @ lps[:3, :3].T + lps[:3, 3]
    np.testing.assert_allclose(tre(disp, fixed_points, moving_points, lps), 0.0, atol=1e-9)
    off = moving_points + np.array([[3.0, 4.0, 0.0], [0.0, 0.0, 2.0]])
    np.testing.assert_allclose(tre(disp, fixed_points, off, lps), [5.0, 2.0], atol=1e-9)
    # the RAS affine on LPS points is wrong: the test can tell frames apart
    assert tre(disp, fixed_points, moving_points, affine).max() > 1.0
