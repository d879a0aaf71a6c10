"""Training configuration: defaults, shipped recipes, user YAML files and command-line overrides.

A config is a two-level mapping (``section.key``). Every key has a default here, so a recipe or
a user file only states what differs; an unknown section or key is an error (it is a typo).
Overrides are ``section.key=value`` strings with YAML values (``optim.lr=2e-4``,
``model.factors=[2,2,1]``).
"""

from __future__ import annotations

import copy
import math
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from eoir.errors import InputError, OptionError, reason
from eoir.losses import MULTIMODAL, PENALTIES, SIMILARITIES
from eoir.nn.checkpoint import ARCHITECTURES
from eoir.nn.model import COMPOSITIONS
from eoir.options import look_up_option
from eoir.registration.preprocess import PRESETS
from eoir.synth import SynthOptions
from eoir.training.data import PAIRINGS

__all__ = [
    "CHOICES",
    "DEFAULTS",
    "RANGES",
    "SCHEDULES",
    "load_config",
    "recipe_names",
    "save_config",
]

SCHEDULES: dict[str, str] = {
    "constant": "the same learning rate throughout",
    "poly": "lr * (1 - step / steps) ** poly_power",
}

DEFAULTS: dict[str, dict[str, Any]] = {
    "model": {
        "architecture": "eoir",  # eoir | voxelmorph (the baseline; takes ndim, integration_steps)
        "ndim": 3,
        "width": 32,
        "levels": 5,
        "ks": 1,
        "integration_steps": 7,
        "composition": "compose",
        "large_kernel": False,
        "lk_size": 5,
        "finest_level": 0,
        "factors": 2,
    },
    "data": {
        "preset": "mri",  # intensity normalisation (eoir.registration.preprocess.PRESETS)
        "downsample": 1,  # train (and register) at 1/downsample resolution
        "pairing": "random",  # all | random | atlas
        "atlas": 0,  # index of the atlas subject for pairing: atlas
        "cache": True,  # keep decoded volumes in memory
        "workers": 2,  # DataLoader worker processes
        "synth": False,  # images synthesised from the label maps (eoir.synth; section synth)
        # draw synthetic pairs on the training device in the training process (for a GPU with
        # few CPU cores beside it); data.workers is then unused
        "synth_on_device": False,
    },
    "loss": {
        "similarity": "ncc",  # ncc | mse | mind | mi
        "windows": [9, 5, 3],  # NCC window per level, finest first
        "sim_weight": 1.0,
        "reg_weight": 1.0,  # applied once (the reference code squares its weights)
        "dice_weight": 1.0,  # used when the training subjects have label maps
        "penalty": "l1",  # smoothness on each level's residual: l1 | l2
        "field_weight": 0.0,  # endpoint error against the true field (data.synth one-head pairs)
    },
    "optim": {
        "lr": 1e-4,
        "schedule": "constant",  # constant | poly
        "poly_power": 0.9,
        "weight_decay": 0.0,
        "epochs": 301,
        "max_steps": 0,  # stop after this many optimizer steps (0: epochs decide)
    },
    "train": {
        "seed": 0,
        "val_every": 0,  # validation every N steps (0: once per epoch)
        "val_pairs": 0,  # validate on the first N pairs (0: all)
        "save_every": 50,  # last.pt every N steps (and at the end)
        "log_every": 10,
        "amp": True,  # bf16 autocast where bf16 is native (CUDA; CPUs with AVX512-BF16/AMX)
        "checkpointing": False,  # recompute activations in backward: less memory, more time
        "init": "",  # start from these weights: a checkpoint or a shipped model's name
    },
    # the generator's ranges when data.synth is on (documented in eoir.synth.SynthOptions)
    "synth": SynthOptions().as_dict(),
}


def recipe_names() -> list[str]:
    """Names of the recipes shipped in the package."""
    folder = resources.files("eoir.training") / "recipes"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _read_yaml(text: str, where: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise InputError(f"{where}: not valid YAML ({reason(err)})") from None
    if not isinstance(data, dict):
        raise InputError(f"{where}: a config is a mapping of sections")
    return data


PER_AXIS = {("model", "factors")}  # int keys that may also be one int per axis
# keys whose value is one of an option's choices: that option's table
CHOICES: dict[tuple[str, str], dict[str, Any]] = {
    ("model", "architecture"): ARCHITECTURES,
    ("model", "composition"): COMPOSITIONS,
    ("data", "preset"): PRESETS,
    ("data", "pairing"): PAIRINGS,
    ("loss", "similarity"): SIMILARITIES,
    ("loss", "penalty"): PENALTIES,
    ("optim", "schedule"): SCHEDULES,
}


# numeric keys and the least value each may take: (minimum, whether the minimum itself is allowed)
RANGES: dict[tuple[str, str], tuple[float, bool]] = {
    ("model", "ndim"): (2, True),
    ("model", "width"): (1, True),
    ("model", "levels"): (1, True),
    ("model", "ks"): (0, True),
    ("model", "integration_steps"): (0, True),
    ("model", "lk_size"): (1, True),
    ("model", "finest_level"): (0, True),
    ("model", "factors"): (1, True),
    ("data", "downsample"): (1, True),
    ("data", "atlas"): (0, True),
    ("data", "workers"): (0, True),
    ("loss", "windows"): (1, True),
    ("loss", "sim_weight"): (0, True),
    ("loss", "reg_weight"): (0, True),
    ("loss", "dice_weight"): (0, True),
    ("loss", "field_weight"): (0, True),
    ("optim", "lr"): (0, False),
    ("optim", "poly_power"): (0, False),
    ("optim", "weight_decay"): (0, True),
    ("optim", "epochs"): (1, True),
    ("optim", "max_steps"): (0, True),
    ("train", "val_every"): (0, True),
    ("train", "val_pairs"): (0, True),
    ("train", "save_every"): (1, True),
    ("train", "log_every"): (1, True),
    **{("synth", key): (0, True) for key, value in SynthOptions().as_dict().items()
       if key != "axes"},
}  # fmt: skip


def _check_range(value: Any, section: str, key: str, where: str) -> Any:
    """``value`` if every number in it is finite and at least the key's minimum."""
    if section == "synth":
        _check_synth(value, key, where)
    if (section, key) not in RANGES:
        return value
    least, inclusive = RANGES[section, key]
    for number in value if isinstance(value, list) else [value]:
        finite = math.isfinite(float(number))
        if not finite or number < least or (number == least and not inclusive):
            bound = f">= {least:g}" if inclusive else f"> {least:g}"
            raise InputError(f"{where}: {section}.{key} = {value!r}: must be {bound}")
    if (section, key) == ("model", "ndim") and value not in (2, 3):
        raise InputError(f"{where}: model.ndim = {value!r}: must be 2 or 3")
    if (section, key) == ("loss", "windows") and any(int(w) % 2 == 0 for w in value):
        raise InputError(f"{where}: loss.windows = {value!r}: NCC windows must be odd")
    return value


SYNTH_FRACTIONS = (
    "same_map", "same_contrast", "tissues", "background_zero", "skull_strip", "thick_slices",
    "crop", "crop_fraction", "scaling",
)  # fmt: skip


def _check_synth(value: Any, key: str, where: str) -> None:
    """The generator's own constraints: fractions at most 1, ranges ordered, a 3-D grid, axis
    codes naming each anatomical direction once."""
    problem = None
    if key in SYNTH_FRACTIONS and value > 1:
        problem = "must be <= 1"
    elif key in ("mean", "sd") and (len(value) != 2 or value[0] > value[1]):
        problem = "must be [low, high] with low <= high"
    elif key == "shape" and (len(value) != 3 or min(value) < 8):
        problem = "must be 3 sizes of at least 8 voxels"
    elif key == "axes":
        letters = str(value).upper()
        groups = [next((g for g in ("LR", "AP", "SI") if c in g), None) for c in letters]
        if len(letters) != 3 or None in groups or len(set(groups)) != 3:
            problem = "must be 3 axis codes, one of L/R, A/P and S/I each (e.g. ASL)"
    if problem:
        raise InputError(f"{where}: synth.{key} = {value!r}: {problem}")


def _coerce(value: Any, section: str, key: str, where: str) -> Any:
    """``value`` in the type of the key's default (YAML reads ``2e-4`` as a string)."""
    default = DEFAULTS[section][key]
    try:
        if (section, key) in PER_AXIS and isinstance(value, list | tuple):
            return [int(v) for v in value]
        if isinstance(default, bool):
            if isinstance(value, bool):
                return value
        elif isinstance(default, float):
            if not isinstance(value, bool):
                return float(value)
        elif isinstance(default, int):
            if not isinstance(value, bool) and float(value) == int(float(value)):
                return int(float(value))
        elif isinstance(default, list):
            return list(value) if isinstance(value, list | tuple) else [value]
        elif isinstance(value, str):
            if (section, key) in CHOICES:
                look_up_option(f"{section}.{key}", value, CHOICES[section, key])
            return value
    except InputError as err:
        raise InputError(f"{where}: {err}") from None
    except (TypeError, ValueError):
        pass
    raise InputError(f"{where}: {section}.{key} = {value!r} is not a {type(default).__name__}")


def _merge(config: dict[str, dict[str, Any]], update: dict[str, Any], where: str) -> None:
    for section, values in update.items():
        if section not in DEFAULTS:
            raise InputError(f"{where}: unknown section {section!r} (have {', '.join(DEFAULTS)})")
        if not isinstance(values, dict):
            raise InputError(f"{where}: section {section!r} must be a mapping")
        for key, value in values.items():
            if key not in DEFAULTS[section]:
                raise InputError(f"{where}: unknown key {section}.{key}")
            config[section][key] = _check_range(
                _coerce(value, section, key, where), section, key, where
            )


def load_config(
    recipe: str | None = None,
    config_file: str | Path | None = None,
    overrides: list[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Resolve a config: defaults, then a recipe, then a user file, then overrides.

    Parameters
    ----------
    recipe : str, optional
        A shipped recipe name (:func:`recipe_names`).
    config_file : path, optional
        A user YAML file (may hold any subset of the keys).
    overrides : list of str, optional
        ``section.key=value`` strings.

    Returns
    -------
    dict
        The full config.
    """
    config = copy.deepcopy(DEFAULTS)
    if recipe is not None:
        names = recipe_names()
        if recipe not in names:
            raise OptionError("recipe", recipe, f"no such recipe (have {', '.join(names)})")
        text = (resources.files("eoir.training") / "recipes" / f"{recipe}.yaml").read_text()
        _merge(config, _read_yaml(text, f"recipe {recipe}"), f"recipe {recipe}")
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise InputError(f"{path}: config file not found")
        _merge(config, _read_yaml(path.read_text(), str(path)), str(path))
    for item in overrides or []:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot:
            raise OptionError("overrides", item, "write section.key=value (e.g. optim.lr=2e-4)")
        _merge(config, {section: {name: yaml.safe_load(value)}}, f"override {item}")
    _check_combination(config)
    return config


def _check_combination(config: dict[str, dict[str, Any]]) -> None:
    """Refuse settings that would silently do nothing: a one-contrast image term (NCC, MSE) on
    synthesised pairs applies only to pairs drawn with one contrast (``synth.same_contrast``);
    with none drawn, ``loss.sim_weight`` would be ignored."""
    loss = config["loss"]
    if (
        config["data"]["synth"]
        and loss["sim_weight"] > 0
        and loss["similarity"] not in MULTIMODAL
        and config["synth"]["same_contrast"] == 0
    ):
        raise InputError(
            f"loss.sim_weight = {loss['sim_weight']:g} with loss.similarity = "
            f"{loss['similarity']} on synthesised pairs: that image term compares one contrast "
            "and synth.same_contrast = 0 draws no pair of one contrast, so it would never apply; "
            "set synth.same_contrast > 0, a multimodal loss.similarity (mind, mi), or "
            "loss.sim_weight=0"
        )


def save_config(path: str | Path, config: dict[str, Any]) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(config, sort_keys=False))
