"""What a registration returns: one displacement on the fixed grid, and what is made from it.

A :class:`RegistrationResult` holds the inputs as read and one total displacement on the fixed
grid (fixed voxels, affine part included, :mod:`eoir.spatial` convention); the warped image,
warped labels, exported fields, the figure and the folding statistics are all made from it.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from eoir.errors import InputError
from eoir.image import Image
from eoir.io import FieldFormat, ImageLike, OutputSet, as_image, check_labels
from eoir.metrics import jacobian_stats, mean_dice
from eoir.registration.resample import warp_image

__all__ = ["RegistrationResult", "dice_before_after"]


@dataclass
class RegistrationResult:
    """The outcome of :func:`register`.

    Attributes
    ----------
    fixed, moving : Image
        The inputs as read.
    disp : torch.Tensor
        ``(1, 3, *fixed.shape)`` total displacement in fixed voxels (affine part included):
        fixed voxel ``p`` maps to moving world point ``A_f (p + disp(p))``.
    world : numpy.ndarray or None
        The affine pre-alignment (fixed RAS world -> moving RAS world), if one was made.
    seconds : float
        Wall time of the registration (reading excluded).
    info : dict
        What was done: model, optimisation steps, preset, warnings.
    """

    fixed: Image
    moving: Image
    disp: torch.Tensor
    world: np.ndarray | None = None
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    def warped(self) -> np.ndarray:
        """The moving image on the fixed grid, in its own intensities and dtype (linear)."""
        return warp_image(self.moving, self.fixed, self.disp)

    def warp_labels(self, labels: ImageLike) -> np.ndarray:
        """A moving label map on the fixed grid (nearest neighbour; values and dtype kept).

        ``labels`` must lie on the moving image's grid.
        """
        image = as_image(labels, self.moving.affine, "moving labels")
        check_labels(image, "moving labels")
        if not image.same_grid(self.moving):
            raise InputError(
                f"{image.path or 'moving labels'}: label map grid {image.shape} does not match "
                f"the moving image's grid {self.moving.shape} (shape or affine differ)"
            )
        return warp_image(image, self.fixed, self.disp, mode="nearest")

    def figure(self, path: str | os.PathLike, title: str | None = None) -> None:
        """Write the registration figure (:func:`eoir.figure.registration_figure`) as a PNG.

        Parameters
        ----------
        path : path
            The PNG to write (written as given; see :meth:`write` for an atomic one).
        title : str, optional
            The figure's title.

        Images share the fixed image's robust intensity range (suits same-modality pairs);
        "moving" is the moving image mapped onto the fixed grid by geometry alone.
        """
        from eoir.figure import registration_figure

        before = warp_image(self.moving, self.fixed).astype(np.float32)
        registration_figure(
            path,
            self.fixed.array,
            before,
            self.warped().astype(np.float32),
            self.disp,
            self.fixed.spacing,
            title,
        )

    def jacobian_stats(self) -> dict[str, float]:
        """Folding and smoothness of the total field (see :func:`eoir.metrics.jacobian_stats`)."""
        return jacobian_stats(self.disp)

    def save(
        self,
        warped: str | os.PathLike | None = None,
        field: str | os.PathLike | None = None,
        field_format: FieldFormat = "itk",
        labels: ImageLike | None = None,
        warped_labels: str | os.PathLike | None = None,
        overwrite: bool = False,
    ) -> None:
        """Write the requested outputs on the fixed grid, all or none (atomic).

        Parameters
        ----------
        warped : path, optional
            Warped moving image (moving intensities and dtype, fixed header).
        field : path, optional
            Displacement field; ``field_format`` ``"itk"`` (LPS mm, for ANTs/ITK/Slicer) or
            ``"l2r"`` (Learn2Reg voxels).
        labels, warped_labels : optional
            A moving label map and where to write it warped (nearest neighbour).
        overwrite : bool
            Replace existing files.
        """
        inputs = [self.fixed.path, self.moving.path]
        inputs.append(labels.path if isinstance(labels, Image) else labels)
        if not isinstance(inputs[-1], str | os.PathLike):
            inputs.pop()  # an array: no file to protect
        targets = [warped, field, warped_labels]
        with OutputSet(targets, overwrite=overwrite, inputs=inputs) as outputs:
            self.write(outputs, warped, field, field_format, labels, warped_labels)

    def write(
        self,
        outputs: OutputSet,
        warped: str | os.PathLike | None = None,
        field: str | os.PathLike | None = None,
        field_format: FieldFormat = "itk",
        labels: ImageLike | None = None,
        warped_labels: str | os.PathLike | None = None,
        figure: str | os.PathLike | None = None,
        title: str | None = None,
    ) -> None:
        """Write outputs into an :class:`eoir.io.OutputSet` that declared them (see
        :meth:`save`; ``figure`` is a PNG path, see :meth:`figure`)."""
        if (labels is None) != (warped_labels is None):
            raise InputError("labels and warped_labels go together: give both or neither")
        label_array = self.warp_labels(labels) if labels is not None else None
        # the field (the largest file) is written in a thread while the images are warped and
        # written (zlib and torch release the GIL)
        with ThreadPoolExecutor(max_workers=1) as pool:
            job = None
            if field is not None:
                job = pool.submit(outputs.write_field, field, self.disp, self.fixed, field_format)
            if warped is not None:
                outputs.write_image(warped, self.warped(), self.fixed)
            if warped_labels is not None:
                outputs.write_image(warped_labels, label_array, self.fixed)
            if figure is not None:
                self.figure(outputs.temp(figure), title)
            if job is not None:
                job.result()


def dice_before_after(
    result: RegistrationResult, fixed_labels: ImageLike, moving_labels: ImageLike
) -> tuple[float, float]:
    """Mean Dice (Learn2Reg convention) of the moving labels before and after registration.

    "Before" maps the moving labels into the fixed grid by geometry alone (no registration).
    """
    fixed_lab = as_image(fixed_labels, result.fixed.affine, "fixed labels")
    check_labels(fixed_lab, "fixed labels")
    if not fixed_lab.same_grid(result.fixed):
        raise InputError(
            f"{fixed_lab.path or 'fixed labels'}: label map grid {fixed_lab.shape} does not match "
            f"the fixed image's grid {result.fixed.shape}"
        )
    moving_lab = as_image(moving_labels, result.moving.affine, "moving labels")
    after = result.warp_labels(moving_lab)
    before = warp_image(moving_lab, result.fixed, mode="nearest")
    return (
        mean_dice(fixed_lab.array, before, moving_lab.array),
        mean_dice(fixed_lab.array, after, moving_lab.array),
    )
