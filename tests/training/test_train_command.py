"""Training and evaluation on datasets: loss goes down, exact resume, DDP, CSVs, bad input."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from eoir.errors import InputError
from eoir.io import load_dataset, read_image
from eoir.losses import multilevel_loss
from eoir.nn import EOIR
from eoir.nn.checkpoint import build_model, read_checkpoint
from eoir.registration import register
from eoir.training.config import load_config
from eoir.training.data import PairDataset, epoch_pairs
from eoir.training.evaluate import score_pair
from eoir.training.train import train, validation_score
from helpers import eoir_cli as run
from helpers import shared_dataset, write_l2r_dataset

TINY = [
    "model.width=4",
    "model.levels=3",
    "data.downsample=1",
    "data.workers=0",
    "optim.lr=1e-3",
    "optim.schedule=constant",
    "train.log_every=1",
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_l2r_dataset(tmp_path_factory.mktemp("syn") / "data")


def _mean_loss(model: EOIR, spec) -> float:
    n = len(spec.training)
    data = PairDataset(spec.training, [(f, m) for f in range(n) for m in range(n) if f != m])
    model.train()
    with torch.no_grad():
        losses = []
        for item in data:
            out = model(item["moving"][None], item["fixed"][None], levels=True)
            losses.append(
                float(
                    multilevel_loss(
                        out.fields, out.residuals, item["moving"][None], item["fixed"][None]
                    )[0]
                )
            )
    return sum(losses) / len(losses)


def test_dataset_reading_and_pairing(dataset):
    spec = load_dataset(dataset)
    assert [s.name for s in spec.training] == ["SYN_0001_0000", "SYN_0002_0000", "SYN_0003_0000"]
    assert len(spec.val) == 2 and spec.labels == [0, 1, 2, 3] and spec.shape == (24, 24, 24)
    assert spec.label_names == {1: "outer", 2: "inner", 3: "inner"}
    assert epoch_pairs(3, "all", 0, 0) == epoch_pairs(3, "all", 0, 0)
    assert sorted(epoch_pairs(3, "all", 1, 0)) == [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]
    assert sorted(m for _, m in epoch_pairs(3, "random", 0, 0)) == [0, 1, 2]
    assert all(f == 1 for f, _ in epoch_pairs(3, "atlas", 0, 0, atlas=1))
    folder = load_dataset(dataset.parent / "imagesTr")  # a plain folder of 5 images
    assert len(folder.training) == 3 and len(folder.val) == 2


def test_a_few_steps_lower_the_loss(dataset, tmp_path):
    # with activation checkpointing (the same gradients: tests/test_model.py) to train that path
    config = load_config("cpu-brain", overrides=[*TINY, "train.checkpointing=true"])
    spec = load_dataset(dataset)
    torch.manual_seed(0)
    initial = build_model(config["model"], strict=False)  # the run's initial weights (seed 0)
    before = _mean_loss(initial, spec)
    result = train(dataset, tmp_path / "run", config, max_steps=30, echo=lambda _: None)
    assert result["step"] == 30
    state = read_checkpoint(tmp_path / "run" / "last.pt")
    trained = build_model(state["config"])
    trained.load_state_dict(state["model"])
    after = _mean_loss(trained, spec)
    assert after < before - 0.02, (before, after)
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert rows[-1]["step"] == "30" and rows[-1]["val"] != ""
    assert (tmp_path / "run" / "best.pt").is_file() and (tmp_path / "run" / "config.yaml").is_file()
    assert any((tmp_path / "run" / "tensorboard").iterdir())


def test_kill_and_resume_gives_the_same_weights(dataset, tmp_path):
    """Killed (SIGKILL) after a validation and its checkpoint, resumed: bit for bit the weights,
    optimizer state and best model of an uninterrupted run."""
    steps = 30
    overrides = [*TINY, "train.save_every=5", "train.val_every=5"]
    reference = tmp_path / "reference"
    train(
        dataset,
        reference,
        load_config("cpu-brain", overrides=overrides),
        max_steps=steps,
        echo=lambda _: None,
    )

    killed = tmp_path / "killed"
    args = [
        "train",
        "--dataset",
        dataset,
        "--out",
        killed,
        "--recipe",
        "cpu-brain",
        "--max-steps",
        steps,
        *[a for o in overrides for a in ("--set", o)],
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "eoir", *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        if (killed / "last.pt").exists() and read_checkpoint(killed / "last.pt")["step"] >= 10:
            break
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    interrupted_at = read_checkpoint(killed / "last.pt")["step"]  # never truncated
    assert 10 <= interrupted_at < steps
    result = run(*args[: -2 * len(overrides)], "--resume")  # the run keeps its own config
    assert result.returncode == 0, result.stderr
    a = read_checkpoint(reference / "last.pt")
    b = read_checkpoint(killed / "last.pt")
    assert a["step"] == b["step"] == steps
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    for key, state in a["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(
                torch.as_tensor(value), torch.as_tensor(b["optimizer"]["state"][key][name])
            )
    best_a, best_b = read_checkpoint(reference / "best.pt"), read_checkpoint(killed / "best.pt")
    assert best_a["step"] == best_b["step"]
    for name, tensor in best_a["model"].items():
        assert torch.equal(tensor, best_b["model"][name]), name


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_sigterm_to_the_group_or_a_dead_worker_ends_with_one_line(dataset, tmp_path):
    """A scheduler's SIGTERM to the whole process group (DataLoader workers included): exit 143,
    one line, the last checkpoint intact and ``--resume`` going on from it; a worker killed alone
    (as by the kernel when memory runs out): exit 2, one line naming the checkpoint."""
    overrides = [*TINY, "data.workers=2", "train.save_every=2", "train.val_every=1000"]

    def start(out: Path) -> subprocess.Popen:
        args = ["train", "--dataset", dataset, "--out", out, "--recipe", "cpu-brain",
                "--max-steps", 100_000, *[a for o in overrides for a in ("--set", o)]]  # fmt: skip
        process = subprocess.Popen(
            [sys.executable, "-m", "eoir", *map(str, args)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # a group of its own, as under a scheduler
        )
        deadline = time.time() + 120
        while time.time() < deadline and not (out / "last.pt").exists():
            time.sleep(0.05)
        time.sleep(0.5)  # stepping, with its workers drawing the next pairs
        return process

    group = tmp_path / "group"
    process = start(group)
    os.killpg(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    assert stderr.strip().count("\n") == 0 and "terminated" in stderr, stderr
    step = read_checkpoint(group / "last.pt")["step"]
    assert step >= 2
    resumed = run("train", "--dataset", dataset, "--out", group, "--recipe", "cpu-brain",
                  "--max-steps", step + 2, "--resume")  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert read_checkpoint(group / "last.pt")["step"] == step + 2

    alone = tmp_path / "alone"
    process = start(alone)
    os.kill(_children(process.pid)[0], signal.SIGKILL)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2, stderr
    assert stderr.strip().count("\n") == 0, stderr
    assert "killed by signal" in stderr and str(alone / "last.pt") in stderr, stderr
    deadline = time.time() + 30  # and the other worker is not left behind
    while time.time() < deadline and _group_alive(process.pid):
        time.sleep(0.1)
    assert not _group_alive(process.pid)


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux ``/proc``)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _group_alive(group: int) -> bool:
    """Whether any process of the process group is left."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def test_two_processes_with_gloo(dataset, tmp_path):
    out = tmp_path / "ddp"
    result = run(
        "train",
        "--dataset",
        dataset,
        "--out",
        out,
        "--recipe",
        "cpu-brain",
        "--nproc",
        "2",
        "--max-steps",
        "4",
        *[a for o in TINY for a in ("--set", o)],
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.glob("*.pt")) == ["best.pt", "last.pt"]
    assert read_checkpoint(out / "last.pt")["step"] == 4
    assert open(out / "metrics.csv").read().count("step,epoch") == 1  # rank 0 alone writes


def test_evaluate_writes_the_csvs(dataset, tmp_path):
    train(
        dataset,
        tmp_path / "run",
        load_config("cpu-brain", overrides=TINY),
        max_steps=3,
        echo=lambda _: None,
    )
    out = tmp_path / "results.csv"
    result = run(
        "evaluate",
        "--dataset",
        dataset,
        "--model",
        tmp_path / "run" / "last.pt",
        "--out",
        out,
        "--save-fields",
        tmp_path / "fields",
    )
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(open(out)))
    assert [(r["fixed"], r["moving"]) for r in rows] == [
        ("SYN_0004_0000", "SYN_0005_0000"),
        ("SYN_0005_0000", "SYN_0004_0000"),
    ]
    assert {
        "dice",
        "dice_inner",
        "dice_outer",
        "hd95",
        "folding_percent",
        "sdlogj",
        "seconds",
    } <= set(rows[0])
    per_label = list(csv.DictReader(open(tmp_path / "results_labels.csv")))
    assert len(per_label) == 6 and {r["label"] for r in per_label} == {"1", "2", "3"}
    assert sorted(p.name for p in (tmp_path / "fields").iterdir()) == [
        "disp_0004_0000_0005_0000.nii.gz",
        "disp_0005_0000_0004_0000.nii.gz",
    ]
    assert "dice" in result.stdout and "+-" in result.stdout
    # the streamed evaluation (reading and scoring in threads) scores each pair as one call does
    spec = load_dataset(dataset)
    for row, (fixed, moving) in zip(rows, spec.pairs("val"), strict=True):
        alone = register(fixed.image, moving.image, model=tmp_path / "run" / "last.pt")
        labels = read_image(moving.label).array
        expected, _ = score_pair(
            read_image(fixed.label).array,
            alone.warp_labels(read_image(moving.label)),
            labels,
            alone.fixed.spacing,
            spec.label_names,
        )
        assert float(row["dice"]) == pytest.approx(expected["dice"], abs=1e-9)
    two = run(
        "evaluate",
        "--dataset",
        dataset,
        "--model",
        tmp_path / "run" / "last.pt",
        "--out",
        tmp_path / "two.csv",
        "--nproc",
        "2",
    )
    assert two.returncode == 0, two.stderr
    rows_two = list(csv.DictReader(open(tmp_path / "two.csv")))
    assert sorted((r["fixed"], r["dice"]) for r in rows_two) == sorted(
        (r["fixed"], r["dice"]) for r in rows
    )
    none = run("evaluate", "--dataset", dataset, "--model", "none", "--out", tmp_path / "id.csv")
    assert none.returncode == 0, none.stderr
    assert float(next(csv.DictReader(open(tmp_path / "id.csv")))["folding_percent"]) == 0.0


def test_bad_inputs(dataset, tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    missing = tmp_path / "missing"
    missing.mkdir()
    (missing / "dataset.json").write_text('{"training": [{"image": "./imagesTr/x.nii.gz"}]}')
    import shutil

    mixed = tmp_path / "mixed"
    shutil.copytree(dataset.parent, mixed)
    write_l2r_dataset(tmp_path / "other", subjects=2, shape=(20, 22, 24), val=0)
    shutil.copy(
        tmp_path / "other" / "imagesTr" / "SYN_0002_0000.nii.gz",
        mixed / "imagesTr" / "SYN_0002_0000.nii.gz",
    )
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "last.pt").write_bytes(b"x")
    base = ["train", "--out", tmp_path / "new", "--recipe", "cpu-brain", "--max-steps", "1"]
    vm_checkpointing = [
        "--set",
        "model.architecture=voxelmorph",
        "--set",
        "train.checkpointing=true",
    ]
    cases = {
        "invalid json": ([*base, "--dataset", tmp_path / "bad.json"], "not valid JSON"),
        "missing file": ([*base, "--dataset", missing], "does not exist"),
        "shapes": ([*base, "--dataset", mixed / "dataset.json"], "differs from the dataset's"),
        "checkpoint": (
            [
                "evaluate",
                "--dataset",
                dataset,
                "--model",
                tmp_path / "junk.pt",
                "--out",
                tmp_path / "r.csv",
            ],
            "not a readable checkpoint",
        ),
        "busy run dir": (
            ["train", "--dataset", dataset, "--out", busy, "--recipe", "cpu-brain"],
            "holds another run",
        ),
        "unknown recipe": ([*base, "--dataset", dataset, "--recipe", "nope"], "no such recipe"),
        "bad override": ([*base, "--dataset", dataset, "--set", "optim.lr=fast"], "not a float"),
        "nothing to resume": ([*base, "--dataset", dataset, "--resume"], "nothing to resume"),
        "checkpointing": (
            [*base, "--dataset", dataset, *vm_checkpointing],
            "train.checkpointing: not available for voxelmorph",
        ),
        "negative lr": ([*base, "--dataset", dataset, "--set", "optim.lr=-1"], "must be > 0"),
        "field term on images": (
            [*base, "--dataset", dataset, "--set", "loss.field_weight=1"],
            "a true field exists only for images synthesised from label maps",
        ),
        "zero width": ([*base, "--dataset", dataset, "--set", "model.width=0"], "must be >= 1"),
        "an image term that never applies": (
            [*base, "--dataset", dataset, "--set", "data.synth=true", "--set", "loss.sim_weight=1"],
            "synth.same_contrast = 0 draws no pair of one contrast, so it would never apply",
        ),
        "even window": (
            [*base, "--dataset", dataset, "--set", "loss.windows=[9,4]"],
            "NCC windows must be odd",
        ),
        "unknown choice": (
            [*base, "--dataset", dataset, "--set", "loss.similarity=ssd"],
            "loss.similarity 'ssd': choose one of ncc, mse, mind",
        ),
        "zero steps": (
            [
                "train",
                "--out",
                tmp_path / "new",
                "--recipe",
                "cpu-brain",
                "--dataset",
                dataset,
                "--max-steps",
                "0",
            ],
            "--max-steps 0: must be 1 or more",
        ),
        "too small": (
            [*base, "--dataset", dataset, "--set", "model.levels=5", "--set", "data.downsample=1"],
            "too small for the model's levels",
        ),
    }
    for name, (args, message) in cases.items():
        result = run(*args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and message in lines[0], (
            name,
            result.stderr,
        )
    assert not (tmp_path / "new").exists() and not (tmp_path / "r.csv").exists()
    assert (busy / "last.pt").read_bytes() == b"x"
    with pytest.raises(InputError):
        load_dataset(tmp_path / "nowhere")


@pytest.mark.slow
def test_short_cpu_training_on_oasis_beats_the_untrained_model(tmp_path):
    data = shared_dataset("oasis-trt-20") / "dataset.json"
    config = load_config("cpu-brain", overrides=["train.val_pairs=2", "train.val_every=1000"])
    spec = load_dataset(data)
    subjects = [s for pair in spec.val[:2] for s in pair]
    val = PairDataset(subjects, [(0, 1), (2, 3)], "mri", config["data"]["downsample"])
    torch.manual_seed(0)
    initial = build_model(config["model"], strict=False)
    untrained = validation_score(initial, val, torch.device("cpu"))
    result = train(data, tmp_path / "run", config, max_steps=40, echo=lambda _: None)
    print(
        f"OASIS 2 val pairs at 1/4 resolution: Dice untrained {untrained:.3f} -> "
        f"{result['best']:.3f} after 40 steps"
    )
    assert result["best"] > untrained + 0.02


def test_bad_training_data_stops_with_one_line_and_no_run_left(dataset, tmp_path):
    import shutil

    import nibabel as nib
    import numpy as np

    nan = tmp_path / "nan"
    shutil.copytree(dataset.parent, nan)
    image = nan / "imagesTr" / "SYN_0002_0000.nii.gz"
    array = np.asarray(nib.load(image).dataobj).astype(np.float32)
    array[3, 3, 3] = np.nan
    nib.save(nib.Nifti1Image(array, nib.load(image).affine), image)
    for workers in ("0", "2"):  # read in this process, and in DataLoader workers
        out = tmp_path / f"run{workers}"
        args = ["train", "--dataset", nan / "dataset.json", "--out", out, "--recipe",
                "cpu-brain", "--max-steps", "3", *[a for o in TINY for a in ("--set", o)],
                "--set", f"data.workers={workers}"]  # fmt: skip
        result = run(*args)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and "1 NaN or infinite voxels" in result.stderr
        assert "SYN_0002_0000.nii.gz" in result.stderr
        assert not out.exists() or not list(out.iterdir())  # a retry is not refused
    labels = tmp_path / "labels"
    shutil.copytree(dataset.parent, labels)
    label = labels / "labelsTr" / "SYN_0003_0000.nii.gz"
    values = np.asarray(nib.load(label).dataobj).astype(np.float32) + 0.37
    nib.save(nib.Nifti1Image(values, nib.load(label).affine), label)
    result = run("train", "--dataset", labels / "dataset.json", "--out", tmp_path / "l",
                 "--recipe", "cpu-brain", "--max-steps", "2",
                 *[a for o in TINY for a in ("--set", o)])  # fmt: skip
    assert result.returncode == 2 and "holds non-integer values (0.37" in result.stderr


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(
    dataset, tmp_path, monkeypatch
):
    import eoir.training.train as loop

    config = load_config("cpu-brain", overrides=[*TINY, "train.save_every=2", "train.val_every=0"])
    train(dataset, tmp_path / "run", config, max_steps=4, echo=lambda _: None)
    good = read_checkpoint(tmp_path / "run" / "last.pt")
    step = loop.training_step

    def poisoned(net, *args, **kwargs):
        loss, terms = step(net, *args, **kwargs)
        return loss * float("nan"), terms

    monkeypatch.setattr(loop, "training_step", poisoned)
    with pytest.raises(InputError, match="step 5: the loss is nan: training stopped"):
        train(dataset, tmp_path / "run", config, resume=True, max_steps=8, echo=lambda _: None)
    kept = read_checkpoint(tmp_path / "run" / "last.pt")
    assert kept["step"] == 4
    for name, tensor in good["model"].items():
        assert torch.equal(tensor, kept["model"][name])


def test_evaluate_defaults_to_the_shipped_model_and_takes_a_pair_only_dataset(dataset, tmp_path):
    import json

    meta = json.loads(dataset.read_text())
    pairs_only = dataset.parent / "pairs_only.json"
    pairs_only.write_text(json.dumps({**meta, "training": []}))
    spec = load_dataset(pairs_only)
    assert spec.training == [] and len(spec.val) == 2
    result = run("evaluate", "--dataset", pairs_only, "--out", tmp_path / "r.csv")
    assert result.returncode == 0, result.stderr
    assert "with brain-mri" in result.stdout
    result = run("train", "--dataset", pairs_only, "--out", tmp_path / "t", "--recipe",
                 "cpu-brain")  # fmt: skip
    assert result.returncode == 2 and "no training images" in result.stderr


def test_a_2d_dataset_trains_registers_and_evaluates(tmp_path):
    """2-D NIfTI files end to end: `eoir train` with model.ndim=2, then `eoir register` and
    `eoir evaluate` with the trained 2-D checkpoint."""
    data = write_l2r_dataset(tmp_path / "data2d", shape=(40, 36))
    assert read_image(data.parent / "imagesTr" / "SYN_0001_0000.nii.gz").ndim == 2
    run_dir = tmp_path / "run"
    ran = run("train", "--dataset", data, "--out", run_dir, "--recipe", "cpu-brain",
              *[a for s in [*TINY, "model.ndim=2", "data.downsample=2"] for a in ("--set", s)],
              "--max-steps", "3", "--device", "cpu", "--quiet")  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    images, labels = data.parent / "imagesTr", data.parent / "labelsTr"
    ran = run("register", "--fixed", images / "SYN_0004_0000.nii.gz",
              "--moving", images / "SYN_0005_0000.nii.gz", "--model", run_dir / "best.pt",
              "--fixed-labels", labels / "SYN_0004_0000.nii.gz",
              "--moving-labels", labels / "SYN_0005_0000.nii.gz",
              "--warped-labels", tmp_path / "wl.nii.gz", "--quiet")  # fmt: skip
    assert ran.returncode == 0 and "Dice" in ran.stdout, ran.stderr
    ran = run("evaluate", "--dataset", data, "--model", run_dir / "best.pt",
              "--out", tmp_path / "ev.csv", "--device", "cpu", "--quiet")  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    rows = list(csv.DictReader(open(tmp_path / "ev.csv")))
    assert len(rows) == 2 and all(0 < float(r["dice"]) <= 1 for r in rows)


def test_bf16_autocast_only_where_bf16_is_native(monkeypatch):
    """train.amp autocasts on a GPU and on CPUs with native bf16, never where it is emulated."""
    from eoir.runtime import bf16_native

    assert bf16_native(torch.device("cuda"))
    for native in (True, False):
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda n=native: n)
        assert bf16_native(torch.device("cpu")) is native
