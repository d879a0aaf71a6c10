"""The network fed in its training frame: any storage order, any voxel size."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from nibabel.orientations import axcodes2ornt, inv_ornt_aff, ornt_transform

import eoir
from eoir.image import Image
from eoir.registration import dice_before_after
from eoir.registration.frame import model_frame
from eoir.registration.resample import warp_image
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


def stored_as(image: nib.Nifti1Image, codes: str) -> nib.Nifti1Image:
    """The same image and world, its voxels stored in another axis order."""
    ornt = ornt_transform(axcodes2ornt(nib.aff2axcodes(image.affine)), axcodes2ornt(codes))
    return image.as_reoriented(ornt)


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
