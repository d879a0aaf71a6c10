"""The spatial core pins the field convention: warped(p) = moving(p + disp(p)), voxels, axis k."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eoir.spatial import (
    compose,
    crop_to_shape,
    field_from_world,
    field_to_world,
    identity_grid,
    integrate,
    invert,
    jacobian_determinant,
    lps_affine,
    pad_to_multiple,
    resize_field,
    sample,
    sample_at_points,
    store_reversed,
    stored_reversed,
    transform_positions,
    voxel_to_world,
    warp,
    world_to_voxel,
)
from helpers import smooth_field, smooth_image

SHAPES = [(11, 13), (6, 7, 9)]


def test_identity_grid_holds_voxel_indices():
    grid = identity_grid((3, 4, 5))
    assert grid.shape == (1, 3, 3, 4, 5)
    assert grid[0, 0, 2, 1, 3] == 2 and grid[0, 1, 2, 1, 3] == 1 and grid[0, 2, 2, 1, 3] == 3


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_identity_warp_is_exact(shape, mode):
    image = torch.rand(2, 3, *shape)
    zero = torch.zeros(2, len(shape), *shape)
    assert torch.equal(warp(image, zero, mode=mode), image)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("shift", [1, 3, -2])
def test_integer_shift_moves_one_hot_volume_along_the_right_axis(shape, shift):
    ndim = len(shape)
    center = tuple(n // 2 for n in shape)
    for axis in range(ndim):
        moving = torch.zeros(1, 1, *shape)
        moving[(0, 0, *center)] = 1.0
        disp = torch.zeros(1, ndim, *shape)
        disp[:, axis] = shift
        # warped(p) = moving(p + shift e_axis): the bright voxel lands at center - shift e_axis
        target = list(center)
        target[axis] -= shift
        expected = torch.zeros_like(moving)
        expected[(0, 0, *target)] = 1.0
        assert torch.equal(warp(moving, disp, mode="nearest"), expected)
        torch.testing.assert_close(warp(moving, disp), expected, atol=1e-5, rtol=0)


def test_warp_zeros_and_border_padding():
    image = torch.arange(5.0).view(1, 1, 5, 1) + torch.zeros(1, 1, 5, 4)
    disp = torch.zeros(1, 2, 5, 4)
    disp[:, 0] = 10.0  # sample far beyond the last row
    assert warp(image, disp, padding="zeros").abs().max() == 0
    assert torch.all(warp(image, disp, padding="border") == 4.0)


@pytest.mark.parametrize("shape", [(5, 6), (4, 5, 3)])
def test_warp_gradcheck(shape):
    ndim = len(shape)
    image = torch.rand(1, 2, *shape, dtype=torch.float64, requires_grad=True)
    # non-integer displacements keep the check away from the kinks of linear interpolation
    disp = (0.3 + 0.4 * torch.rand(1, ndim, *shape, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda i, d: warp(i, d), (image, disp))
    assert torch.autograd.gradcheck(lambda i, d: warp(i, d, padding="border"), (image, disp))


@pytest.mark.parametrize("shape", [(10, 7), (10, 6, 5), (9, 6, 5), (2, 6, 5)])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_batch_of_one_sampled_in_slabs_on_all_threads_equals_one_call(shape, mode, padding):
    """A batch of one is sampled as slabs over the CPU threads (3 here: padded when the planes
    do not divide): values bit for bit, gradients to rounding, as one grid_sample call."""
    ndim = len(shape)
    image = torch.rand(1, 4, *shape, requires_grad=True)
    disp = (3 * torch.rand(1, ndim, *shape) - 1.5).requires_grad_()

    def warp_on(threads: int) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            out = warp(image, disp, mode=mode, padding=padding)
            weights = torch.linspace(0, 1, out.numel()).view_as(out)
            return out, torch.autograd.grad((out * weights).sum(), (image, disp))
        finally:
            torch.set_num_threads(before)

    out, grads = warp_on(3)
    ref, ref_grads = warp_on(1)  # one thread: the unsplit call
    assert out.shape == ref.shape and out.is_contiguous()
    assert torch.equal(out, ref)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_warp_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="field's grid"):
        warp(torch.rand(1, 1, 8, 8, 8), torch.zeros(1, 3, 8, 8, 7))
    with pytest.raises(ValueError, match="needs 3 channels"):
        warp(torch.rand(1, 1, 8, 8, 8), torch.zeros(1, 2, 8, 8, 8))
    with pytest.raises(ValueError, match="mode"):
        warp(torch.rand(1, 1, 8, 8), torch.zeros(1, 2, 8, 8), mode="cubic")


@pytest.mark.parametrize("shape", SHAPES)
def test_integrate_zero_is_zero(shape):
    zero = torch.zeros(1, len(shape), *shape)
    assert torch.equal(integrate(zero, 7), zero)


@pytest.mark.parametrize("shape", [(32, 34), (24, 26, 28)])
def test_integrate_constant_velocity_is_the_translation(shape):
    ndim = len(shape)
    shift = torch.tensor([1.5, -2.0, 0.75][:ndim]).view(1, ndim, *([1] * ndim))
    velocity = shift.expand(1, ndim, *shape).contiguous()
    # with border padding the field is constant everywhere
    torch.testing.assert_close(integrate(velocity, 7, padding="border"), velocity)
    # with zero padding (as in EOIR) the loss of field at the border spreads inward about one
    # voxel per squaring step: 8 voxels in, it is the translation
    interior = (slice(None), slice(None), *[slice(8, -8)] * ndim)
    torch.testing.assert_close(integrate(velocity, 7)[interior], velocity[interior])
    assert torch.equal(integrate(velocity, 0), velocity)


@pytest.mark.parametrize("shape", [(40, 44), (24, 26, 28)])
def test_compose_equals_two_step_warp(shape):
    ndim = len(shape)
    image = smooth_image(shape, seed=1)
    first = smooth_field(shape, 2.0, seed=2)
    second = smooth_field(shape, 2.0, seed=3)
    two_step = warp(warp(image, first), second)
    composed = warp(image, compose(first, second))
    interior = (slice(None), slice(None), *[slice(4, -4)] * ndim)
    err = (two_step - composed)[interior].abs().max()
    wrong_order = (warp(image, compose(second, first)) - two_step)[interior].abs().max()
    added = (warp(image, first + second) - two_step)[interior].abs().max()
    assert err < 2.5e-3
    # the test tells the right order from the wrong one and from plain addition
    assert wrong_order > 4 * err and added > 4 * err


def test_compose_with_inverse_is_identity():
    shape = (24, 26, 28)
    velocity = smooth_field(shape, 1.5, seed=4)
    forward, backward = integrate(velocity, 7), integrate(-velocity, 7)
    residual = compose(forward, backward)[:, :, 4:-4, 4:-4, 4:-4]
    assert residual.abs().max() < 0.05 * forward.abs().max()


def test_resize_field_rescales_magnitudes_per_axis():
    disp = torch.ones(1, 3, 5, 9, 4) * torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1, 1)
    out = resize_field(disp, (9, 17, 4))
    # exact align_corners factors (new - 1) / (old - 1): 2, 2, 1
    torch.testing.assert_close(out[0, :, 3, 5, 2], torch.tensor([2.0, 4.0, 3.0]))
    out = resize_field(disp, (10, 18, 4), magnitude_scale=(2, 2, 1))
    assert out.shape == (1, 3, 10, 18, 4)
    torch.testing.assert_close(out[0, :, 0, 0, 0], torch.tensor([2.0, 4.0, 3.0]))


def test_resize_field_keeps_the_mapping():
    """A field resized to a finer grid warps a finer image like the coarse field the coarse one."""
    coarse_shape, fine_shape = (17, 21), (33, 41)
    disp = smooth_field(coarse_shape, 1.5, seed=5)
    fine_disp = resize_field(disp, fine_shape)
    fine_image = smooth_image(fine_shape, seed=6)
    coarse_image = torch.nn.functional.interpolate(
        fine_image, size=coarse_shape, mode="bilinear", align_corners=True
    )
    warped_coarse = warp(coarse_image, disp)
    warped_fine = torch.nn.functional.interpolate(
        warp(fine_image, fine_disp), size=coarse_shape, mode="bilinear", align_corners=True
    )
    assert (warped_coarse - warped_fine)[:, :, 3:-3, 3:-3].abs().max() < 5e-3


@pytest.mark.parametrize("ndim", [2, 3])
def test_jacobian_of_affine_displacement_is_det_a(ndim):
    rng = np.random.default_rng(0)
    matrix = np.eye(ndim) + 0.3 * rng.standard_normal((ndim, ndim))
    spacing = [2.5, 0.7, 1.3][:ndim]
    shape = (9, 11, 7)[:ndim]
    index = identity_grid(shape, dtype=torch.float64)[0]  # (ndim, *shape) voxel indices
    x_mm = index * torch.tensor(spacing, dtype=torch.float64).view(ndim, *([1] * ndim))
    linear = torch.as_tensor(matrix - np.eye(ndim))
    u_mm = torch.einsum("ij,j...->i...", linear, x_mm).unsqueeze(0) + 4.0  # + a translation
    expected = torch.full((1, *shape), float(np.linalg.det(matrix)), dtype=torch.float64)
    torch.testing.assert_close(jacobian_determinant(u_mm, spacing=spacing), expected)
    # the same map as a voxel field: the determinant does not depend on the spacing
    u_vox = u_mm / torch.tensor(spacing, dtype=torch.float64).view(1, ndim, *([1] * ndim))
    torch.testing.assert_close(jacobian_determinant(u_vox), expected)
    # wrong spacing (a swapped axis) gives a different answer
    assert not torch.allclose(jacobian_determinant(u_mm, spacing=spacing[::-1]), expected)


@pytest.mark.parametrize("shape", [(11, 6, 5), (2, 7, 9), (13, 10)])
def test_jacobian_equals_numpy_gradient_determinant(shape):
    # computed over slabs of planes; must equal the whole-grid numpy.gradient determinant
    ndim = len(shape)
    disp = torch.randn(1, ndim, *shape, generator=torch.Generator().manual_seed(4)).double()
    spacing = [0.9, 1.7, 1.2][:ndim]
    grads = np.gradient(disp[0].numpy(), *spacing, axis=tuple(range(1, ndim + 1)))
    jac = np.stack(grads, axis=1) + np.eye(ndim).reshape(ndim, ndim, *([1] * ndim))
    expected = np.linalg.det(np.moveaxis(jac, (0, 1), (-2, -1)))
    got = jacobian_determinant(disp, spacing=spacing)[0].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("ndim", [2, 3])
def test_transform_positions_general_and_axis_aligned(ndim):
    rng = np.random.default_rng(2)
    positions = torch.randn(2, ndim, *([5] * ndim), dtype=torch.float64)
    for linear in (rng.standard_normal((ndim, ndim)), np.diag(rng.uniform(0.5, 2, ndim))):
        matrix = np.eye(ndim + 1)
        matrix[:ndim, :ndim] = linear
        matrix[:ndim, ndim] = rng.standard_normal(ndim)
        points = positions.movedim(1, -1).numpy()
        expected = points @ matrix[:ndim, :ndim].T + matrix[:ndim, ndim]
        got = transform_positions(matrix, positions).movedim(1, -1).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_pad_and_crop_round_trip():
    x = torch.rand(2, 3, 37, 50, 41)
    padded, shape = pad_to_multiple(x, (16, 16, 16))
    assert padded.shape == (2, 3, 48, 64, 48)
    assert torch.equal(padded[:, :, :37, :50, :41], x) and padded[:, :, 37:].abs().sum() == 0
    assert torch.equal(crop_to_shape(padded, shape), x)


def _oblique_affine() -> np.ndarray:
    """An oblique, anisotropic, axis-permuted and flipped voxel -> RAS matrix."""
    rotation = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    c, s = np.cos(0.3), np.sin(0.3)
    tilt = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = tilt @ rotation @ np.diag([1.2, 0.8, 2.5])
    affine[:3, 3] = [10.0, -20.0, 5.0]
    return affine


def test_field_world_conversion_known_values_and_round_trip():
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    affine[:3, :3] = affine[:3, :3][[1, 0, 2]]  # array axis 0 -> world y, axis 1 -> world x
    disp = torch.zeros(1, 3, 2, 2, 2)
    disp[:, 0] = 1.0  # one voxel along array axis 0
    ras = field_to_world(disp, affine)[0, :, 0, 0, 0]
    lps = field_to_world(disp, affine, frame="lps")[0, :, 0, 0, 0]
    torch.testing.assert_close(ras, torch.tensor([0.0, 2.0, 0.0]))
    torch.testing.assert_close(lps, torch.tensor([0.0, -2.0, 0.0]))
    field = smooth_field((5, 6, 7), 2.0).double()
    oblique = _oblique_affine()
    for frame in ("ras", "lps"):
        back = field_from_world(field_to_world(field, oblique, frame), oblique, frame)
        torch.testing.assert_close(back, field)


def test_points_world_round_trip_and_lps():
    affine = _oblique_affine()
    points = np.array([[1.0, 2.0, 3.0], [4.5, 0.0, 7.25]])
    world = voxel_to_world(points, affine)
    np.testing.assert_allclose(world_to_voxel(world, affine), points, atol=1e-12)
    np.testing.assert_allclose(voxel_to_world(points, lps_affine(affine)), world * [-1, -1, 1])


def test_sample_at_points_matches_grid_values_and_interpolates():
    field = torch.rand(1, 2, 5, 6, 7, dtype=torch.float64)
    points = np.array([[1, 2, 3], [4, 5, 6], [0, 0, 0]], dtype=float)
    expected = torch.stack([field[0, :, 1, 2, 3], field[0, :, 4, 5, 6], field[0, :, 0, 0, 0]])
    torch.testing.assert_close(sample_at_points(field, points), expected)
    mid = sample_at_points(field, np.array([[1.5, 2.0, 3.0]]))[0]
    torch.testing.assert_close(mid, 0.5 * (field[0, :, 1, 2, 3] + field[0, :, 2, 2, 3]))


@pytest.mark.parametrize("shape", [(40, 36, 32), (48, 44)])
def test_a_field_composed_with_its_inverse_is_the_identity_inside(shape):
    """Tolerance: 0.05 voxel either way round, 5 voxels from the border, for a smooth
    diffeomorphism of up to ~2 voxels."""
    forward = integrate(smooth_field(shape, 2.0, seed=3), 7)
    backward = invert(forward)
    inside = (Ellipsis, *[slice(5, -5)] * len(shape))
    assert compose(forward, backward)[inside].abs().max() < 1e-3  # the equation solved
    assert compose(backward, forward)[inside].abs().max() < 0.05  # and the other order
    shift = torch.full((1, len(shape), *shape), 1.25)
    torch.testing.assert_close(invert(shift), -shift)


@pytest.mark.parametrize("shape", [(9, 11), (7, 9, 10)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_sampling_grid_without_autograd_equals_the_one_with_it(shape, dtype):
    """Inference builds grid_sample's grid in one pass (planar, no identity grid); training
    builds it differentiably: the same values bit for bit, for warp and sample."""
    ndim = len(shape)
    generator = torch.Generator().manual_seed(3)
    image = torch.rand(2, 3, *shape, generator=generator, dtype=dtype)
    disp = torch.randn(1, ndim, *shape, generator=generator, dtype=dtype) * 2
    grid = identity_grid(shape, dtype=dtype)
    positions = (disp + 1.1 * grid).expand(2, -1, *shape)
    for mode in ("bilinear", "nearest"):
        for padding in ("zeros", "border"):
            with torch.no_grad():
                warped = warp(image, disp, mode, padding)
                sampled = sample(image, positions, mode, padding)
            tracked = disp.clone().requires_grad_()
            assert torch.equal(warp(image, tracked, mode, padding).detach(), warped)
            tracked = positions.clone().requires_grad_()
            assert torch.equal(sample(image, tracked, mode, padding).detach(), sampled)


@pytest.mark.parametrize("shape", [(9, 11), (7, 9, 10)])
def test_a_field_stored_in_niftis_order_warps_in_that_frame_to_the_same_values(shape):
    """A field stored first axis fastest (as total_field keeps it) is sampled in the reversed
    frame: the ordinary frame's values (labels exactly, linear up to the rounding of the
    interpolation weights), stored the same way; under autograd the ordinary frame is used."""
    ndim = len(shape)
    generator = torch.Generator().manual_seed(5)
    image = torch.rand(1, 2, *shape, generator=generator)
    labels = torch.randint(0, 9, (1, 1, *shape), generator=generator).float()
    disp = torch.randn(1, ndim, *shape, generator=generator) * 2
    stored = store_reversed(disp)
    assert stored_reversed(stored) and not stored_reversed(disp) and torch.equal(stored, disp)
    assert store_reversed(stored) is stored
    positions = store_reversed(identity_grid(shape) * 0.9 + disp)
    for name, ordinary, reversed_ in (
        ("warp", lambda x: warp(x, disp), lambda x: warp(x, stored)),
        ("sample", lambda x: sample(x, positions.contiguous()), lambda x: sample(x, positions)),
    ):
        out = reversed_(image)
        assert stored_reversed(out), name
        torch.testing.assert_close(out, ordinary(image), atol=1e-6, rtol=0)
        nearest = warp(labels, stored, "nearest") if name == "warp" else None
        if nearest is not None:
            assert torch.equal(nearest, warp(labels, disp, "nearest"))
    tracked = stored.clone().requires_grad_()  # a copy keeps the strides
    assert stored_reversed(tracked)
    assert torch.equal(warp(image, tracked).detach(), warp(image, disp))


def test_transform_positions_keeps_niftis_order():
    positions = store_reversed(identity_grid((5, 6, 7)) + 0.3)
    matrix = np.array([[0.9, 0.1, 0, 2], [-0.1, 1.1, 0.2, -1], [0, 0.1, 1, 3], [0, 0, 0, 1]])
    moved = transform_positions(matrix, positions)
    assert stored_reversed(moved)
    assert torch.equal(moved, transform_positions(matrix, positions.contiguous()))
