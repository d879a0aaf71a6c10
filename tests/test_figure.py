"""The registration figure: a PNG, drawn without touching the caller's pyplot state."""

from __future__ import annotations

import importlib

import matplotlib
import numpy as np
import torch

import eoir.figure


def test_the_figure_leaves_the_callers_backend_and_figures_alone(tmp_path):
    import matplotlib.pyplot as plt

    before = matplotlib.get_backend()
    matplotlib.use("pdf")  # a user's backend (a notebook's, say), chosen before eoir is imported
    try:
        figure = importlib.reload(eoir.figure)
        mine = plt.figure()
        rng = np.random.default_rng(0)
        images = [rng.random((12, 10, 8)) for _ in range(3)]
        disp = torch.zeros(1, 3, 12, 10, 8)
        disp[0, 0, :, :, 4:] = -2.0  # a fold: drawn black in the Jacobian panels
        figure.registration_figure(tmp_path / "f.png", *images, disp, title="t")
        assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert matplotlib.get_backend() == "pdf"
        assert plt.get_fignums() == [mine.number] and plt.gcf() is mine
        plt.close(mine)
    finally:
        matplotlib.use(before)
