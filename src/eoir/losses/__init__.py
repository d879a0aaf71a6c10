"""Losses: image similarity, smoothness, label overlap, and EOIR's multi-level loss.

- :mod:`eoir.losses.similarity`: windowed NCC, MSE, MIND-SSC, mutual information (``SIMILARITIES``);
- :mod:`eoir.losses.smoothness`: L1/L2 forward-difference penalties (``PENALTIES``);
- :mod:`eoir.losses.labels`: one-hot encoding, soft Dice, and the Dice of a warped one-hot map;
- :mod:`eoir.losses.supervision`: the endpoint error of a field against a known one;
- :mod:`eoir.losses.filters`: box and Gaussian filters, image pyramids;
- :mod:`eoir.losses.multilevel`: :func:`multilevel_loss`.
"""

from eoir.losses.filters import box_filter, gaussian_blur, pyramid
from eoir.losses.labels import dice_loss, one_hot, warped_dice_loss
from eoir.losses.multilevel import multilevel_loss
from eoir.losses.similarity import (
    MULTIMODAL,
    NCC_EPS,
    SIMILARITIES,
    Similarity,
    mind_loss,
    mind_ssc,
    mse_loss,
    mutual_information_loss,
    ncc_loss,
    similarity_loss,
)
from eoir.losses.smoothness import PENALTIES, Penalty, gradient_loss
from eoir.losses.supervision import endpoint_error

__all__ = [
    "MULTIMODAL",
    "NCC_EPS",
    "PENALTIES",
    "SIMILARITIES",
    "Penalty",
    "Similarity",
    "box_filter",
    "dice_loss",
    "endpoint_error",
    "gaussian_blur",
    "gradient_loss",
    "mind_loss",
    "mind_ssc",
    "mse_loss",
    "multilevel_loss",
    "mutual_information_loss",
    "ncc_loss",
    "one_hot",
    "pyramid",
    "similarity_loss",
    "warped_dice_loss",
]
