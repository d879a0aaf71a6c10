"""The affine stage: eoir's linear alignment (moments, then Adam at 4 and 2 mm)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import eoir
from eoir.errors import OptionError
from eoir.image import Image
from eoir.metrics import mean_dice
from eoir.registration.affine import linear_align
from eoir.registration.preprocess import normalise
from eoir.registration.resample import total_field, warp_image
from helpers import blob_volume, head_and_brain, shared_dataset
from helpers import eoir_cli as run


def rotation(axis: int, degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    i, j = [k for k in range(3) if k != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = np.cos(a), -np.sin(a), np.sin(a), np.cos(a)
    return r


def moved_by(image: Image, true: np.ndarray) -> Image:
    """The image as the moving image of a pair whose fixed -> moving world map is ``true``."""
    return Image(warp_image(Image(image.array, true @ image.affine), image), image.affine)


def error_mm(found: np.ndarray, true: np.ndarray, image: Image) -> float:
    """Mean distance between where two alignments take the image's bright voxels."""
    mask = np.argwhere(image.array > np.percentile(image.array, 75))[::20]
    points = image.affine @ np.vstack([mask.T, np.ones(len(mask))])
    return float(np.linalg.norm(((found - true) @ points)[:3], axis=0).mean())


def known_motion(image: Image, axis: int, degrees: float, shift: float) -> np.ndarray:
    centre = image.affine @ np.append((np.array(image.shape) - 1) / 2, 1)
    true = np.eye(4)
    true[:3, :3] = rotation(axis, degrees)
    true[:3, 3] = centre[:3] - true[:3, :3] @ centre[:3] + shift
    return true


@pytest.mark.parametrize("model", ["affine", "rigid"])
def test_a_rotated_and_shifted_volume_is_found(model):
    volume = blob_volume((64, 60, 56), seed=5) + blob_volume((64, 60, 56), seed=9)
    fixed = Image(volume, np.diag([1.5, 1.5, 1.5, 1.0]))
    true = known_motion(fixed, 2, 30, 8.0)
    moving = moved_by(fixed, true)
    values = [normalise(i.array, "mri") for i in (fixed, moving)]
    found = linear_align(fixed, moving, *values, model=model)
    assert error_mm(np.eye(4), true, fixed) > 15
    assert error_mm(found, true, fixed) < 1.5
    with pytest.raises(OptionError, match="affine 'shear'"):
        linear_align(fixed, moving, *values, model="shear")


def test_native_brains_align_at_least_as_well_as_simpleitk_did():
    """OASIS subjects as scanned: Dice after affine alone; SimpleITK's former default scored
    0.392-0.427 on these pairs (benchmarks/affine_native.py)."""
    native = shared_dataset("oasis-trt-20-native")
    name = "OASISTRT_{:04d}_0000.nii.gz"
    images = {s: eoir.read_image(native / "imagesTr" / name.format(s)) for s in (13, 14)}
    labels = {s: eoir.read_image(native / "labelsTr" / name.format(s)) for s in (13, 14)}
    for f, m in itertools.permutations((13, 14)):
        values = [normalise(images[s].array, "mri") for s in (f, m)]
        world = linear_align(images[f], images[m], *values)
        warped = warp_image(labels[m], images[f], total_field(images[f], None, world), "nearest")
        assert mean_dice(labels[f].array, warped, labels[m].array) > 0.39


def test_45_degrees_and_a_t2_against_a_t1():
    native = shared_dataset("oasis-trt-20-native")
    fixed = eoir.read_image(native / "imagesTr" / "OASISTRT_0013_0000.nii.gz")
    for axis in range(3):
        true = known_motion(fixed, axis, 45, 20.0)
        moving = moved_by(fixed, true)
        values = [normalise(i.array, "mri") for i in (fixed, moving)]
        assert error_mm(linear_align(fixed, moving, *values), true, fixed) < 1.5, axis
    tcga = shared_dataset("multicontrast-tcga") / "skull-stripped"
    t1, t2 = eoir.read_image(tcga / "t1.nii.gz"), eoir.read_image(tcga / "t2.nii.gz")
    true = known_motion(t1, 2, 30, 15.0)
    moving = moved_by(t2, true)
    values = [normalise(i.array, "mri") for i in (t1, moving)]
    found = linear_align(t1, moving, *values, similarity="mind")
    assert error_mm(found, true, t1) < 1.5


def test_affine_and_similarity_options_from_the_command_line(tmp_path):
    volume = blob_volume((40, 36, 32), seed=5) + blob_volume((40, 36, 32), seed=9)
    fixed = Image(volume, np.diag([2.0, 2.0, 2.0, 1.0]))
    moving = moved_by(fixed, known_motion(fixed, 0, 20, 6.0))
    for name, image in (("f", fixed), ("m", moving)):
        eoir.io.write_image(tmp_path / f"{name}.nii.gz", image.array, image)
    common = ["register", "--fixed", tmp_path / "f.nii.gz", "--moving", tmp_path / "m.nii.gz",
              "--model", "none", "--optimize-steps", "0", "--quiet"]  # fmt: skip
    for args, shown in ((["--affine"], "(affine)"), (["--affine", "rigid"], "(rigid)"),
                        (["--affine", "--similarity", "mind"], "(affine)")):  # fmt: skip
        ran = run(*common, *args)
        assert ran.returncode == 0 and shown in ran.stdout, ran.stderr


def test_a_head_aligns_to_a_brain_only_image():
    """A whole head (skull, scalp, eyes) moved by 20 degrees and 10 mm, against the same brain
    skull-stripped: the fields of view differ, so do the images' centres of mass."""
    path = shared_dataset("synthseg-label-maps") / "training_seg_01.nii.gz"
    head, brain = head_and_brain(path)
    true = known_motion(brain, 0, 20, 10.0)
    moving = moved_by(head, true)
    found = linear_align(brain, moving, brain.array, moving.array)
    assert error_mm(found, true, brain) < 2.0
