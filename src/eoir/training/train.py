"""Training: the multi-level loss on dataset pairs, checkpoints, resume, logs, several processes.

One process, or several under ``torchrun`` (DistributedDataParallel: gloo on CPU, nccl on
CUDA), each taking its share of every epoch's pairs; rank 0 validates and writes the run folder:

- ``config.yaml``: the resolved config;
- ``last.pt`` (every ``train.save_every`` steps and at the end) and ``best.pt`` (best validation
  score), written atomically: a checkpoint holds the weights, the model config, the run config,
  the optimizer and scheduler states, ``step`` (optimizer steps done) and the RNG states, so
  ``--resume`` continues exactly where a killed run stopped;
- ``metrics.csv`` and, when the ``tensorboard`` package is installed, TensorBoard scalars in
  ``tensorboard/``.
"""

from __future__ import annotations

import csv
import math
import random
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from eoir.errors import InputError, reason
from eoir.io import image_frame, load_dataset
from eoir.losses import MULTIMODAL, multilevel_loss, ncc_loss, one_hot
from eoir.metrics import mean_dice
from eoir.nn.checkpoint import build_model, load_model, read_checkpoint, save_model
from eoir.options import positive
from eoir.progress import Progress
from eoir.runtime import (
    bf16_native,
    distributed,
    finish_distributed,
    rank_device,
    resolve_device,
)
from eoir.spatial import warp
from eoir.synth import SynthOptions, brain_labels
from eoir.training.config import save_config
from eoir.training.data import PairDataset, StepPairs, SynthPairDataset

__all__ = [
    "RUN_FILES",
    "train",
    "training_step",
    "validation_score",
]

RUN_FILES = ("config.yaml", "last.pt", "best.pt", "metrics.csv", "tensorboard")
# wait: the fraction of the time since the previous row spent waiting for the data loader
CSV_FIELDS = [
    "step", "epoch", "loss", "similarity", "smoothness", "dice", "field", "lr", "val", "seconds",
    "wait",
]  # fmt: skip


def _rng_state() -> dict[str, Any]:
    kind, keys, position, has_gauss, gauss = np.random.get_state()  # noqa: NPY002
    state = {
        "torch": torch.get_rng_state(),
        # plain lists: weights_only loading refuses numpy arrays
        "numpy": [kind, keys.tolist(), int(position), int(has_gauss), float(gauss)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, position, has_gauss, gauss = state["numpy"]
    keys = np.array(keys, dtype=np.uint32)
    np.random.set_state((kind, keys, position, has_gauss, gauss))  # noqa: NPY002
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _prepare_run_dir(out: Path, resume: bool, overwrite: bool) -> None:
    existing = [name for name in RUN_FILES if (out / name).exists()]
    if resume:
        if not (out / "last.pt").is_file():
            raise InputError(f"{out}: nothing to resume (no last.pt)")
        return
    if existing and not overwrite:
        raise InputError(
            f"{out}: holds another run ({', '.join(existing)})", switches=("resume", "overwrite")
        )
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")


class _Log:
    """The progress line (:class:`eoir.progress.Progress`), the CSV, TensorBoard when installed."""

    def __init__(
        self,
        out: Path,
        total: int,
        start: int,
        enabled: bool,
        echo: Callable[[str], None],
        show: bool = True,
    ):
        self.enabled = enabled
        self.progress = Progress(
            total, "step", enabled=enabled and show, stream=sys.stdout, every=0, start=start,
            echo=None if sys.stdout.isatty() else echo,
        )  # fmt: skip
        self.writer = None
        if not enabled:
            return
        new = not (out / "metrics.csv").exists()
        fields = CSV_FIELDS
        if not new:  # a resumed run keeps its file's columns (an older eoir wrote fewer)
            with open(out / "metrics.csv", newline="") as existing:
                fields = next(csv.reader(existing), None) or CSV_FIELDS
        self.csv_file = open(out / "metrics.csv", "a", newline="")
        self.csv = csv.DictWriter(self.csv_file, fieldnames=fields, extrasaction="ignore")
        if new:
            self.csv.writeheader()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tensorboard"), purge_step=start + 1)
        except ImportError:
            echo("tensorboard is not installed: metrics go to metrics.csv only")

    def row(self, values: dict[str, Any], show: bool) -> None:
        if not self.enabled:
            return
        self.csv.writerow({k: values.get(k, "") for k in CSV_FIELDS})
        self.csv_file.flush()
        if self.writer is not None:
            for key in ("loss", "similarity", "smoothness", "dice", "field", "lr", "val"):
                if values.get(key, "") != "":
                    self.writer.add_scalar(
                        f"train/{key}" if key != "val" else "val/score",
                        float(values[key]),
                        values["step"],
                    )
        if show:
            note = f"loss {values['loss']:.4f} lr {values['lr']:.2e}"
            if values.get("val", "") != "":
                note += f" val {values['val']:.4f}"
            self.progress.update(values["step"], note)

    def close(self) -> None:
        self.progress.close()
        if self.enabled:
            self.csv_file.close()
            if self.writer is not None:
                self.writer.close()


def training_step(
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    moving: torch.Tensor,
    fixed: torch.Tensor,
    loss_config: dict[str, Any],
    amp: bool,
    true_field: torch.Tensor | None = None,
    known: torch.Tensor | None = None,
    image_weights: torch.Tensor | None = None,
    **labels: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One optimizer step of ``eoir train`` on a pair.

    Parameters
    ----------
    net : torch.nn.Module
        A training-mode EOIR or VoxelMorph (or its DistributedDataParallel wrapper).
    optimizer : torch.optim.Optimizer
        Steps once (the caller steps any scheduler).
    moving, fixed : torch.Tensor
        ``(B, 1, *spatial)`` normalised images.
    loss_config : dict
        The config's ``loss`` section (:mod:`eoir.training.config`).
    amp : bool
        bf16 autocast for the forward pass (the fields and the loss stay float32).
    true_field, known : torch.Tensor, optional
        ``(B, ndim, *spatial)`` true displacements and ``(B,)`` flags of the pairs they are
        real for, for the field term (``loss.field_weight``).
    image_weights : torch.Tensor, optional
        ``(B,)`` weight of each pair's image term (synthetic pairs: 1 where both images share a
        contrast, 0 where not, under a one-contrast similarity).
    **labels : torch.Tensor
        ``moving_labels`` and ``fixed_labels`` one-hot ``(B, L, *spatial)`` for the Dice term.

    Returns
    -------
    tuple
        The loss and its terms (:func:`eoir.losses.multilevel_loss`).
    """
    with torch.autocast(moving.device.type, dtype=torch.bfloat16, enabled=amp):
        output = net(moving, fixed, levels=True)
    loss, terms = multilevel_loss(
        [f.float() for f in output.fields],
        [r.float() for r in output.residuals],
        moving,
        fixed,
        similarity=loss_config["similarity"],
        windows=loss_config["windows"],
        sim_weight=float(loss_config["sim_weight"]),
        reg_weight=float(loss_config["reg_weight"]),
        dice_weight=float(loss_config["dice_weight"]),
        penalty=loss_config["penalty"],
        field_weight=float(loss_config.get("field_weight", 0.0)),
        true_field=true_field,
        known=known,
        image_weights=image_weights,
        **labels,
    )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss, terms


def validation_score(model: torch.nn.Module, data: PairDataset, device: torch.device) -> float:
    """Mean validation score: Dice (Learn2Reg labels) when label maps exist, else NCC.

    The model's weights are left exactly as they were, memory layout included: EOIR's eval
    passes use the layout training put them in (:meth:`eoir.nn.EOIR.set_layout`), so the
    following steps round as a resumed run's do.
    """
    scores = []
    model.eval()
    try:
        with torch.no_grad():
            for index in range(len(data)):
                item = data[index]
                fixed, moving = item["fixed"][None].to(device), item["moving"][None].to(device)
                disp = model(moving, fixed)
                if "moving_labels" in item:
                    warped = warp(
                        item["moving_labels"][None].double(), disp.double().cpu(), mode="nearest"
                    )
                    scores.append(mean_dice(item["fixed_labels"], warped, item["moving_labels"]))
                else:
                    scores.append(1.0 - float(ncc_loss(warp(moving, disp), fixed)))
    finally:
        model.train()
    return float(np.nanmean(scores)) if scores else float("nan")


def train(
    dataset: str | Path,
    out: str | Path,
    config: dict[str, dict[str, Any]],
    *,
    resume: bool = False,
    overwrite: bool = False,
    device: str = "auto",
    max_steps: int | None = None,
    echo: Callable[[str], None] = print,
    progress: bool = True,
) -> dict[str, Any]:
    """Train an EOIR model on a dataset.

    Parameters
    ----------
    dataset : path
        A Learn2Reg ``dataset.json`` or a folder (:func:`eoir.io.load_dataset`).
    out : path
        The run folder (created; refused if it holds another run, unless ``resume`` or
        ``overwrite``).
    config : dict
        A resolved config (:func:`eoir.training.config.load_config`). On resume the run's own
        config is used and only ``max_steps`` may change.
    resume : bool
        Continue from ``out/last.pt``.
    overwrite : bool
        Replace a previous run in ``out``.
    device : str
        ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"`` (under torchrun each rank uses
        ``cuda:LOCAL_RANK``).
    max_steps : int, optional
        Stop after this many optimizer steps in all (overrides ``optim.max_steps``).
    echo : callable
        Where log lines go.
    progress : bool
        Show the step count, loss and ETA (a rewritten line on a terminal, else a line every
        ``train.log_every`` steps).

    Returns
    -------
    dict
        ``step``, ``best`` (best validation score, None without validation pairs),
        ``seconds``.
    """
    out = Path(out)
    positive("max_steps", max_steps)
    dev = resolve_device(device)
    rank, world = distributed(dev)
    dev = rank_device(dev, world)  # cuda:LOCAL_RANK under torchrun
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed training shapes: pick the fastest convs
    _prepare_run_dir(out, resume, overwrite)
    if world > 1:
        dist.barrier()  # every rank has checked the folder before rank 0 writes to it
    state = read_checkpoint(out / "last.pt") if resume else None
    if state is not None:
        config = state["run_config"]
    if max_steps is not None:
        config["optim"]["max_steps"] = int(max_steps)
    mc, dc, tc = (config[k] for k in ("model", "data", "train"))
    synth = bool(dc["synth"])
    spec = load_dataset(dataset, label_maps=synth)
    if not spec.training:
        raise InputError(f"{spec.source}: no training {'label maps' if synth else 'images'}")
    if not synth and float(config["loss"]["field_weight"]) > 0:
        raise InputError(
            "loss.field_weight: a true field exists only for images synthesised from label maps "
            "(data.synth: true)"
        )
    if synth and float(config["loss"]["dice_weight"]) <= 0:
        raise InputError(
            "data.synth: images synthesised from label maps train on Dice: set loss.dice_weight > 0"
        )
    if bool(tc["checkpointing"]) and mc["architecture"] != "eoir":
        raise InputError(f"train.checkpointing: not available for {mc['architecture']} models")
    torch.manual_seed(int(tc["seed"]))
    np.random.seed(int(tc["seed"]))  # noqa: NPY002
    random.seed(int(tc["seed"]))
    model = build_model(mc, strict=False).to(dev)
    if tc["init"] and state is None:
        _initialise(model, str(tc["init"]))
    if synth:
        spec.shape = tuple(int(n) for n in config["synth"]["shape"])  # the generator's grid
    _check_input_size(spec, 1 if synth else int(dc["downsample"]), model)
    pairs = StepPairs(
        len(spec.training), dc["pairing"], int(tc["seed"]), rank, world, int(dc["atlas"])
    )
    started = state is not None or (out / "last.pt").exists()
    if rank == 0:
        if overwrite and not resume:
            for name in RUN_FILES:
                target = out / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
        out.mkdir(parents=True, exist_ok=True)
        save_config(out / "config.yaml", config)
    try:
        return _run(out, config, spec, model, pairs, state, dev, rank, world, echo, progress)
    except BaseException:
        if rank == 0 and not started and not (out / "last.pt").exists():
            _discard(out)  # a start that failed leaves nothing to refuse a retry with
        raise


def _initialise(model: torch.nn.Module, source: str) -> None:
    """Copy the weights of a checkpoint or shipped model (``train.init``) into ``model``."""
    start = load_model(source)
    if type(start) is not type(model):
        raise InputError(
            f"train.init {source}: a {type(start).__name__}, not a {type(model).__name__}"
        )
    keys = ("architecture", "ndim", "width", "levels", "ks", "large_kernel", "lk_size")
    have = {k: model.config.get(k) for k in keys if k in model.config}
    given = {k: start.config.get(k) for k in have}
    if have != given:
        differ = ", ".join(f"{k} {given[k]} (model {have[k]})" for k in have if have[k] != given[k])
        raise InputError(f"train.init {source}: another network ({differ})")
    model.load_state_dict(start.state_dict())


def _discard(out: Path) -> None:
    """Remove what a run that never reached its first checkpoint wrote into ``out``."""
    for name in RUN_FILES:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)


def _check_input_size(spec, downsample: int, model: torch.nn.Module) -> None:
    """Refuse images that the model's levels would shrink below 2 voxels along an axis."""
    if not spec.shape:
        return
    work = [max(8, -(-n // downsample)) if downsample > 1 else n for n in spec.shape]
    multiple = getattr(model, "size_multiple", None) or (1,) * len(work)
    if len(multiple) != len(work):
        raise InputError(
            f"{spec.source}: images of {len(work)} axes for a {len(multiple)}-D model "
            "(set model.ndim)"
        )
    if any(n < 2 * m for n, m in zip(work, multiple, strict=True)):
        raise InputError(
            f"{spec.source}: images of {'x'.join(map(str, spec.shape))} voxels, "
            f"{'x'.join(map(str, work))} at data.downsample {downsample}, are too small for the "
            f"model's levels (at least {'x'.join(str(2 * m) for m in multiple)}): use fewer "
            "model.levels or a smaller data.downsample"
        )


def _worker_error(err: Exception) -> InputError | None:
    """The :class:`InputError` a DataLoader worker raised, from torch's wrapped copy of it."""
    if isinstance(err, InputError) and "DataLoader worker" in str(err):
        for line in reversed(str(err).splitlines()):
            if line.startswith("eoir.errors.InputError: "):
                return InputError(line[len("eoir.errors.InputError: ") :])
    return None


def _worker_signals(worker: int) -> None:
    """A DataLoader worker's start: SIGTERM ends it quietly, as Ctrl-C does.

    A scheduler (SLURM, a job's ``kill``) sends SIGTERM to the whole process group. The
    training process turns it into one line and exit code 143 (the checkpoint last written
    stays the one to ``--resume`` from); a worker killed by the signal itself would make torch
    report a failed worker (a traceback) on the way out. The worker loop ends cleanly on
    ``KeyboardInterrupt``, so SIGTERM raises that in the worker.
    """
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def _worker_died(err: RuntimeError, out: Path) -> InputError | None:
    """One line for a DataLoader worker that died under the training process (killed alone,
    or by the kernel when memory runs out), from torch's RuntimeError; None for any other."""
    text = str(err)
    if "DataLoader worker" not in text or not ("killed by signal" in text or "exited" in text):
        return None
    last = out / "last.pt"
    try:
        kept = f"{last} keeps step {read_checkpoint(last)['step']}: --resume continues"
    except Exception:  # none written yet (or unreadable): no step to name
        kept = f"no checkpoint to resume from in {out}" if not last.is_file() else f"see {last}"
    return InputError(
        f"{reason(err).rstrip('. ')} (out of memory? fewer data.workers, or "
        f"data.cache=false); {kept}"
    )


def _run(
    out, config, spec, model, pairs, state, dev, rank, world, echo, progress
) -> dict[str, Any]:
    """The training loop of :func:`train` once the run is checked and its folder written."""
    dc, lc, oc, tc = (config[k] for k in ("data", "loss", "optim", "train"))
    model.activation_checkpointing = bool(tc["checkpointing"])
    if hasattr(model, "set_layout"):
        model.set_layout(dev)  # channels-last on a CPU, before the optimiser and any wrapper
    optimizer = torch.optim.Adam(
        model.parameters(), lr=float(oc["lr"]), amsgrad=True, weight_decay=float(oc["weight_decay"])
    )
    total = int(oc["max_steps"]) or int(oc["epochs"]) * pairs.steps_per_epoch
    power = float(oc["poly_power"])
    schedule = (
        (lambda s: (1.0 - min(s, total - 1) / total) ** power)
        if oc["schedule"] == "poly"
        else (lambda s: 1.0)
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    start, best = 0, -math.inf
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, best = int(state["step"]), float(state.get("best", -math.inf))
        _set_rng_state(state["rng"])
        echo(f"resuming {out} at step {start} of {total}")
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    if start >= total:
        finish_distributed()
        return {"step": start, "best": best if math.isfinite(best) else None, "seconds": 0.0}

    # the frame the network is trained in, recorded so that registration feeds it the same
    axes, spacing = image_frame(spec.training[0].image)
    synth = bool(dc["synth"])
    on_device = synth and bool(dc["synth_on_device"])
    dice_labels: list[int] = list(spec.labels)
    if synth:
        options = SynthOptions.from_dict(config["synth"])
        dice_labels = brain_labels(spec.labels)
        synth_data = SynthPairDataset(
            spec.training, pairs, spec.labels, options, int(dc["downsample"]),
            int(tc["seed"]), bool(dc["cache"]), float(lc["field_weight"]) > 0,
            dev if on_device else "cpu",
        )  # fmt: skip
        # images are drawn in the options' axes at downsample x the maps' finest spacing
        axes, spacing = options.axes, synth_data.spacing
        train_data: torch.utils.data.Dataset = synth_data
    else:
        train_data = PairDataset(
            spec.training, pairs, dc["preset"], int(dc["downsample"]), bool(dc["cache"])
        )
    workers = 0 if on_device else int(dc["workers"])
    if synth and workers > 1 and bool(dc["cache"]):
        if rank == 0:
            echo(f"aligning {len(spec.training)} label maps once for {workers} workers")
        synth_data.preload()
    loader = torch.utils.data.DataLoader(
        train_data,
        batch_size=1,
        sampler=range(start, total),
        num_workers=workers,
        persistent_workers=False,
        prefetch_factor=2 if workers > 0 else None,
        worker_init_fn=_worker_signals if workers > 0 else None,
    )
    val_list = spec.val[: int(tc["val_pairs"])] if int(tc["val_pairs"]) else spec.val
    subjects = [s for pair in val_list for s in pair]
    val_pairs = [(2 * i, 2 * i + 1) for i in range(len(val_list))]
    if synth:  # the same synthetic pairs at every validation (a seed of their own)
        val_data: torch.utils.data.Dataset = SynthPairDataset(
            subjects, val_pairs, spec.labels, options, int(dc["downsample"]),
            int(tc["seed"]) + 1,
        )  # fmt: skip
    else:
        val_data = PairDataset(subjects, val_pairs, dc["preset"], int(dc["downsample"]))
    val_every = int(tc["val_every"]) or pairs.steps_per_epoch
    use_dice = float(lc["dice_weight"]) > 0
    amp = bool(tc["amp"]) and bf16_native(dev)  # emulated bf16 would be far slower
    log = _Log(out, total, start, rank == 0, echo, progress)
    began = time.perf_counter()
    step = start
    batches = iter(loader)
    waited, since = 0.0, began  # seconds spent waiting for data since the last logged row
    try:
        for step_index in range(start, total):
            asked = time.perf_counter()
            batch = next(batches, None)
            if batch is None:
                break
            waited += time.perf_counter() - asked
            fixed = batch["fixed"].to(dev, non_blocking=True)
            moving = batch["moving"].to(dev, non_blocking=True)
            labels = {}
            if use_dice and "moving_labels" in batch:
                labels = {
                    "moving_labels": one_hot(batch["moving_labels"].to(dev), dice_labels),
                    "fixed_labels": one_hot(batch["fixed_labels"].to(dev), dice_labels),
                }
            if "field" in batch:
                labels["true_field"] = batch["field"].to(dev, non_blocking=True)
                labels["known"] = batch["known"].to(dev)
            if "one_contrast" in batch and lc["similarity"] not in MULTIMODAL:
                labels["image_weights"] = batch["one_contrast"]  # NCC/MSE: one-contrast pairs
            loss, terms = training_step(net, optimizer, moving, fixed, lc, amp, **labels)
            if not torch.isfinite(loss):
                raise InputError(
                    f"step {step_index + 1}: the loss is {loss.item()}: training stopped, "
                    f"{out / 'last.pt'} and best.pt keep the last good state (check the images; "
                    "a lower optim.lr)"
                )
            scheduler.step()
            step = step_index + 1
            row: dict[str, Any] = {}
            validate = step % val_every == 0 or step == total
            if step % int(tc["log_every"]) == 0 or validate or step == start + 1:
                row = {
                    "step": step,
                    "epoch": step_index // pairs.steps_per_epoch,
                    "loss": float(loss.detach()),
                    **{k: float(v) for k, v in terms.items()},
                    "lr": optimizer.param_groups[0]["lr"],
                    "seconds": round(time.perf_counter() - began, 3),
                }
                now = time.perf_counter()
                row["wait"] = round(waited / max(now - since, 1e-9), 4)
                waited, since = 0.0, now
            if validate and rank == 0 and len(val_data):
                row["val"] = validation_score(model, val_data, dev)
                if row["val"] > best:
                    best = row["val"]
                    save_model(
                        out / "best.pt",
                        model,
                        **_extra(optimizer, scheduler, step, best, config, (axes, spacing)),
                    )
            if row:
                log.row(row, show=True)
            if rank == 0 and (step % int(tc["save_every"]) == 0 or step == total):
                save_model(
                    out / "last.pt",
                    model,
                    **_extra(optimizer, scheduler, step, best, config, (axes, spacing)),
                )
            if world > 1 and validate:
                dist.barrier()
    except InputError as err:
        raise (_worker_error(err) or err) from None
    except RuntimeError as err:
        died = _worker_died(err, out)
        if died is None:
            raise
        raise died from None
    finally:
        log.close()
    finish_distributed()
    best_or_none = best if math.isfinite(best) else None
    return {"step": step, "best": best_or_none, "seconds": time.perf_counter() - began}


def _extra(
    optimizer, scheduler, step: int, best: float, config: dict[str, Any], frame=(None, None)
) -> dict[str, Any]:
    return {
        "input_axes": frame[0],
        "input_spacing_mm": frame[1],
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": step,
        "best": best,
        "rng": _rng_state(),
        "run_config": config,
    }
