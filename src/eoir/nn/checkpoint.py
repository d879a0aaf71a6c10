"""Model checkpoints: weights plus the constructor config, loadable on any input size.

A checkpoint is a dict saved with ``torch.save``: ``{"format": "eoir-checkpoint",
"eoir_version": str, "config": EOIR.config, "model": state_dict, ...}`` (training adds optimizer,
scheduler, step and RNG states). No grids or buffers are stored. ``config["architecture"]``
names the network (``"eoir"`` when absent, ``"voxelmorph"`` for the baseline);
``"weights_sha256"`` is a digest of the weights, checked on loading.

Wherever a checkpoint path is taken, the name of a shipped model (:mod:`eoir.pretrained`, e.g.
``"brain-mri"``) may be given instead. A loaded model carries two attributes from its
checkpoint: ``trained_downsample`` (the resolution divisor it was trained at, used by
:func:`eoir.register` by default) and ``expected_spacing`` (mm, or None).
"""

from __future__ import annotations

import hashlib
import inspect
import os
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
    "read_checkpoint",
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


def _build(state: dict[str, Any], path: Path) -> nn.Module:
    recorded = state.get("weights_sha256")
    if recorded is not None:
        try:
            actual = weights_sha256(state["model"])
        except (KeyError, TypeError, AttributeError, RuntimeError) as err:
            raise InputError(f"{path}: checkpoint weights are unreadable ({reason(err)})") from None
        if actual != recorded:
            raise InputError(
                f"{path}: weights checksum {actual[:12]}... is not the recorded "
                f"{str(recorded)[:12]}... (the file is corrupt or its weights were edited)"
            )
    try:
        model = build_model(state["config"])
        model.load_state_dict(state["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise InputError(f"{path}: checkpoint does not match its config ({reason(err)})") from None
    run = state.get("run_config") or {}
    model.trained_downsample = int(run.get("data", {}).get("downsample", 1))
    spacing = state.get("input_spacing_mm")
    model.expected_spacing = None if spacing is None else float(spacing)
    return model


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


def _read(path: Path) -> tuple[dict[str, Any], nn.Module]:
    """Read, check and build a checkpoint (building is the check that weights fit)."""
    if str(path) in PRETRAINED and not path.exists():
        path = pretrained_path(str(path))
    if not path.is_file():
        raise InputError(f"{path}: model checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a corrupt file
        raise InputError(f"{path}: not a readable checkpoint ({reason(err)})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise InputError(f"{path}: not an eoir checkpoint (no eoir format tag)")
    return state, _build(state, path)
