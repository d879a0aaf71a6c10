"""Registration of a user's images: ``eoir.register`` as named stages, and its parts.

- :mod:`eoir.registration.pipeline`: :func:`register` (prepare -> align -> sample -> predict ->
  refine -> finish);
- :mod:`eoir.registration.result`: :class:`RegistrationResult` (warped image, labels, fields);
- :mod:`eoir.registration.preprocess`: input checks and intensity presets;
- :mod:`eoir.registration.affine`: affine pre-alignment;
- :mod:`eoir.registration.resample`: images between grids in world space;
- :mod:`eoir.registration.instance`: instance optimisation of the field;
- :mod:`eoir.registration.batch`: many pairs with one loaded model.
"""

from eoir.registration.pipeline import register
from eoir.registration.result import RegistrationResult, dice_before_after

__all__ = ["RegistrationResult", "dice_before_after", "register"]
