"""NCC's stabiliser in instance optimisation: training's 1e-5 against a far smaller one.

``cc = cov^2 / (var_w var_f + eps)``: where the local variance product is not far above
``eps`` (smooth images in [0, 1], small windows, 2-D), ``cc`` grows with local contrast, and
the optimiser can gain by sharpening the warped image instead of aligning it. This script
registers, by instance optimisation alone (``eoir.register(model=None)``, 150 steps), with each
``eps``:

- smooth synthetic pairs (Gaussian blobs, the moving image a known smooth deformation of the
  fixed one; 2-D 64x56 and 3-D 32x28x24, 8-bit intensities), Dice of two threshold labels;
- real brains: OASIS-TRT-20 axial slices of training subjects (4 pairs of subjects 1-6), and
  with ``--volumes`` two validation pairs of the 3-D brains (slow: about 2 min each on 2 cores).

Usage::

    python benchmarks/ncc_eps.py [--eps 1e-5 1e-9] [--volumes]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

import eoir
from eoir.image import Image
from eoir.metrics import mean_dice
from eoir.registration import dice_before_after
from eoir.registration.resample import warp_image

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import smooth_field  # noqa: E402  (the tests' smooth random field)


def blobs(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Six Gaussian blobs, 0-250."""
    rng = np.random.default_rng(seed)
    ndim = len(shape)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    image = np.zeros(shape)
    for _ in range(6):
        centre = rng.uniform(-0.6, 0.6, ndim).reshape(ndim, *[1] * ndim)
        image += np.exp(-((grid - centre) ** 2).sum(0) / 0.08)
    return image / image.max() * 250


def synthetic(shape: tuple[int, ...], eps: float) -> tuple[float, float]:
    image = blobs(shape, seed=3)
    affine = np.diag([-1.0, -1.0] + [1.0] * (len(shape) - 1))
    fixed = Image(image.astype(np.uint8), affine)
    labels = np.zeros(shape, np.int16)
    labels[image > 60] = 2
    labels[image > 150] = 7
    true = eoir.integrate(smooth_field(shape, 2.5, seed=5), 7)
    moving = Image(warp_image(fixed, fixed, true), affine)
    moving_labels = warp_image(Image(labels, affine), fixed, true, mode="nearest")
    result = eoir.register(fixed, moving, model=None, progress=False, device="cpu",
                           optimize_options={"eps": eps})  # fmt: skip
    warped = result.warp_labels(moving_labels)
    return mean_dice(labels, moving_labels, moving_labels), mean_dice(labels, warped, moving_labels)


def slices(eps: float) -> float:
    folder = DATA / "oasis-trt-20-2d"
    scores = []
    for f, m in ((1, 2), (3, 4), (5, 6), (2, 5)):
        fixed = np.load(folder / f"OASIS-TRT-20-{f}_axial.npz")
        moving = np.load(folder / f"OASIS-TRT-20-{m}_axial.npz")
        result = eoir.register(fixed["img"], moving["img"], model=None, progress=False,
                               device="cpu", optimize_options={"eps": eps})  # fmt: skip
        warped = result.warp_labels(moving["seg"].astype(np.int32))
        scores.append(mean_dice(fixed["seg"], warped, moving["seg"]))
    return float(np.mean(scores))


def volumes(eps: float) -> list[float]:
    folder = DATA / "oasis-trt-20"
    path = "{}Tr/OASISTRT_{:04d}_0000.nii.gz"
    scores = []
    for f, m in ((13, 14), (15, 13)):
        result = eoir.register(folder / path.format("images", f), folder / path.format("images", m),
                               model=None, progress=False, device="cpu",
                               optimize_options={"eps": eps})  # fmt: skip
        scores.append(dice_before_after(result, folder / path.format("labels", f),
                                        folder / path.format("labels", m))[1])  # fmt: skip
    return scores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--eps", type=float, nargs="+", default=[1e-5, 1e-9])
    parser.add_argument("--volumes", action="store_true", help="also two 3-D OASIS pairs")
    args = parser.parse_args()
    torch.manual_seed(0)
    for eps in args.eps:
        line = [f"eps {eps:g}:"]
        for shape in ((64, 56), (32, 28, 24)):
            before, after = synthetic(shape, eps)
            line.append(f"synthetic {len(shape)}-D Dice {before:.3f} -> {after:.3f};")
        if (DATA / "oasis-trt-20-2d").is_dir():
            line.append(f"OASIS slices Dice {slices(eps):.4f};")
        if args.volumes and (DATA / "oasis-trt-20").is_dir():
            line.append("OASIS volumes Dice " + ", ".join(f"{d:.4f}" for d in volumes(eps)))
        print(" ".join(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
