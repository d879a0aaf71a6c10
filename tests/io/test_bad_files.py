"""Bad files and unsafe outputs: one line, exit 2, nothing the user had is lost."""

from __future__ import annotations

import errno
import gzip
import os
import signal
import struct
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eoir.errors import InputError
from eoir.image import Image
from eoir.io import OutputSet, read_image, write_field, write_image
from eoir.io.outputs import remove_stale_temps
from helpers import eoir_cli

SHAPE = (20, 22, 18)


@pytest.fixture
def good(tmp_path):
    """A small valid NIfTI (uncompressed and gzipped) in ``tmp_path``."""
    array = (np.random.default_rng(0).random(SHAPE) * 100).astype(np.int16)
    nib.save(nib.Nifti1Image(array, np.diag([1.0, 1.0, 1.0, 1.0])), tmp_path / "good.nii")
    nib.save(nib.Nifti1Image(array, np.diag([1.0, 1.0, 1.0, 1.0])), tmp_path / "good.nii.gz")
    write_field(tmp_path / "field.nii.gz", np.zeros((3, *SHAPE)), read_image(tmp_path / "good.nii"))
    return tmp_path


def edited(folder, name, edit, compress=False):
    """A copy of ``good.nii`` whose header bytes ``edit(raw)`` changed."""
    raw = bytearray((folder / "good.nii").read_bytes())
    edit(raw)
    path = folder / name
    path.write_bytes(gzip.compress(bytes(raw)) if compress else bytes(raw))
    return path


def dims(*values):
    return lambda raw: struct.pack_into(
        "<8h", raw, 40, len(values), *values, *[1] * (7 - len(values))
    )


def sform(*rows):
    def edit(raw):
        struct.pack_into("<h", raw, 254, 1)  # sform_code: the sform is the affine
        struct.pack_into("<12f", raw, 280, *rows)

    return edit


def pixdim(*values):
    def edit(raw):
        struct.pack_into("<h", raw, 252, 0)  # no qform: the base affine from pixdim
        struct.pack_into("<h", raw, 254, 0)
        struct.pack_into("<3f", raw, 80, *values)

    return edit


BAD_HEADERS = {
    "huge dims, gzipped": (dims(32767, 32767, 32767), True, "more than a"),
    "1500^3 in a small gzip": (dims(1500, 1500, 1500), True, "more than a"),
    "huge dims, raw": (dims(32767, 32767, 32767), False, "the file holds"),
    "a negative size": (dims(20, -22, 18), False, "sizes must be >= 1"),
    "a singular sform": (sform(1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 1, 0), False, "singular"),
    "a zero spacing": (sform(1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0), False, "must be positive"),
    "NaN in the sform": (sform(np.nan, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0), False, "NaN"),
    "pixdim 0": (pixdim(1.0, 0.0, 2.0), False, "must be non-zero"),
}


@pytest.mark.parametrize("case", sorted(BAD_HEADERS))
@pytest.mark.parametrize("role", ["fixed", "moving"])
def test_bad_headers_are_refused_before_any_voxel_is_read(good, case, role):
    edit, compress, words = BAD_HEADERS[case]
    bad = edited(good, "bad.nii.gz" if compress else "bad.nii", edit, compress)
    with pytest.raises(InputError, match=words):
        read_image(bad, f"{role} image")
    pair = {"fixed": good / "good.nii.gz", "moving": good / "good.nii.gz", role: bad}
    began = time.perf_counter()
    result = eoir_cli(
        "register", "--fixed", pair["fixed"], "--moving", pair["moving"],
        "--field", good / "out.nii.gz", "--model", "none", "--optimize-steps", "1",
    )  # fmt: skip
    assert time.perf_counter() - began < 10  # refused from the header, not after reading
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and str(bad.name) in result.stderr
    assert words in result.stderr and f"{role} image" in result.stderr
    assert not (good / "out.nii.gz").exists()


def test_folders_that_are_not_images_give_one_line(good, capfd):
    (good / "empty").mkdir()
    (good / "x.nii.gz").mkdir()
    (good / "notes").mkdir()
    (good / "notes" / "a.txt").write_text("no DICOM here")
    for folder, words in (("empty", "empty folder"), ("x.nii.gz", "empty folder"),
                          ("notes", "no DICOM series")):  # fmt: skip
        result = eoir_cli("apply", "--field", good / "field.nii.gz", "--moving", good / folder,
                          "--out", good / "o.nii.gz")  # fmt: skip
        assert result.returncode == 2 and words in result.stderr
        assert result.stderr.count("\n") == 1
    assert "WARNING" not in capfd.readouterr().err  # ITK's own chatter is silenced


@pytest.mark.parametrize("flag", ["--warped", "--field"])
def test_an_output_that_is_an_input_is_refused_even_with_overwrite(good, flag):
    before = (good / "good.nii").read_bytes()
    os.symlink(good / "good.nii", good / "link.nii")
    for target in (good / "good.nii", good / "link.nii", good / "." / "good.nii"):
        result = eoir_cli(
            "register", "--fixed", good / "good.nii.gz", "--moving", good / "good.nii",
            flag, target, "--overwrite", "--model", "none", "--optimize-steps", "1",
        )  # fmt: skip
        assert result.returncode == 2 and "is an input of this run" in result.stderr
    result = eoir_cli("apply", "--field", good / "field.nii.gz", "--moving", good / "good.nii",
                      "--out", good / "good.nii", "--overwrite")  # fmt: skip
    assert result.returncode == 2 and "is an input of this run" in result.stderr
    assert (good / "good.nii").read_bytes() == before


def test_a_file_that_appears_during_the_run_is_not_replaced(good):
    image = read_image(good / "good.nii")
    target = good / "late.nii.gz"
    with pytest.raises(InputError, match="appeared while eoir was running"):
        with OutputSet([target, good / "other.nii.gz"]) as outputs:
            outputs.write_image(good / "other.nii.gz", image.array, image)
            outputs.write_image(target, image.array, image)
            target.write_text("somebody else's")
    assert target.read_text() == "somebody else's"
    assert not (good / "other.nii.gz").exists()  # all or none
    assert not list(good.glob(".*eoir-tmp*"))


def test_an_interrupted_or_failed_write_leaves_no_files(good, monkeypatch):
    image = read_image(good / "good.nii")
    for error in (KeyboardInterrupt(), OSError(errno.ENOSPC, "No space left on device")):
        with pytest.raises(type(error)), OutputSet([good / "o.nii.gz"]) as outputs:
            outputs.write_image(good / "o.nii.gz", image.array, image)
            raise error
        assert not list(good.glob("*o.nii.gz*")) and not list(good.glob(".o.*"))
    # a full disk while the command writes: one line naming the file, exit 2, no output
    import eoir.io.outputs

    def full(path, *args, **kwargs):
        path.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(eoir.io.outputs, "_save_nifti", full)
    result = eoir_cli("apply", "--field", good / "field.nii.gz", "--moving", good / "good.nii",
                      "--out", good / "o.nii.gz")  # fmt: skip
    assert result.returncode == 2 and "No space left on device" in result.stderr
    assert result.stderr.count("\n") == 1
    assert not list(good.glob("*o.nii.gz*")) and not list(good.glob(".o.*"))


def test_stale_temporary_files_of_dead_processes_are_removed(good):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    stale = good / f".o.{int(dead.stdout)}.abc123.eoir-tmp.nii.gz"
    live = good / f".o.{os.getppid()}.def456.eoir-tmp.nii.gz"  # a running process's
    other = good / f".o.{int(dead.stdout)}.abc123.eoir-tmp.nii"  # another target's
    for path in (stale, live, other):
        path.write_bytes(b"x")
    assert remove_stale_temps(good / "o.nii.gz") == [stale]
    assert live.exists() and other.exists()
    OutputSet([good / "o.nii"])  # declaring an output cleans its own stale files
    assert not other.exists()


def test_sigterm_and_ctrl_c_end_with_one_line_and_their_exit_codes(good):
    command = [
        sys.executable, "-m", "eoir", "register", "--fixed", good / "good.nii.gz",
        "--moving", good / "good.nii.gz", "--warped", good / "w.nii.gz",
        "--model", "none", "--optimize-steps", "100000",
    ]  # fmt: skip
    for sent, code, words in ((signal.SIGTERM, 143, "terminated"),
                              (signal.SIGINT, 130, "interrupted")):  # fmt: skip
        process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        time.sleep(6)  # started and optimising
        process.send_signal(sent)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == code, stderr
        assert stderr.strip().count("\n") == 0 and words in stderr
        assert not (good / "w.nii.gz").exists() and not list(good.glob(".w.*"))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    field=st.sampled_from(["dim", "datatype", "bitpix", "vox_offset", "pixdim", "sform", "qform"]),
    value=st.one_of(
        st.integers(-(2**31), 2**31 - 1),
        st.floats(allow_nan=True, allow_infinity=True, width=32),
    ),
    position=st.integers(0, 11),
    cut=st.one_of(st.none(), st.integers(0, 16_000)),
    compress=st.booleans(),
)
def test_random_headers_and_truncations_never_raise_anything_but_input_error(
    good, field, value, position, cut, compress
):
    """Fuzzed NIfTI headers and truncated files: :class:`InputError` or a valid image, never
    another exception, and never an array larger than the file could hold."""
    raw = bytearray((good / "good.nii").read_bytes())
    offsets = {"dim": (40, "<h", 8), "datatype": (70, "<h", 1), "bitpix": (72, "<h", 1),
               "vox_offset": (108, "<f", 1), "pixdim": (76, "<f", 8),
               "sform": (280, "<f", 12), "qform": (256, "<f", 6)}  # fmt: skip
    start, fmt, count = offsets[field]
    index = position % count
    size = struct.calcsize(fmt)
    try:
        number = int(value) if fmt == "<h" else float(value)
        struct.pack_into(fmt, raw, start + index * size, number)
    except (struct.error, OverflowError, ValueError):
        return
    data = bytes(raw[:cut] if cut is not None else raw)
    path = good / ("fuzz.nii.gz" if compress else "fuzz.nii")
    path.write_bytes(gzip.compress(data) if compress else data)
    try:
        image = read_image(path, "fuzzed image")
    except InputError:
        return
    limit = 1032 * path.stat().st_size if compress else path.stat().st_size
    assert image.array.nbytes <= limit
    assert np.isfinite(image.affine).all()


def test_writing_to_an_existing_file_asks_for_overwrite(good):
    image = read_image(good / "good.nii")
    with pytest.raises(InputError, match="exists; set overwrite=True"):
        write_image(good / "good.nii.gz", image.array, Image(image.array, image.affine))


def test_a_nifti2_header_with_huge_sizes_is_refused(good):
    array = np.zeros((6, 5, 4), np.float32)
    nib.save(nib.Nifti2Image(array, np.eye(4)), good / "two.nii")
    raw = bytearray((good / "two.nii").read_bytes())
    struct.pack_into("<8q", raw, 16, 3, 100000, 100000, 100000, 1, 1, 1, 1)  # NIfTI-2 dim
    (good / "two.nii").write_bytes(bytes(raw))
    with pytest.raises(InputError, match="100000x100000x100000 voxels"):
        read_image(good / "two.nii")


def test_a_checkpoint_that_is_a_plain_pickle_gives_one_line(good, capfd):
    import pickle

    (good / "raw.pt").write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    result = eoir_cli("register", "--fixed", good / "good.nii.gz", "--moving",
                      good / "good.nii.gz", "--field", good / "o.nii.gz", "--model",
                      good / "raw.pt")  # fmt: skip
    assert result.returncode == 2 and "raw.pt" in result.stderr
    assert result.stderr.count("\n") == 1
    assert "Warning" not in capfd.readouterr().err


@pytest.mark.parametrize("where", [12, 30, 60, "middle"])
def test_damaged_compressed_images_and_fields_give_one_line(good, where):
    """Flipped bytes inside a .nii.gz's deflate stream (the header's or the voxels'), in an
    image and in a field: one line naming the file, exit code 2, no output."""
    for name, flag in (("field.nii.gz", "--field"), ("good.nii.gz", "--moving")):
        raw = bytearray((good / name).read_bytes())
        start = len(raw) // 2 if where == "middle" else where
        assert start + 20 <= len(raw) - 8  # inside the deflate stream, before the trailer
        for i in range(start, start + 20):
            raw[i] ^= 0xA5
        damaged = good / f"damaged-{name}"
        damaged.write_bytes(bytes(raw))
        inputs = {"--field": good / "field.nii.gz", "--moving": good / "good.nii"}
        inputs[flag] = damaged
        out = good / "out.nii.gz"
        result = subprocess.run(
            [sys.executable, "-m", "eoir", "apply", "--field", inputs["--field"],
             "--moving", inputs["--moving"], "--out", out],
            capture_output=True, text=True,
        )  # fmt: skip
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and str(damaged) in result.stderr
        assert not out.exists()
