"""Progress of long work: a rewritten line on a terminal, plain lines elsewhere, or a callback."""

from __future__ import annotations

import io

import numpy as np

import eoir
from eoir.progress import Progress, progress_for
from eoir.runtime import resolve_device
from helpers import eoir_cli


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_one_rewritten_line_and_a_log_gets_plain_lines():
    screen = Terminal()
    with Progress(4, "steps", stream=screen) as shown:
        for _ in range(4):
            shown.update(note="loss 0.5")
    text = screen.getvalue()
    assert text.count("\r") == 4 and text.endswith("\n") and text.count("\n") == 1
    assert "steps 4/4 [####################] loss 0.5" in text and "ETA" in text
    log = io.StringIO()
    with Progress(5, "pairs", stream=log, every=0) as shown:
        for _ in range(5):
            shown.update()
    assert log.getvalue().count("\n") == 5 and "\r" not in log.getvalue()
    quiet = io.StringIO()
    seen = []
    with Progress(3, "x", enabled=False, stream=quiet, callback=lambda *a: seen.append(a)) as p:
        for _ in range(3):
            p.update()
    assert quiet.getvalue() == "" and seen == [(1, 3), (2, 3), (3, 3)]
    interrupted = Terminal()
    with Progress(10, "steps", stream=interrupted) as shown:
        shown.update()
    assert interrupted.getvalue().endswith("\n")  # the line is ended on the way out
    calls = []
    progress_for(lambda done, total: calls.append(done), 2, "x").update()
    assert calls == [1]


def test_register_reports_its_steps_to_a_callback_and_the_command_can_be_quiet(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.random((16, 16, 16)).astype(np.float32)
    steps = []
    eoir.register(image, image, model=None, optimize_steps=6, preset="none",
                  progress=lambda done, total: steps.append((done, total)))  # fmt: skip
    assert steps == [(i, 6) for i in range(1, 7)]
    eoir.io.write_image(tmp_path / "i.nii.gz", image, eoir.io.as_image(image))
    common = ["register", "--fixed", tmp_path / "i.nii.gz", "--moving", tmp_path / "i.nii.gz",
              "--model", "none", "--optimize-steps", "6", "--field"]  # fmt: skip
    loud = eoir_cli(*common, tmp_path / "a.nii.gz")
    assert loud.returncode == 0 and "optimisation 6/6" in loud.stderr
    quiet = eoir_cli(*common, tmp_path / "b.nii.gz", "--quiet")
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_auto_is_the_default_device_and_picks_cuda_when_there_is_one():
    import torch

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    image = np.random.default_rng(1).random((12, 12, 12)).astype(np.float32)
    result = eoir.register(image, image, model=None, optimize_steps=1, progress=False)
    assert result.info["device"].startswith(expected)
