"""``eoir.register``: register a user's own images, as a pipeline of named stages.

``register`` checks its options and loads its model (:func:`configure`), then runs the stages
with plain data between them:

1. :func:`prepare`: normalise the images' intensities (a :class:`Pair`; constant images are
   registered as the identity before it, :func:`constant_images`);
2. :func:`align`: the affine pre-alignment, a fixed-world -> moving-world matrix (or None);
3. :func:`sample_pair`: both images on the fixed grid at the working resolution, the moving one
   through the alignment, in the network's training frame (axis order and voxel size,
   :mod:`eoir.registration.frame`; a :class:`WorkPair`), once :func:`check_overlap` has seen
   that the two overlap in world space;
4. :func:`predict`: the network's field on the working grid (or None);
5. :func:`refine`: instance optimisation of that field (or fine-tuning a copy of the network);
6. :func:`finish`: the field on the whole fixed grid (back from the model's frame) with the
   alignment folded in, as a :class:`~eoir.registration.result.RegistrationResult`.

Each stage is a function of the previous stages' data and the :class:`Settings`, so that a new
step (a built-in affine, a reorientation into the model's frame, a multimodal refinement)
replaces or joins one stage.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from eoir.errors import InputError, OptionError
from eoir.image import Image
from eoir.io import ImageLike, as_image, read_transform
from eoir.losses import MULTIMODAL, SIMILARITIES
from eoir.nn import load_model
from eoir.options import PRECISIONS, Precision, look_up_option, non_negative, positive
from eoir.progress import ProgressLike, progress_for
from eoir.registration.affine import AFFINE_MODELS, AffineModel, affine_align
from eoir.registration.frame import Frame, foreground_box, model_frame, paste
from eoir.registration.instance import finetune_network, optimise_field
from eoir.registration.preprocess import PRESETS, Preset, check_finite, is_constant, normalise
from eoir.registration.resample import to_fixed_grid, total_field
from eoir.registration.result import RegistrationResult
from eoir.runtime import resolve_device

__all__ = [
    "DEFAULT_OPTIMIZE_STEPS",
    "OPTIMIZE_TARGETS",
    "OptimizeTarget",
    "Pair",
    "Settings",
    "WorkPair",
    "align",
    "check_overlap",
    "configure",
    "constant_images",
    "finish",
    "frame_for",
    "predict",
    "prepare",
    "refine",
    "register",
    "sample_pair",
]

DEFAULT_OPTIMIZE_STEPS = 150  # instance-optimisation steps when no model is given

OptimizeTarget = Literal["field", "weights"]
OPTIMIZE_TARGETS: dict[str, str] = {
    "field": "the displacement field itself (eoir.registration.instance.optimise_field)",
    "weights": "a copy of the network's weights (needs a model)",
}


@dataclass(frozen=True)
class Settings:
    """The options of one registration (see :func:`register` for each).

    As given, ``downsample`` and ``optimize_steps`` may be None (the model decides) and
    ``device`` a name; :func:`configure` checks them and resolves those.

    Attributes
    ----------
    preset : str
        Intensity normalisation.
    affine : bool or str
        Align first: ``"affine"`` (or True) or ``"rigid"`` (:data:`AFFINE_MODELS`); False:
        not.
    downsample : int or None
        The working resolution is ``1/downsample`` of the fixed grid.
    optimize_steps : int or None
        Refinement steps (0: none).
    optimize_target : str
        What the steps refine: ``"field"`` or ``"weights"``.
    precision : str
        Arithmetic of the network's convolutions.
    device : str or torch.device
        Where the work runs.
    optimize_options : dict
        Extra keyword arguments of :func:`eoir.registration.instance.optimise_field`.
    progress : bool or callable
        Show the affine stage's and the refinement's progress (:mod:`eoir.progress`).
    initial : numpy.ndarray or None
        A given alignment, fixed RAS world -> moving RAS world: the start of the affine stage,
        or the alignment itself without one.
    notes : tuple of str
        What :func:`configure` decided that the user should hear (a model set aside).
    """

    preset: Preset = "mri"
    affine: bool | AffineModel = False
    downsample: int | None = None
    optimize_steps: int | None = None
    optimize_target: OptimizeTarget = "field"
    precision: Precision = "float32"
    device: str | torch.device = "auto"
    optimize_options: dict[str, Any] = field(default_factory=dict)
    progress: ProgressLike = True
    initial: np.ndarray | None = None
    notes: tuple[str, ...] = ()


@dataclass
class Pair:
    """The output of :func:`prepare`: the images as read and their normalised intensities.

    Attributes
    ----------
    fixed, moving : Image
        The images as read (any grids).
    fixed_values, moving_values : numpy.ndarray
        ``(X, Y, Z)`` (or ``(X, Y)``) float32 normalised intensities, each on its own image's
        grid.
    """

    fixed: Image
    moving: Image
    fixed_values: np.ndarray
    moving_values: np.ndarray


@dataclass
class WorkPair:
    """The output of :func:`sample_pair`: what the field is computed on.

    Attributes
    ----------
    fixed, moving : torch.Tensor
        ``(1, 1, *work_shape)`` normalised images on the fixed grid at the working resolution
        (the moving image sampled through the alignment), in the model's axis order, on the
        settings' device; only the part of the working grid in ``box`` when it is cropped.
    frame : Frame
        How the fixed grid's axes map onto the working grid's (``frame.shape``: the whole
        working grid).
    box : tuple of slice or None
        The part of the working grid the images cover: their foreground and a margin
        (:func:`eoir.registration.frame.foreground_box`); None: all of it.
    """

    fixed: torch.Tensor
    moving: torch.Tensor
    frame: Frame
    box: tuple[slice, ...] | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of what the field is computed on (the box, or the working grid)."""
        return tuple(self.fixed.shape[2:])


def configure(
    model: torch.nn.Module | str | os.PathLike | None, options: Settings
) -> tuple[torch.nn.Module | None, Settings]:
    """Check a registration's options and load its model.

    Returns
    -------
    net : torch.nn.Module or None
        The model in eval mode on the device (None without one).
    settings : Settings
        The options with their defaults resolved: ``device`` a ``torch.device``,
        ``downsample`` the model's training resolution, ``optimize_steps`` 0 with a model and
        :data:`DEFAULT_OPTIMIZE_STEPS` without. A network trained on real pairs of one contrast
        is set aside (None, and a note) when the similarity declares two (``mind``, ``mi``)
        and the steps refine the field: it would align them as one contrast, worse than no
        field (``brain-mri``, T2 -> T1: 9.4 mm from 2.4).

    Raises
    ------
    OptionError
        An option's value is not one of its choices or is out of range.
    InputError
        The model cannot be loaded.
    """
    look_up_option("preset", options.preset, PRESETS)
    if options.affine not in (True, False):
        look_up_option("affine", options.affine, AFFINE_MODELS)
    if "similarity" in options.optimize_options:
        look_up_option("similarity", options.optimize_options["similarity"], SIMILARITIES)
    positive("downsample", options.downsample)
    non_negative("optimize_steps", options.optimize_steps)
    look_up_option("optimize_target", options.optimize_target, OPTIMIZE_TARGETS)
    look_up_option("precision", options.precision, PRECISIONS)
    if options.optimize_target == "weights" and model is None:
        raise OptionError("optimize_target", "weights", "fine-tunes a network: give a model")
    dev = resolve_device(options.device)
    if options.precision == "float16" and dev.type != "cuda":
        raise OptionError("precision", "float16", "is for CUDA devices; use bfloat16 on a CPU")
    net = load_model(model, dev) if model is not None else None
    notes: tuple[str, ...] = ()
    similarity = options.optimize_options.get("similarity")
    if net is not None and options.optimize_target == "field" and _one_contrast(net, similarity):
        net = None  # it would align two contrasts as if they were one: worse than no field
        steps = DEFAULT_OPTIMIZE_STEPS if options.optimize_steps is None else options.optimize_steps
        instead = (
            f"{steps} optimisation steps instead (minutes on a CPU)"
            if steps
            else "the start is kept (0 optimisation steps)"
        )
        notes = (
            f"the model was trained on pairs of one contrast ({_net_name(model)}): not used with "
            f"similarity {similarity} (two contrasts); {instead}",
        )
        options = replace(options, optimize_steps=steps)
    downsample, steps = options.downsample, options.optimize_steps
    if downsample is None:
        downsample = int(getattr(net, "trained_downsample", 1)) if net is not None else 1
    if steps is None:
        steps = 0 if net is not None else DEFAULT_OPTIMIZE_STEPS
    return net, replace(
        options, device=dev, downsample=downsample, optimize_steps=steps, notes=notes
    )


def _net_name(model: torch.nn.Module | str | os.PathLike) -> str:
    """A model as a user named it (a file or shipped name), or its class."""
    return str(model) if isinstance(model, str | os.PathLike) else type(model).__name__


def _one_contrast(net: torch.nn.Module, similarity: str | None) -> bool:
    """Whether ``similarity`` declares two contrasts and ``net`` learned from pairs of one
    (real images compared by NCC or MSE; not synthesised from label maps)."""
    trained = getattr(net, "trained_similarity", None)
    return (
        similarity in MULTIMODAL
        and not getattr(net, "trained_synth", False)
        and trained is not None
        and trained not in MULTIMODAL
    )


def _check_downsample(downsample: int, shape: tuple[int, ...]) -> None:
    """Refuse a factor that leaves fewer than 8 voxels along an axis that has 8 or more."""

    def enough(d: int) -> bool:
        return all(-(-n // d) >= 8 for n in shape if n >= 8)

    if downsample > 1 and not enough(downsample):
        largest = max(d for d in range(1, max(shape) + 1) if enough(d))
        raise OptionError(
            "downsample",
            downsample,
            f"leaves fewer than 8 voxels along an axis of the {'x'.join(map(str, shape))} "
            f"fixed image (at most {largest})",
        )


def constant_images(fixed: Image, moving: Image) -> list[str]:
    """Which of the two images (``"fixed"``, ``"moving"``) are constant: nothing to register."""
    pair = (("fixed", fixed), ("moving", moving))
    return [name for name, image in pair if is_constant(image.array)]


def prepare(fixed: Image, moving: Image, settings: Settings) -> Pair:
    """Normalise both images' intensities (internal only: outputs keep the originals').

    Returns
    -------
    Pair
    """
    fixed_values = normalise(fixed.array, settings.preset)
    return Pair(fixed, moving, fixed_values, normalise(moving.array, settings.preset))


def align(pair: Pair, settings: Settings) -> np.ndarray | None:
    """The affine pre-alignment stage.

    Returns
    -------
    numpy.ndarray or None
        ``(ndim+1, ndim+1)`` fixed RAS world -> moving RAS world (mm): the affine stage's
        result (started from ``settings.initial`` when given), else ``settings.initial`` (None
        without either).
    """
    if not settings.affine:
        return settings.initial
    return affine_align(
        pair.fixed,
        pair.moving,
        pair.fixed_values,
        pair.moving_values,
        model="affine" if settings.affine is True else settings.affine,
        similarity=settings.optimize_options.get("similarity", "ncc"),
        progress=settings.progress,
        initial=settings.initial,
    )


def check_overlap(pair: Pair, world: np.ndarray | None, settings: Settings) -> None:
    """Refuse a pair whose grids do not overlap in world space (after the alignment).

    The moving grid's corners are mapped into fixed voxels (through ``world``); if their
    bounding box misses the fixed grid, registering would sample nothing but zeros.
    """
    moving, fixed = pair.moving, pair.fixed
    ndim = fixed.ndim
    corners = np.array(np.meshgrid(*[(-0.5, n - 0.5) for n in moving.shape], indexing="ij"))
    points = np.vstack([corners.reshape(ndim, -1), np.ones((1, 2**ndim))])
    to_fixed = np.linalg.inv(fixed.affine) @ (
        np.linalg.inv(world) if world is not None else np.eye(ndim + 1)
    )
    inside = (to_fixed @ moving.affine @ points)[:ndim]
    low, high = inside.min(axis=1), inside.max(axis=1)
    if (high < -0.5).any() or (low > np.array(fixed.shape) - 0.5).any():
        gap = float(np.linalg.norm(_centre(fixed) - _centre(moving)))
        message = (
            f"{moving.path or 'moving image'} and {fixed.path or 'fixed image'} do not overlap "
            f"in world space (their centres are {gap:.0f} mm apart): check their headers"
        )
        if settings.affine:
            raise InputError(message + ", or align them first with another tool")
        raise InputError(message + ", or align them first", switches=("affine",))


def _initial(source: str | os.PathLike | np.ndarray | None, ndim: int) -> np.ndarray | None:
    """A starting alignment as a fixed -> moving RAS world matrix (read from a file)."""
    if source is None:
        return None
    if isinstance(source, str | os.PathLike):
        return read_transform(source, ndim)
    matrix = np.asarray(source, dtype=float)
    if matrix.shape != (ndim + 1, ndim + 1) or not np.isfinite(matrix).all():
        raise InputError(
            f"initial transform: a {ndim}-D alignment is a finite {ndim + 1}x{ndim + 1} matrix, "
            f"got shape {matrix.shape}"
        )
    return matrix


def _centre(image: Image) -> np.ndarray:
    return (image.affine @ np.append((np.array(image.shape) - 1) / 2, 1.0))[:3]


def frame_for(net: torch.nn.Module | None, fixed: Image, settings: Settings) -> Frame:
    """The working grid: the fixed grid in the network's training frame (its voxel axis codes
    and spacing times ``downsample``, :func:`eoir.registration.frame.model_frame`); without a
    network, or for a model that records neither, the fixed grid at ``1/downsample``."""
    return model_frame(
        fixed,
        getattr(net, "expected_axes", None),
        getattr(net, "expected_spacing", None),
        settings.downsample,
    )


def sample_pair(
    pair: Pair, world: np.ndarray | None, settings: Settings, frame: Frame | None = None
) -> WorkPair:
    """Both normalised images on the working grid.

    The fixed image is brought into ``frame``'s axis order (a permutation and flips: exact) and
    resized linearly (corners aligned) to ``frame.shape``: ``ceil(n / downsample)`` voxels per
    axis, at least 8, without a frame. The moving image is sampled once from its own grid
    through ``world`` straight onto that working grid (:meth:`Frame.voxels`); on the fixed
    grid already (no alignment), it is reordered and resized as the fixed one. When the two
    images' foreground fills at most :data:`~eoir.registration.frame.CROP_WORTH` of that grid (a
    head in a raw scan's box), only the foreground and a margin are kept (the field is computed
    there and extended by its edge values, :func:`finish`).
    """
    if frame is None:
        frame = frame_for(None, pair.fixed, settings)
    fixed = frame.to_model(torch.from_numpy(pair.fixed_values)[None, None].to(settings.device))
    resized = tuple(fixed.shape[2:]) != frame.shape
    if resized:
        mode = "trilinear" if len(frame.shape) == 3 else "bilinear"
        fixed = F.interpolate(fixed, size=frame.shape, mode=mode, align_corners=True)
    if world is None and pair.moving.same_grid(pair.fixed):  # one grid: no sampling
        moving = frame.to_model(torch.from_numpy(pair.moving_values)[None, None])
        if resized:
            moving = F.interpolate(moving, size=frame.shape, mode=mode, align_corners=True)
    else:  # sampled from its own voxels straight onto the working grid (once)
        work_grid = Image(
            np.broadcast_to(np.float32(0), frame.shape),
            pair.fixed.affine @ frame.voxels(pair.fixed.shape),
        )
        moving = to_fixed_grid(pair.moving, work_grid, world=world, values=pair.moving_values)
    moving = moving.to(settings.device)
    box = foreground_box(fixed, moving)
    if box is not None:
        fixed, moving = fixed[(..., *box)].contiguous(), moving[(..., *box)].contiguous()
    return WorkPair(fixed, moving, frame, box)


def predict(work: WorkPair, net: torch.nn.Module | None, settings: Settings) -> torch.Tensor | None:
    """The network's field on the working grid.

    Returns
    -------
    torch.Tensor or None
        ``(1, ndim, *work.shape)`` float32 displacement in working-grid voxels; None without a
        network, or when the network's weights are to be fine-tuned instead (:func:`refine`).
    """
    if net is None or (settings.optimize_target == "weights" and settings.optimize_steps > 0):
        return None
    # inference mode unless the field seeds an optimisation (which needs autograd later)
    context = torch.no_grad() if settings.optimize_steps > 0 else torch.inference_mode()
    dtype = PRECISIONS[settings.precision]
    with context, torch.autocast(settings.device.type, dtype=dtype, enabled=dtype is not None):
        return net(work.moving, work.fixed).float()


def refine(
    work: WorkPair,
    disp: torch.Tensor | None,
    net: torch.nn.Module | None,
    settings: Settings,
) -> torch.Tensor | None:
    """Instance optimisation: refine the field on this pair (or fine-tune the network).

    Returns
    -------
    torch.Tensor or None
        ``(1, ndim, *work.shape)`` displacement in working-grid voxels; ``disp`` itself when there
        are no steps.
    """
    steps = settings.optimize_steps
    if steps == 0:
        return disp
    options = dict(settings.optimize_options)
    label = "fine-tuning" if settings.optimize_target == "weights" else "optimisation"
    given = options.pop("callback", None)
    with progress_for(settings.progress, steps, label) as shown:

        def callback(step: int, loss: float) -> None:
            shown.update(step, f"loss {loss:.4f}")
            if given is not None:
                given(step, loss)

        if settings.optimize_target == "weights":
            return finetune_network(
                net, work.moving, work.fixed, steps, callback=callback, **options
            )
        return optimise_field(
            work.moving, work.fixed, init=disp, steps=steps, callback=callback, **options
        )


def finish(
    pair: Pair,
    work: WorkPair,
    disp: torch.Tensor | None,
    world: np.ndarray | None,
    seconds: float,
    info: dict[str, Any],
) -> RegistrationResult:
    """The field on the whole fixed grid with the alignment folded in, as the result.

    Raises
    ------
    InputError
        The field holds NaN or infinite values (a broken model, say): never a written file.
    """
    frame = work.frame
    if disp is None:
        disp = work.fixed.new_zeros(1, len(frame.shape), *frame.shape)
    else:
        disp = paste(disp.detach(), work.box, frame.shape)
    # on the working grid in the fixed image's axis order (permuting and flipping commute with
    # the corner-aligned linear interpolation onto the fixed grid that total_field makes)
    disp = frame.field_from_model(disp.float().cpu())
    if not torch.isfinite(disp).all() or (world is not None and not np.isfinite(world).all()):
        raise InputError(
            f"the registration of {pair.moving.path} to {pair.fixed.path} gave NaN or infinite "
            f"displacements (model {info.get('model')}): nothing was written"
        )
    total = total_field(pair.fixed, disp, world)
    return RegistrationResult(pair.fixed, pair.moving, total, world, seconds, info)


def register(
    fixed: ImageLike,
    moving: ImageLike,
    *,
    fixed_affine: np.ndarray | None = None,
    moving_affine: np.ndarray | None = None,
    model: torch.nn.Module | str | os.PathLike | None = None,
    optimize_steps: int | None = None,
    optimize_target: OptimizeTarget = "field",
    affine: bool | AffineModel = False,
    preset: Preset = "mri",
    downsample: int | None = None,
    device: str | torch.device = "auto",
    optimize_options: dict[str, Any] | None = None,
    precision: Precision = "float32",
    progress: ProgressLike = True,
    initial_transform: str | os.PathLike | np.ndarray | None = None,
) -> RegistrationResult:
    """Register ``moving`` to ``fixed``.

    Parameters
    ----------
    fixed, moving : path, Image or numpy.ndarray
        3-D images, or two 2-D images (PNG, JPEG, TIFF, 2-D NIfTI, a one-slice volume; 2-D
        arrays). Paths are read with their geometry (NIfTI, formats SimpleITK reads, DICOM
        folders); arrays use ``fixed_affine``/``moving_affine`` (identity if None). The moving
        image may lie on any grid: it is mapped into the fixed grid in world space.
    model : EOIR, VoxelMorph, path or str, optional
        A network, a checkpoint, or the name of a shipped model (``"brain-mri"``,
        :mod:`eoir.pretrained`) predicting the field in one forward pass, of the images'
        dimension (the shipped models are 3-D). None: no network.
    optimize_steps : int, optional
        Instance-optimisation steps refining the field on this pair, starting from the model's
        prediction (or zero). Default: 0 with a model, :data:`DEFAULT_OPTIMIZE_STEPS` without.
    optimize_target : {"field", "weights"}
        What the steps optimise: the field itself (default; see
        :mod:`eoir.registration.instance`), or a copy of the model's weights (needs ``model``).
    affine : bool or {"affine", "rigid"}
        Align first (True: ``"affine"``): eoir's linear stage (moments, then a 4 -> 2 mm
        optimisation with global NCC, or mutual information with
        ``optimize_options={"similarity": "mind"}`` or ``"mi"`` for different contrasts;
        SimpleITK for 2-D images, :mod:`eoir.registration.affine`); the result includes it.
    preset : {"mri", "ct", "lung", "none"}
        Intensity normalisation (internal only; see
        :func:`eoir.registration.preprocess.normalise`).
    downsample : int, optional
        Register at ``1/downsample`` resolution and upsample the field (faster, coarser).
        Default: the resolution the model was trained at (2 for ``brain-mri``), else 1.
    device : str or torch.device
        ``"auto"`` (default: CUDA when available, else the CPU), ``"cpu"``, ``"cuda"`` or
        ``"cuda:N"``.
    optimize_options : dict, optional
        Extra keyword arguments of :func:`eoir.registration.instance.optimise_field` (lr,
        weight, similarity, ...).
    precision : {"float32", "bfloat16", "float16"}
        Arithmetic of the network's convolutions (autocast; fields, warps and integration stay
        float32). ``bfloat16`` is faster on CPUs with AVX512-BF16 and on GPUs; ``float16`` is
        for GPUs. Its effect on the shipped model's fields and Dice is measured in
        ``benchmarks/results.md``.
    progress : bool or callable
        Show the progress of the affine stage and of the optimisation steps on standard error:
        a rewritten line on a terminal, a line every 10 s otherwise (:mod:`eoir.progress`);
        ``False`` shows nothing; a callable is called as ``progress(done, total)``.
    initial_transform : path or numpy.ndarray, optional
        A starting alignment: an ITK transform file (``.tfm``/``.txt``) or ANTs ``.mat``
        (fixed -> moving, as ``antsApplyTransforms`` applies it; :mod:`eoir.io.transforms`),
        or an ``(ndim+1, ndim+1)`` fixed RAS world -> moving RAS world matrix. With ``affine``
        the affine stage starts from it; without, it is the alignment. The result includes it.

    Returns
    -------
    RegistrationResult

    Examples
    --------
    Two smooth 3-D blobs, the moving one shifted by two voxels along the first axis:

    >>> import numpy as np
    >>> x = np.mgrid[:24, :24, :24].astype(np.float32)
    >>> fixed = np.exp(-((x - 12) ** 2).sum(0) / 40)
    >>> moving = np.exp(-((x - [[[[14]]], [[[12]]], [[[12]]]]) ** 2).sum(0) / 40)
    >>> result = register(fixed, moving, model=None, optimize_steps=60, preset="none",
    ...                   progress=False)
    >>> round(float(result.disp[0, 0, 12, 12, 12]))  # fixed voxel 12 <- moving voxel 14
    2
    """
    fixed_image = as_image(fixed, fixed_affine, "fixed image")
    moving_image = as_image(moving, moving_affine, "moving image")
    options = Settings(
        preset=preset,
        affine=affine,
        downsample=downsample,
        optimize_steps=optimize_steps,
        optimize_target=optimize_target,
        precision=precision,
        device=device,
        optimize_options=dict(optimize_options or {}),
        progress=progress,
        initial=_initial(initial_transform, fixed_image.ndim),
    )
    if fixed_image.ndim != moving_image.ndim:
        raise InputError(
            f"{moving_image.path}: moving image is {moving_image.ndim}-D and "
            f"{fixed_image.path} {fixed_image.ndim}-D: register images of the same dimension"
        )
    net, settings = configure(model, options)
    ndim = getattr(net, "ndim", fixed_image.ndim)
    if ndim != fixed_image.ndim:
        raise OptionError(
            "model",
            _net_name(model),
            f"is a {ndim}-D network and the images are {fixed_image.ndim}-D: give a "
            f"{fixed_image.ndim}-D model, or none (instance optimisation alone)",
        )
    _check_downsample(settings.downsample, fixed_image.shape)
    info: dict[str, Any] = {
        "preset": settings.preset,
        "affine": settings.affine,
        "model": None if net is None else str(getattr(model, "config", model)),
        "optimize_steps": settings.optimize_steps,
        "optimize_target": settings.optimize_target,
        "downsample": settings.downsample,
        "precision": settings.precision,
        "device": str(settings.device),
        "warnings": list(settings.notes),
    }
    for note in settings.notes:
        warnings.warn(note, stacklevel=2)
    check_finite(fixed_image, "fixed image")
    check_finite(moving_image, "moving image")
    start = time.perf_counter()
    constant = constant_images(fixed_image, moving_image)
    if constant:
        message = f"{' and '.join(constant)} image is constant: registered as identity"
        warnings.warn(message, stacklevel=2)
        info["warnings"].append(message)
        disp = torch.zeros(1, fixed_image.ndim, *fixed_image.shape)
        return RegistrationResult(fixed_image, moving_image, disp, None, 0.0, info)
    pair = prepare(fixed_image, moving_image, settings)
    world = align(pair, settings)
    check_overlap(pair, world, settings)
    work = sample_pair(pair, world, settings, frame_for(net, fixed_image, settings))
    disp = predict(work, net, settings)
    disp = refine(work, disp, net, settings)
    return finish(pair, work, disp, world, time.perf_counter() - start, info)
