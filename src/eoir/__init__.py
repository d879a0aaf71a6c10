"""eoir: Encoder-Only Image Registration for 2D and 3D medical images.

Field convention (see :mod:`eoir.spatial`): a displacement ``disp`` is ``(B, ndim, *spatial)``,
in voxel units of the fixed grid, channel ``k`` along array axis ``k``, and pulls the moving image
back: ``warped(p) = moving(p + disp(p))``.
"""

import gc as _gc

from eoir._version import __version__

# Importing torch creates about a million Python objects. The cyclic garbage collector would
# walk them again and again while they are made, and once more in full afterwards (~0.15 s of
# every command's start on a 2-core CPU): it is paused during the package's imports, and what
# they made is moved to the oldest generation without a walk (freeze, then unfreeze: nothing
# is exempt from later collections).
_collecting = _gc.isenabled()
_gc.disable()
try:
    from eoir.errors import InputError, OptionError
    from eoir.io import read_image
    from eoir.losses import (
        dice_loss,
        gradient_loss,
        mind_loss,
        mse_loss,
        multilevel_loss,
        ncc_loss,
        one_hot,
    )
    from eoir.metrics import dice_per_label, hd95, jacobian_stats, mean_dice, mean_hd95, tre
    from eoir.nn import EOIR, EOIROutput, VoxelMorph, load_model
    from eoir.registration import RegistrationResult, register
    from eoir.spatial import (
        compose,
        field_from_world,
        field_to_world,
        identity_grid,
        integrate,
        invert,
        jacobian_determinant,
        resize_field,
        warp,
    )
finally:
    _gc.freeze()
    _gc.unfreeze()
    if _collecting:
        _gc.enable()

__all__ = [
    "EOIR",
    "EOIROutput",
    "InputError",
    "OptionError",
    "RegistrationResult",
    "VoxelMorph",
    "__version__",
    "compose",
    "dice_loss",
    "dice_per_label",
    "field_from_world",
    "field_to_world",
    "gradient_loss",
    "hd95",
    "identity_grid",
    "integrate",
    "invert",
    "jacobian_determinant",
    "jacobian_stats",
    "load_model",
    "mean_dice",
    "mean_hd95",
    "mind_loss",
    "mse_loss",
    "multilevel_loss",
    "ncc_loss",
    "one_hot",
    "read_image",
    "register",
    "resize_field",
    "tre",
    "warp",
]
