"""2-D images end to end: pictures (PNG, JPEG, TIFF) and 2-D NIfTI through `eoir register` and
`eoir apply`, 2-D instance optimisation, 2-D ITK fields that SimpleITK reads and applies."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

import eoir
from eoir.errors import InputError, OptionError
from eoir.image import Image, in_plane
from eoir.io import read_field, read_image, write_field, write_image
from eoir.metrics import mean_dice
from eoir.nn import EOIR
from eoir.registration import dice_before_after
from eoir.registration.instance import optimise_field
from eoir.registration.resample import warp_image
from helpers import blob_volume, shared_dataset, smooth_field
from helpers import eoir_cli as run

SHAPE = (48, 40)  # (X, Y): 48 columns, 40 rows


def write_picture(path: Path, array: np.ndarray) -> None:
    """Write an ``(X, Y)`` (or ``(X, Y, 3)`` colour) array as ITK orders pictures."""
    colour = array.ndim == 3
    data = np.moveaxis(array, (0, 1), (1, 0)) if colour else array.T
    sitk.WriteImage(sitk.GetImageFromArray(np.ascontiguousarray(data), isVector=colour), str(path))


def picture(path: Path) -> np.ndarray:
    """An ``(X, Y)`` array of a picture file, read by SimpleITK alone."""
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path))).T


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> dict[str, Path]:
    """A blob picture and a smoothly deformed copy (uint8 PNG) with label maps (NIfTI)."""
    folder = tmp_path_factory.mktemp("pair2d")
    image = blob_volume(SHAPE, seed=3)
    fixed = Image((image / image.max() * 250).astype(np.uint8), np.diag([-1.0, -1.0, 1.0]))
    labels = np.zeros(SHAPE, np.int16)
    labels[image > 0.25 * image.max()] = 2
    labels[image > 0.6 * image.max()] = 7
    true = eoir.integrate(smooth_field(SHAPE, 2.5, seed=5), 7)
    moving = warp_image(fixed, fixed, true)
    moving_labels = warp_image(Image(labels, fixed.affine), fixed, true, mode="nearest")
    paths = {name: folder / f"{name}" for name in ("fixed.png", "moving.png", "fl.nii.gz")}
    paths["ml.nii.gz"] = folder / "ml.nii.gz"
    write_picture(paths["fixed.png"], fixed.array)
    write_picture(paths["moving.png"], moving)
    write_image(paths["fl.nii.gz"], labels, fixed)
    write_image(paths["ml.nii.gz"], moving_labels, fixed)
    paths["folder"] = folder
    return paths


# ---- reading and writing 2-D files ----


def test_picture_is_read_as_2d_in_itk_order(pair):
    image = read_image(pair["fixed.png"])
    assert image.ndim == 2 and image.shape == SHAPE and image.array.dtype == np.uint8
    np.testing.assert_array_equal(image.array, picture(pair["fixed.png"]))
    np.testing.assert_allclose(image.affine, np.diag([-1.0, -1.0, 1.0]))  # ITK LPS identity
    assert image.spacing == (1.0, 1.0)


def test_colour_picture_becomes_grey_luma(tmp_path):
    rgb = np.zeros((*SHAPE, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    rgb[:10] = 255
    write_picture(tmp_path / "c.png", rgb)
    grey = read_image(tmp_path / "c.png").array
    assert grey.shape == SHAPE and grey.dtype == np.uint8
    assert grey[20, 20] == round(0.299 * 200 + 0.587 * 100 + 0.114 * 50) and grey[0, 0] == 255


@pytest.mark.parametrize("suffix", [".tif", ".jpg", ".bmp"])
def test_other_picture_formats(tmp_path, suffix):
    array = (blob_volume(SHAPE, seed=1) / 4).clip(0, 255).astype(np.uint8)
    write_picture(tmp_path / f"a{suffix}", array)
    image = read_image(tmp_path / f"a{suffix}")
    assert image.shape == SHAPE
    tolerance = 8 if suffix == ".jpg" else 0  # JPEG is lossy
    assert np.abs(image.array.astype(int) - array).max() <= tolerance


def test_2d_nifti_and_one_slice_volume_keep_their_spacing(tmp_path):
    affine = np.diag([0.8, 0.7, 3.0, 1.0])
    affine[:3, 3] = (-60, -80, 12)
    array = blob_volume(SHAPE, seed=2)
    nib.save(nib.Nifti1Image(array, affine), tmp_path / "a.nii.gz")
    nib.save(nib.Nifti1Image(array[..., None], affine), tmp_path / "b.nii.gz")
    a, b = read_image(tmp_path / "a.nii.gz"), read_image(tmp_path / "b.nii.gz")
    for image in (a, b):
        assert image.ndim == 2 and image.spacing == pytest.approx((0.8, 0.7))
        np.testing.assert_allclose(image.affine, [[0.8, 0, -60], [0, 0.7, -80], [0, 0, 1]])
    # an output on that grid keeps the slice's place in 3-D space (the header's affine)
    write_image(tmp_path / "out.nii.gz", a.array, a)
    np.testing.assert_allclose(nib.load(tmp_path / "out.nii.gz").affine, affine)


def test_in_plane_of_a_sagittal_slice_keeps_the_spacing():
    sagittal = np.array([[0, 0, 2.0, 5], [1.5, 0, 0, 6], [0, 1.2, 0, 7], [0, 0, 0, 1]])
    np.testing.assert_allclose(in_plane(sagittal), np.diag([1.5, 1.2, 1.0]))


def test_picture_outputs_check_dimension_and_type(tmp_path):
    grid = Image(np.zeros(SHAPE, np.uint8), np.eye(3))
    with pytest.raises(InputError, match="holds uint8 or uint16 pixels; the output is float32"):
        write_image(tmp_path / "a.png", np.zeros(SHAPE, np.float32), grid)
    volume = Image(np.zeros((4, 5, 6), np.uint8), np.eye(4))
    with pytest.raises(InputError, match="holds 2-D images; the output is 3-D"):
        write_image(tmp_path / "b.png", volume.array, volume)
    write_image(tmp_path / "c.png", np.full(SHAPE, 7, np.uint16), grid)  # 16-bit PNG
    assert picture(tmp_path / "c.png").dtype == np.uint16
    assert not list(tmp_path.glob("a.png*")) and not list(tmp_path.glob("b.png*"))


@pytest.mark.parametrize("suffix", [".nii.gz", ".mha"])
def test_2d_itk_field_is_what_simpleitk_reads_and_applies(tmp_path, suffix):
    affine = np.array([[0.0, -1.2, 30.0], [0.9, 0.0, -4.0], [0, 0, 1]])  # rotated, anisotropic
    grid = Image(np.zeros(SHAPE, np.float32), affine)
    disp = smooth_field(SHAPE, 2.0, seed=1)
    write_field(tmp_path / f"f{suffix}", disp, grid)
    field = sitk.ReadImage(str(tmp_path / f"f{suffix}"))
    assert field.GetDimension() == 2 and field.GetNumberOfComponentsPerPixel() == 2
    if suffix == ".nii.gz":
        assert nib.load(tmp_path / f"f{suffix}").shape == (*SHAPE, 1, 1, 2)
    back, back_grid = read_field(tmp_path / f"f{suffix}")
    torch.testing.assert_close(back, disp, atol=1e-5, rtol=0)
    np.testing.assert_allclose(back_grid.affine, affine, atol=1e-6)
    # SimpleITK moves the image with the file as eoir does
    image = blob_volume(SHAPE, seed=6)
    moving = Image(image, affine)
    ours = warp_image(moving, grid, disp)
    reference = sitk.GetImageFromArray(np.zeros(SHAPE, np.float32).T.copy())
    source = sitk.GetImageFromArray(image.T.copy())
    for img in (reference, source):
        img.SetSpacing((0.9, 1.2))
        img.SetDirection((0.0, 1.0, -1.0, 0.0))  # LPS of the affine above
        img.SetOrigin((-30.0, 4.0))
    transform = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
    theirs = sitk.GetArrayFromImage(sitk.Resample(source, reference, transform)).T
    inside = (slice(4, -4), slice(4, -4))
    np.testing.assert_allclose(theirs[inside], ours[inside], atol=1e-2 * image.max())


def test_learn2reg_format_is_3d_only(tmp_path):
    grid = Image(np.zeros(SHAPE, np.float32), np.eye(3))
    with pytest.raises(InputError, match="Learn2Reg field format is 3-D"):
        write_field(tmp_path / "f.nii.gz", torch.zeros(1, 2, *SHAPE), grid, "l2r")


# ---- registering 2-D images ----


def test_instance_optimisation_recovers_a_2d_shift():
    blobs = blob_volume((64, 56), seed=2) + blob_volume((64, 56), seed=7)
    image = torch.from_numpy(blobs / 1000)[None, None]
    fixed = image[..., 4:-4, 4:-4]
    moving = image[..., 6:-2, 3:-5]  # moving(p) = fixed(p + (2, -1))
    disp = optimise_field(moving.float(), fixed.float(), steps=90)
    assert disp.shape == (1, 2, 56, 48)
    inside = disp[0, :, 8:-8, 8:-8].flatten(1).median(dim=1).values
    torch.testing.assert_close(inside, torch.tensor([-2.0, 1.0]), atol=0.3, rtol=0)


def test_register_pictures_from_python(pair):
    fixed, moving = read_image(pair["fixed.png"]), read_image(pair["moving.png"])
    result = eoir.register(fixed, moving, model=None, progress=False, device="cpu")
    assert result.disp.shape == (1, 2, *SHAPE)
    before, after = dice_before_after(result, pair["fl.nii.gz"], pair["ml.nii.gz"])
    assert after > before + 0.05
    # the inverse undoes it: fixed -> moving -> fixed returns to the start inside the image
    inverse = result.inverse()
    there = eoir.compose(result.disp, inverse)  # same grid and identity geometry
    assert there[..., 6:-6, 6:-6].abs().max() < 0.05


def test_a_2d_network_registers_2d_images(pair):
    net = EOIR(ndim=2, width=4, levels=3).eval()
    result = eoir.register(
        pair["fixed.png"], pair["moving.png"], model=net, progress=False, device="cpu"
    )
    assert result.disp.shape == (1, 2, *SHAPE) and torch.isfinite(result.disp).all()


def test_a_3d_model_or_a_3d_image_is_refused(pair, tmp_path):
    with pytest.raises(OptionError, match="is a 3-D network and the images are 2-D"):
        eoir.register(pair["fixed.png"], pair["moving.png"], model="brain-mri", progress=False)
    volume = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4)), volume)
    with pytest.raises(InputError, match=r"moving image is 3-D and .* 2-D"):
        eoir.register(pair["fixed.png"], volume, model=None, progress=False)


def test_register_and_apply_pictures_from_the_command_line(pair, tmp_path):
    out = {k: tmp_path / k for k in ("w.png", "f.nii.gz", "wl.nii.gz", "fig.png", "inv.nii.gz")}
    ran = run(
        "register", "--fixed", pair["fixed.png"], "--moving", pair["moving.png"],
        "--warped", out["w.png"], "--field", out["f.nii.gz"], "--figure", out["fig.png"],
        "--moving-labels", pair["ml.nii.gz"], "--warped-labels", out["wl.nii.gz"],
        "--fixed-labels", pair["fl.nii.gz"], "--inverse-field", out["inv.nii.gz"],
        "--device", "cpu", "--quiet",
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    before, after = (float(v) for v in ran.stdout.split("Dice ")[1].split(";")[0].split(" -> "))
    assert after > before + 0.05
    warped = picture(out["w.png"])
    assert warped.dtype == np.uint8 and warped.shape == SHAPE  # the moving image's format
    assert sitk.ReadImage(str(out["inv.nii.gz"])).GetDimension() == 2
    assert sitk.ReadImage(str(out["fig.png"])).GetSize()[0] > 500
    ran = run("apply", "--field", out["f.nii.gz"], "--moving", pair["moving.png"],
              "--out", tmp_path / "again.png")  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    np.testing.assert_array_equal(picture(tmp_path / "again.png"), warped)
    ran = run("apply", "--field", out["f.nii.gz"], "--moving", pair["ml.nii.gz"], "--nearest",
              "--out", tmp_path / "again_labels.nii.gz")  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    np.testing.assert_array_equal(
        nib.load(tmp_path / "again_labels.nii.gz").get_fdata(),
        nib.load(out["wl.nii.gz"]).get_fdata(),
    )
    ran = run("jacobian", "--field", out["f.nii.gz"])
    assert ran.returncode == 0 and "folding 0.0000 %" in ran.stdout


def test_command_line_refuses_what_cannot_be_written_before_any_work(pair, tmp_path):
    tif = tmp_path / "m.tif"
    write_picture(tif, picture(pair["moving.png"]).astype(np.float32))
    cases = [
        (["--moving", tif, "--warped", tmp_path / "w.png"], "holds uint8 or uint16 pixels"),
        (["--moving", pair["moving.png"], "--field", tmp_path / "f.png"], "written as .nii.gz"),
        (["--moving", pair["moving.png"], "--field", tmp_path / "f.nii.gz", "--field-format",
          "l2r"], "Learn2Reg field format is 3-D"),
        (["--moving", pair["moving.png"], "--model", "brain-mri"], "--model brain-mri: is a 3-D"),
    ]  # fmt: skip
    for args, message in cases:
        ran = run("register", "--fixed", pair["fixed.png"], *args, "--quiet")
        assert ran.returncode == 2 and message in ran.stderr, ran.stderr
        assert len(ran.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.glob("[wf]*"))


def test_oasis_slices_register_better_than_they_start(tmp_path):
    """Two real OASIS-TRT-20 axial slices (validation subjects), written as 8-bit PNGs."""
    folder = shared_dataset("oasis-trt-20-2d")
    paths = {}
    for role, subject in (("fixed", 15), ("moving", 14)):
        data = np.load(folder / f"OASIS-TRT-20-{subject}_axial.npz")
        grey = np.clip(data["img"] / np.percentile(data["img"], 99.5) * 255, 0, 255)
        grid = Image(grey.astype(np.uint8), np.diag([-1.0, -1.0, 1.0]))
        paths[role] = tmp_path / f"{role}.png"
        write_image(paths[role], grid.array, grid)
        paths[role + "_labels"] = tmp_path / f"{role}_labels.nii.gz"
        write_image(paths[role + "_labels"], data["seg"], grid)
    ran = run(
        "register", "--fixed", paths["fixed"], "--moving", paths["moving"],
        "--moving-labels", paths["moving_labels"], "--warped-labels", tmp_path / "w.nii.gz",
        "--fixed-labels", paths["fixed_labels"], "--device", "cpu", "--quiet",
        "--field", tmp_path / "f.nii.gz", "--inverse-field", tmp_path / "i.nii.gz",
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    before, after = (float(v) for v in ran.stdout.split("Dice ")[1].split(";")[0].split(" -> "))
    assert after > before + 0.1, ran.stdout
    # the inverse (this pair's once held NaN where Newton's steps ran off the grid) undoes the
    # field: same geometry, so composing the two on the grid gives ~zero inside
    disp, _ = read_field(tmp_path / "f.nii.gz")
    inverse, _ = read_field(tmp_path / "i.nii.gz")
    error = eoir.compose(disp, inverse)[..., 8:-8, 8:-8].norm(dim=1).flatten()
    assert torch.isfinite(error).all()
    # all but a few pixels where the field stretches 7-fold (Jacobian 7.4)
    assert float(torch.quantile(error, 0.99)) < 0.01 and float((error > 0.1).float().mean()) < 1e-3
    warped = nib.load(tmp_path / "w.nii.gz").get_fdata()
    fixed_labels = nib.load(paths["fixed_labels"]).get_fdata()
    moving_labels = nib.load(paths["moving_labels"]).get_fdata()
    assert mean_dice(fixed_labels, warped, moving_labels) == pytest.approx(after, abs=1e-3)
