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
from eoir.io import (
    TRANSFORM_SUFFIXES,
    WRITABLE_SUFFIXES,
    FieldFormat,
    ImageLike,
    OutputSet,
    read_labels,
)
from eoir.metrics import jacobian_stats, mean_dice
from eoir.registration.resample import moving_positions, warp_image
from eoir.spatial import identity_grid, solve_positions, transform_positions

__all__ = ["RegistrationResult", "dice_before_after"]


@dataclass
class RegistrationResult:
    """The outcome of :func:`register`.

    Attributes
    ----------
    fixed, moving : Image
        The inputs as read.
    disp : torch.Tensor
        ``(1, ndim, *fixed.shape)`` total displacement in fixed voxels (affine part included):
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

    def warped(self, positions: torch.Tensor | None = None) -> np.ndarray:
        """The moving image on the fixed grid, in its own intensities and dtype (linear).

        ``positions``: :meth:`positions`, when it is shared with other warps.
        """
        return warp_image(self.moving, self.fixed, self.disp, positions=positions)

    def warp_labels(self, labels: ImageLike, positions: torch.Tensor | None = None) -> np.ndarray:
        """A moving label map on the fixed grid (nearest neighbour; values and dtype kept).

        ``labels`` must lie on the moving image's grid; ``positions`` as in :meth:`warped`.
        """
        image = read_labels(labels, self.moving, "moving labels")
        return warp_image(image, self.fixed, self.disp, mode="nearest", positions=positions)

    def positions(self) -> torch.Tensor | None:
        """The moving voxel each fixed voxel reads, ``(1, ndim, *fixed.shape)``, to share
        between the warps of one result (the image and its labels: one full-size map of
        positions instead of two); None when the two images share a grid (each warp then makes
        its own sampling grid in one pass)."""
        if self.moving.same_grid(self.fixed):
            return None
        return moving_positions(self.fixed, self.moving.affine, self.disp)

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

    def jacobian_stats(self, dtype: torch.dtype = torch.float32) -> dict[str, float]:
        """Folding and smoothness of the total field (see :func:`eoir.metrics.jacobian_stats`):
        float32 arithmetic for a command's summary line, ``torch.float64`` for evaluations."""
        return jacobian_stats(self.disp, dtype=dtype)

    def affine(self) -> np.ndarray:
        """The linear part of the registration: fixed RAS world -> moving RAS world (mm).

        The affine stage's result or the given initial transform (the identity without
        either). ``disp`` includes it; :meth:`save` writes it for ANTs, ITK and 3D Slicer
        (``affine_out``).

        Returns
        -------
        numpy.ndarray
            ``(ndim+1, ndim+1)``.
        """
        if self.world is None:
            return np.eye(self.fixed.ndim + 1)
        return np.asarray(self.world, dtype=float).copy()

    def inverse(self, iterations: int = 20, tolerance: float = 1e-3) -> torch.Tensor:
        """The inverse transform: a displacement on the moving grid that maps it to the fixed one.

        Moving voxel ``q`` corresponds to the fixed world point ``A_m (q + inv(q))``, so
        warping a fixed-space image or label map with it (``eoir apply``) puts it onto the moving
        image. EOIR's field is a composition of diffeomorphic residuals of several levels, with
        no single velocity to negate, so the inverse is found numerically for every model:
        the affine part is inverted exactly, the deformable part by Newton's method
        (:func:`eoir.spatial.solve_positions`) to ``tolerance`` voxels. Where the moving grid
        reaches beyond the fixed one, the field is extended by its border values.

        Returns
        -------
        torch.Tensor
            ``(1, ndim, *moving.shape)`` displacement in voxel units of the moving grid.
        """
        fixed, moving = self.fixed, self.moving
        n = fixed.ndim + 1
        world = np.eye(n) if self.world is None else np.asarray(self.world, dtype=float)
        undo = np.linalg.inv(fixed.affine) @ np.linalg.inv(world) @ fixed.affine  # G^-1
        grid = identity_grid(fixed.shape, dtype=torch.float64)
        # the deformable part alone: p + total(p) = G (p + deformable(p))
        deformable = (transform_positions(undo, grid + self.disp.double()) - grid).float()
        # moving voxels in the fixed voxel frame, with the affine part undone
        targets = transform_positions(
            np.linalg.inv(fixed.affine) @ np.linalg.inv(world) @ moving.affine,
            identity_grid(moving.shape, dtype=torch.float32),
        )
        positions = solve_positions(deformable, targets, iterations, tolerance, coarse_start=True)
        to_moving = np.linalg.inv(moving.affine) @ fixed.affine
        moving_grid = identity_grid(moving.shape, dtype=torch.float32)
        inverse = transform_positions(to_moving, positions) - moving_grid
        if not torch.isfinite(inverse).all():  # never a written file with NaN in it
            raise InputError(
                f"the inverse of the registration of {moving.path} to {fixed.path} has NaN or "
                "infinite values: nothing was written"
            )
        return inverse

    def save(
        self,
        warped: str | os.PathLike | None = None,
        field: str | os.PathLike | None = None,
        field_format: FieldFormat = "itk",
        labels: ImageLike | None = None,
        warped_labels: str | os.PathLike | None = None,
        overwrite: bool = False,
        inverse_field: str | os.PathLike | None = None,
        affine_out: str | os.PathLike | None = None,
    ) -> None:
        """Write the requested outputs, all or none (atomic).

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
        inverse_field : path, optional
            The inverse field (:meth:`inverse`) on the moving grid, in ``field_format``.
        affine_out : path, optional
            The linear part (:meth:`affine`) as an ITK transform file (``.tfm``/``.txt``) or
            ANTs ``.mat``.
        """
        inputs = [self.fixed.path, self.moving.path]
        inputs.append(labels.path if isinstance(labels, Image) else labels)
        if not isinstance(inputs[-1], str | os.PathLike):
            inputs.pop()  # an array: no file to protect
        targets = [warped, field, warped_labels, inverse_field, affine_out]
        suffixes = (*WRITABLE_SUFFIXES, *TRANSFORM_SUFFIXES)
        with OutputSet(targets, overwrite, suffixes, inputs) as outputs:
            self.write(
                outputs,
                warped,
                field,
                field_format,
                labels,
                warped_labels,
                inverse_field=inverse_field,
                affine_out=affine_out,
            )

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
        inverse_field: str | os.PathLike | None = None,
        affine_out: str | os.PathLike | None = None,
    ) -> None:
        """Write outputs into an :class:`eoir.io.OutputSet` that declared them (see
        :meth:`save`; ``figure`` is a PNG path, see :meth:`figure`)."""
        if (labels is None) != (warped_labels is None):
            raise InputError("labels and warped_labels go together: give both or neither")
        # both warps read the moving grid at the same positions: made once
        positions = self.positions() if labels is not None and warped is not None else None
        label_array = self.warp_labels(labels, positions) if labels is not None else None
        # the field (the largest file) is written in a thread while the images are warped and
        # written (zlib and torch release the GIL)
        with ThreadPoolExecutor(max_workers=1) as pool:
            job = None
            if field is not None:
                job = pool.submit(outputs.write_field, field, self.disp, self.fixed, field_format)
            if warped is not None:
                outputs.write_image(warped, self.warped(positions), self.fixed)
            if warped_labels is not None:
                outputs.write_image(warped_labels, label_array, self.fixed)
            if figure is not None:
                self.figure(outputs.temp(figure), title)
            if inverse_field is not None:
                inverse = self.inverse()
                outputs.write_field(inverse_field, inverse, self.moving, field_format)
            if affine_out is not None:
                outputs.write_transform(affine_out, self.affine())
            if job is not None:
                job.result()


def dice_before_after(
    result: RegistrationResult, fixed_labels: ImageLike, moving_labels: ImageLike
) -> tuple[float, float]:
    """Mean Dice (Learn2Reg convention) of the moving labels before and after registration.

    "Before" maps the moving labels into the fixed grid by geometry alone (no registration).
    """
    fixed_lab = read_labels(fixed_labels, result.fixed, "fixed labels")
    moving_lab = read_labels(moving_labels, result.moving, "moving labels")
    after = result.warp_labels(moving_lab)
    before = warp_image(moving_lab, result.fixed, mode="nearest")
    return (
        mean_dice(fixed_lab.array, before, moving_lab.array),
        mean_dice(fixed_lab.array, after, moving_lab.array),
    )
