"""Registering files end to end: `eoir register`, `eoir apply`, `eoir jacobian`, eoir.register."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

import eoir
from eoir.image import Image
from eoir.io import read_landmarks, write_image
from eoir.registration.resample import warp_image
from helpers import blob_volume, oblique_affine, shared_dataset, smooth_field
from helpers import eoir_cli as run

SHAPE = (28, 30, 26)


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> dict[str, Path]:
    """A fixed/moving pair with label maps; the moving image is the fixed one deformed."""
    folder = tmp_path_factory.mktemp("pair")
    affine = oblique_affine((1.1, 0.9, 1.4), (0.1, 0.2, -0.1), (1, -1, 1), (5, 8, -3))
    volume = blob_volume(SHAPE, seed=4)
    labels = np.zeros(SHAPE, np.int16)
    labels[volume > 300] = 3
    labels[volume > 800] = 1035
    fixed = Image(volume.astype(np.int16), affine)
    true_disp = eoir.integrate(smooth_field(SHAPE, 1.5, seed=9), 7)
    moving = Image(warp_image(fixed, fixed, true_disp), affine)
    moving_labels = warp_image(Image(labels, affine), fixed, true_disp, mode="nearest")
    paths = {name: folder / f"{name}.nii.gz" for name in ("fixed", "moving", "fl", "ml")}
    write_image(paths["fixed"], fixed.array, fixed)
    write_image(paths["moving"], moving.array, moving)
    write_image(paths["fl"], labels, fixed)
    write_image(paths["ml"], moving_labels, moving)
    return paths


def test_cli_register_writes_every_output(pair, tmp_path):
    out = {n: tmp_path / f"{n}.nii.gz" for n in ("warped", "field", "wl")}
    result = run(
        "register",
        "--fixed",
        pair["fixed"],
        "--moving",
        pair["moving"],
        "--warped",
        out["warped"],
        "--field",
        out["field"],
        "--moving-labels",
        pair["ml"],
        "--warped-labels",
        out["wl"],
        "--fixed-labels",
        pair["fl"],
        "--json",
        tmp_path / "s.json",
        "--model",
        "none",
        "--optimize-steps",
        "40",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1 and "Dice" in result.stdout
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["dice_after"] > summary["dice_before"] + 0.05
    assert summary["folding_percent"] < 0.1
    fixed = nib.load(str(pair["fixed"]))
    warped = nib.load(str(out["warped"]))
    assert warped.get_data_dtype() == np.int16  # the moving image's type
    np.testing.assert_allclose(warped.affine, fixed.affine, atol=1e-5)
    warped_labels = np.asarray(nib.load(str(out["wl"])).dataobj)
    assert set(np.unique(warped_labels)) <= {0, 3, 1035}
    field = nib.load(str(out["field"]))
    assert field.shape == (*SHAPE, 1, 3) and int(field.header["intent_code"]) == 1007

    # apply: the saved field reproduces the registration's outputs
    assert (
        run(
            "apply",
            "--field",
            out["field"],
            "--moving",
            pair["ml"],
            "--out",
            tmp_path / "al.nii.gz",
            "--nearest",
        ).returncode
        == 0
    )
    np.testing.assert_array_equal(
        np.asarray(nib.load(str(tmp_path / "al.nii.gz")).dataobj), warped_labels
    )
    assert (
        run(
            "apply",
            "--field",
            out["field"],
            "--moving",
            pair["moving"],
            "--out",
            tmp_path / "a.nii.gz",
        ).returncode
        == 0
    )
    applied = np.asarray(nib.load(str(tmp_path / "a.nii.gz")).dataobj).astype(float)
    assert np.abs(applied - np.asarray(warped.dataobj)).max() <= 1

    # jacobian: statistics and the determinant map
    result = run("jacobian", "--field", out["field"], "--out", tmp_path / "j.nii.gz")
    assert result.returncode == 0 and "folding" in result.stdout and "SDlogJ" in result.stdout
    det = np.asarray(nib.load(str(tmp_path / "j.nii.gz")).dataobj)
    assert det.shape == SHAPE and det.min() > 0


def test_l2r_field_from_register_round_trips_through_apply(pair, tmp_path):
    field = tmp_path / "disp.nii.gz"
    assert (
        run(
            "register",
            "--fixed",
            pair["fixed"],
            "--moving",
            pair["moving"],
            "--field",
            field,
            "--field-format",
            "l2r",
            "--optimize-steps",
            "4",
        ).returncode
        == 0
    )
    assert nib.load(str(field)).shape == (*SHAPE, 3)
    result = run(
        "apply",
        "--field",
        field,
        "--moving",
        pair["ml"],
        "--out",
        tmp_path / "x.nii.gz",
        "--nearest",
    )
    assert result.returncode == 0
    assert set(np.unique(np.asarray(nib.load(str(tmp_path / "x.nii.gz")).dataobj))) <= {0, 3, 1035}


def test_python_api_with_arrays(pair, tmp_path):
    fixed = nib.load(str(pair["fixed"]))
    moving = nib.load(str(pair["moving"]))
    result = eoir.register(
        np.asarray(fixed.dataobj),
        np.asarray(moving.dataobj),
        fixed_affine=fixed.affine,
        moving_affine=moving.affine,
        optimize_steps=6,
    )
    assert result.disp.shape == (1, 3, *SHAPE)
    assert result.warped().dtype == np.int16
    result.save(warped=tmp_path / "w.nii.gz", field=tmp_path / "f.nii.gz")
    assert (tmp_path / "w.nii.gz").exists() and (tmp_path / "f.nii.gz").exists()
    with pytest.raises(eoir.InputError, match="exists"):
        result.save(warped=tmp_path / "w.nii.gz")


def test_constant_image_is_identity_with_a_warning(pair, tmp_path):
    fixed = nib.load(str(pair["fixed"]))
    nib.save(nib.Nifti1Image(np.full(SHAPE, 7, np.int16), fixed.affine), str(tmp_path / "c.nii.gz"))
    result = run(
        "register",
        "--fixed",
        pair["fixed"],
        "--moving",
        tmp_path / "c.nii.gz",
        "--field",
        tmp_path / "f.nii.gz",
        "--warped",
        tmp_path / "w.nii.gz",
    )
    assert result.returncode == 0
    assert "warning" in result.stderr and "identity" in result.stderr
    assert np.abs(np.asarray(nib.load(str(tmp_path / "f.nii.gz")).dataobj)).max() == 0


def _bad_inputs(pair, tmp: Path) -> dict[str, tuple[list, str]]:
    affine = nib.load(str(pair["fixed"])).affine
    (tmp / "text.nii.gz").write_text("this is not an image")
    nib.save(nib.Nifti1Image(np.zeros((*SHAPE, 2), np.float32), affine), str(tmp / "4d.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros(9, np.float32), affine), str(tmp / "1d.nii.gz"))
    nan = np.asarray(nib.load(str(pair["moving"])).dataobj).astype(np.float32)
    nan[3, 4, 5] = np.nan
    nib.save(nib.Nifti1Image(nan, affine), str(tmp / "nan.nii.gz"))
    nib.save(
        nib.Nifti1Image(np.zeros((10, 10, 10), np.int16), affine), str(tmp / "small_labels.nii.gz")
    )
    (tmp / "exists.nii.gz").write_bytes(b"precious")
    (tmp / "afile").write_text("x")
    base = ["register", "--fixed", pair["fixed"], "--optimize-steps", "2"]
    out = ["--warped", tmp / "out.nii.gz"]
    return {
        "missing": ([*base, "--moving", tmp / "nope.nii.gz", *out], "not found"),
        "not an image": ([*base, "--moving", tmp / "text.nii.gz", *out], "cannot read"),
        "4-D": ([*base, "--moving", tmp / "4d.nii.gz", *out], "4-D"),
        "1-D": ([*base, "--moving", tmp / "1d.nii.gz", *out], "1-D"),
        "NaN": ([*base, "--moving", tmp / "nan.nii.gz", *out], "NaN"),
        "label grid": (
            [
                *base,
                "--moving",
                pair["moving"],
                *out,
                "--moving-labels",
                tmp / "small_labels.nii.gz",
                "--warped-labels",
                tmp / "wl.nii.gz",
            ],
            "does not match",
        ),
        "exists": (
            [*base, "--moving", pair["moving"], "--warped", tmp / "exists.nii.gz"],
            "exists",
        ),
        "no folder": (
            [*base, "--moving", pair["moving"], "--warped", tmp / "afile" / "o.nii.gz"],
            "does not exist",
        ),
        "unwritable": (
            [*base, "--moving", pair["moving"], "--warped", "/proc/o.nii.gz"],
            "not writable",
        ),
        "cuda": (
            [*base, "--moving", pair["moving"], *out, "--device", "cuda:99"],
            "--device cuda:99",
        ),
        "bad field": (
            [
                "apply",
                "--field",
                pair["fixed"],
                "--moving",
                pair["moving"],
                "--out",
                tmp / "o2.nii.gz",
            ],
            "not a displacement field",
        ),
        "bad checkpoint": (
            [*base, "--moving", pair["moving"], *out, "--model", tmp / "text.nii.gz"],
            "checkpoint",
        ),
    }


def test_bad_inputs_exit_2_with_one_line_and_no_output(pair, tmp_path):
    cases = _bad_inputs(pair, tmp_path)
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    for name, (args, message) in cases.items():
        result = run(*args)
        assert result.returncode == 2, (name, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (name, result.stderr)
        assert "Traceback" not in result.stderr
    after = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert after == before  # nothing written, nothing overwritten
    assert (tmp_path / "exists.nii.gz").read_bytes() == b"precious"


@pytest.mark.slow
def test_lung_ct_landmarks_improve_over_affine(tmp_path):
    folder = shared_dataset("lung-ct-pair")
    fixed_points = read_landmarks(folder / "3DCT_lung_baseline_landmarks_51_inFOV.txt")
    moving_points = read_landmarks(folder / "3DCT_lung_followup_landmarks_51_inFOV.txt")

    def tre(steps: int) -> float:
        field = tmp_path / f"field{steps}.nii.gz"
        result = run(
            "register",
            "--fixed",
            folder / "3DCT_lung_baseline.mha",
            "--moving",
            folder / "3DCT_lung_followup.mha",
            "--field",
            field,
            "--affine",
            "--preset",
            "lung",
            "--optimize-steps",
            str(steps),
        )
        assert result.returncode == 0, result.stderr
        transform = sitk.DisplacementFieldTransform(
            sitk.ReadImage(str(field), sitk.sitkVectorFloat64)
        )
        mapped = np.array([transform.TransformPoint(tuple(p)) for p in fixed_points])
        return float(np.linalg.norm(mapped - moving_points, axis=1).mean())

    before = float(np.linalg.norm(fixed_points - moving_points, axis=1).mean())
    affine_only, deformable = tre(0), tre(60)
    print(
        f"lung CT mean TRE: none {before:.2f} mm, affine {affine_only:.2f} mm, "
        f"affine + 60 steps {deformable:.2f} mm"
    )
    assert affine_only < 0.5 * before
    assert deformable < affine_only - 1.0


def test_downsampled_registration_returns_a_full_resolution_field(pair):
    result = eoir.register(pair["fixed"], pair["moving"], optimize_steps=30, downsample=2)
    assert result.disp.shape == (1, 3, *SHAPE)
    before, after = eoir.registration.dice_before_after(result, pair["fl"], pair["ml"])
    assert after > before + 0.03, (before, after)
    with pytest.raises(eoir.InputError, match="downsample"):
        eoir.register(pair["fixed"], pair["moving"], downsample=0)


def test_register_with_a_checkpoint(pair, tmp_path):
    from eoir.nn.checkpoint import save_model

    torch.manual_seed(0)
    checkpoint = tmp_path / "tiny.pt"
    save_model(checkpoint, eoir.EOIR(width=4, levels=3))
    common = [
        "register",
        "--fixed",
        pair["fixed"],
        "--moving",
        pair["moving"],
        "--model",
        checkpoint,
    ]
    result = run(*common, "--field", tmp_path / "a.nii.gz")
    assert result.returncode == 0 and f"(model {checkpoint})" in result.stdout, result.stderr
    result = run(*common, "--field", tmp_path / "b.nii.gz", "--optimize-steps", "4")
    assert result.returncode == 0 and "4 optimisation steps" in result.stdout, result.stderr
    result = run(
        *common,
        "--field",
        tmp_path / "c.nii.gz",
        "--optimize-steps",
        "3",
        "--optimize-target",
        "weights",
    )
    assert result.returncode == 0 and "3 fine-tuning steps" in result.stdout, result.stderr
    fields = [np.asarray(nib.load(str(tmp_path / f"{n}.nii.gz")).dataobj) for n in "abc"]
    assert not np.allclose(fields[0], fields[1]) and not np.allclose(fields[0], fields[2])
    # fine-tuning needs a model; a checkpoint whose config does not fit is refused
    result = run(
        "register",
        "--fixed",
        pair["fixed"],
        "--moving",
        pair["moving"],
        "--optimize-target",
        "weights",
        "--model",
        "none",
        "--field",
        tmp_path / "d.nii.gz",
    )
    assert result.returncode == 2
    assert "--optimize-target weights: fine-tunes a network: give a model" in result.stderr
    state = torch.load(checkpoint, weights_only=True)
    state["config"]["width"] = 8
    torch.save(state, tmp_path / "wrong.pt")
    result = run(*common[:-1], tmp_path / "wrong.pt", "--field", tmp_path / "e.nii.gz")
    assert result.returncode == 2 and "is not the recorded" in result.stderr
    assert not (tmp_path / "d.nii.gz").exists() and not (tmp_path / "e.nii.gz").exists()


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_demo_writes_every_file(tmp_path):
    out = tmp_path / "demo"
    result = run("demo", "--out", out)
    assert result.returncode == 0, result.stderr
    for name in ("fixed.nii.gz", "moving.nii.gz", "warped.nii.gz", "field.nii.gz", "figure.png"):
        assert (out / name).is_file(), name
    width, height = _png_size(out / "figure.png")
    assert 1000 <= width <= 4000 and 500 <= height <= 3000
    found = re.findall(r"([\d.]+) mm before, ([\d.]+) mm after", result.stdout)
    before, after = (float(v) for v in found[0])
    assert after < 0.6 * before  # the known deformation is largely recovered
    assert run("demo", "--out", out).returncode == 0  # an earlier demo's folder is reused
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    refused = run("demo", "--out", tmp_path / "mine")
    assert refused.returncode == 2 and "holds other files" in refused.stderr
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]


def test_register_figure(pair, tmp_path):
    figure = tmp_path / "fig.png"
    result = run(
        "register",
        "--fixed",
        pair["fixed"],
        "--moving",
        pair["moving"],
        "--figure",
        figure,
        "--optimize-steps",
        "3",
    )
    assert result.returncode == 0, result.stderr
    width, height = _png_size(figure)
    assert width >= 1000 and height >= 500
    bad = run(
        "register",
        "--fixed",
        pair["fixed"],
        "--moving",
        pair["moving"],
        "--figure",
        tmp_path / "fig.jpg",
    )
    assert bad.returncode == 2 and "must end in .png" in bad.stderr


def test_labels_overlap_and_resolution_are_checked_before_anything_is_written(pair, tmp_path):
    moving = eoir.read_image(pair["moving"])
    labels = eoir.read_image(pair["ml"]).array.astype(np.float32)
    fractional, with_nan = labels + 0.37, labels.copy()
    with_nan[0, 0, 0] = np.nan
    write_image(tmp_path / "fractional.nii.gz", fractional, moving)
    write_image(tmp_path / "nan.nii.gz", with_nan, moving)
    write_image(tmp_path / "whole.nii.gz", labels, moving)  # float32, whole numbers: fine
    far = Image(moving.array, moving.affine.copy())
    far.affine[0, 3] += 400.0
    write_image(tmp_path / "far.nii.gz", far.array, far)
    base = ["register", "--fixed", pair["fixed"], "--model", "none", "--optimize-steps", "2",
            "--field", tmp_path / "d.nii.gz"]  # fmt: skip
    cases = {
        "fractional labels": (
            ["--moving", pair["moving"], "--moving-labels", tmp_path / "fractional.nii.gz",
             "--warped-labels", tmp_path / "w.nii.gz"],
            "holds non-integer values (0.37",
        ),
        "NaN labels": (
            ["--moving", pair["moving"], "--moving-labels", tmp_path / "nan.nii.gz",
             "--warped-labels", tmp_path / "w.nii.gz"],
            "1 NaN or infinite voxels",
        ),
        "no overlap": (
            ["--moving", tmp_path / "far.nii.gz"],
            "do not overlap in world space (their centres are 400 mm apart)",
        ),
        "downsample": (["--moving", pair["moving"], "--downsample", "1000"], "(at most 3)"),
    }  # fmt: skip
    for name, (args, words) in cases.items():
        result = run(*base, *args)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, (name, result.stderr)
        assert words in result.stderr, (name, result.stderr)
        assert not (tmp_path / "d.nii.gz").exists() and not (tmp_path / "w.nii.gz").exists()
    assert "pass --affine" in run(*base, "--moving", tmp_path / "far.nii.gz").stderr
    result = run(*base, "--moving", pair["moving"], "--moving-labels", tmp_path / "whole.nii.gz",
                 "--warped-labels", tmp_path / "w.nii.gz")  # fmt: skip
    assert result.returncode == 0, result.stderr
    result = run("register", "--pairs", tmp_path / "p.csv", "--out-dir", tmp_path, "--nproc", "0")
    assert result.returncode == 2 and "--nproc 0: must be 1 or more" in result.stderr


def test_the_inverse_field_undoes_the_registration_and_reads_in_simpleitk(pair, tmp_path):
    """Inverse consistency (tolerance 0.1 voxel, 3 voxels from the border), atlas labels
    carried onto the moving image, and the file resampled by SimpleITK as by eoir apply."""
    from eoir.io import read_field
    from eoir.metrics import mean_dice
    from eoir.spatial import identity_grid, sample, transform_positions

    out = {name: tmp_path / f"{name}.nii.gz" for name in ("fwd", "inv", "back", "f_on_m")}
    result = run("register", "--fixed", pair["fixed"], "--moving", pair["moving"], "--affine",
                 "--model", "none", "--optimize-steps", "40", "--field", out["fwd"],
                 "--inverse-field", out["inv"], "--quiet")  # fmt: skip
    assert result.returncode == 0, result.stderr
    fwd, fixed_grid = read_field(out["fwd"])
    inv, moving_grid = read_field(out["inv"])
    assert moving_grid.same_grid(eoir.read_image(pair["moving"]))
    # moving voxel q -> fixed voxel p -> back through the forward field: q again
    q = identity_grid(moving_grid.shape, dtype=torch.float64)
    to_fixed = np.linalg.inv(fixed_grid.affine) @ moving_grid.affine
    p = transform_positions(to_fixed, q + inv.double())
    back = p + sample(fwd.double(), p, padding="border")
    again = transform_positions(np.linalg.inv(to_fixed), back)
    error = (again - q)[..., 3:-3, 3:-3, 3:-3].abs().max()
    print(f"inverse consistency: max {float(error):.4f} voxels")
    assert error < 0.1
    # the fixed image's labels carried onto the moving image land on its own labels
    result = run("apply", "--field", out["inv"], "--moving", pair["fl"], "--out", out["back"],
                 "--nearest")  # fmt: skip
    assert result.returncode == 0, result.stderr
    moving_labels = eoir.read_image(pair["ml"]).array
    fixed_labels = eoir.read_image(pair["fl"]).array  # on the same grid: the unregistered start
    before = mean_dice(moving_labels, fixed_labels, fixed_labels)
    after = mean_dice(moving_labels, eoir.read_image(out["back"]).array, fixed_labels)
    print(f"atlas labels onto the moving image: Dice {before:.3f} -> {after:.3f}")
    assert after > before + 0.02
    # SimpleITK reads the inverse field as a transform and resamples as eoir apply does
    assert run("apply", "--field", out["inv"], "--moving", pair["fixed"],
               "--out", out["f_on_m"]).returncode == 0  # fmt: skip
    import SimpleITK as sitk

    transform = sitk.DisplacementFieldTransform(
        sitk.ReadImage(str(out["inv"]), sitk.sitkVectorFloat64)
    )
    theirs = sitk.Resample(
        sitk.ReadImage(str(pair["fixed"]), sitk.sitkFloat64),
        sitk.ReadImage(str(pair["moving"])),
        transform,
        sitk.sitkLinear,
        0.0,
    )
    theirs = sitk.GetArrayFromImage(theirs).transpose()
    ours = eoir.read_image(out["f_on_m"]).array.astype(np.float64)
    inside = (slice(3, -3),) * 3
    assert np.abs(theirs - ours)[inside].max() <= 1.0  # ours is rounded to the image's int16


@pytest.mark.parametrize("similarity", ["mind", "mi"])
def test_multimodal_optimisation_recovers_a_known_field(similarity):
    """A volume against a nonlinear remapping of its contrast, deformed by a known field: the
    multimodal instance optimisation brings the field closer to the truth (measured: mean error
    1.41 -> 1.05 voxels with MIND-SSC, -> 0.91 with mutual information)."""
    shape = (40, 36, 32)
    fixed = blob_volume(shape, seed=5) + blob_volume(shape, seed=9)
    fixed = fixed / fixed.max()
    truth = smooth_field(shape, 2.5, seed=3)
    other = torch.from_numpy((1.0 - fixed) ** 2).float()[None, None]
    # moving(p + truth(p)) = other(p): the moving image is `other` pushed forward by the truth
    inverse = eoir.spatial.invert(truth.double()).float()
    moving = eoir.spatial.warp(other, inverse)[0, 0].numpy()
    result = eoir.register(fixed, moving, model=None, progress=False, device="cpu",
                           optimize_options={"similarity": similarity})  # fmt: skip
    inside = torch.from_numpy(fixed > 0.1)
    before = truth[0].norm(dim=0)[inside].mean()
    after = (result.disp[0] - truth[0]).norm(dim=0)[inside].mean()
    assert after < 0.8 * before, (float(before), float(after))


def test_a_one_contrast_network_is_set_aside_for_two_contrasts(pair, tmp_path):
    """With a multimodal similarity (the user says the contrasts differ), a network trained on
    real pairs of one contrast is not used (it aligns them as one contrast: brain-mri takes a
    T2 -> T1 pair from 2.4 to 9.4 mm); one trained on synthesised pairs is."""
    from eoir.nn.checkpoint import save_model

    torch.manual_seed(0)
    one, many = tmp_path / "one.pt", tmp_path / "many.pt"
    save_model(one, eoir.EOIR(width=4, levels=3),
               run_config={"loss": {"similarity": "ncc"}, "data": {"downsample": 1}})  # fmt: skip
    save_model(many, eoir.EOIR(width=4, levels=3),
               run_config={"loss": {"similarity": "ncc"},
                           "data": {"downsample": 1, "synth": True}})  # fmt: skip
    kwargs = {"optimize_options": {"similarity": "mind"}, "progress": False}
    with pytest.warns(UserWarning, match="one contrast"):
        aside = eoir.register(pair["fixed"], pair["moving"], model=one, optimize_steps=3, **kwargs)
    assert aside.info["model"] is None and aside.info["optimize_steps"] == 3
    assert "not used with similarity mind" in aside.info["warnings"][0]
    with pytest.warns(UserWarning, match="the start is kept"):
        affine_only = eoir.register(pair["fixed"], pair["moving"], model=one, optimize_steps=0,
                                    **kwargs)  # fmt: skip
    assert not affine_only.disp.any()  # no steps asked for: the start, not the network's field
    used = eoir.register(pair["fixed"], pair["moving"], model=many, **kwargs)
    assert used.info["model"] is not None and not used.info["warnings"]
    kept = eoir.register(pair["fixed"], pair["moving"], model=one, progress=False)  # NCC
    assert kept.info["model"] is not None and kept.disp.any()
    # the command says it once, on stderr, after its outputs
    result = run("register", "--fixed", pair["fixed"], "--moving", pair["moving"], "--model", one,
                 "--similarity", "mind", "--optimize-steps", "2",
                 "--field", tmp_path / "f.nii.gz")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("one contrast") == 1 and "UserWarning" not in result.stderr
