"""Losses: NCC, MIND-SSC, smoothness, Dice, pyramids and the multi-level loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from eoir.losses import (
    box_filter,
    dice_loss,
    endpoint_error,
    gaussian_blur,
    gradient_loss,
    mind_loss,
    mind_ssc,
    multilevel_loss,
    mutual_information_loss,
    ncc_loss,
    one_hot,
    pyramid,
    warped_dice_loss,
)
from eoir.losses.labels import hard_classes
from eoir.nn import EOIR
from eoir.spatial import warp
from helpers import smooth_field, smooth_image


def _textured(shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    noise = torch.rand(1, 1, *shape, generator=gen)
    return gaussian_blur(noise, sigma=1.0) + 0.5 * smooth_image(shape, seed)


def _dense_ncc(a, b, window):
    """Reference: VoxelMorph's NCC with a dense w^ndim box kernel."""
    ndim = a.dim() - 2
    kernel = torch.ones(1, 1, *[window] * ndim, dtype=a.dtype)
    conv = F.conv3d if ndim == 3 else F.conv2d
    pad = window // 2
    s = [conv(x, kernel, padding=pad) for x in (a, b, a * a, b * b, a * b)]
    n = window**ndim
    ua, ub = s[0] / n, s[1] / n
    cross = s[4] - ub * s[0] - ua * s[1] + ua * ub * n
    var_a = s[2] - 2 * ua * s[0] + ua * ua * n
    var_b = s[3] - 2 * ub * s[1] + ub * ub * n
    return 1 - (cross * cross / (var_a * var_b + 1e-5)).mean()


@pytest.mark.parametrize("shape", [(20, 24), (12, 14, 16)])
def test_ncc_matches_dense_reference(shape):
    a, b = _textured(shape, 0).double(), _textured(shape, 1).double()
    for window in (3, 5, 9):
        torch.testing.assert_close(
            ncc_loss(a, b, window).double(), _dense_ncc(a, b, window), atol=1e-5, rtol=1e-5
        )


@pytest.mark.parametrize("shape", [(32, 36), (16, 18, 20)])
def test_ncc_self_is_optimal_and_scale_invariant(shape):
    image = _textured(shape, 0)
    other = warp(image, smooth_field(shape, 2.0, seed=3))
    self_loss = ncc_loss(image, image)
    assert self_loss < 1e-3
    assert ncc_loss(image, other) > self_loss + 0.05
    for scale in (0.5, 3.0, 20.0):
        torch.testing.assert_close(
            ncc_loss(scale * image, other), ncc_loss(image, other), atol=1e-4, rtol=0
        )
        assert ncc_loss(scale * image, image) < 1e-3


def test_box_filter_on_grids_smaller_than_the_window():
    x = torch.rand(1, 2, 4, 3, 12)
    reference = F.conv3d(
        x.reshape(2, 1, 4, 3, 12), torch.ones(1, 1, 5, 5, 5) / 125, padding=2
    ).reshape(1, 2, 4, 3, 12)
    torch.testing.assert_close(box_filter(x, 5), reference)


def test_box_filter_is_a_windowed_mean():
    x = torch.ones(1, 1, 9, 9, 9)
    out = box_filter(x, 3)
    assert out[0, 0, 4, 4, 4] == 1.0
    torch.testing.assert_close(out[0, 0, 0, 0, 0], torch.tensor(8 / 27))  # zero padded corner


@pytest.mark.parametrize("shape", [(24, 28), (14, 16, 18)])
def test_mind_is_modality_independent(shape):
    image = _textured(shape, 0)
    channels = mind_ssc(image).shape[1]
    assert channels == (12 if len(shape) == 3 else 4)
    # contrast inversion and rescaling keep the self-similarity pattern
    torch.testing.assert_close(mind_ssc(1.0 - image), mind_ssc(image), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mind_ssc(7.0 * image), mind_ssc(image), atol=1e-5, rtol=1e-5)
    assert mind_loss(1.0 - image, image) < 1e-6
    moved = warp(image, smooth_field(shape, 2.0, seed=2))
    assert mind_loss(1.0 - image, moved) > 1e-3


@pytest.mark.parametrize("shape", [(24, 28), (14, 16, 18)])
def test_mutual_information_rewards_alignment_whatever_the_contrast(shape):
    image = _textured(shape, 0)
    other_contrast = (1.0 - image) ** 2  # a monotone but nonlinear remapping
    moved = warp(other_contrast, smooth_field(shape, 2.0, seed=2))
    aligned = mutual_information_loss(other_contrast, image)
    assert aligned < mutual_information_loss(moved, image) - 0.05
    # MI of an image with itself is its entropy, the largest any partner reaches
    assert mutual_information_loss(image, image) <= aligned + 1e-4
    assert torch.isfinite(aligned) and aligned < 0
    grad = torch.zeros_like(image, requires_grad=True)
    mutual_information_loss(moved + grad, image).backward()
    assert grad.grad is not None and grad.grad.abs().sum() > 0


def test_gradient_loss_known_values():
    assert gradient_loss(torch.ones(1, 3, 6, 6, 6) * 4.0) == 0
    ramp = torch.arange(6.0).view(1, 1, 6, 1, 1).expand(1, 3, 6, 5, 4) * 0.5
    torch.testing.assert_close(gradient_loss(ramp, "l1"), torch.tensor(0.5 / 3))
    torch.testing.assert_close(gradient_loss(ramp, "l2"), torch.tensor(0.25 / 3))
    ramp2d = torch.arange(5.0).view(1, 1, 1, 5).expand(1, 2, 4, 5) * 2.0
    torch.testing.assert_close(gradient_loss(ramp2d, "l1"), torch.tensor(1.0))


def test_one_hot_with_label_values():
    labels = torch.tensor([[0, 4, 2035], [4, 7, 0]]).view(1, 1, 2, 3)
    encoded = one_hot(labels, [0, 4, 2035])
    assert encoded.shape == (1, 3, 2, 3)
    assert encoded[0, :, 0, 2].tolist() == [0, 0, 1]
    assert encoded[0, :, 1, 1].tolist() == [0, 0, 0]  # 7 is not listed
    assert one_hot(torch.tensor([[[1, 0]]]).view(1, 1, 1, 2), 3)[0, :, 0, 0].tolist() == [0, 1, 0]
    # a batch of 3-D maps with unlisted values: torch's one_hot of the listed ones, float32,
    # channels-last in memory
    maps = torch.randint(0, 9, (2, 1, 5, 6, 7), generator=torch.Generator().manual_seed(0))
    listed = [0, 2, 3, 5, 8]
    encoded = one_hot(maps, listed)
    reference = torch.stack([maps[:, 0] == v for v in listed], dim=1).float()
    assert encoded.dtype == torch.float32 and torch.equal(encoded, reference)
    assert encoded.is_contiguous(memory_format=torch.channels_last_3d)


def test_dice_loss_bounds():
    a = one_hot(torch.randint(0, 3, (1, 1, 8, 8, 8)), 3)
    assert dice_loss(a, a) < 1e-6
    b = one_hot(torch.zeros(1, 1, 4, 4, dtype=torch.long), 2)
    c = one_hot(torch.ones(1, 1, 4, 4, dtype=torch.long), 2)
    torch.testing.assert_close(dice_loss(b, c), torch.tensor(1.0))


@pytest.mark.parametrize("classes", [5, 300])  # the matrix product, and the elementwise one
def test_dice_loss_is_its_formula_in_any_layout(classes):
    """Loss and gradient equal ``1 - mean(2 sum(a b) / (sum a + sum b + 1e-5))`` for a
    warped (contiguous, soft) map against a one-hot (channels-last) one, batch of 2."""
    generator = torch.Generator().manual_seed(1)
    fixed = one_hot(torch.randint(0, classes, (2, 1, 9, 8, 7), generator=generator), classes)
    warped = torch.rand(2, classes, 9, 8, 7, generator=generator, dtype=torch.float64)
    fixed = fixed.double()
    assert fixed.is_contiguous(memory_format=torch.channels_last_3d)
    a = warped.clone().requires_grad_(True)
    loss = dice_loss(a, fixed)
    loss.backward()
    b = warped.clone().requires_grad_(True)
    dims = (2, 3, 4)
    expected = 1.0 - (2.0 * (b * fixed).sum(dims) / (b.sum(dims) + fixed.sum(dims) + 1e-5)).mean()
    expected.backward()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(a.grad, b.grad)
    assert a.grad.is_contiguous()


@pytest.mark.parametrize("shape", [(9, 8, 7), (12, 10)])
def test_warped_dice_loss_equals_the_dice_of_the_warped_map(shape):
    """The Dice of a warped one-hot map from interpolation weights binned by class equals
    ``dice_loss(warp(moving, disp), fixed)`` in value and gradient (batch of 2, voxels of no
    class, positions outside the grid); soft maps and a broadcast field get None."""
    generator = torch.Generator().manual_seed(2)
    classes = 5
    moving = one_hot(torch.randint(0, classes + 2, (2, 1, *shape), generator=generator), classes)
    fixed = one_hot(torch.randint(0, classes + 2, (2, 1, *shape), generator=generator), classes)
    disp = torch.randn(2, len(shape), *shape, generator=generator, dtype=torch.float64) * 3
    moving, fixed = moving.double(), fixed.double()
    a = disp.clone().requires_grad_(True)
    expected = dice_loss(warp(moving, a), fixed)
    expected.backward()
    b = disp.clone().requires_grad_(True)
    loss = warped_dice_loss(moving, fixed, b)
    loss.backward()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(b.grad, a.grad)
    soft = moving * 0.5
    assert warped_dice_loss(soft, fixed, disp) is None
    assert warped_dice_loss(moving, fixed, disp[:1]) is None
    expected_classes = torch.where(moving[0].sum(0) > 0, moving[0].argmax(0), classes)
    assert torch.equal(hard_classes(moving)[0], expected_classes)


def test_gaussian_blur_and_pyramid():
    const = torch.ones(1, 2, 20, 20, 20)
    assert torch.allclose(gaussian_blur(const)[..., 2:-2, 2:-2, 2:-2], const[..., 2:-2, 2:-2, 2:-2])
    levels = pyramid(torch.rand(1, 1, 16, 16, 4), [(16, 16, 4), (8, 8, 4), (4, 4, 4)])
    assert [tuple(x.shape[2:]) for x in levels] == [(16, 16, 4), (8, 8, 4), (4, 4, 4)]


@pytest.mark.parametrize(
    "shapes",
    [
        [(21, 16, 9), (11, 8, 9), (6, 4, 3), (3, 2, 1)],  # odd, kept and single-voxel axes
        [(33, 17), (16, 17), (8, 4), (1, 2)],
    ],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_pyramid_is_blur_then_linear_resampling(shapes, channels_last):
    """The matrix form equals its definition: the 5-tap sigma-1 zero-padded blur along the
    axes that shrink, then ``F.interpolate`` (linear, ``align_corners=True``), level by level;
    a channels-last input (one-hot label maps) keeps its layout."""
    torch.manual_seed(0)
    x = torch.rand(2, 3, *shapes[0], dtype=torch.float64)
    last = torch.channels_last_3d if len(shapes[0]) == 3 else torch.channels_last
    if channels_last:
        x = x.contiguous(memory_format=last)
    mode = "trilinear" if len(shapes[0]) == 3 else "bilinear"
    expected = [x]
    for shape in shapes[1:]:
        prev = expected[-1]
        axes = [k for k, (a, b) in enumerate(zip(prev.shape[2:], shape, strict=True)) if b < a]
        blurred = gaussian_blur(prev, axes=axes)
        expected.append(F.interpolate(blurred, size=shape, mode=mode, align_corners=True))
    got = pyramid(x, shapes)
    for a, b in zip(got, expected, strict=True):
        assert a.shape == b.shape and a.dtype == torch.float64
        assert a.is_contiguous(memory_format=last if channels_last else torch.contiguous_format)
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)  # interpolate's float32 indices
    grad = torch.rand_like(x, requires_grad=True)  # differentiable, as a field pyramid needs
    pyramid(grad, shapes)[-1].sum().backward()
    assert grad.grad is not None and torch.isfinite(grad.grad).all()


@pytest.mark.parametrize("similarity", ["ncc", "mse", "mind", "mi"])
def test_multilevel_loss_terms_and_gradients(similarity):
    shape = (20, 18, 22)  # odd sizes: the model pads, the loss pads the images to match
    model = EOIR(width=4, levels=3)
    moving, fixed = _textured(shape, 0), _textured(shape, 1)
    labels = one_hot(torch.randint(0, 3, (1, 1, *shape)), 3)
    out = model(moving, fixed, levels=True)
    total, terms = multilevel_loss(
        out.fields,
        out.residuals,
        moving,
        fixed,
        similarity=similarity,
        moving_labels=labels,
        fixed_labels=labels.flip(2),
    )
    assert total.dim() == 0 and torch.isfinite(total)
    assert terms["similarity"] != 0 and terms["smoothness"] > 0 and terms["dice"] > 0  # -MI < 0
    total.backward()
    assert all(p.grad is not None for p in model.parameters())
    no_dice, terms = multilevel_loss(
        out.fields, out.residuals, moving, fixed, similarity=similarity
    )
    assert terms["dice"] == 0 and no_dice < total


def test_endpoint_error_and_the_field_term():
    target = torch.zeros(2, 3, 6, 6, 6)
    target[:, 0] = 3.0
    target[:, 1] = 4.0  # a 5-voxel displacement
    field = torch.zeros_like(target)
    assert float(endpoint_error(field, target)) == pytest.approx(5.0)
    assert float(endpoint_error(target, target)) == pytest.approx(0.0, abs=1e-5)
    mask = torch.zeros(2, 1, 6, 6, 6)
    mask[:, :, :3] = 1.0
    half = field.clone()
    half[:, :, :3] = target[:, :, :3]  # right where the mask is
    assert float(endpoint_error(half, target, mask)) == pytest.approx(0.0, abs=1e-5)
    assert float(endpoint_error(field, target, weights=torch.tensor([0.0, 1.0]))) == 5.0
    assert float(endpoint_error(field, target, weights=torch.zeros(2))) == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        endpoint_error(field, target[:, :2])

    # in the multi-level loss: the true field of every level, the pairs it is known for
    shape = (20, 18, 22)
    model = EOIR(width=4, levels=3)
    moving, fixed = _textured(shape, 0), _textured(shape, 1)
    out = model(moving, fixed, levels=True)
    truth = smooth_field(shape, 2.0, seed=3).float()
    kwargs = {"sim_weight": 0.0, "reg_weight": 0.0, "dice_weight": 0.0}
    total, terms = multilevel_loss(
        out.fields, out.residuals, moving, fixed, field_weight=1.0, true_field=truth, **kwargs
    )
    assert terms["field"] > 0 and torch.isclose(total, terms["field"])
    total.backward()
    assert all(p.grad is not None for p in model.parameters())
    unknown, terms = multilevel_loss(
        out.fields, out.residuals, moving, fixed, field_weight=1.0, true_field=truth,
        known=torch.zeros(1), **kwargs,
    )  # fmt: skip
    assert float(unknown.detach()) == 0.0 and float(terms["field"]) == 0.0
    _, terms = multilevel_loss(out.fields, out.residuals, moving, fixed, **kwargs)
    assert "field" not in terms  # unused: not reported


def test_image_term_weighted_per_pair():
    """Pairs of weight 0 leave the image term (synthetic pairs of two contrasts under NCC)."""
    shape = (16, 14, 18)
    model = EOIR(width=4, levels=2)
    moving = torch.cat([_textured(shape, 0), _textured(shape, 2)])
    fixed = torch.cat([_textured(shape, 1), _textured(shape, 3)])
    out = model(moving, fixed, levels=True)
    kwargs = {"reg_weight": 0.0, "dice_weight": 0.0}
    both, _ = multilevel_loss(out.fields, out.residuals, moving, fixed, **kwargs)
    ones, _ = multilevel_loss(
        out.fields, out.residuals, moving, fixed, image_weights=torch.ones(2), **kwargs
    )
    assert torch.isclose(ones, both)  # weights of 1: the plain batch mean
    first, _ = multilevel_loss(
        [f[:1] for f in out.fields], [r[:1] for r in out.residuals], moving[:1], fixed[:1],
        **kwargs,
    )  # fmt: skip
    only, _ = multilevel_loss(
        out.fields, out.residuals, moving, fixed, image_weights=torch.tensor([1.0, 0.0]),
        **kwargs,
    )  # fmt: skip
    assert torch.isclose(only, first / 2)  # the second pair costs nothing
    none, _ = multilevel_loss(
        out.fields, out.residuals, moving, fixed, image_weights=torch.zeros(2), **kwargs
    )
    assert float(none.detach()) == 0.0
    only.backward()
    assert all(p.grad is not None for p in model.parameters())
