"""The README's examples run verbatim."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

import eoir
from eoir.image import Image
from eoir.io import write_image
from eoir.registration.resample import warp_image
from helpers import blob_volume, smooth_field

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_python_blocks_run():
    blocks = _blocks("python")
    assert blocks, "the README has no Python example"
    for block in blocks:
        exec(compile(block, str(README), "exec"), {"__name__": "readme"})


def test_readme_register_commands_run(tmp_path):
    block = next(b for b in _blocks("bash") if "eoir register" in b)
    shape = (40, 44, 36)
    affine = np.diag([1.2, 1.0, 1.5, 1.0])
    fixed = Image(np.round(blob_volume(shape, seed=7)).astype(np.int16), affine)
    labels = Image((fixed.array > 300).astype(np.uint8) + (fixed.array > 700), affine)
    true_disp = eoir.integrate(smooth_field(shape, 1.5, seed=2), 7)
    write_image(tmp_path / "fixed.nii.gz", fixed.array, fixed)
    write_image(tmp_path / "moving.nii.gz", warp_image(fixed, fixed, true_disp), fixed)
    write_image(
        tmp_path / "moving_labels.nii.gz", warp_image(labels, fixed, true_disp, "nearest"), fixed
    )
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    for name in ("warped", "field", "warped_labels", "labels_again"):
        assert (tmp_path / f"{name}.nii.gz").is_file(), name
    assert "registered" in result.stdout and "folding" in result.stdout
