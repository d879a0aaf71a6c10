"""Model checkpoints: weights plus the constructor config, loadable on any input size.

A checkpoint is a dict saved with ``torch.save``: ``{"format": "eoir-checkpoint",
"eoir_version": str, "config": EOIR.config, "model": state_dict, ...}`` (training adds optimizer,
scheduler, step and RNG states). No grids or buffers are stored. ``config["architecture"]``
names the network (``"eoir"`` when absent, ``"voxelmorph"`` for the baseline).
``"model_sha256"`` (:func:`model_sha256`) is a digest of everything that changes what the model
computes (weights, model config, training resolution and preset, input spacing) and
``"weights_sha256"`` one of the weights alone; both are checked on loading, and a checkpoint
without ``model_sha256`` is refused unless it is a shipped model (whose file checksum is
recorded in :mod:`eoir.pretrained`). The values registration reads are checked too, and
weights must be finite.

Wherever a checkpoint path is taken, the name of a shipped model (:mod:`eoir.pretrained`, e.g.
``"brain-mri"``) may be given instead. A loaded model carries these attributes from its
checkpoint: ``trained_downsample`` (the resolution divisor it was trained at, used by
:func:`eoir.register` by default), ``trained_synth`` and ``trained_similarity`` (whether its
training pairs were synthesised from label maps, else the image term that compared them: a
one-contrast network is not used for pairs declared to differ), ``expected_spacing`` (the
training images' voxel size in mm, ``input_spacing_mm``, or None) and ``expected_axes`` (their
voxel axis codes, ``input_axes``, e.g. ``"ASL"``, or None): registration feeds the network in
that frame (:mod:`eoir.registration.frame`).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from eoir._version import __version__
from eoir.errors import InputError, reason
from eoir.nn.model import EOIR
from eoir.nn.voxelmorph import VoxelMorph
from eoir.options import look_up_option
from eoir.pretrained import PRETRAINED, pretrained_path

__all__ = [
    "ARCHITECTURES",
    "build_model",
    "load_checkpoint",
    "load_model",
    "model_sha256",
    "read_checkpoint",
    "resave",
    "save_model",
    "weights_sha256",
]

FORMAT = "eoir-checkpoint"
ARCHITECTURES: dict[str, type[nn.Module]] = {"eoir": EOIR, "voxelmorph": VoxelMorph}


def build_model(config: dict[str, Any], strict: bool = True) -> nn.Module:
    """A new network from a model config (``EOIR.config``, ``VoxelMorph.config`` or a training
    config's ``model`` section).

    Parameters
    ----------
    config : dict
        Constructor arguments and ``architecture`` (default ``"eoir"``).
    strict : bool
        Refuse keys the architecture does not take; ``False`` ignores them (a training config
        holds the keys of every architecture).

    Raises
    ------
    ValueError
        Unknown architecture, unknown key (strict) or invalid values.
    """
    kwargs = dict(config)
    name = kwargs.pop("architecture", "eoir")
    cls = look_up_option("architecture", name, ARCHITECTURES)
    accepted = inspect.signature(cls).parameters
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown and strict:
        raise ValueError(f"{name} takes no {', '.join(unknown)}")
    return cls(**{k: v for k, v in kwargs.items() if k in accepted})


def save_model(path: str | os.PathLike, model: nn.Module, **extra: Any) -> None:
    """Save ``model`` (config + weights, and any ``extra`` entries) atomically to ``path``."""
    path = Path(path)
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    state = {
        "format": FORMAT,
        "eoir_version": __version__,
        "config": dict(model.config),
        "model": weights,
        "weights_sha256": weights_sha256(weights),
        **extra,
    }
    _save_signed(path, state)


def _save_signed(path: Path, state: dict[str, Any]) -> None:
    """Add the model digest to ``state`` and save it atomically to ``path``."""
    state["model_sha256"] = model_sha256(state)
    temp = path.with_name(f".{path.name}.eoir-tmp")
    try:
        torch.save(state, temp)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def load_model(
    source: str | os.PathLike | nn.Module, device: str | torch.device = "cpu"
) -> nn.Module:
    """Load a model (EOIR or VoxelMorph) from a checkpoint file (or pass one through), in eval
    mode.

    Parameters
    ----------
    source : path or torch.nn.Module
        A checkpoint written by :func:`save_model` or by ``eoir train``.
    device : str or torch.device
        Where to put the model.

    Returns
    -------
    EOIR or VoxelMorph

    Raises
    ------
    InputError
        Missing, unreadable or incompatible checkpoint.

    Examples
    --------
    The shipped brain MRI model, by name:

    >>> model = load_model("brain-mri")
    >>> model.config["width"], model.trained_downsample
    (16, 2)
    """
    if isinstance(source, nn.Module):
        return source.to(device).eval()
    return load_checkpoint(source, device)[0]


def load_checkpoint(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """The model (eval mode, on ``device``) and the entries of a checkpoint, read once.

    See :func:`read_checkpoint` for the entries and the errors.
    """
    state, model = _read(Path(path))
    return model.to(device).eval(), state


def weights_sha256(weights: dict[str, torch.Tensor]) -> str:
    """SHA-256 over a state dict's names, dtypes, shapes and bytes (hex)."""
    digest = hashlib.sha256()
    for key in sorted(weights):
        tensor = weights[key].detach().cpu().contiguous()
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def model_sha256(state: dict[str, Any]) -> str:
    """SHA-256 over everything in a checkpoint that changes what the model computes (hex).

    The weights (:func:`weights_sha256`), the model config, and what registration takes from
    the run: its resolution divisor and intensity preset (``run_config["data"]``) and the
    input voxel spacing (``input_spacing_mm``).
    """
    run = (state.get("run_config") or {}).get("data", {})
    described = {
        "weights": weights_sha256(state["model"]),
        "config": state["config"],
        "downsample": run.get("downsample"),
        "preset": run.get("preset"),
        "input_spacing_mm": state.get("input_spacing_mm"),
    }
    if state.get("input_axes") is not None:  # recorded since eoir 0.x; older digests unchanged
        described["input_axes"] = state["input_axes"]
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()


def _check_digest(state: dict[str, Any], path: Path, shipped: bool) -> None:
    try:
        recorded = state.get("model_sha256")
        if recorded is None and not shipped:
            raise InputError(
                f"{path}: the checkpoint carries no model digest (edited, or written by an "
                "older eoir): if you trust it, eoir.nn.checkpoint.resave(path) adds one"
            )
        checks = [("weights_sha256", weights_sha256), ("model_sha256", model_sha256)]
        for key, digest in checks:
            if state.get(key) is None:
                continue
            actual = digest(state["model"] if key == "weights_sha256" else state)
            if actual != state[key]:
                what = "weights" if key == "weights_sha256" else "weights or settings"
                raise InputError(
                    f"{path}: {key} {actual[:12]}... is not the recorded "
                    f"{str(state[key])[:12]}... (the file is corrupt or its {what} were edited)"
                )
    except InputError:
        raise
    except (KeyError, TypeError, AttributeError, RuntimeError, ValueError) as err:
        raise InputError(f"{path}: checkpoint weights are unreadable ({reason(err)})") from None


def _build(state: dict[str, Any], path: Path, shipped: bool = False) -> nn.Module:
    _check_digest(state, path, shipped)
    try:
        model = build_model(state["config"])
        model.load_state_dict(state["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise InputError(f"{path}: checkpoint does not match its config ({reason(err)})") from None
    if not all(torch.isfinite(w).all() for w in model.state_dict().values()):
        raise InputError(f"{path}: checkpoint weights hold NaN or infinite values")
    run = (state.get("run_config") or {}).get("data", {})
    downsample = run.get("downsample", 1)
    if isinstance(downsample, bool) or not isinstance(downsample, int) or downsample < 1:
        raise InputError(f"{path}: run_config data.downsample {downsample!r}: must be 1 or more")
    model.trained_downsample = downsample
    loss = (state.get("run_config") or {}).get("loss", {})
    # what its training pairs were: synthesised from label maps (any contrast) or real images
    # compared by this image term (None: not recorded)
    model.trained_synth = bool(run.get("synth", False))
    model.trained_similarity = loss.get("similarity") if isinstance(loss, dict) else None
    spacing = state.get("input_spacing_mm")
    if spacing is not None and not (
        isinstance(spacing, int | float) and math.isfinite(spacing) and spacing > 0
    ):
        raise InputError(f"{path}: input_spacing_mm {spacing!r}: must be a positive number")
    model.expected_spacing = None if spacing is None else float(spacing)
    axes = state.get("input_axes")
    ndim = int(state["config"].get("ndim", 3))
    if axes is not None and not _valid_axes(axes, ndim):
        raise InputError(
            f"{path}: input_axes {axes!r}: must be {ndim} axis codes, one of L/R, A/P, S/I each"
        )
    model.expected_axes = None if axes is None else str(axes)
    return model


def _valid_axes(axes: Any, ndim: int) -> bool:
    """Whether ``axes`` names ``ndim`` different world axes (``"ASL"``, ``"RA"``, ...)."""
    pairs = ("LR", "AP", "SI")
    if not isinstance(axes, str) or len(axes) != ndim:
        return False
    used = [next((k for k, p in enumerate(pairs) if c in p), None) for c in axes]
    return None not in used and len(set(used)) == ndim


def resave(path: str | os.PathLike) -> None:
    """Add the model digest to a checkpoint you trust (one written by an older eoir).

    The weights digest, where the file has one, is checked first; the file is rewritten
    atomically with its entries unchanged and ``model_sha256`` added.
    """
    path = Path(path)
    state = _load(path)
    if state.get("weights_sha256") is not None:
        _check_digest({k: v for k, v in state.items() if k != "model_sha256"}, path, True)
    _save_signed(path, state)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a checkpoint: an eoir dict whose weights fit its model config.

    Parameters
    ----------
    path : path
        A file written by :func:`save_model` (``eoir train`` writes them).

    Returns
    -------
    dict
        Its entries (``config``, ``model`` and, for training checkpoints, ``optimizer``,
        ``scheduler``, ``step``, ``rng``, ``run_config``, ``best``).

    Raises
    ------
    InputError
        Missing, unreadable, not eoir's, or weights that do not fit the config.
    """
    return _read(Path(path))[0]


def _load(path: Path) -> dict[str, Any]:
    """The entries of an eoir checkpoint file, read without running any pickled code."""
    if not path.is_file():
        raise InputError(f"{path}: model checkpoint not found")
    try:
        with warnings.catch_warnings():  # torch's own warnings on odd files: one line below
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a corrupt file
        raise InputError(f"{path}: not a readable checkpoint ({reason(err)})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise InputError(f"{path}: not an eoir checkpoint (no eoir format tag)")
    return state


def _read(path: Path) -> tuple[dict[str, Any], nn.Module]:
    """Read, check and build a checkpoint (building is the check that weights fit)."""
    shipped = str(path) in PRETRAINED and not path.exists()
    if shipped:  # its file's SHA-256 is checked against the one recorded in eoir.pretrained
        path = pretrained_path(str(path))
    state = _load(path)
    return state, _build(state, path, shipped)
