"""The ``eoir`` command: version, help, info, and one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys

from eoir import __version__
from eoir.cli import main


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "eoir", *args], capture_output=True, text=True, timeout=120
    )


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
