"""``eoir.register``: register a user's own images, end to end.

Reads (paths or arrays), checks, normalises, optionally aligns affinely, predicts a field with a
model and/or refines it by instance optimisation, and returns a :class:`RegistrationResult`
holding one displacement on the fixed grid (fixed voxels, affine part included) from which the
warped image, warped labels and exported fields are all made.
"""

from __future__ import annotations

import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from eoir.checkpoint import load_model
from eoir.errors import InputError
from eoir.instance import finetune_network, optimise_field
from eoir.io import Image, OutputSet, read_image
from eoir.metrics import jacobian_stats, mean_dice
from eoir.preprocess import PRESETS, affine_align, check_finite, is_constant, normalise
from eoir.resample import to_fixed_grid, total_field, warp_image
from eoir.spatial import resize_field

__all__ = [
    "DEFAULT_OPTIMIZE_STEPS",
    "PRECISIONS",
    "RegistrationResult",
    "as_image",
    "dice_before_after",
    "register",
    "resolve_device",
]

DEFAULT_OPTIMIZE_STEPS = 150  # used when no model is given
PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}

ImageLike = Image | str | os.PathLike | np.ndarray


def as_image(source: ImageLike, affine: np.ndarray | None = None, what: str = "image") -> Image:
    """An :class:`Image` from a path, an Image, or an array (+ optional 4x4 affine)."""
    if isinstance(source, Image):
        return source
    if isinstance(source, np.ndarray):
        if source.ndim != 3:
            raise InputError(
                f"{what}: array is {source.ndim}-D {source.shape}; a 3-D volume is needed"
            )
        return Image(source, np.eye(4) if affine is None else np.asarray(affine, float), what)
    return read_image(source, what)


def resolve_device(device: str | torch.device) -> torch.device:
    """Check that ``device`` exists here; raise :class:`InputError` naming it if not."""
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise InputError(f"--device {device}: not a device name (use cpu or cuda)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {device}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise InputError(f"--device {device}: only cpu and cuda are supported")
    return dev


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
        if not image.same_grid(self.moving):
            raise InputError(
                f"{image.path or 'moving labels'}: label map grid {image.shape} does not match "
                f"the moving image's grid {self.moving.shape} (shape or affine differ)"
            )
        return warp_image(image, self.fixed, self.disp, mode="nearest")

    def figure(self, path: str | os.PathLike, title: str | None = None) -> None:
        """Write the registration figure (:func:`eoir.figure.registration_figure`) as a PNG.

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
        field_format: str = "itk",
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
        with OutputSet([warped, field, warped_labels], overwrite=overwrite) as outputs:
            self.write(outputs, warped, field, field_format, labels, warped_labels)

    def write(
        self,
        outputs: OutputSet,
        warped: str | os.PathLike | None = None,
        field: str | os.PathLike | None = None,
        field_format: str = "itk",
        labels: ImageLike | None = None,
        warped_labels: str | os.PathLike | None = None,
        figure: str | os.PathLike | None = None,
        title: str | None = None,
    ) -> None:
        """Write outputs into an :class:`eoir.io.OutputSet` that declared them (see
        :meth:`save`; ``figure`` is a PNG path, see :meth:`figure`)."""
        if (labels is None) != (warped_labels is None):
            raise InputError("--moving-labels and --warped-labels go together")
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


def register(
    fixed: ImageLike,
    moving: ImageLike,
    *,
    fixed_affine: np.ndarray | None = None,
    moving_affine: np.ndarray | None = None,
    model: torch.nn.Module | str | os.PathLike | None = None,
    optimize_steps: int | None = None,
    optimize_target: str = "field",
    affine: bool = False,
    preset: str = "mri",
    downsample: int | None = None,
    device: str | torch.device = "cpu",
    optimize_options: dict[str, Any] | None = None,
    precision: str = "float32",
) -> RegistrationResult:
    """Register ``moving`` to ``fixed``.

    Parameters
    ----------
    fixed, moving : path, Image or numpy.ndarray
        3-D images. Paths are read with their geometry (NIfTI, formats SimpleITK reads, DICOM
        folders); arrays use ``fixed_affine``/``moving_affine`` (identity if None). The moving
        image may lie on any grid: it is mapped into the fixed grid in world space.
    model : EOIR, VoxelMorph, path or str, optional
        A network, a checkpoint, or the name of a shipped model (``"brain-mri"``,
        :mod:`eoir.pretrained`) predicting the field in one forward pass. None: no network.
    optimize_steps : int, optional
        Instance-optimisation steps refining the field on this pair, starting from the model's
        prediction (or zero). Default: 0 with a model, ``DEFAULT_OPTIMIZE_STEPS`` without.
    optimize_target : {"field", "weights"}
        What the steps optimise: the field itself (default; see :mod:`eoir.instance`), or a copy
        of the model's weights (needs ``model``).
    affine : bool
        Align affinely first (SimpleITK, mutual information); the result includes it.
    preset : {"mri", "ct", "lung", "none"}
        Intensity normalisation (internal only; see :func:`eoir.preprocess.normalise`).
    downsample : int, optional
        Register at ``1/downsample`` resolution and upsample the field (faster, coarser).
        Default: the resolution the model was trained at (2 for ``brain-mri``), else 1.
    device : str or torch.device
        ``"cpu"`` or ``"cuda"``.
    optimize_options : dict, optional
        Extra keyword arguments of :func:`eoir.instance.optimise_field` (lr, weight, ...).
    precision : {"float32", "bfloat16", "float16"}
        Arithmetic of the network's convolutions (autocast; fields, warps and integration stay
        float32). ``bfloat16`` is about 1.7x faster on CPUs with AVX512-BF16 and on GPUs;
        ``float16`` is for GPUs. On OASIS-TRT-20 the shipped model's fields differ from float32
        by 0.03 voxels on average and its Dice by less than 0.001 (benchmarks/speed.py).

    Returns
    -------
    RegistrationResult
    """
    fixed_image = as_image(fixed, fixed_affine, "fixed image")
    moving_image = as_image(moving, moving_affine, "moving image")
    if preset not in PRESETS:
        raise InputError(f"--preset {preset}: choose one of {', '.join(PRESETS)}")
    if downsample is not None and downsample < 1:
        raise InputError(f"--downsample {downsample}: must be 1 or more")
    if optimize_steps is not None and optimize_steps < 0:
        raise InputError(f"--optimize-steps {optimize_steps}: must be 0 or more")
    if optimize_target not in ("field", "weights"):
        raise InputError(f"--optimize-target {optimize_target}: choose field or weights")
    if precision not in PRECISIONS:
        raise InputError(f"--precision {precision}: choose one of {', '.join(PRECISIONS)}")
    if optimize_target == "weights" and model is None:
        raise InputError("--optimize-target weights fine-tunes a network: give --model")
    dev = resolve_device(device)
    if precision == "float16" and dev.type != "cuda":
        raise InputError("--precision float16 is for CUDA devices; use bfloat16 on a CPU")
    net = load_model(model, dev) if model is not None else None
    if downsample is None:
        downsample = int(getattr(net, "trained_downsample", 1)) if net is not None else 1
    check_finite(fixed_image, "fixed image")
    check_finite(moving_image, "moving image")
    steps = optimize_steps if optimize_steps is not None else (0 if net else DEFAULT_OPTIMIZE_STEPS)
    info: dict[str, Any] = {
        "preset": preset,
        "affine": affine,
        "model": None if model is None else str(getattr(model, "config", model)),
        "optimize_steps": steps,
        "optimize_target": optimize_target,
        "downsample": downsample,
        "precision": precision,
        "device": str(dev),
        "warnings": [],
    }
    expected = getattr(net, "expected_spacing", None)
    if expected is not None and any(
        abs(s - expected) > 0.25 * expected for s in fixed_image.spacing
    ):
        message = (
            f"the model expects {expected:g} mm voxels; the fixed image has "
            f"{'x'.join(f'{s:.2f}' for s in fixed_image.spacing)} mm: expect a poorer result "
            "(resample the images, or add --optimize-steps)"
        )
        warnings.warn(message, stacklevel=2)
        info["warnings"].append(message)
    start = time.perf_counter()
    constant = [
        name
        for name, image in (("fixed", fixed_image), ("moving", moving_image))
        if is_constant(image.array)
    ]
    if constant:
        message = f"{' and '.join(constant)} image is constant: registered as identity"
        warnings.warn(message, stacklevel=2)
        info["warnings"].append(message)
        disp = torch.zeros(1, 3, *fixed_image.shape)
        return RegistrationResult(fixed_image, moving_image, disp, None, 0.0, info)

    fixed_values = normalise(fixed_image.array, preset)
    moving_values = normalise(moving_image.array, preset)
    world = affine_align(fixed_image, moving_image, fixed_values, moving_values) if affine else None
    fixed_t = torch.from_numpy(fixed_values)[None, None].to(dev)
    moving_t = to_fixed_grid(moving_image, fixed_image, world=world, values=moving_values).to(dev)
    shape = fixed_image.shape
    work_shape = tuple(max(8, -(-n // downsample)) for n in shape) if downsample > 1 else shape
    if work_shape != shape:
        resize = torch.nn.functional.interpolate
        fixed_t = resize(fixed_t, size=work_shape, mode="trilinear", align_corners=True)
        moving_t = resize(moving_t, size=work_shape, mode="trilinear", align_corners=True)
    disp = None
    if net is not None and optimize_target == "weights" and steps > 0:
        disp = finetune_network(net, moving_t, fixed_t, steps, **(optimize_options or {}))
    elif net is not None:
        # inference mode unless the field seeds an optimisation (which needs autograd later)
        context = torch.no_grad() if steps > 0 else torch.inference_mode()
        dtype = PRECISIONS[precision]
        with context, torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
            disp = net(moving_t, fixed_t).float()
    if steps > 0 and optimize_target == "field":
        disp = optimise_field(moving_t, fixed_t, init=disp, steps=steps, **(optimize_options or {}))
    if disp is None:
        disp = fixed_t.new_zeros(1, 3, *work_shape)
    disp = resize_field(disp.detach().float().cpu(), shape)
    total = total_field(fixed_image, disp, world)
    seconds = time.perf_counter() - start
    return RegistrationResult(fixed_image, moving_image, total, world, seconds, info)


def dice_before_after(
    result: RegistrationResult, fixed_labels: ImageLike, moving_labels: ImageLike
) -> tuple[float, float]:
    """Mean Dice (Learn2Reg convention) of the moving labels before and after registration.

    "Before" maps the moving labels into the fixed grid by geometry alone (no registration).
    """
    fixed_lab = as_image(fixed_labels, result.fixed.affine, "fixed labels")
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
