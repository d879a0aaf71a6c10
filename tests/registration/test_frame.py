"""The network fed in its training frame: any storage order, any voxel size."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from nibabel.orientations import axcodes2ornt, inv_ornt_aff, ornt_transform

import eoir
import eoir.registration.pipeline as pipeline
from eoir.image import Image
from eoir.registration import dice_before_after
from eoir.registration.frame import foreground_box, model_frame, paste
from eoir.registration.resample import warp_image
from eoir.spatial import warp
from helpers import oblique_affine, shared_dataset, smooth_field, smooth_image

ASL = np.array([[0, 0, -1, 80], [1, 0, 0, -107], [0, 1, 0, -61], [0, 0, 0, 1.0]])


def test_frame_sizes_follow_the_model_spacing_and_axes():
    same = model_frame(Image(np.zeros((208, 176, 160)), ASL), "ASL", 1.0, 2)
    assert not same.reorients and same.shape == (104, 88, 80)  # as without a frame
    ras = model_frame(Image(np.zeros((160, 208, 176)), np.eye(4)), "ASL", 1.0, 2)
    assert ras.order == (1, 2, 0) and ras.flips == (True, False, False)
    assert ras.shape == (104, 88, 80)
    coarse = model_frame(Image(np.zeros((60, 50, 40)), np.diag([3.0, 3.0, 3.0, 1])), None, 1.0, 2)
    assert coarse.shape == (90, 75, 60)  # 3 mm voxels on a 2 mm working grid: upsampled
    fine = model_frame(Image(np.zeros((300, 250, 230)), np.diag([0.7] * 3 + [1])), None, 1.0, 2)
    assert fine.shape == (105, 88, 81)  # 0.7 mm: downsampled to about 2 mm, as a 1 mm image
    untouched = model_frame(Image(np.zeros((30, 20, 10)), np.eye(4)), None, None, 1)
    assert untouched.shape == (30, 20, 10) and not untouched.reorients


@pytest.mark.parametrize("codes", ["RAS", "LPS", "LIA", "ASL"])
def test_a_field_in_the_model_frame_means_the_same_on_the_fixed_axes(codes):
    shape = (12, 10, 9)
    start = axcodes2ornt("RAS")
    ornt = ornt_transform(start, axcodes2ornt(codes))
    affine = np.eye(4) @ inv_ornt_aff(ornt, shape)
    frame = model_frame(Image(np.zeros(shape), np.linalg.inv(affine)), "RAS", None, 1)
    image = smooth_image(shape, seed=1)
    in_model = frame.to_model(image)
    disp = smooth_field(tuple(in_model.shape[2:]), 1.5, seed=2)
    on_fixed = frame.field_from_model(disp)
    assert on_fixed.shape == (1, 3, *shape)
    torch.testing.assert_close(
        frame.to_model(eoir.warp(image, on_fixed)), eoir.warp(in_model, disp), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("codes", ["RAS", "LIA"])
def test_the_working_grid_in_fixed_voxels(codes):
    """``Frame.voxels`` places the working grid where reordering and resizing put it: sampling
    an image there equals the reordered, resized image."""
    shape = (23, 19, 17)
    ornt = ornt_transform(axcodes2ornt("RAS"), axcodes2ornt(codes))
    affine = np.diag([1.3, 1.0, 0.8, 1.0]) @ inv_ornt_aff(ornt, shape)
    fixed = Image(np.zeros(shape), np.linalg.inv(affine))
    frame = model_frame(fixed, "ASL", 1.0, 2)
    image = smooth_image(shape, seed=1).float()
    resized = torch.nn.functional.interpolate(
        frame.to_model(image), size=frame.shape, mode="trilinear", align_corners=True
    )
    grid = eoir.spatial.identity_grid(frame.shape, "cpu", torch.float64)
    positions = eoir.spatial.transform_positions(frame.voxels(shape), grid).float()
    torch.testing.assert_close(eoir.spatial.sample(image, positions), resized, atol=1e-5, rtol=0)


def stored_as(image: nib.Nifti1Image, codes: str) -> nib.Nifti1Image:
    """The same image and world, its voxels stored in another axis order."""
    ornt = ornt_transform(axcodes2ornt(nib.aff2axcodes(image.affine)), axcodes2ornt(codes))
    return image.as_reoriented(ornt)


def test_the_working_grid_is_cropped_to_the_foreground():
    x = torch.zeros(1, 1, 60, 50, 40)
    x[:, :, 20:40, 10:35, 10:30] = 1.0
    x[0, 0, 2, 2, 2] = 1.0  # a stray bright voxel does not widen the box
    box = foreground_box(x, torch.zeros_like(x), margin=4)
    assert box == (slice(16, 44), slice(6, 39), slice(6, 34))
    other = torch.zeros_like(x)
    other[:, :, 40:45, 10:20, 15:25] = 1.0  # the moving image's foreground counts too
    assert foreground_box(x, other, margin=0)[0] == slice(20, 45)
    assert foreground_box(torch.ones_like(x)) is None  # the whole grid: not worth it
    assert foreground_box(torch.zeros_like(x)) is None  # no foreground
    thin = torch.zeros_like(x)
    thin[:, :, 20:40, 10:35, 10:12] = 1.0
    small = foreground_box(thin, margin=0)  # at least 8 voxels along every axis
    assert [s.stop - s.start for s in small] == [20, 25, 8]
    field = torch.randn(1, 3, 28, 33, 28)
    whole = paste(field, box, (60, 50, 40))
    assert whole.shape == (1, 3, 60, 50, 40)
    assert torch.equal(whole[(..., *box)], field)
    assert torch.equal(whole[:, :, 0, 6, 6], field[:, :, 0, 0, 0])  # the edge, extended
    assert paste(field, None, (28, 33, 28)) is field


def test_a_head_in_a_large_box_registers_as_well_cropped(monkeypatch):
    """A blob pair in a grid four times larger than it: the working grid is cropped to it, and
    the field inside equals (to rounding) the uncropped one's (instance optimisation, which sees
    only the images' overlap)."""
    shape = (64, 60, 52)
    moving = torch.zeros(shape)
    moving[20:44, 18:42, 16:36] = smooth_image((24, 24, 20), seed=1).float()[0, 0]
    truth = smooth_field(shape, 1.5, seed=2).float()
    fixed = warp(moving[None, None], truth)[0, 0]  # fixed voxel p shows moving p + truth(p)
    fixed += 0.1
    moving += 0.1
    kwargs = {"model": None, "optimize_steps": 40, "preset": "none", "progress": False}
    boxes = []
    monkeypatch.setattr(pipeline, "foreground_box", lambda *x: boxes.append(foreground_box(*x))
                        or boxes[-1])  # fmt: skip
    cropped = eoir.register(fixed.numpy(), moving.numpy(), **kwargs)
    assert boxes[0] is not None  # it was cropped
    monkeypatch.setattr(pipeline, "foreground_box", lambda *images: None)
    whole = eoir.register(fixed.numpy(), moving.numpy(), **kwargs)
    inside = (0, slice(None), slice(24, 40), slice(22, 38), slice(20, 32))
    errors = [float((r.disp - truth)[inside].norm(dim=0).mean()) for r in (cropped, whole)]
    assert errors[0] < errors[1] + 0.05, errors


def test_the_same_pair_in_four_storage_orders_gives_the_same_dice(tmp_path):
    folder = shared_dataset("oasis-trt-20")
    images, labels = folder / "imagesTr", folder / "labelsTr"
    dice = {}
    for codes in ("RAS", "LPS", "ASL", "LIA"):
        paths = {}
        for role, subject in (("fixed", 13), ("moving", 14)):
            for kind, where in (("", images), ("_labels", labels)):
                name = f"OASISTRT_{subject:04d}_0000.nii.gz"
                path = tmp_path / f"{role}{kind}_{codes}.nii.gz"
                nib.save(stored_as(nib.load(where / name), codes), path)
                paths[role + kind] = path
        assert "".join(nib.aff2axcodes(nib.load(paths["fixed"]).affine)) == codes
        result = eoir.register(paths["fixed"], paths["moving"], model="brain-mri", progress=False)
        dice[codes] = dice_before_after(result, paths["fixed_labels"], paths["moving_labels"])
    print({k: round(v[1], 4) for k, v in dice.items()})
    afters = [after for _, after in dice.values()]
    assert max(afters) - min(afters) < 0.005
    assert min(afters) > max(before for before, _ in dice.values()) + 0.15


def resampled(image: Image, affine: np.ndarray, shape, mode="bilinear") -> Image:
    """``image`` sampled onto another grid (world space)."""
    grid = Image(np.zeros(shape, np.float32), affine)
    return Image(warp_image(image, grid, mode=mode), affine)


def test_coarse_oblique_and_fine_pairs_register_in_the_model_frame():
    folder = shared_dataset("oasis-trt-20")
    read = {}
    for role, subject in (("fixed", 13), ("moving", 14)):
        name = f"OASISTRT_{subject:04d}_0000.nii.gz"
        read[role] = eoir.read_image(folder / "imagesTr" / name)
        read[role + "_labels"] = eoir.read_image(folder / "labelsTr" / name)
    centre = read["fixed"].affine @ np.append((np.array(read["fixed"].shape) - 1) / 2, 1)
    for spacing, angles, flips in (
        ((2.4, 3.0, 3.6), (0.15, -0.1, 0.2), (1, -1, 1)),  # coarse, oblique, flipped
        ((0.7, 0.7, 0.7), (0.0, 0.0, 0.0), (1, 1, 1)),  # finer than the model's 1 mm
    ):
        size = np.ceil(np.array([210, 180, 165]) / np.array(spacing)).astype(int)
        affine = oblique_affine(spacing, angles, flips, (0, 0, 0))
        affine[:3, 3] = centre[:3] - affine[:3, :3] @ ((size - 1) / 2)
        pair = {k: resampled(v, affine, tuple(size), "nearest" if "labels" in k else "bilinear")
                for k, v in read.items()}  # fmt: skip
        result = eoir.register(pair["fixed"], pair["moving"], model="brain-mri", progress=False)
        before, after = dice_before_after(
            result, pair["fixed_labels"].array.astype(np.int32),
            pair["moving_labels"].array.astype(np.int32),
        )  # fmt: skip
        print(spacing, round(before, 4), round(after, 4))
        assert after > before + 0.1, (spacing, before, after)
