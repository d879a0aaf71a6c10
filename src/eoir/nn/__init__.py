"""Networks: EOIR and its blocks, the VoxelMorph baseline, checkpoints, complexity counts.

- :mod:`eoir.nn.model`: :class:`EOIR` (and :class:`EOIROutput`, its per-level fields);
- :mod:`eoir.nn.blocks`: the encoder, the flow estimator and their convolution blocks;
- :mod:`eoir.nn.voxelmorph`: the VoxelMorph baseline;
- :mod:`eoir.nn.checkpoint`: model files (weights + config) and the shipped models by name;
- :mod:`eoir.nn.complexity`: parameter and multiply-add counts.
"""

from eoir.nn.checkpoint import build_model, load_checkpoint, load_model, save_model
from eoir.nn.complexity import count_multiply_adds, count_parameters
from eoir.nn.model import EOIR, EOIROutput
from eoir.nn.voxelmorph import VoxelMorph

__all__ = [
    "EOIR",
    "EOIROutput",
    "VoxelMorph",
    "build_model",
    "count_multiply_adds",
    "count_parameters",
    "load_checkpoint",
    "load_model",
    "save_model",
]
