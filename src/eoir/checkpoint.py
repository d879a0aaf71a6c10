"""Model checkpoints: weights plus the constructor config, loadable on any input size.

A checkpoint is a dict saved with ``torch.save``: ``{"format": "eoir-checkpoint",
"eoir_version": str, "config": EOIR.config, "model": state_dict, ...}`` (training adds optimizer,
scheduler, step and RNG states). No grids or buffers are stored.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from eoir import __version__
from eoir.errors import InputError, reason
from eoir.model import EOIR

__all__ = ["load_checkpoint", "load_model", "read_checkpoint", "save_model"]

FORMAT = "eoir-checkpoint"


def save_model(path: str | os.PathLike, model: EOIR, **extra: Any) -> None:
    """Save ``model`` (config + weights, and any ``extra`` entries) atomically to ``path``."""
    path = Path(path)
    state = {
        "format": FORMAT,
        "eoir_version": __version__,
        "config": dict(model.config),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **extra,
    }
    temp = path.with_name(f".{path.name}.eoir-tmp")
    try:
        torch.save(state, temp)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def load_model(source: str | os.PathLike | EOIR, device: str | torch.device = "cpu") -> EOIR:
    """Load an EOIR model from a checkpoint file (or pass a model through), in eval mode.

    Parameters
    ----------
    source : path or EOIR
        A checkpoint written by :func:`save_model` or by ``eoir train``.
    device : str or torch.device
        Where to put the model.

    Returns
    -------
    EOIR

    Raises
    ------
    InputError
        Missing, unreadable or incompatible checkpoint.
    """
    if isinstance(source, EOIR):
        return source.to(device).eval()
    return load_checkpoint(source, device)[0]


def load_checkpoint(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[EOIR, dict[str, Any]]:
    """The model (eval mode, on ``device``) and the entries of a checkpoint, read once.

    See :func:`read_checkpoint` for the entries and the errors.
    """
    state, model = _read(Path(path))
    return model.to(device).eval(), state


def _build(state: dict[str, Any], path: Path) -> EOIR:
    try:
        model = EOIR(**state["config"])
        model.load_state_dict(state["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise InputError(f"{path}: checkpoint does not match its config ({reason(err)})") from None
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


def _read(path: Path) -> tuple[dict[str, Any], EOIR]:
    """Read, check and build a checkpoint (building is the check that weights fit)."""
    if not path.is_file():
        raise InputError(f"{path}: model checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a corrupt file
        raise InputError(f"{path}: not a readable checkpoint ({reason(err)})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise InputError(f"{path}: not an eoir checkpoint (no eoir format tag)")
    return state, _build(state, path)
