"""One brain model for any MRI: cross-contrast, same-contrast, skull-on and inter-subject checks.

Known-deformation cases (the error of the recovered field against the true one, mean over the
fixed image's brain voxels, mm):

- **cross-contrast**: ``multicontrast-tcga/skull-stripped`` (one patient's co-registered T1,
  T1c, T2, FLAIR, 1 mm): the fixed image is the T1 deformed by a known smooth field (sinusoids
  of 80-240 mm wavelength, mean 2.4 mm in the brain; one per case, seeded), the moving image
  another contrast, undeformed: the true displacement is the field itself;
- **same-contrast**: the same with the T1 as the moving image;
- **skull on**: head images synthesised (:mod:`eoir.synth`, contrasts drawn at random, skull
  kept, 1 mm) from the whole-head label maps the ``synth-brain`` recipe holds out
  (``synthseg-label-maps`` 19 and 20), the fixed one deformed by a known field, the moving one
  of another contrast; error over the brain structures.

Inter-subject: **OASIS-TRT-20** validation pairs (T1, 1 mm, aligned), Dice by one forward pass
(Learn2Reg convention, labels present in both); pairs drawn by the ``synth-brain`` generator from
the held-out label maps (random contrasts, skull on or off), Dice of the brain structures.

Each method registers every case with :func:`eoir.register` on the CPU (its defaults: no affine
stage, the pairs are aligned). ``--ants`` adds ANTs SyN with mutual information (antspyx,
``SyN``, ``aff_metric``/``syn_metric`` ``mattes``) run in the interpreter given.

Usage::

    python benchmarks/any_mri.py --models brain-mri runs/synth-brain/last.pt
    python benchmarks/any_mri.py --models brain-mri none --ants /tmp/benchvenv/bin/python
    python benchmarks/any_mri.py --models none --cases t2 --skip-oasis --synth-pairs 0
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

import eoir
from eoir.io import load_dataset, read_image
from eoir.registration import dice_before_after
from eoir.spatial import warp

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CONTRASTS = ("t2", "fla", "t1c")


def known_field(shape, brain: np.ndarray, seed: int, mean_mm: float = 2.4) -> torch.Tensor:
    """A smooth displacement ``(1, 3, *shape)`` (voxels = mm at 1 mm) whose mean length over
    ``brain`` is ``mean_mm``: per component, four sinusoids of random direction, 80-240 mm
    wavelength and phase."""
    rng = np.random.default_rng(seed)
    axes = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    field = np.zeros((3, *shape))
    for c in range(3):
        for _ in range(4):
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            wavelength = rng.uniform(80.0, 240.0)
            phase = rng.uniform(0, 2 * math.pi)
            arg = sum(direction[k] * axes[k] for k in range(3)) * (2 * math.pi / wavelength)
            field[c] += rng.uniform(0.5, 1.0) * np.sin(arg + phase)
    length = np.sqrt((field**2).sum(0))
    field *= mean_mm / length[brain].mean()
    return torch.from_numpy(field[None]).float()


def deform(array: np.ndarray, field: torch.Tensor, nearest: bool = False) -> np.ndarray:
    """``array`` pulled back through ``field``: ``out(p) = array(p + field(p))``."""
    x = torch.from_numpy(np.asarray(array, np.float64))[None, None]
    out = warp(x, field.double(), mode="nearest" if nearest else "bilinear")
    return out[0, 0].numpy()


def field_error(result, truth: torch.Tensor, mask: np.ndarray, spacing) -> float:
    """Mean length (mm) of the recovered minus the true displacement over ``mask``."""
    diff = (result.disp[0].double() - truth[0].double()).numpy()
    diff *= np.asarray(spacing, float)[:, None, None, None]
    return float(np.sqrt((diff**2).sum(0))[mask].mean())


def tcga_cases() -> list[dict]:
    """Cross-contrast and same-contrast cases with known fields."""
    folder = DATA / "multicontrast-tcga" / "skull-stripped"
    t1 = read_image(folder / "t1.nii.gz")
    brain = np.asarray(t1.array) > 0
    cases = []
    for seed, name in enumerate(("t1", *CONTRASTS)):
        truth = known_field(t1.shape, brain, seed)
        fixed = deform(t1.array, truth).astype(np.float32)
        mask = deform(brain.astype(np.float32), truth, nearest=True) > 0.5
        moving = read_image(folder / f"{name}.nii.gz")
        kind = "same-contrast" if name == "t1" else "cross-contrast"
        cases.append({
            "case": f"{kind} {name} -> t1", "kind": kind, "fixed": fixed, "moving": moving.array,
            "affine": t1.affine, "truth": truth, "mask": mask, "spacing": t1.spacing,
        })  # fmt: skip
    return cases


def skull_on_cases() -> list[dict]:
    """Whole-head images synthesised from the held-out label maps, at 1 mm, skull kept."""
    from eoir.synth import SynthOptions, brain_labels, synthesise_image

    cases = []
    for seed, name in enumerate(("training_seg_19", "training_seg_20")):
        label_map = read_image(DATA / "synthseg-label-maps" / f"{name}.nii.gz")
        labels = np.asarray(label_map.array).astype(np.int64)
        values = np.unique(labels)
        index = torch.from_numpy(np.searchsorted(values, labels))[None, None]
        extra = torch.zeros(len(values), dtype=torch.bool)  # nothing stripped: skull on
        options = SynthOptions(
            shape=list(labels.shape), rotation=0.0, scaling=0.0, shift_mm=0.0, velocity_sd=0.0,
            skull_strip=0.0, thick_slices=0.0, crop=0.0, background_zero=1.0,
        )  # fmt: skip
        images = []
        for draw in range(2):  # two contrasts of one head, on its grid
            generator = torch.Generator().manual_seed(1000 + 10 * seed + draw)
            image, _ = synthesise_image(generator, index, extra, options, out_mm=1.0)
            images.append(image[0, 0].numpy())
        brain = np.isin(labels, brain_labels(values.tolist()))
        truth = known_field(labels.shape, brain, 100 + seed)
        cases.append({
            "case": f"skull-on synthetic {name[-2:]}", "kind": "skull-on",
            "fixed": deform(images[0], truth).astype(np.float32), "moving": images[1],
            "affine": label_map.affine, "truth": truth,
            "mask": deform(brain.astype(np.float32), truth, nearest=True) > 0.5,
            "spacing": label_map.spacing,
        })  # fmt: skip
    return cases


def run_eoir(model: str, case: dict) -> tuple[float, float]:
    """Error (mm) and seconds of one registration with ``model`` (``none``: instance
    optimisation alone, MIND for different contrasts)."""
    options = {}
    if model == "none" and case["kind"] != "same-contrast":
        options = {"optimize_options": {"similarity": "mind"}}
    result = eoir.register(
        case["fixed"], case["moving"], fixed_affine=case["affine"], moving_affine=case["affine"],
        model=None if model == "none" else model, progress=False, device="cpu", **options,
    )  # fmt: skip
    return field_error(result, case["truth"], case["mask"], case["spacing"]), result.seconds


def run_ants(python: str, case: dict, folder: Path) -> tuple[float, float]:
    """ANTs SyN (mutual information): its warp field (with the affine part composed) against
    the truth, from the fixed voxels' world points through the composed transforms."""
    fixed_path, moving_path = folder / "fixed.nii.gz", folder / "moving.nii.gz"
    nib.save(nib.Nifti1Image(case["fixed"], case["affine"]), fixed_path)
    nib.save(nib.Nifti1Image(np.asarray(case["moving"], np.float32), case["affine"]), moving_path)
    script = r"""
import json, sys, time
import ants, numpy as np
fixed, moving, out = sys.argv[1:4]
start = time.perf_counter()
f, m = ants.image_read(fixed), ants.image_read(moving)
reg = ants.registration(f, m, "SyN", aff_metric="mattes", syn_metric="mattes")
seconds = time.perf_counter() - start
# the composed transform as one displacement field on the fixed grid (LPS mm)
comp = ants.apply_transforms(f, m, reg["fwdtransforms"], compose=out + "_comp")
np.save(out, ants.image_read(comp).numpy())
print(json.dumps({"seconds": seconds}))
"""
    out = folder / "ants_field.npy"
    done = subprocess.run(
        [python, "-c", script, str(fixed_path), str(moving_path), str(out)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    seconds = json.loads(done.stdout.strip().splitlines()[-1])["seconds"]
    lps = np.load(out)  # (X, Y, Z, 3) displacement, LPS mm
    ras = lps * np.array([-1.0, -1.0, 1.0])
    linear = np.asarray(case["affine"], float)[:3, :3]
    voxels = np.einsum("ij,xyzj->ixyz", np.linalg.inv(linear), ras)
    truth = case["truth"][0].double().numpy()
    diff = (voxels - truth) * np.asarray(case["spacing"], float)[:, None, None, None]
    return float(np.sqrt((diff**2).sum(0))[case["mask"]].mean()), seconds


def oasis_dice(model: str, pairs: int) -> tuple[float, float]:
    """Mean Dice and median seconds over the OASIS-TRT-20 validation pairs, one forward pass."""
    spec = load_dataset(DATA / "oasis-trt-20")
    dice, seconds = [], []
    for fixed, moving in spec.val[:pairs]:
        result = eoir.register(fixed.image, moving.image, model=model, progress=False,
                               device="cpu")  # fmt: skip
        dice.append(dice_before_after(result, fixed.label, moving.label)[1])
        seconds.append(result.seconds)
    return float(np.mean(dice)), statistics.median(seconds)


def synth_pairs_dice(model: str, pairs: int) -> tuple[float, float]:
    """Mean Dice of the brain structures over ``pairs`` synthetic pairs drawn as the
    ``synth-brain`` recipe validates (held-out label maps 19 and 20, its generator), before and
    after one forward pass of ``model`` at the recipe's resolution."""
    from eoir.metrics import mean_dice
    from eoir.nn.checkpoint import load_model
    from eoir.synth import SynthOptions
    from eoir.training.config import load_config
    from eoir.training.data import SynthPairDataset

    config = load_config("synth-brain")
    spec = load_dataset(DATA / "synthseg-label-maps", label_maps=True)
    subjects = [s for pair in spec.val for s in pair]
    order = [(2 * i, 2 * i + 1) for i in range(len(spec.val))]
    data = SynthPairDataset(subjects, order * (pairs // len(order) + 1), spec.labels,
                            SynthOptions.from_dict(config["synth"]), 2, seed=1)  # fmt: skip
    net = load_model(model)
    before, after = [], []
    for index in range(pairs):
        item = data[index]
        with torch.no_grad():
            disp = net(item["moving"][None], item["fixed"][None])
        warped = warp(item["moving_labels"][None].double(), disp.double(), mode="nearest")
        before.append(mean_dice(item["fixed_labels"], item["moving_labels"], item["moving_labels"]))
        after.append(mean_dice(item["fixed_labels"], warped, item["moving_labels"]))
    return float(np.mean(before)), float(np.mean(after))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["brain-mri"],
                        help="shipped model names, checkpoints, or none")  # fmt: skip
    parser.add_argument("--ants", help="a Python with antspyx: adds ANTs SyN (MI) rows")
    parser.add_argument("--oasis-pairs", type=int, default=6)
    parser.add_argument("--skip-oasis", action="store_true")
    parser.add_argument("--cases", nargs="+", help="only the cases whose name holds one of these")
    parser.add_argument("--synth-pairs", type=int, default=8,
                        help="synthetic pairs from held-out label maps (0: none)")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    cases = tcga_cases() + skull_on_cases()
    if args.cases:
        cases = [c for c in cases if any(part in c["case"] for part in args.cases)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    print("| case | no registration | " + " | ".join(args.models)
          + (" | ANTs SyN (MI)" if args.ants else "") + " |")  # fmt: skip
    print("|---" * (2 + len(args.models) + bool(args.ants)) + "|")
    table: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            before = float(torch.sqrt((case["truth"][0] ** 2).sum(0)).numpy()[case["mask"]].mean())
            cells = [f"{before:.2f}"]
            for model in args.models:
                error, seconds = run_eoir(model, case)
                table.setdefault(model, {}).setdefault(case["kind"], []).append(error)
                cells.append(f"{error:.2f} mm ({seconds:.1f} s)")
            if args.ants:
                error, seconds = run_ants(args.ants, case, Path(tmp))
                table.setdefault("ants", {}).setdefault(case["kind"], []).append(error)
                cells.append(f"{error:.2f} mm ({seconds:.0f} s)")
            print(f"| {case['case']} | " + " | ".join(cells) + " |", flush=True)
    for method, kinds in table.items():
        means = ", ".join(f"{k} {np.mean(v):.2f} mm" for k, v in kinds.items())
        print(f"mean error, {method}: {means}")
    for model in args.models:
        if model != "none" and args.synth_pairs:
            before, after = synth_pairs_dice(model, args.synth_pairs)
            print(f"synthetic pairs of held-out heads (synth-brain's validation draw), {model}: "
                  f"Dice {before:.3f} -> {after:.3f} over {args.synth_pairs} pairs")  # fmt: skip
    if not args.skip_oasis:
        for model in args.models:
            if model == "none":
                continue
            started = time.perf_counter()
            dice, seconds = oasis_dice(model, args.oasis_pairs)
            took = time.perf_counter() - started
            print(
                f"OASIS-TRT-20 validation, {model}: Dice {dice:.3f} over {args.oasis_pairs} "
                f"pairs, median {seconds:.1f} s per pair ({took:.0f} s)"
            )


if __name__ == "__main__":
    sys.exit(main())
