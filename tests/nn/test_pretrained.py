"""The shipped brain model: checksummed, loadable, used by default, refused when altered."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import eoir
from eoir.image import Image
from eoir.io import write_image
from eoir.nn.checkpoint import load_model, model_sha256, resave, save_model, weights_sha256
from eoir.nn.complexity import count_parameters
from eoir.pretrained import PRETRAINED, file_sha256, pretrained_path
from helpers import eoir_cli as _run
from helpers import shared_dataset, smooth_field, smooth_image


def test_shipped_model_has_its_recorded_checksum_and_config():
    path = pretrained_path("brain-mri")
    assert path.stat().st_size < 5e6  # a few MB at most
    assert file_sha256(path) == PRETRAINED["brain-mri"].sha256
    assert (path.parent / PRETRAINED["brain-mri"].card).is_file()
    model = load_model("brain-mri")
    assert isinstance(model, eoir.EOIR) and not model.training
    assert model.config["width"] == 16 and model.config["integration_steps"] == 7
    assert model.trained_downsample == 2 and model.expected_spacing == 1.0
    assert model.expected_axes == "ASL"  # the OASIS training images' voxel axes
    assert count_parameters(model) == 241_047


def test_shipped_model_registers_a_small_pair_on_cpu():
    fixed = smooth_image((40, 36, 32), seed=3)
    true = eoir.integrate(smooth_field((40, 36, 32), 1.5, seed=4), 7)
    moving = eoir.warp(fixed, true)
    result = eoir.register(
        moving=moving[0, 0].numpy(), fixed=fixed[0, 0].numpy(), model="brain-mri"
    )
    assert result.disp.shape == (1, 3, 40, 36, 32)
    assert torch.isfinite(result.disp).all()
    assert result.info["downsample"] == 2  # the model's own training resolution
    assert result.jacobian_stats()["folding_percent"] < 1.0


def test_altered_shipped_model_is_refused(monkeypatch):
    entry = PRETRAINED["brain-mri"]
    monkeypatch.setitem(PRETRAINED, "brain-mri", entry.__class__(entry.file, "0" * 64, "x"))
    with pytest.raises(eoir.InputError, match=r"checksum .* is not the recorded"):
        load_model("brain-mri")
    with pytest.raises(eoir.InputError, match="no such shipped model"):
        pretrained_path("brain-ct")


def test_checkpoint_with_edited_weights_or_settings_is_refused(tmp_path):
    path = tmp_path / "m.pt"
    save_model(path, eoir.EOIR(width=4, levels=3), run_config={"data": {"downsample": 2}})
    state = torch.load(path, weights_only=True)
    assert state["weights_sha256"] == weights_sha256(state["model"])
    assert state["model_sha256"] == model_sha256(state)
    assert load_model(path).trained_downsample == 2

    def saved(name, **changes):
        torch.save({**state, **changes}, tmp_path / name)
        return tmp_path / name

    weights = {k: v.clone() for k, v in state["model"].items()}
    next(iter(weights.values())).add_(1.0)
    edits = {
        "weights.pt": {"model": weights},
        "steps.pt": {"config": dict(state["config"], integration_steps=0)},
        "composition.pt": {"config": dict(state["config"], composition="add")},
        "downsample.pt": {"run_config": {"data": {"downsample": 1}}},
        "spacing.pt": {"input_spacing_mm": 3.0},
        "axes.pt": {"input_axes": "RAS"},
    }
    for name, change in edits.items():
        with pytest.raises(eoir.InputError, match=rf"{name}: .*sha256 .* is not the recorded"):
            load_model(saved(name, **change))
    # without its digest (deleted to hide an edit): refused
    bare = {k: v for k, v in state.items() if k not in ("model_sha256", "weights_sha256")}
    torch.save({**bare, "model": weights}, tmp_path / "bare.pt")
    with pytest.raises(eoir.InputError, match=r"bare\.pt: the checkpoint carries no model digest"):
        load_model(tmp_path / "bare.pt")
    resave(tmp_path / "bare.pt")  # a file the user trusts: the digest added, then it loads
    assert load_model(tmp_path / "bare.pt").config == state["config"]

    def consistent(name, **changes):  # edited, with digests recomputed to match
        edited = {**state, **changes}
        edited["weights_sha256"] = weights_sha256(edited["model"])
        edited["model_sha256"] = model_sha256(edited)
        torch.save(edited, tmp_path / name)
        return tmp_path / name

    nan = {k: torch.full_like(v, float("nan")) for k, v in state["model"].items()}
    invalid = {
        "nan.pt": ({"model": nan}, "NaN or infinite"),
        "zero.pt": ({"run_config": {"data": {"downsample": 0}}}, "downsample 0: must be 1"),
        "negative.pt": (
            {"input_spacing_mm": -1.0},
            "input_spacing_mm -1.0: must be a positive number",
        ),
        "axes.pt": ({"input_axes": "RRS"}, "input_axes 'RRS': must be 3 axis codes"),
        "wrong.pt": ({"config": dict(state["config"], width=8)}, "does not match its config"),
        "unknown.pt": (
            {"config": dict(state["config"], architecture="transmorph")},
            "architecture 'transmorph': choose one of",
        ),
    }
    for name, (change, words) in invalid.items():
        with pytest.raises(eoir.InputError, match=words):
            load_model(consistent(name, **change))


def test_a_registration_that_gives_a_non_finite_field_writes_nothing(tmp_path, monkeypatch):
    import eoir.registration.pipeline as pipeline

    image = smooth_image((24, 24, 24))[0, 0].numpy()
    write_image(tmp_path / "i.nii.gz", image, Image(image, np.eye(4)))
    monkeypatch.setattr(
        pipeline, "refine", lambda work, *a: torch.full((1, 3, *work.shape), np.nan)
    )
    result = _run("register", "--fixed", tmp_path / "i.nii.gz", "--moving", tmp_path / "i.nii.gz",
                  "--field", tmp_path / "f.nii.gz", "--model", "none")  # fmt: skip
    assert result.returncode == 2 and "NaN or infinite displacements" in result.stderr
    assert not (tmp_path / "f.nii.gz").exists()


def test_register_command_uses_the_shipped_model_for_mri_by_default(tmp_path):
    image = smooth_image((40, 36, 32), seed=5)[0, 0].numpy() * 1000
    moved = eoir.warp(torch.from_numpy(image)[None, None], smooth_field((40, 36, 32), 1.0))[0, 0]
    reference = Image(image.astype(np.float32), np.diag([1.0, 1.0, 1.0, 1.0]))
    write_image(tmp_path / "f.nii.gz", reference.array, reference)
    write_image(tmp_path / "m.nii.gz", moved.numpy().astype(np.float32), reference)
    common = ["register", "--fixed", tmp_path / "f.nii.gz", "--moving", tmp_path / "m.nii.gz"]
    default = _run(*common, "--field", tmp_path / "a.nii.gz")
    assert default.returncode == 0 and "(model brain-mri)" in default.stdout, default.stderr
    alone = _run(
        *common, "--field", tmp_path / "b.nii.gz", "--model", "none", "--optimize-steps", "3"
    )
    assert alone.returncode == 0 and "(3 optimisation steps)" in alone.stdout, alone.stderr
    ct = _run(*common, "--preset", "ct", "--optimize-steps", "2", "--field", tmp_path / "c.nii.gz")
    assert ct.returncode == 0 and "(2 optimisation steps)" in ct.stdout, ct.stderr
    coarse = Image(image.astype(np.float32), np.diag([3.0, 3.0, 3.0, 1.0]))
    write_image(tmp_path / "f3.nii.gz", coarse.array, coarse)
    write_image(tmp_path / "m3.nii.gz", moved.numpy().astype(np.float32), coarse)
    # 3 mm voxels are resampled into the model's 1 mm frame (eoir.registration.frame)
    coarse_run = _run("register", "--fixed", tmp_path / "f3.nii.gz", "--moving",
                      tmp_path / "m3.nii.gz", "--quiet")  # fmt: skip
    assert coarse_run.returncode == 0 and coarse_run.stderr == "", coarse_run.stderr


def test_shipped_model_on_a_real_validation_pair():
    folder = shared_dataset("oasis-trt-20")
    images, labels = folder / "imagesTr", folder / "labelsTr"
    name = "OASISTRT_00{}_0000.nii.gz"
    result = eoir.register(images / name.format(13), images / name.format(14), model="brain-mri")
    before, after = eoir.registration.dice_before_after(
        result, labels / name.format(13), labels / name.format(14)
    )
    print(f"brain-mri on OASIS-TRT-20 14 -> 13: Dice {before:.3f} -> {after:.3f}")
    assert before < 0.42 and after > 0.60
    assert result.jacobian_stats()["folding_percent"] < 0.1
    reduced = eoir.register(
        images / name.format(13), images / name.format(14), model="brain-mri", precision="bfloat16"
    )
    _, after_bf16 = eoir.registration.dice_before_after(
        reduced, labels / name.format(13), labels / name.format(14)
    )
    assert abs(after_bf16 - after) < 0.005, (after, after_bf16)


def test_package_data_lists_the_shipped_model_and_the_recipes():
    text = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert "pretrained/*.pt" in text and "pretrained/*.md" in text
    assert "training/recipes/*.yaml" in text


def test_bfloat16_inference_agrees_with_float32():
    fixed = smooth_image((48, 40, 40), seed=6)
    moving = eoir.warp(fixed, eoir.integrate(smooth_field((48, 40, 40), 2.0, seed=7), 7))
    pair = {"fixed": fixed[0, 0].numpy(), "moving": moving[0, 0].numpy(), "model": "brain-mri"}
    full = eoir.register(**pair)
    reduced = eoir.register(**pair, precision="bfloat16")
    diff = (full.disp - reduced.disp).abs()
    print(f"bf16 vs fp32 field: mean {diff.mean():.4f}, max {diff.max():.4f} voxels")
    assert reduced.info["precision"] == "bfloat16"
    assert diff.mean() < 0.05 and diff.max() < 1.0
    with pytest.raises(eoir.InputError, match="precision 'float16': is for CUDA"):
        eoir.register(**pair, precision="float16")
    with pytest.raises(eoir.InputError, match="precision 'int8': choose one of float32"):
        eoir.register(**pair, precision="int8")
