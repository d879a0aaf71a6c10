"""Linear transforms in and out: ITK .tfm/.txt and ANTs .mat, `--initial-transform` and
`--affine-out`, checked against SimpleITK's own resampling."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

import eoir
from eoir.errors import InputError
from eoir.image import Image
from eoir.io import read_transform, write_image
from eoir.io.transforms import transform_to_sitk
from helpers import blob_volume, oblique_affine
from helpers import eoir_cli as run

WORLD = np.array(
    [[0.98, -0.1, 0.05, 3.0], [0.11, 1.02, 0.0, -4.0], [0.0, 0.03, 0.97, 5.0], [0, 0, 0, 1]]
)


@pytest.mark.parametrize("suffix", [".tfm", ".txt", ".mat"])
def test_round_trip_through_every_format(tmp_path, suffix):
    sitk.WriteTransform(transform_to_sitk(WORLD), str(tmp_path / f"t{suffix}"))
    np.testing.assert_allclose(read_transform(tmp_path / f"t{suffix}"), WORLD, atol=1e-12)


def test_any_linear_itk_type_and_its_centre(tmp_path):
    rigid = sitk.Euler3DTransform((10.0, -20.0, 30.0), 0.1, -0.2, 0.3, (1.0, 2.0, 3.0))
    sitk.WriteTransform(rigid, str(tmp_path / "r.tfm"))
    world = read_transform(tmp_path / "r.tfm")
    flip = np.diag([-1.0, -1.0, 1.0])
    for point in ([0.0, 0.0, 0.0], [40.0, -7.0, 12.0]):  # RAS points
        expected = flip @ np.array(rigid.TransformPoint(tuple(flip @ point)))
        np.testing.assert_allclose(world[:3, :3] @ point + world[:3, 3], expected, atol=1e-9)
    translation = sitk.TranslationTransform(2, (1.5, -2.0))
    sitk.WriteTransform(translation, str(tmp_path / "t2.tfm"))
    np.testing.assert_allclose(read_transform(tmp_path / "t2.tfm", ndim=2)[:2, 2], [-1.5, 2.0])


def test_bad_transforms_are_refused(tmp_path):
    with pytest.raises(InputError, match="transform not found"):
        read_transform(tmp_path / "missing.tfm")
    (tmp_path / "junk.tfm").write_text("not a transform\n")
    with pytest.raises(InputError, match="cannot read transform"):
        read_transform(tmp_path / "junk.tfm")
    sitk.WriteTransform(sitk.AffineTransform(2), str(tmp_path / "a2.tfm"))
    with pytest.raises(InputError, match="2-D transform; the images are 3-D"):
        read_transform(tmp_path / "a2.tfm")
    grid = sitk.Image([4, 4, 4], sitk.sitkFloat32)
    bspline = sitk.BSplineTransformInitializer(grid, [2, 2, 2])
    bspline.SetParameters(np.random.default_rng(0).normal(0, 2, 375).tolist())
    sitk.WriteTransform(bspline, str(tmp_path / "b.tfm"))
    with pytest.raises(InputError, match="not a linear transform"):
        read_transform(tmp_path / "b.tfm")


@pytest.fixture(scope="module")
def affine_pair(tmp_path_factory):
    """An oblique blob volume and a copy moved by a known affine (world -> world)."""
    folder = tmp_path_factory.mktemp("affine")
    affine = oblique_affine((1.2, 1.0, 1.1), (0.1, -0.05, 0.2), (1, -1, 1), (-20, 10, 5))
    shape = (30, 28, 26)
    fixed = Image((blob_volume(shape, seed=2) / 8).astype(np.int16), affine)
    centre = affine @ np.append((np.array(shape) - 1) / 2, 1)
    move = np.eye(4)  # rigid: a sheared moving grid has no ITK geometry (ITK keeps no shear)
    move[:3, :3] = oblique_affine((1, 1, 1), (0.02, -0.03, 0.08), (1, 1, 1), (0, 0, 0))[:3, :3]
    move[:3, :3] = move[:3, :3] @ np.eye(3)[:, [2, 0, 1]]  # undo the helper's axis permutation
    move[:3, 3] = centre[:3] - move[:3, :3] @ centre[:3] + [2.0, -1.5, 1.0]
    # moving(x) = fixed(move^-1 x): the registration's world (fixed -> moving) is `move`
    moving = Image(fixed.array, move @ affine)
    paths = {"fixed": folder / "f.nii.gz", "moving": folder / "m.nii.gz"}
    write_image(paths["fixed"], fixed.array, fixed)
    write_image(paths["moving"], moving.array, moving)
    return paths, move


def corner_error(world: np.ndarray, move: np.ndarray) -> float:
    """Largest distance (mm) between where two alignments take the fixed grid's corners."""
    corners = np.array(np.meshgrid([0, 29], [0, 27], [0, 25], indexing="ij")).reshape(3, -1)
    affine = oblique_affine((1.2, 1.0, 1.1), (0.1, -0.05, 0.2), (1, -1, 1), (-20, 10, 5))
    points = affine @ np.vstack([corners, np.ones((1, 8))])
    return float(np.linalg.norm((world - move) @ points, axis=0).max())


def test_affine_out_is_what_simpleitk_applies(affine_pair, tmp_path):
    paths, move = affine_pair
    out = {"tfm": tmp_path / "a.tfm", "mat": tmp_path / "a.mat", "w": tmp_path / "w.nii.gz"}
    ran = run("register", "--fixed", paths["fixed"], "--moving", paths["moving"], "--affine",
              "--model", "none", "--optimize-steps", "0", "--affine-out", out["tfm"],
              "--warped", out["w"], "--quiet")  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert "(affine)" in ran.stdout
    world = read_transform(out["tfm"])
    assert corner_error(world, move) < 0.5 * corner_error(np.eye(4), move)
    fixed = sitk.ReadImage(str(paths["fixed"]), sitk.sitkFloat32)
    moving = sitk.ReadImage(str(paths["moving"]), sitk.sitkFloat32)
    theirs = sitk.GetArrayFromImage(
        sitk.Resample(moving, fixed, sitk.ReadTransform(str(out["tfm"])), sitk.sitkLinear, 0.0)
    )
    ours = sitk.GetArrayFromImage(sitk.ReadImage(str(out["w"]))).astype(np.float32)
    # int16 rounding of eoir's warped image; ITK and eoir differ only within half a voxel of
    # the moving grid's edge (where ITK's interpolator stops)
    inside = (slice(3, -3),) * 3
    assert np.abs(theirs - ours)[inside].max() <= 0.51
    # the same alignment given back as the start, without the affine stage: the same output
    ran = run("register", "--fixed", paths["fixed"], "--moving", paths["moving"],
              "--initial-transform", out["tfm"], "--model", "none", "--optimize-steps", "0",
              "--warped", tmp_path / "again.nii.gz", "--affine-out", out["mat"],
              "--quiet")  # fmt: skip
    assert ran.returncode == 0 and "(initial transform)" in ran.stdout, ran.stderr
    np.testing.assert_array_equal(
        nib.load(tmp_path / "again.nii.gz").get_fdata(), nib.load(out["w"]).get_fdata()
    )
    np.testing.assert_allclose(read_transform(out["mat"]), world, atol=1e-9)


def test_initial_transform_from_python_starts_the_affine_stage(affine_pair):
    paths, move = affine_pair
    result = eoir.register(paths["fixed"], paths["moving"], model=None, optimize_steps=0,
                           initial_transform=move, progress=False)  # fmt: skip
    np.testing.assert_allclose(result.affine(), move)
    refined = eoir.register(paths["fixed"], paths["moving"], model=None, optimize_steps=0,
                            affine=True, initial_transform=move, progress=False)  # fmt: skip
    assert corner_error(refined.affine(), move) < 0.5 * corner_error(np.eye(4), move)
    with pytest.raises(InputError, match="finite 4x4 matrix"):
        eoir.register(paths["fixed"], paths["moving"], initial_transform=np.eye(3))


def test_bad_transform_arguments_fail_in_one_line(affine_pair, tmp_path):
    paths, _ = affine_pair
    (tmp_path / "junk.tfm").write_text("junk\n")
    for args, message in [
        (["--initial-transform", tmp_path / "junk.tfm"], "cannot read transform"),
        (["--initial-transform", tmp_path / "none.tfm"], "transform not found"),
        (["--affine-out", tmp_path / "a.nii.gz"], "transform is written as"),
    ]:
        ran = run("register", "--fixed", paths["fixed"], "--moving", paths["moving"], *args,
                  "--model", "none", "--optimize-steps", "0", "--quiet")  # fmt: skip
        assert ran.returncode == 2 and message in ran.stderr, ran.stderr
        assert len(ran.stderr.strip().splitlines()) == 1
