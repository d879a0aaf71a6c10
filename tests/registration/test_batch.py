"""`eoir register --pairs`: one loaded model, many pairs, the same fields as single calls."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import eoir
from eoir.image import Image
from eoir.io import write_image
from eoir.registration.batch import read_pairs
from helpers import eoir_cli as run
from helpers import smooth_field, smooth_image, write_l2r_dataset

SHAPE = (36, 32, 28)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pairs")
    reference = Image(np.zeros(SHAPE, np.float32), np.diag([1.0, 1.0, 1.0, 1.0]))
    lines = ["fixed,moving,moving_labels"]
    for i in range(3):
        fixed = smooth_image(SHAPE, seed=10 + i)
        moving = eoir.warp(fixed, eoir.integrate(smooth_field(SHAPE, 1.5, seed=20 + i), 7))
        labels = (moving[0, 0] > 0.5).numpy().astype(np.int16)
        for name, array in ((f"f{i}", fixed[0, 0].numpy()), (f"m{i}", moving[0, 0].numpy())):
            write_image(folder / f"{name}.nii.gz", (1000 * array).astype(np.float32), reference)
        write_image(folder / f"l{i}.nii.gz", labels, reference)
        lines.append(f"f{i}.nii.gz,m{i}.nii.gz,l{i}.nii.gz")
    (folder / "pairs.csv").write_text("\n".join(lines) + "\n")
    return folder


def _field(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


def test_batch_fields_equal_single_calls(pairs, tmp_path):
    out = tmp_path / "out"
    batch = run("register", "--pairs", pairs / "pairs.csv", "--out-dir", out)
    assert batch.returncode == 0 and "registered 3 pairs" in batch.stdout, batch.stderr
    summary = (out / "summary.csv").read_text().splitlines()
    assert len(summary) == 4 and summary[0].startswith("fixed,moving,status,error,seconds")
    for i in range(3):
        single = tmp_path / f"single{i}.nii.gz"
        one = run(
            "register",
            "--fixed",
            pairs / f"f{i}.nii.gz",
            "--moving",
            pairs / f"m{i}.nii.gz",
            "--field",
            single,
        )
        assert one.returncode == 0, one.stderr
        stem = f"m{i}_to_f{i}"
        assert np.abs(_field(out / f"{stem}_field.nii.gz") - _field(single)).max() < 1e-6
        assert (out / f"{stem}_warped.nii.gz").is_file()
        assert _field(out / f"{stem}_labels.nii.gz").shape == SHAPE


def test_batch_splits_pairs_over_processes(pairs, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert run("register", "--pairs", pairs / "pairs.csv", "--out-dir", one).returncode == 0
    result = run("register", "--pairs", pairs / "pairs.csv", "--out-dir", two, "--nproc", "2")
    assert result.returncode == 0, result.stderr
    assert len((two / "summary.csv").read_text().splitlines()) == 4
    for i in range(3):
        name = f"m{i}_to_f{i}_field.nii.gz"
        assert np.abs(_field(one / name) - _field(two / name)).max() < 1e-6


def test_batch_refuses_bad_lists_and_existing_outputs(pairs, tmp_path):
    (tmp_path / "bad.csv").write_text("image,other\na,b\n")
    result = run("register", "--pairs", tmp_path / "bad.csv", "--out-dir", tmp_path / "o")
    assert result.returncode == 2 and "fixed,moving" in result.stderr
    (tmp_path / "missing.csv").write_text("fixed,moving\nnope.nii.gz,m0.nii.gz\n")
    result = run("register", "--pairs", tmp_path / "missing.csv", "--out-dir", tmp_path / "o")
    assert result.returncode == 2 and "does not exist" in result.stderr
    out = tmp_path / "taken"
    out.mkdir()
    (out / "m1_to_f1_field.nii.gz").write_bytes(b"precious")
    result = run("register", "--pairs", pairs / "pairs.csv", "--out-dir", out)
    assert result.returncode == 2 and "exists" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["m1_to_f1_field.nii.gz"]
    assert (out / "m1_to_f1_field.nii.gz").read_bytes() == b"precious"
    result = run("register", "--pairs", pairs / "pairs.csv", "--fixed", pairs / "f0.nii.gz")
    assert result.returncode == 2 and "--pairs" in result.stderr


def test_read_pairs_from_a_dataset_json(tmp_path):

    dataset = write_l2r_dataset(tmp_path / "ds")
    jobs = read_pairs(dataset)
    assert jobs and all(job.moving_labels is not None for job in jobs)
    assert len({job.stem for job in jobs}) == len(jobs)


def test_a_bad_pair_is_recorded_and_the_others_complete_and_a_rerun_skips_the_done(pairs, tmp_path):
    import csv
    import shutil

    data = tmp_path / "data"
    shutil.copytree(pairs, data)
    (data / "m1.nii.gz").write_bytes(b"\x1f\x8b" + b"not really gzip" * 40)  # corrupt
    out = tmp_path / "out"
    common = ["register", "--pairs", data / "pairs.csv", "--out-dir", out, "--model", "none",
              "--optimize-steps", "2"]  # fmt: skip
    result = run(*common)
    assert result.returncode == 1, result.stderr
    assert "2 pairs" in result.stdout and "1 failed" in result.stdout
    with open(out / "summary.csv", newline="") as f:
        rows = {Path(r["moving"]).name: r for r in csv.DictReader(f)}
    assert [rows[f"m{i}.nii.gz"]["status"] for i in range(3)] == ["ok", "failed", "ok"]
    assert "m1.nii.gz" in rows["m1.nii.gz"]["error"]
    assert not list(out.glob("m1_to_f1*")) and len(list(out.glob("m[02]_to_*"))) == 6
    # a plain rerun is refused (outputs exist); --skip-existing redoes only what is missing
    result = run(*common)
    assert result.returncode == 2 and "--overwrite or --skip-existing" in result.stderr
    shutil.copy(pairs / "m1.nii.gz", data / "m1.nii.gz")  # the file mended
    before = (out / "m0_to_f0_field.nii.gz").stat().st_mtime_ns
    result = run(*common, "--skip-existing")
    assert result.returncode == 0, result.stderr
    assert "registered 1 pairs" in result.stdout and "2 skipped" in result.stdout
    assert (out / "m0_to_f0_field.nii.gz").stat().st_mtime_ns == before
    with open(out / "summary.csv", newline="") as f:
        statuses = [r["status"] for r in csv.DictReader(f)]
    assert statuses == ["skipped", "ok", "skipped"]
