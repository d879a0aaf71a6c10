"""The ``eoir`` command: version, help, info, and one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

import eoir
from eoir import __version__
from eoir.cli import build_parser, main
from eoir.io import FIELD_FORMATS, SPLITS
from eoir.options import PRECISIONS
from eoir.registration.pipeline import OPTIMIZE_TARGETS
from eoir.registration.preprocess import PRESETS
from helpers import blob_volume, eoir_cli, eoir_process

_run = eoir_process  # these tests are of the process: the entry point and its exit code


def test_version_and_help():
    result = _run("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"eoir {__version__}"
    result = _run("--help")
    assert result.returncode == 0 and "info" in result.stdout and "voxel" in result.stdout


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "usage: eoir" in capsys.readouterr().out


def test_info_reports_parameters_and_multiply_adds(capsys):
    assert (
        main(["info", "--width", "8", "--factors", "2", "2", "1", "--shape", "128", "128", "16"])
        == 0
    )
    out = capsys.readouterr().out
    assert "parameters: 111,208" in out
    assert "11.02 G" in out
    assert main(["info", "--oasis"]) == 0
    assert "parameters: 3,441,484" in capsys.readouterr().out


def test_bad_input_is_one_line_and_exit_code_2():
    result = _run("info", "--shape", "3", "4")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--shape needs 3 positive sizes" in lines[0]
    result = _run("info", "--factors", "2", "2")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "factors" in result.stderr


def test_the_parser_takes_its_choices_from_the_library_tables():
    register = build_parser()._subparsers._group_actions[0].choices["register"]
    choices = {a.dest: a.choices for a in register._actions if a.choices}
    assert choices["precision"] == list(PRECISIONS)
    assert choices["preset"] == list(PRESETS)
    assert choices["field_format"] == list(FIELD_FORMATS)
    assert choices["optimize_target"] == list(OPTIMIZE_TARGETS)
    assert choices["split"] == list(SPLITS)


@pytest.mark.parametrize(
    ("options", "library", "command"),
    [
        ({"device": "cuda:99"}, "device 'cuda:99': ", "--device cuda:99: "),
        ({"device": "tpu"}, "device 'tpu': ", "--device tpu: "),
        ({"downsample": 0}, "downsample 0: must be 1 or more", "--downsample 0: must be 1"),
        ({"optimize_steps": -1}, "optimize_steps -1: must be 0", "--optimize-steps -1: must be 0"),
        (
            {"precision": "float16", "device": "cpu"},
            "precision 'float16': is for CUDA devices",
            "--precision float16: is for CUDA devices",
        ),
        (
            {"optimize_target": "weights", "model": None},
            "optimize_target 'weights': fine-tunes a network",
            "--optimize-target weights: fine-tunes a network",
        ),
    ],
)
def test_the_library_names_arguments_and_the_command_names_its_flags(
    tmp_path, options, library, command
):
    image = np.random.default_rng(0).random((10, 12, 8)).astype(np.float32)
    with pytest.raises(eoir.OptionError) as raised:
        eoir.register(image, image, **{"model": None, **options})
    assert str(raised.value).startswith(library) and "--" not in str(raised.value)
    eoir.io.write_image(tmp_path / "i.nii.gz", image, eoir.io.as_image(image))
    flags = []
    for key, value in options.items():
        if key == "model":
            flags += ["--model", "none"]
        else:
            flags += ["--" + key.replace("_", "-"), value]
    result = eoir_cli(
        "register",
        "--fixed",
        tmp_path / "i.nii.gz",
        "--moving",
        tmp_path / "i.nii.gz",
        "--field",
        tmp_path / "f.nii.gz",
        *flags,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"eoir register: error: {command}" + result.stderr.split(command)[1]
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "f.nii.gz").exists()


def test_an_existing_output_asks_for_overwrite_in_each_wording(tmp_path):
    image = np.ones((4, 4, 4), np.float32)
    target = tmp_path / "out.nii.gz"
    eoir.io.write_image(target, image, eoir.io.as_image(image))
    with pytest.raises(eoir.InputError, match=r"exists; set overwrite=True$"):
        eoir.io.write_image(target, image, eoir.io.as_image(image))
    eoir.io.write_field(tmp_path / "f.nii.gz", np.zeros((3, 4, 4, 4)), eoir.io.as_image(image))
    result = eoir_cli("jacobian", "--field", tmp_path / "f.nii.gz", "--out", target)
    assert result.returncode == 2 and result.stderr.strip().endswith("exists; pass --overwrite")


def _run_with_teardown_probe(*args) -> subprocess.CompletedProcess:
    """``eoir ARGS`` in a new process that prints "teardown" from an exit handler."""
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('teardown', file=sys.stderr))\n"
        "from eoir.cli import run\n"
        f"sys.argv = ['eoir', *{[str(a) for a in args]!r}]\n"
        "run()\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_a_one_pair_command_ends_its_process_without_teardown_and_loses_nothing(tmp_path):
    affine = np.diag([1.2, 1.0, 0.9, 1.0])
    shape = (20, 22, 18)
    fixed, moving = tmp_path / "f.nii.gz", tmp_path / "m.nii.gz"
    nib.save(nib.Nifti1Image(blob_volume(shape, seed=1), affine), str(fixed))
    nib.save(nib.Nifti1Image(blob_volume(shape, seed=2), affine), str(moving))
    warped, field = tmp_path / "w.nii.gz", tmp_path / "d.nii.gz"
    result = _run_with_teardown_probe(
        "register", "--fixed", fixed, "--moving", moving, "--model", "none",
        "--optimize-steps", "3", "--warped", warped, "--field", field, "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "teardown" not in result.stderr  # ended at once
    assert result.stdout.startswith("registered ") and result.stdout.endswith("\n")
    assert nib.load(str(warped)).shape == shape and nib.load(str(field)).shape[:3] == shape
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.nii.gz", "f.nii.gz", "m.nii.gz",
                                                          "w.nii.gz"]  # fmt: skip
    # an error too: its one line and exit code 2
    result = _run_with_teardown_probe("register", "--fixed", fixed, "--moving", tmp_path / "x")
    assert result.returncode == 2 and "teardown" not in result.stderr
    assert len(result.stderr.splitlines()) == 1 and "x" in result.stderr
    # other commands exit through Python's teardown: no command (help), a batch of pairs
    assert "teardown" in _run_with_teardown_probe().stderr
    result = _run_with_teardown_probe("register", "--pairs", tmp_path / "no.csv", "--out-dir",
                                      tmp_path / "out")  # fmt: skip
    assert result.returncode == 2 and "teardown" in result.stderr
