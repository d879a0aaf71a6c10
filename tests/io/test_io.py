"""Files with geometry: fields that ITK reads as we mean them, round trips, atomic outputs."""

from __future__ import annotations

import gzip
import io
import itertools
import zlib

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from eoir.errors import InputError
from eoir.image import Image
from eoir.io import (
    OutputSet,
    as_sitk_image,
    read_field,
    read_image,
    read_landmarks,
    write_field,
    write_image,
)
from eoir.io.gzip_stream import GzipStream
from eoir.registration.resample import moving_positions, to_fixed_grid, total_field, warp_image
from eoir.spatial import field_to_world, store_reversed, stored_reversed
from helpers import blob_volume, oblique_affine, smooth_field


@pytest.fixture
def geometry():
    fixed_affine = oblique_affine((1.2, 0.8, 2.5), (0.3, -0.2, 0.5), (1, -1, 1), (10, -20, 5))
    moving_affine = oblique_affine((1.0, 1.1, 2.0), (0.25, -0.15, 0.45), (-1, 1, 1), (0, 0, 0))
    fixed = Image(np.zeros((24, 28, 14), np.float32), fixed_affine)
    moving = Image(blob_volume((30, 26, 16), seed=1), moving_affine)
    # put the centre of the moving grid 2 mm from the fixed grid's centre in world space
    centre = lambda img: img.affine[:3, :3] @ ((np.array(img.shape) - 1) / 2) + img.affine[:3, 3]  # noqa: E731
    moving.affine[:3, 3] += centre(fixed) - centre(moving) + np.array([2.0, 0.0, 0.0])
    return fixed, moving


def sitk_resample(moving_path, fixed_path, field_path) -> np.ndarray:
    field = sitk.ReadImage(str(field_path), sitk.sitkVectorFloat64)
    transform = sitk.DisplacementFieldTransform(field)
    resampled = sitk.Resample(
        sitk.ReadImage(str(moving_path), sitk.sitkFloat64),
        sitk.ReadImage(str(fixed_path)),
        transform,
        sitk.sitkLinear,
        0.0,
    )
    return sitk.GetArrayFromImage(resampled).transpose()


@pytest.mark.parametrize("suffix", [".nii.gz", ".mha"])
def test_itk_field_reproduces_our_warp_in_simpleitk(tmp_path, geometry, suffix):
    fixed, moving = geometry
    disp = smooth_field(fixed.shape, 2.0, seed=5)
    world = np.eye(4)
    world[:3, 3] = [1.5, -2.0, 0.5]  # an affine part, folded into the exported field
    world[:3, :3] += 0.02 * np.array([[1, 0.5, 0], [0, -1, 0.3], [0.2, 0, 0.5]])
    total = total_field(fixed, disp, world)
    ours = warp_image(moving, fixed, total)
    write_image(tmp_path / "fixed.nii.gz", fixed.array, fixed)
    write_image(tmp_path / "moving.nii.gz", moving.array, moving)
    write_field(tmp_path / f"field{suffix}", total, fixed)
    theirs = sitk_resample(
        tmp_path / "moving.nii.gz", tmp_path / "fixed.nii.gz", tmp_path / f"field{suffix}"
    )
    assert theirs.shape == ours.shape
    # compare where both define the value: ITK clamps at the last voxel, we pad with zeros, so
    # keep fixed voxels that map at least one voxel inside the moving grid
    where = moving_positions(fixed, moving.affine, total)[0].numpy()
    upper = np.array(moving.shape).reshape(3, 1, 1, 1) - 2
    inside = ((where >= 1) & (where <= upper)).all(0)
    assert inside.mean() > 0.3
    assert np.abs(theirs - ours)[inside].max() < 1e-4 * np.abs(ours).max()
    # a field written with RAS values (the common bug) would not match
    wrong = total.clone()
    wrong[:, :2] *= -1
    write_field(tmp_path / f"wrong{suffix}", wrong, fixed)
    bad = sitk_resample(
        tmp_path / "moving.nii.gz", tmp_path / "fixed.nii.gz", tmp_path / f"wrong{suffix}"
    )
    assert np.abs(bad - ours)[inside].max() > 0.1 * np.abs(ours).max()


@pytest.mark.parametrize("threads", [1, 3])
def test_threaded_gzip_is_one_standard_member(tmp_path, geometry, threads):
    rng = np.random.default_rng(0)
    payload = np.repeat(rng.integers(0, 5, 300_000, dtype=np.uint8), 4).tobytes()  # with runs
    noise = rng.integers(0, 256, 3_000_000, dtype=np.uint8).tobytes()  # many blocks
    for data in (payload, noise + payload, b"", b"x"):
        for pieces in (1, 7):  # written at once, or in uneven pieces (bytes and bytearray)
            target = io.BytesIO()
            with GzipStream(target, threads) as stream:
                cuts = np.linspace(0, len(data), pieces + 1).astype(int)
                for i, (a, b) in enumerate(itertools.pairwise(cuts)):
                    piece = data[a:b]
                    stream.write(piece if i % 2 else bytearray(piece))
                    assert stream.tell() == b
                    assert stream.seek(b) == b  # nibabel's check before writing data
            compressed = target.getvalue()
            inflate = zlib.decompressobj(31)  # one gzip member, checked CRC and length
            assert inflate.decompress(compressed) == data
            assert inflate.eof and inflate.unused_data == b""
            assert gzip.decompress(compressed) == data
            if data is payload:
                assert len(compressed) < len(data) / 2  # the runs compress
    with GzipStream(io.BytesIO(), threads) as stream, pytest.raises(OSError):
        stream.seek(5)  # a compressed stream only moves forward


def test_a_field_file_reads_alike_in_itk_nibabel_and_eoir(tmp_path, geometry):
    fixed, _ = geometry
    disp = smooth_field(fixed.shape, 2.0, seed=1)
    write_field(tmp_path / "f.nii.gz", disp, fixed)
    ours = np.asarray(nib.load(str(tmp_path / "f.nii.gz")).dataobj)[:, :, :, 0, :]
    itk = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "f.nii.gz")))
    np.testing.assert_array_equal(np.moveaxis(itk, (0, 1, 2), (2, 1, 0)), ours)
    torch.testing.assert_close(read_field(tmp_path / "f.nii.gz")[0], disp, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("oblique", [True, False])
def test_nifti_field_file_is_nibabels_image_of_the_world_field(tmp_path, geometry, oblique):
    """The streamed ``.nii.gz`` field holds the bytes nibabel writes for the float64 world
    field rounded to float32 (header equal; values within one float32 rounding)."""
    fixed, _ = geometry
    if not oblique:  # axis-aligned, spacings exact in float32: one product each, exact
        fixed = Image(fixed.array, np.diag([-1.0, 0.5, 2.0, 1.0]))
    disp = smooth_field(fixed.shape, 3.0, seed=6)
    write_field(tmp_path / "f.nii.gz", disp, fixed)
    written = gzip.decompress((tmp_path / "f.nii.gz").read_bytes())
    lps = field_to_world(disp.double(), fixed.affine, frame="lps")[0].numpy().astype(np.float32)
    data = np.moveaxis(lps, 0, -1)[:, :, :, None, :]
    image = nib.Nifti1Image(data, fixed.affine)
    image.set_data_dtype(np.float32)
    image.set_sform(fixed.affine, code=1)
    image.set_qform(fixed.affine, code=1)
    image.header.set_slope_inter(1.0, 0.0)
    image.header.set_xyzt_units("mm")
    image.header.set_intent("vector")
    expected = image.to_bytes()
    assert len(written) == len(expected)
    assert written[:352] == expected[:352]
    ours = np.frombuffer(written[352:], np.float32)
    theirs = np.frombuffer(expected[352:], np.float32)
    if oblique:
        np.testing.assert_allclose(ours, theirs, rtol=3e-7, atol=1e-6)
    else:
        assert np.array_equal(ours, theirs)


def test_itk_nifti_field_header(tmp_path, geometry):
    fixed, _ = geometry
    write_field(tmp_path / "f.nii.gz", smooth_field(fixed.shape, 1.0), fixed)
    image = nib.load(str(tmp_path / "f.nii.gz"))
    assert image.shape == (*fixed.shape, 1, 3)
    assert image.get_data_dtype() == np.float32
    assert int(image.header["intent_code"]) == 1007
    np.testing.assert_allclose(image.affine, fixed.affine, atol=1e-5)


@pytest.mark.parametrize(
    ("fmt", "suffix"), [("l2r", ".nii.gz"), ("itk", ".nii.gz"), ("itk", ".mha")]
)
def test_field_round_trip(tmp_path, geometry, fmt, suffix):
    fixed, _ = geometry
    disp = smooth_field(fixed.shape, 3.0, seed=2)
    write_field(tmp_path / f"d{suffix}", disp, fixed, field_format=fmt)
    back, grid = read_field(tmp_path / f"d{suffix}")
    torch.testing.assert_close(back, disp, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(grid.affine, fixed.affine, atol=1e-5)
    if fmt == "l2r":
        assert nib.load(str(tmp_path / f"d{suffix}")).shape == (*fixed.shape, 3)


def test_images_read_alike_from_nifti_and_mha(tmp_path, geometry):
    _, moving = geometry
    write_image(tmp_path / "m.nii.gz", moving.array, moving)
    write_image(tmp_path / "m.mha", moving.array, moving)
    a, b = read_image(tmp_path / "m.nii.gz"), read_image(tmp_path / "m.mha")
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-5)
    np.testing.assert_allclose(a.affine, moving.affine, atol=1e-5)
    assert a.array.dtype == moving.array.dtype


def test_resampling_onto_the_fixed_grid_in_world_space(geometry):
    fixed, moving = geometry
    # a moving image that is the fixed grid itself, sampled back, is the identity
    same = Image(blob_volume(fixed.shape, seed=3), fixed.affine)
    torch.testing.assert_close(to_fixed_grid(same, fixed)[0, 0], torch.from_numpy(same.array))
    # a world point lands where the affines say: sample voxel coordinates
    coords = Image(np.indices(moving.shape)[0].astype(np.float32), moving.affine)
    sampled = to_fixed_grid(coords, fixed)[0, 0].numpy()
    p = np.array([10, 12, 6])
    expected = (np.linalg.inv(moving.affine) @ fixed.affine @ np.append(p, 1))[0]
    assert sampled[tuple(p)] == pytest.approx(expected, abs=1e-3)


def test_warp_image_keeps_dtype_and_label_values(geometry):
    fixed, _ = geometry
    labels = np.zeros(fixed.shape, np.int16)
    labels[5:15, 5:20, 3:10] = 2035
    labels[8:12, 9:14, 4:8] = 17
    image = Image(labels, fixed.affine)
    warped = warp_image(image, fixed, smooth_field(fixed.shape, 2.0), mode="nearest")
    assert warped.dtype == np.int16
    assert set(np.unique(warped)) <= {0, 17, 2035}
    intensity = Image((labels * 3).astype(np.int16), fixed.affine)
    smooth = warp_image(intensity, fixed, smooth_field(fixed.shape, 2.0))
    assert smooth.dtype == np.int16 and len(np.unique(smooth)) > 3


def test_read_image_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_image(tmp_path / "missing.nii.gz", "fixed image")
    (tmp_path / "text.nii.gz").write_text("not an image")
    with pytest.raises(InputError, match=r"text\.nii\.gz: cannot read"):
        read_image(tmp_path / "text.nii.gz")
    (tmp_path / "text.mha").write_text("not an image")
    with pytest.raises(InputError, match="cannot read"):
        read_image(tmp_path / "text.mha")
    nib.save(
        nib.Nifti1Image(np.zeros((4, 5, 6, 3), np.float32), np.eye(4)), str(tmp_path / "t.nii.gz")
    )
    with pytest.raises(InputError, match="4-D"):
        read_image(tmp_path / "t.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((7,), np.float32), np.eye(4)), str(tmp_path / "line.nii.gz"))
    with pytest.raises(InputError, match="1-D"):
        read_image(tmp_path / "line.nii.gz")
    # a trailing singleton axis is squeezed
    nib.save(
        nib.Nifti1Image(np.zeros((4, 5, 6, 1), np.float32), np.eye(4)), str(tmp_path / "s.nii.gz")
    )
    assert read_image(tmp_path / "s.nii.gz").shape == (4, 5, 6)


def test_output_set_is_all_or_nothing(tmp_path, geometry):
    fixed, _ = geometry
    first, second = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    with pytest.raises(RuntimeError), OutputSet([first, second]) as outputs:
        outputs.write_image(first, fixed.array, fixed)
        raise RuntimeError("failure between two writes")
    assert list(tmp_path.iterdir()) == []
    with OutputSet([first, second]) as outputs:
        outputs.write_image(first, fixed.array, fixed)
        outputs.write_field(second, torch.zeros(1, 3, *fixed.shape), fixed)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz", "b.nii.gz"]
    with pytest.raises(InputError, match="exists"):
        OutputSet([first])
    with pytest.raises(InputError, match="does not exist"):
        OutputSet([tmp_path / "nope" / "x.nii.gz"])
    with pytest.raises(InputError, match="unsupported output type"):
        OutputSet([tmp_path / "x.txt"])


def test_read_landmarks(tmp_path):
    (tmp_path / "p.txt").write_text("point\n2\n1.5 2 3\n-4 5e1 6\n")
    np.testing.assert_allclose(read_landmarks(tmp_path / "p.txt"), [[1.5, 2, 3], [-4, 50, 6]])
    (tmp_path / "bad.txt").write_text("hello world\n")
    with pytest.raises(InputError, match="not a landmark file"):
        read_landmarks(tmp_path / "bad.txt")


def write_dicom_series(folder, image: Image) -> None:
    """Write ``image`` as one DICOM file per slice along its third array axis."""
    volume = as_sitk_image(image.array.astype(np.int16), image)
    direction = volume.GetDirection()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(volume.GetDepth()):
        piece = volume[:, :, k]
        position = volume.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0008|0060": "MR",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0020|000e": "1.2.826.0.1.3680043.2.1125.2",
            "0020|0032": "\\".join(f"{v:.6f}" for v in position),
            "0020|0037": "\\".join(f"{v:.6f}" for v in direction[0:7:3] + direction[1:8:3]),
            "0020|0013": str(k + 1),
            "0018|0050": f"{volume.GetSpacing()[2]:.6f}",
        }
        for tag, value in tags.items():
            piece.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(piece)


def test_dicom_series_folder_reads_with_geometry(tmp_path):
    c, s = np.cos(0.3), np.sin(0.3)
    affine = np.eye(4)  # oblique (rotated about two axes), anisotropic
    affine[:3, :3] = (
        np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
        @ np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
        @ np.diag([0.9, 0.8, 2.0])
    )
    affine[:3, 3] = [-20.0, 30.0, 10.0]
    image = Image(np.round(blob_volume((12, 10, 6), seed=2)).astype(np.int16), affine)
    folder = tmp_path / "series"
    folder.mkdir()
    write_dicom_series(folder, image)
    read = read_image(folder)
    np.testing.assert_array_equal(read.array, image.array)
    np.testing.assert_allclose(read.affine, image.affine, atol=1e-4)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="is an empty folder"):
        read_image(tmp_path / "empty")


def test_big_endian_nifti_reads_in_native_byte_order():
    from eoir.demo import SCAN  # nibabel's example scan is stored big-endian (>i2)

    assert nib.load(str(SCAN)).get_data_dtype().byteorder == ">"
    image = read_image(SCAN)
    assert image.array.dtype.isnative and image.array.dtype == np.int16
    np.testing.assert_array_equal(image.array, np.asanyarray(nib.load(str(SCAN)).dataobj))
    torch.from_numpy(image.array)  # torch takes it


@pytest.mark.parametrize("with_world", [False, True])
@pytest.mark.parametrize("ndim", [2, 3])
def test_total_field_of_a_coarse_field_is_the_upsampled_field_folded(with_world, ndim):
    """A network's field on its coarser working grid is interpolated inside total_field (with
    the affine applied first, as it is linear): the same as resizing it, then folding."""
    from eoir.spatial import resize_field

    shape, small = (21, 17, 12)[:ndim], (11, 9, 6)[:ndim]
    fixed = Image(np.zeros(shape, np.float32), np.diag([*(1.2, 0.9, 2.0)[:ndim], 1.0]))
    coarse = torch.randn(1, ndim, *small, generator=torch.Generator().manual_seed(0))
    world = None
    if with_world:
        world = np.eye(ndim + 1)
        world[:ndim, :ndim] += np.random.default_rng(1).normal(0, 0.1, (ndim, ndim))
        world[:ndim, ndim] = np.arange(1, ndim + 1) * 2.5
    want = total_field(fixed, resize_field(coarse, shape), world)
    got = total_field(fixed, coarse, world)
    assert got.shape == (1, ndim, *shape) and got.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=2e-5, rtol=0)
    assert stored_reversed(got)  # in NIfTI's order: warped and written as stored
    # a field on the fixed grid itself is not changed in place
    full = resize_field(coarse, shape)
    before = full.clone()
    total_field(fixed, full, world)
    assert torch.equal(full, before)


def test_warps_sharing_positions_equal_their_own(geometry):
    """The image and its labels read the moving grid at positions made once (write)."""
    from eoir.registration.result import RegistrationResult

    fixed, moving = geometry
    labels = Image((moving.array > 0.5).astype(np.int16) * 7, moving.affine)
    result = RegistrationResult(fixed, moving, smooth_field(fixed.shape, 2.0))
    positions = result.positions()
    assert positions is not None and positions.shape == (1, 3, *fixed.shape)
    assert np.array_equal(result.warped(positions), result.warped())
    assert np.array_equal(result.warp_labels(labels, positions), result.warp_labels(labels))
    same_grid = RegistrationResult(fixed, Image(np.ones(fixed.shape), fixed.affine), result.disp)
    assert same_grid.positions() is None


def test_a_fortran_ordered_image_is_sampled_in_its_own_layout(geometry):
    """NIfTI volumes are Fortran-ordered: warped without a C-ordered copy, to the same values."""
    fixed, moving = geometry
    disp = smooth_field(fixed.shape, 2.0)
    for array in (moving.array.astype(np.float32), (moving.array > 0.5).astype(np.int16) * 7):
        c_order = Image(np.ascontiguousarray(array), moving.affine)
        f_order = Image(np.asfortranarray(array), moving.affine)
        strided = Image(np.ascontiguousarray(array[::-1])[::-1], moving.affine)  # neither order
        assert f_order.array.flags.f_contiguous and not f_order.array.flags.c_contiguous
        for mode in ("bilinear", "nearest"):
            want = warp_image(c_order, fixed, disp, mode=mode)
            assert np.array_equal(warp_image(f_order, fixed, disp, mode=mode), want)
            assert np.array_equal(warp_image(strided, fixed, disp, mode=mode), want)
    # the one-grid path (the field's own warp, no positions)
    array = np.asfortranarray(blob_volume(fixed.shape, seed=3))
    want = warp_image(Image(np.ascontiguousarray(array), fixed.affine), fixed, disp)
    assert np.array_equal(warp_image(Image(array, fixed.affine), fixed, disp), want)


def test_warps_of_a_field_in_niftis_order_are_written_as_stored(geometry, tmp_path):
    """total_field keeps NIfTI's order: the warped image, labels and the folding statistics equal
    the ordinary frame's (the image up to rounding to its integer type), the warps are
    Fortran-ordered (written without a reordering copy)."""
    from eoir.metrics import jacobian_stats
    from eoir.registration.result import RegistrationResult

    fixed, moving = geometry
    moving = Image(np.asfortranarray(np.round(moving.array * 1000).astype(np.int16)), moving.affine)
    labels = Image(np.asfortranarray((moving.array > 500).astype(np.int16) * 7), moving.affine)
    disp = smooth_field(fixed.shape, 2.0)
    warps = {}
    for name, field in (("ordinary", disp), ("stored", store_reversed(disp))):
        result = RegistrationResult(fixed, moving, field)
        warps[name] = (result.warped(), result.warp_labels(labels))
    assert all(a.flags.f_contiguous for a in warps["stored"])
    assert np.abs(warps["stored"][0].astype(int) - warps["ordinary"][0]).max() <= 1
    assert np.array_equal(warps["stored"][1], warps["ordinary"][1])
    for dtype in (torch.float32, torch.float64):
        a, b = jacobian_stats(disp, dtype=dtype), jacobian_stats(store_reversed(disp), dtype=dtype)
        assert a["folding_percent"] == b["folding_percent"]
        assert abs(a["sdlogj"] - b["sdlogj"]) < 1e-6
    # the same grid (the field's own warp) too
    same = Image(np.asfortranarray(blob_volume(fixed.shape, seed=2)), fixed.affine)
    want = RegistrationResult(fixed, same, disp).warped()
    got = RegistrationResult(fixed, same, store_reversed(disp)).warped()
    assert got.flags.f_contiguous and np.abs(got - want).max() < 1e-3
