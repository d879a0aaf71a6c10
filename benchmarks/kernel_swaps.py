"""The swaps of 2026-11-30, each against the computation it replaced, on one CPU run.

- ``total_field`` (the affine folded into the field on a 256x256x160 grid): float32 sums
  ``(M - I) p + M disp + t`` against float64 positions less the grid; seconds and the largest
  difference (voxels);
- the synthetic deformation's scaling and squaring on a grid twice as coarse (``_smooth_exp``)
  against the full grid at half resolution (104x96x80, velocity SD 1.5 voxels drawn 16 voxels
  apart): seconds and the inverse consistency of the flow and its inverse built the same way
  (mean and max over the grid less 6 voxels at each face);
- label maps read by a gather (``_nearest``) against a float copy and nearest grid_sample: a
  256^3 uint8 map at 104x96x80 positions; seconds and the share of equal labels;
- the MRI preset's robust percentiles of an int16 256x256x160 volume stored in Fortran order (as
  nibabel reads NIfTI) counted in a histogram (``percentiles``) against ``numpy.percentile`` of a
  float32 copy: seconds and the values;
- the folding statistics of a register command's summary line in float32 against float64 on a
  smooth 256x256x160 field with some folding: seconds, folded voxels, SDlogJ;
- the affine stage's image pyramid of a Fortran-ordered float32 256x256x160 volume (1 mm): a
  C-ordered copy first against averaging the transposed view (``_pyramid``): seconds and the
  largest difference;
- the Dice term's label maps at 104x96x80 (the synth-brain recipe's 41 brain labels): the
  one-hot encoding written as float32 against torch's int64 one-hot and a float copy; the
  training loss's Gaussian pyramid (:func:`eoir.losses.filters.pyramid`) of the one-hot maps
  (channels-last as the training loop makes them, and contiguous) and of an image: a grouped
  convolution per axis then ``F.interpolate`` against one matrix product per axis (blur and
  resampling folded): seconds and the largest difference; the Dice loss and its gradient at
  that size, elementwise overlaps against one matrix product per pair; the finest level's Dice
  term of one-hot maps, the 41-channel warp then ``dice_loss`` against the interpolation
  weights binned by class (``warped_dice_loss``): seconds, loss, gradients;
- (``--only reading``, the second session of that day) a raw native scan and its label map
  (``oasis-trt-20-native`` subject 13, 256x256x160 ``.nii.gz``) read by nibabel (zlib) against
  ``eoir.io.read_image`` (ISA-L's decompression); the moving image and labels, Fortran-ordered
  as read, warped onto the fixed grid (a smooth field in C order: a C-ordered copy first, sampled
  in their own layout, reordered within the float conversion; the field in NIfTI's order, as
  ``total_field`` keeps it: sampled in the reversed frame); the field's world vectors, the
  warped image's write and the folding statistics from a field in C order and in NIfTI's order;
  the moving image onto a 2 mm working grid: a C-ordered copy first against its own layout:
  seconds and equality; a field's warp (:func:`eoir.spatial.warp`,
  no autograd) with grid_sample's grid made by a reordering copy and a multiply-add onto a
  cached identity grid (as training makes it) against one planar pass: 256x256x160 and the
  network's working grid, seconds and equality.

Medians of 5 runs after a warm-up.

Usage::

    python benchmarks/kernel_swaps.py
    python benchmarks/kernel_swaps.py --only loss_pyramid
    python benchmarks/kernel_swaps.py --only reading
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from eoir.image import Image
from eoir.io import read_image, write_image
from eoir.io.fields import _nifti_vectors
from eoir.losses import dice_loss, one_hot, warped_dice_loss
from eoir.losses.filters import gaussian_blur, pyramid
from eoir.metrics import jacobian_stats
from eoir.registration.affine import _pyramid
from eoir.registration.preprocess import percentiles
from eoir.registration.resample import moving_positions, to_fixed_grid, total_field, warp_image
from eoir.spatial import (
    compose,
    identity_grid,
    integrate,
    lps_affine,
    sample,
    store_reversed,
    warp,
)
from eoir.synth.generator import _nearest, _smooth_exp, random_velocity


def _time(fn, runs: int = 5) -> float:
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _float64_total_field(fixed: Image, disp: torch.Tensor, world: np.ndarray) -> torch.Tensor:
    positions = moving_positions(fixed, fixed.affine, disp, world, dtype=torch.float64)
    return (positions - identity_grid(fixed.shape, disp.device, torch.float64)).float()


def _convolved_pyramid(x: torch.Tensor, shapes) -> list[torch.Tensor]:
    """The loss pyramid as it was before 2026-11-30's third session: a grouped convolution per
    axis that shrinks, then ``F.interpolate``."""
    levels = [x]
    for shape in shapes[1:]:
        prev = levels[-1]
        axes = [k for k, (a, b) in enumerate(zip(prev.shape[2:], shape, strict=True)) if b < a]
        blurred = gaussian_blur(prev, axes=axes)
        levels.append(
            torch.nn.functional.interpolate(
                blurred, size=tuple(shape), mode="trilinear", align_corners=True
            )
        )
    return levels


def _int64_one_hot(labels: torch.Tensor, k: int) -> torch.Tensor:
    """``one_hot`` as it was before 2026-11-30's third session: torch's int64 one-hot of every
    voxel, then a float32 copy (channels-last, as now)."""
    return torch.nn.functional.one_hot(labels[:, 0], k).movedim(-1, 1).float()


def _elementwise_dice(warped: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
    """``dice_loss`` as it was before 2026-11-30's third session (elementwise overlaps)."""
    dims = tuple(range(2, warped.dim()))
    inter = (warped * fixed).sum(dims)
    return 1.0 - (2.0 * inter / (warped.sum(dims) + fixed.sum(dims) + 1e-5)).mean()


def loss_pyramid() -> None:
    shapes = [(104, 96, 80), (52, 48, 40), (26, 24, 20), (13, 12, 10)]
    generator = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 41, (1, 1, *shapes[0]), generator=generator)
    old = _time(lambda: _int64_one_hot(labels, 41))
    new = _time(lambda: one_hot(labels, 41))
    same = torch.equal(_int64_one_hot(labels, 41), one_hot(labels, 41))
    print(f"one-hot of 41 labels at 104x96x80: int64 then float {old:.3f} s, written as float "
          f"{new:.3f} s, equal {same}")  # fmt: skip
    encoded = one_hot(labels, 41)  # channels-last, as the training loop makes it
    image = torch.rand(1, 1, *shapes[0], generator=generator)
    cases = (("41-channel one-hot labels (channels-last)", encoded),
             ("41-channel one-hot labels (contiguous)", encoded.contiguous()),
             ("an image", image))  # fmt: skip
    for name, x in cases:
        old = _time(lambda x=x: _convolved_pyramid(x, shapes))
        new = _time(lambda x=x: pyramid(x, shapes))
        difference = max(
            float((a - b).abs().max())
            for a, b in zip(_convolved_pyramid(x, shapes), pyramid(x, shapes), strict=True)
        )
        print(f"loss pyramid of {name} at 104x96x80: convolutions {old:.3f} s, matrices "
              f"{new:.3f} s, largest difference {difference:.1e}")  # fmt: skip

    warped = torch.rand(1, 41, *shapes[0], generator=generator)  # as grid_sample returns it

    def dice(loss) -> tuple[float, torch.Tensor]:
        soft = warped.clone().requires_grad_(True)
        value = loss(soft, encoded)
        value.backward()
        return float(value.detach()), soft.grad

    old, new = _time(lambda: dice(_elementwise_dice)), _time(lambda: dice(dice_loss))
    (a, grad_a), (b, grad_b) = dice(_elementwise_dice), dice(dice_loss)
    print(f"Dice loss and gradient, 41 labels at 104x96x80 (warped contiguous, one-hot "
          f"channels-last): elementwise {old:.3f} s, matrix product {new:.3f} s, loss "
          f"{a:.7f} / {b:.7f}, gradients {float((grad_a - grad_b).abs().max()):.1e} "
          f"apart")  # fmt: skip

    moving = one_hot(torch.randint(0, 41, (1, 1, *shapes[0]), generator=generator), 41)
    field = torch.randn(1, 3, *shapes[0], generator=generator) * 2.0

    def finest(through_warp: bool) -> tuple[float, torch.Tensor]:
        disp = field.clone().requires_grad_(True)
        if through_warp:
            value = dice_loss(warp(moving, disp), encoded)
        else:
            value = warped_dice_loss(moving, encoded, disp)
        value.backward()
        return float(value.detach()), disp.grad

    old, new = _time(lambda: finest(True), 3), _time(lambda: finest(False), 3)
    (a, grad_a), (b, grad_b) = finest(True), finest(False)
    near = torch.isclose(grad_a, grad_b, rtol=1e-3, atol=1e-12).float().mean()
    print(f"the finest level's Dice term and its gradient, 41 labels at 104x96x80: warp of the "
          f"41 channels then dice_loss {old:.3f} s, weights binned by class (warped_dice_loss) "
          f"{new:.3f} s, loss {a:.7f} / {b:.7f}, gradients within 0.1 % at "
          f"{100 * float(near):.4f} % of the voxels")  # fmt: skip


NATIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "oasis-trt-20-native"


def reading() -> None:
    """A raw scan's reading and warps: nibabel against eoir, copies against own layouts."""
    name = "OASISTRT_{:04d}_0000.nii.gz"
    if not NATIVE.is_dir():
        print(f"reading: skipped ({NATIVE} not found)")
        return
    for kind in ("imagesTr", "labelsTr"):
        path = NATIVE / kind / name.format(13)
        old = _time(lambda path=path: np.asanyarray(nib.load(str(path)).dataobj))
        new = _time(lambda path=path: read_image(path).array)
        same = np.array_equal(np.asanyarray(nib.load(str(path)).dataobj), read_image(path).array)
        print(f"read {kind}/{path.name}: nibabel {old:.3f} s, eoir {new:.3f} s, equal {same}")
    fixed = read_image(NATIVE / "imagesTr" / name.format(13))
    moving = read_image(NATIVE / "imagesTr" / name.format(14))
    labels = read_image(NATIVE / "labelsTr" / name.format(14))
    disp = torch.nn.functional.interpolate(
        torch.randn(1, 3, 9, 9, 6, generator=torch.Generator().manual_seed(3)) * 3.0,
        size=fixed.shape,
        mode="trilinear",
    )
    stored = store_reversed(disp)  # NIfTI's order, as total_field keeps a network's field
    for what, image, mode in (("image", moving, "bilinear"), ("labels", labels, "nearest")):
        # the same grid: the field's own warp (the native OASIS scans share one header)
        def copied(image=image, mode=mode):  # what to_fixed_grid did before: a C-ordered copy
            copy = Image(np.ascontiguousarray(image.array), image.affine)
            return warp_image(copy, fixed, disp, mode)

        def own(image=image, mode=mode):  # a field in C order, the image read in its layout
            values = torch.from_numpy(image.array).float()[None, None]
            return warp(values, disp, mode=mode)[0, 0].numpy()

        seconds = [
            _time(copied),
            _time(own),
            _time(lambda image=image, mode=mode: warp_image(image, fixed, disp, mode)),
            _time(lambda image=image, mode=mode: warp_image(image, fixed, stored, mode)),
        ]
        want = copied()
        frame = warp_image(image, fixed, stored, mode)
        print(f"warp the moving {what} (Fortran-ordered {image.array.dtype}) onto 256x256x160, "
              f"a field in C order: C-ordered copy first {seconds[0]:.3f} s, in its own layout "
              f"{seconds[1]:.3f} s, reordered in the float conversion {seconds[2]:.3f} s "
              f"(equal {np.array_equal(want, warp_image(image, fixed, disp, mode))}); the field "
              f"in NIfTI's order (the reversed frame) {seconds[3]:.3f} s, Fortran-ordered "
              f"{frame.flags.f_contiguous}, largest difference "
              f"{np.abs(frame.astype(float) - want).max():.0f}")  # fmt: skip
    matrix = lps_affine(fixed.affine)[:3, :3]
    old, new = (_time(lambda d=d: _nifti_vectors(d[0], matrix)) for d in (disp, stored))
    same = np.array_equal(_nifti_vectors(disp[0], matrix), _nifti_vectors(stored[0], matrix))
    print(f"the field's world vectors as NIfTI stores them: from C order {old:.3f} s, from "
          f"NIfTI's order {new:.3f} s, equal {same}")  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "w.nii.gz"
        array = warp_image(moving, fixed, disp)
        old = _time(lambda: write_image(out, array, fixed, overwrite=True))
        array = np.asfortranarray(array)
        new = _time(lambda: write_image(out, array, fixed, overwrite=True))
        print(f"write the warped image (int16 .nii.gz): C-ordered {old:.3f} s, Fortran-ordered "
              f"{new:.3f} s")  # fmt: skip
    old, new = (_time(lambda d=d: jacobian_stats(d, dtype=torch.float32)) for d in (disp, stored))
    print(f"folding statistics (float32): the field in C order {old:.3f} s, in NIfTI's order "
          f"{new:.3f} s")  # fmt: skip
    # the network's working grid: few samples from the whole moving image
    work = Image(np.zeros((128, 128, 80), np.float32), fixed.affine @ np.diag([2, 2, 2, 1]))
    values = Image(moving.array.astype(np.float32), moving.affine)  # Fortran-ordered, as read

    def copied_first():
        return to_fixed_grid(Image(np.ascontiguousarray(values.array), values.affine), work)

    old = _time(copied_first)
    new = _time(lambda: to_fixed_grid(values, work))
    same = torch.equal(copied_first(), to_fixed_grid(values, work))
    print(
        f"the moving image (float32, Fortran-ordered) onto a 128x128x80 working grid: "
        f"C-ordered copy first {old:.3f} s, own layout {new:.3f} s, equal {same}"
    )


def _flipped_grid_warp(image: torch.Tensor, disp: torch.Tensor) -> torch.Tensor:
    """:func:`eoir.spatial.warp` with its grid made as under autograd (the previous way)."""
    from eoir.spatial import _grid_sample, _normalised_identity

    base, scale = _normalised_identity(tuple(disp.shape[2:]), disp.device, disp.dtype)
    grid = torch.addcmul(base, disp.movedim(1, -1).flip(-1), scale)
    return _grid_sample(image, grid, "bilinear", "zeros")


def grids() -> None:
    """grid_sample's grid: a reordering copy onto a cached identity against one planar pass."""
    for shape, channels in (((256, 256, 160), 1), ((97, 77, 78), 3), ((97, 77, 78), 16)):
        generator = torch.Generator().manual_seed(4)
        disp = torch.nn.functional.interpolate(
            torch.randn(1, 3, 9, 9, 6, generator=generator) * 3.0, size=shape, mode="trilinear"
        )
        image = torch.rand(1, channels, *shape, generator=generator)
        with torch.no_grad():
            old = _time(lambda image=image, disp=disp: _flipped_grid_warp(image, disp))
            new = _time(lambda image=image, disp=disp: warp(image, disp))
            same = torch.equal(_flipped_grid_warp(image, disp), warp(image, disp))
        print(f"warp of {channels} channel(s) at {'x'.join(map(str, shape))}: copy + identity "
              f"{old:.4f} s, planar {new:.4f} s, equal {same}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["loss_pyramid", "reading"], help="run this swap alone")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.only == "loss_pyramid":
        loss_pyramid()
        return
    if args.only == "reading":
        reading()
        grids()
        return
    shape = (256, 256, 160)
    fixed = Image(np.zeros(shape, np.float32), np.eye(4))
    disp = torch.randn(1, 3, *shape, generator=torch.Generator().manual_seed(0))
    c, s = np.cos(0.2), np.sin(0.2)
    world = np.array([[c, -s, 0, 5], [s, c, 0, -3], [0, 0, 1.05, 2], [0, 0, 0, 1]])
    old = _time(lambda: _float64_total_field(fixed, disp, world))
    new = _time(lambda: total_field(fixed, disp, world))
    diff = (_float64_total_field(fixed, disp, world) - total_field(fixed, disp, world)).abs().max()
    print(f"total_field 256x256x160: float64 {old:.3f} s, float32 {new:.3f} s, "
          f"largest difference {float(diff):.1e} voxel")  # fmt: skip

    velocity = random_velocity(torch.Generator().manual_seed(1), [104, 96, 80], 1.5, 16.0)
    inner = (slice(None), slice(None), *[slice(6, -6)] * 3)
    for name, exp in (("full grid", lambda v: integrate(v, 7)), ("coarse grid", _smooth_exp)):
        seconds = _time(lambda exp=exp: exp(velocity))
        error = compose(exp(velocity), exp(-velocity))[inner].norm(dim=1)
        print(f"scaling and squaring, {name}: {seconds:.3f} s, inverse consistency mean "
              f"{float(error.mean()):.4f} max {float(error.max()):.3f} voxel")  # fmt: skip

    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 200, (1, 1, 256, 256, 256), generator=generator, dtype=torch.uint8)
    positions = torch.rand(1, 3, 104, 96, 80, generator=generator) * 200 + 20
    gathered = _time(lambda: _nearest(labels, positions))
    sampled = _time(lambda: sample(labels.float(), positions, mode="nearest").long())
    same = _nearest(labels, positions) == sample(labels.float(), positions, mode="nearest")
    print(f"labels at 104x96x80 from a 256^3 uint8 map: grid_sample {sampled:.3f} s, gather "
          f"{gathered:.3f} s, equal {float(same.float().mean()):.4f}")  # fmt: skip

    rng = np.random.default_rng(0)
    volume = np.asfortranarray(np.clip(rng.gamma(2.0, 300.0, shape), 0, 2800).astype(np.int16))
    q = (0.5, 99.5)
    before = _time(lambda: np.percentile(np.asarray(volume, np.float32), q))
    after = _time(lambda: percentiles(volume, q))
    print(f"percentiles of an int16 256x256x160 volume: numpy {before:.3f} s "
          f"{[float(v) for v in np.percentile(np.asarray(volume, np.float32), q)]}, counted "
          f"{after:.3f} s {percentiles(volume, q)}")  # fmt: skip

    # a smooth field (random values 16 voxels apart, upsampled) strong enough to fold somewhere
    coarse = torch.randn(1, 3, 17, 17, 11, generator=torch.Generator().manual_seed(2)) * 9.0
    field = torch.nn.functional.interpolate(coarse, size=shape, mode="trilinear")
    for dtype in (torch.float64, torch.float32):
        seconds = _time(lambda dtype=dtype: jacobian_stats(field, dtype=dtype))
        stats = jacobian_stats(field, dtype=dtype)
        print(f"folding statistics of a 256x256x160 field, {dtype}: {seconds:.3f} s, folding "
              f"{stats['folding_percent']:.6f} %, SDlogJ {stats['sdlogj']:.10f}")  # fmt: skip

    image = Image(np.asfortranarray(volume.astype(np.float32) / 2800), np.eye(4))
    copied = _time(lambda: _pyramid(np.ascontiguousarray(image.array), image))
    pooled = _time(lambda: _pyramid(image.array, image))
    difference = max(
        float((a[0] - b[0]).abs().max())
        for a, b in zip(_pyramid(np.ascontiguousarray(image.array), image).values(),
                        _pyramid(image.array, image).values(), strict=True)
    )  # fmt: skip
    print(f"affine pyramid of a Fortran-ordered 256x256x160 volume: C-ordered copy first "
          f"{copied:.3f} s, the transposed view averaged {pooled:.3f} s, largest difference "
          f"{difference:.1e}")  # fmt: skip
    loss_pyramid()
    reading()
    grids()


if __name__ == "__main__":
    main()
