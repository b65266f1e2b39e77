"""Image file -> model input (runtime/preprocess.py): the hostile corpus, the documented pixel policy,
the limits at their exact boundaries, and properties of the resize (hypothesis).

The corpus (tests/hostile.py, ~300 files) goes through `prepare()` in a worker process, one file at a
time with a 30 s limit each: every file gives a uint8 [32, 32, 3] array or an ImageError whose
message holds the file name, as the corpus expects. Crashes (the worker dying), hangs (no answer in
30 s) and other exception types must all be 0. Every valid file then has its pixels checked in this
process against the picture the README's policy promises (tests/hostile.py `Case.expected`), or
against a plain file of the same picture (`Case.reference`). `pytest -s` prints the counts.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cifar10kit.runtime import preprocess as P
from cifar10kit.runtime.preprocess import BACKGROUND, ImageError, fit, prepare, to_input, to_rgb

from hostile import EXIF_STORE, encode, png_bytes, png_chunk, scene

PER_FILE_TIMEOUT_S = 30


# ----------------------------------------------------------------------------------------------
# The hostile corpus, through a worker process

WORKER = r"""
import json, sys
from cifar10kit.runtime.preprocess import ImageError, prepare
for line in sys.stdin:
    path = bytes.fromhex(line.strip()).decode("utf-8", "surrogateescape")
    try:
        x = prepare(path)
        out = {"status": "ok", "shape": list(x.shape), "dtype": str(x.dtype)}
    except ImageError as e:
        out = {"status": "error", "message": str(e)}
    except BaseException as e:
        out = {"status": "exception", "message": f"{type(e).__name__}: {e}"}
    print(json.dumps(out), flush=True)
"""


class _Worker:
    """prepare() in a child process: a crash kills only the child, a hang is cut off by a timeout."""

    def __init__(self):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def ask(self, path: Path, timeout: float) -> dict:
        self.proc.stdin.write(os.fsencode(path).hex() + "\n")
        self.proc.stdin.flush()
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            self.proc.kill()
            self.proc.wait()
            return {"status": "hang"}
        if line is None:
            self.proc.wait()
            return {"status": "crash", "message": f"worker died with exit code {self.proc.returncode}"}
        return json.loads(line)

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def prepared(hostile_corpus):
    """{path: worker answer} for every case."""
    _, cases = hostile_corpus
    results, worker = {}, _Worker()
    try:
        for case in cases:
            out = worker.ask(case.path, PER_FILE_TIMEOUT_S)
            if out["status"] in ("hang", "crash"):
                worker = _Worker()
            results[case.path] = out
    finally:
        worker.close()
    return results


def test_corpus_is_big_and_varied(hostile_corpus):
    _, cases = hostile_corpus
    assert len(cases) >= 200
    assert len({c.path for c in cases}) == len(cases)
    families = {c.family for c in cases}
    for family in ("empty", "truncated", "random-bytes", "bomb", "modes", "exif", "filesystem", "names"):
        assert family in families
    assert {c.expected for c in cases} == {"ok", "error"}


def test_every_valid_file_has_reference_pixels(hostile_corpus):
    _, cases = hostile_corpus
    missing = [c.name for c in cases if c.expected == "ok" and c.reference is None and c.expected_rgb is None]
    assert not missing


def test_prepare_never_crashes_hangs_or_raises_other_errors(hostile_corpus, prepared):
    _, cases = hostile_corpus
    bad = {c.name: prepared[c.path] for c in cases if prepared[c.path]["status"] not in ("ok", "error")}
    assert not bad


def test_prepare_outcomes_match_the_corpus(hostile_corpus, prepared):
    _, cases = hostile_corpus
    wrong = []
    for c in cases:
        got = prepared[c.path]
        if got["status"] != c.expected:
            wrong.append(f"{c.name!r} ({c.family}): expected {c.expected}, got {got}")
        elif got["status"] == "ok":
            if got["shape"] != [32, 32, 3] or got["dtype"] != "uint8":
                wrong.append(f"{c.name!r}: {got['shape']} {got['dtype']}")
        elif not got["message"].startswith(str(c.path)):
            wrong.append(f"{c.name!r}: message does not start with the file name: {got['message']!r}")
    assert not wrong, "\n".join(wrong)
    summary = {
        "files": len(cases),
        "classified": sum(prepared[c.path]["status"] == "ok" for c in cases),
        "rejected": sum(prepared[c.path]["status"] == "error" for c in cases),
    }
    print("\nhostile corpus:", json.dumps(summary))


def test_bombs_are_refused_as_bombs(hostile_corpus, prepared):
    _, cases = hostile_corpus
    for c in cases:
        if c.family == "bomb" and "chunk" not in c.name:
            msg = prepared[c.path]["message"]
            assert "limit" in msg or "bomb" in msg, msg


# ----------------------------------------------------------------------------------------------
# The pixels the policy promises, for every valid file (in this process: these files are safe)


def _expected_input(case, cases) -> np.ndarray:
    if case.reference is not None:
        return prepare(case.reference)
    if isinstance(case.expected_rgb, tuple):
        return np.broadcast_to(np.array(case.expected_rgb, np.uint8), (32, 32, 3))
    return to_input(Image.fromarray(case.expected_rgb))


def test_valid_files_give_the_promised_pixels(hostile_corpus):
    """16-bit scaled not clipped, 32-bit and float scaled as documented, palettes looked up, CMYK and
    YCbCr converted, transparency (alpha, palette index, colour key) on white, first frames, EXIF
    orientation, content sniffed whatever the extension: each as the README says, pixel for pixel."""
    _, cases = hostile_corpus
    wrong, checked = [], 0
    for c in cases:
        if c.expected != "ok" or c.name.startswith("large-"):  # the 64 MP file: checked in the next test
            continue
        got = prepare(c.path).astype(float)
        diff = float(np.abs(got - _expected_input(c, cases)).mean())
        if diff > c.tolerance:
            wrong.append(f"{c.name}: mean |diff| {diff:.2f} > {c.tolerance}")
        checked += 1
    assert not wrong, "\n".join(wrong)
    assert checked >= 100


def test_the_largest_allowed_image_is_classified(hostile_corpus):
    root, _ = hostile_corpus
    assert (prepare(root / "large-8000x8000.png") == np.array([10, 200, 30], np.uint8)).all()


def test_pixel_check_would_catch_a_wrong_policy(hostile_corpus):
    """The tolerances are far below what a plausible wrong policy changes: clipping 16-bit instead of
    scaling, black instead of white under transparency, a wrong EXIF rotation."""
    root, cases = hostile_corpus
    by_name = {c.name: c for c in cases}
    grey16 = np.asarray(Image.open(root / "mode-I16.png"), dtype=np.int64)
    clipped = to_input(Image.fromarray(np.clip(grey16, 0, 255).astype(np.uint8)).convert("RGB")).astype(float)
    assert np.abs(clipped - _expected_input(by_name["mode-I16.png"], cases)).mean() > 20
    rgba = Image.open(root / "mode-RGBA.png")
    on_black = Image.new("RGB", rgba.size, (0, 0, 0))
    on_black.paste(rgba, mask=rgba.getchannel("A"))
    assert np.abs(to_input(on_black).astype(float) - _expected_input(by_name["mode-RGBA.png"], cases)).mean() > 20
    upright = prepare(root / "exif-reference.png").astype(float)
    shown = np.asarray(Image.open(root / "exif-reference.png").convert("RGB"))
    tolerance = max(c.tolerance for c in cases if c.name.startswith("exif-orientation-"))
    for o in range(2, 9):
        wrong = to_input(Image.fromarray(np.ascontiguousarray(EXIF_STORE[o](shown)))).astype(float)
        assert float(np.abs(wrong - upright).mean()) > 5 * tolerance, o


# ----------------------------------------------------------------------------------------------
# Bit depths, exactly


def _mode_image(mode: str, values) -> Image.Image:
    arr = np.asarray(values)
    if mode == "I;16":
        return Image.frombytes("I;16", (arr.shape[1], arr.shape[0]), arr.astype("<u2").tobytes())
    return Image.fromarray(arr.astype({"I": np.int32, "F": np.float32}[mode]), mode)


@pytest.mark.parametrize(
    ("mode", "values", "want"),
    [
        ("I;16", [[0, 255, 256, 257 * 128, 65535]], [[0, 0, 1, 128, 255]]),  # scaled (>> 8), not clipped
        ("I", [[0, 1, 128, 254, 255]], [[0, 1, 128, 254, 255]]),  # fits in 8 bits: as is
        ("I", [[0, 256, 25600, 65535, 70000]], [[0, 1, 100, 255, 255]]),  # does not fit: as 16-bit
        ("F", [[0.0, 0.5, 1.0, 0.25, 0.002]], [[0, 128, 255, 64, 1]]),  # [0, 1]: times 255, rounded
        ("F", [[-5.0, 0.0, 50.0, 100.0, 25.0]], [[0, 0, 128, 255, 64]]),  # over its largest value
        ("F", [[np.nan, np.inf, -np.inf, 2.0, 1.0]], [[0, 255, 0, 255, 128]]),  # NaN 0, +inf the top
        ("F", [[0.0, 0.1, 0.5, 0.9, 0.0]], [[0, 26, 128, 230, 0]]),  # max < 1: still scaled by 255
    ],
)
def test_high_bit_depths_follow_the_policy(mode, values, want):
    out = np.asarray(to_rgb(_mode_image(mode, values)))
    assert out.dtype == np.uint8 and out.shape == (1, 5, 3)
    np.testing.assert_array_equal(out[..., 0], np.array(want, np.uint8))
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_tall_images_are_converted_block_by_block_without_seams(mode):
    """More rows than one conversion block: every row gets the same scale as the first."""
    rows = 2 * P._CHUNK_ROWS + 37
    ramp = np.linspace(0, {"I;16": 65535, "I": 65535, "F": 1.0}[mode], rows)[:, None] * np.ones((1, 3))
    if mode == "I":
        ramp[0, 0] = 65535  # the block holding the maximum is not the one holding most rows
    out = np.asarray(to_rgb(_mode_image(mode, ramp)))[..., 0].astype(int)
    if mode == "F":
        want = np.floor(ramp.astype(np.float32) * np.float32(255) + np.float32(0.5)).astype(int)
    else:
        want = ramp.astype(np.int64) >> 8
    np.testing.assert_array_equal(out, want)


# ----------------------------------------------------------------------------------------------
# Limits at their exact boundaries


def test_pixel_limit_is_inclusive(tmp_path):
    """Declared 64,000,000 pixels may be decoded (these headers then fail as corrupt); one more row is
    refused before decoding, as a bomb."""
    idat = zlib.compress(b"\x00\x00\x00\x00")
    at, over = tmp_path / "at.png", tmp_path / "over.png"
    at.write_bytes(png_bytes(8000, 8000, idat))
    over.write_bytes(png_bytes(8000, 8001, idat))
    with pytest.raises(ImageError) as e:
        prepare(at)
    assert "MP limit" not in str(e.value) and "corrupt or truncated" in str(e.value)
    with pytest.raises(ImageError, match="8000x8001 is over the 64 MP limit"):
        prepare(over)
    assert P.MAX_PIXELS == 8000 * 8000


def test_file_size_limit_is_inclusive(tmp_path):
    """A file of exactly MAX_FILE_BYTES is read; one byte more is refused unread (sparse files)."""
    png = encode(Image.new("RGB", (8, 8), (5, 6, 7)), "PNG")
    at, over = tmp_path / "at.png", tmp_path / "over.png"
    for path, size in ((at, P.MAX_FILE_BYTES), (over, P.MAX_FILE_BYTES + 1)):
        with open(path, "wb") as f:
            f.write(png)
            f.truncate(size)
    assert (prepare(at) == np.array([5, 6, 7], np.uint8)).all()
    with pytest.raises(ImageError, match=r"256 MB limit") as e:
        prepare(over)
    assert str(e.value).startswith(str(over))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
        (lambda p: p.mkdir(), "is a folder, not an image"),
        (lambda p: os.symlink(p.parent / "nowhere.png", p), "a symbolic link to a missing file"),
        (lambda p: os.symlink(p.name, p), "a loop of symbolic links"),
        (lambda p: p.write_bytes(encode(Image.fromarray(scene()), "PNG")[:400]), "corrupt or truncated image"),
        (lambda p: p.write_bytes(b"just text"), "not an image format Pillow can read"),
        (lambda p: p.write_bytes(png_bytes(0, 4, zlib.compress(b"\x00"))), "x.png: "),
    ],
    ids=["empty", "folder", "dangling-link", "link-loop", "truncated", "text", "zero-width"],
)
def test_each_refusal_names_the_file_and_the_reason(tmp_path, make, message):
    path = tmp_path / "x.png"
    make(path)
    with pytest.raises(ImageError) as e:
        prepare(path)
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value), str(e.value)


def test_no_pixels_and_bytes_paths(tmp_path):
    with pytest.raises(ImageError, match=r"photo: image has no pixels \(0x3\)"):
        to_rgb(Image.new("RGB", (0, 3)), source="photo")
    good = tmp_path / "ok.png"
    Image.new("RGB", (4, 4), (1, 2, 3)).save(good)
    assert (prepare(os.fsencode(good)) == np.array([1, 2, 3], np.uint8)).all()  # a bytes path works too


def test_unreadable_file_is_refused(tmp_path):
    f = tmp_path / "locked.png"
    Image.new("RGB", (8, 8)).save(f)
    f.chmod(0)
    try:
        with open(f, "rb"):
            readable = True
    except PermissionError:
        readable = False
    if readable:
        f.chmod(0o644)
        pytest.skip("running as root (or with CAP_DAC_OVERRIDE): chmod 000 does not stop reads here")
    with pytest.raises(ImageError, match="permission denied") as e:
        prepare(f)
    assert str(f) in str(e.value)
    f.chmod(0o644)


def test_fifo_is_refused_without_blocking(tmp_path):
    """Even with a signal alarm as a safety net, the loader must answer at once."""
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)

    def _alarm(*_):
        raise TimeoutError("prepare() blocked on a FIFO")

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(5)
    try:
        with pytest.raises(ImageError, match=r"is a named pipe \(FIFO\), not an image file; not read") as e:
            prepare(fifo)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert str(e.value).startswith(str(fifo))


def test_character_device_is_refused(tmp_path):
    if not os.path.exists("/dev/null"):
        pytest.skip("no /dev/null")
    link = tmp_path / "dev.png"
    os.symlink("/dev/null", link)
    with pytest.raises(ImageError, match="is a character device, not an image file"):
        prepare(link)


# ----------------------------------------------------------------------------------------------
# The resize: centre crop, then Lanczos; JPEGs decoded small first


@pytest.mark.parametrize(("w", "h"), [(96, 64), (64, 96), (33, 32), (50, 50), (7, 300)])
def test_fit_is_a_centre_crop_then_a_lanczos_resize(w, h):
    img = Image.fromarray(np.random.default_rng(w * h).integers(0, 256, (h, w, 3), dtype=np.uint8))
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    want = img.crop((left, top, left + side, top + side)).resize((32, 32), Image.Resampling.LANCZOS)
    np.testing.assert_array_equal(np.asarray(fit(img)), np.asarray(want))
    assert fit(img, 8).size == (8, 8)


def test_big_jpeg_is_decoded_at_reduced_size_but_gives_the_same_picture(tmp_path):
    big = Image.fromarray(np.kron(scene(40, 30), np.ones((50, 50, 1), np.uint8)))  # 2000x1500
    path = tmp_path / "big.jpg"
    big.save(path, quality=95)
    with Image.open(path) as img:
        img.draft("RGB", (128, 128))
        assert img.size[0] < 2000  # the decoder really can reduce this file
    got = prepare(path).astype(float)
    assert np.abs(got - to_input(big)).mean() < 3


# ----------------------------------------------------------------------------------------------
# Properties (hypothesis)

MODES = ("L", "LA", "P", "RGB", "RGBA", "I;16", "CMYK", "1", "F")
BYTES_PER_PIXEL = {"L": 1, "LA": 2, "P": 1, "RGB": 3, "RGBA": 4, "I;16": 2, "CMYK": 4, "F": 4}
PROPS = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def random_image(mode: str, w: int, h: int, seed: int) -> Image.Image:
    """Random bytes in any mode (for F that includes NaN, inf and huge values), random palettes."""
    rng = np.random.default_rng(seed)
    if mode == "1":
        return Image.frombytes("1", (w, h), rng.bytes(((w + 7) // 8) * h))
    img = Image.frombytes(mode, (w, h), rng.bytes(w * h * BYTES_PER_PIXEL[mode]))
    if mode == "P":
        img.putpalette(rng.bytes(768))
        if seed % 2:
            img.info["transparency"] = int(seed % 256)
    return img


sizes = st.integers(1, 600)


@PROPS
@given(mode=st.sampled_from(MODES), w=sizes, h=sizes, seed=st.integers(0, 2**32 - 1))
def test_any_mode_and_size_gives_the_model_input(mode, w, h, seed):
    img = random_image(mode, w, h, seed)
    out = to_input(to_rgb(img, "random"))
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8


@settings(max_examples=30, deadline=None, database=None)
@given(
    mode=st.sampled_from(("L", "LA", "P", "RGB", "RGBA", "I;16", "1")),
    w=st.integers(1, 200),
    h=st.integers(1, 200),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_mode_and_size_through_a_file(tmp_path_factory, mode, w, h, seed):
    path = tmp_path_factory.mktemp("prop") / f"x-{mode.replace(';', '')}.png"
    random_image(mode, w, h, seed).save(path)
    out = prepare(path)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8


@PROPS
@given(w=sizes, h=sizes, colour=st.tuples(*[st.integers(0, 255)] * 3))
def test_constant_colour_survives_resizing(w, h, colour):
    img = Image.new("RGB", (w, h), colour)
    out = to_input(to_rgb(img))
    assert (out == np.array(colour, np.uint8)).all(), np.unique(out.reshape(-1, 3), axis=0)


@PROPS
@given(w=sizes, h=sizes, seed=st.integers(0, 2**32 - 1), mode=st.sampled_from(("RGBA", "LA", "P")))
def test_fully_transparent_becomes_background(w, h, seed, mode):
    rng = np.random.default_rng(seed)
    if mode == "P":
        img = Image.new("P", (w, h), 7)
        img.putpalette(rng.bytes(768))
        img.info["transparency"] = 7
    else:
        bands = 4 if mode == "RGBA" else 2
        arr = rng.integers(0, 256, (h, w, bands), dtype=np.uint8)
        arr[..., -1] = 0
        img = Image.fromarray(arr, mode)
    out = to_input(to_rgb(img))
    assert (out == np.array(BACKGROUND, np.uint8)).all()


@PROPS
@given(side=st.integers(1, 300), extra=st.integers(1, 300), seed=st.integers(0, 2**32 - 1), tall=st.booleans())
def test_centre_crop_ignores_the_margins(side, extra, seed, tall):
    """Everything outside the centre square can change without changing the model input."""
    rng = np.random.default_rng(seed)
    w, h = side + extra, side
    a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    left = extra // 2
    b[:, left : left + side] = a[:, left : left + side]
    if tall:
        a, b = a.transpose(1, 0, 2), b.transpose(1, 0, 2)
    out_a, out_b = np.asarray(fit(Image.fromarray(a))), np.asarray(fit(Image.fromarray(b)))
    np.testing.assert_array_equal(out_a, out_b)


def test_the_loader_is_safe_on_threads(hostile_corpus):
    """prepare() touches no global state: the same files on 4 threads give the same arrays."""
    from concurrent.futures import ThreadPoolExecutor

    root, cases = hostile_corpus
    files = [c.path for c in cases if c.expected == "ok" and c.family in ("modes", "exif")][:24]
    once = [prepare(f) for f in files]
    with ThreadPoolExecutor(4) as pool:
        again = list(pool.map(prepare, files))
    assert len(files) == 24
    for a, b in zip(once, again):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------------------------
# Exact messages and the less travelled branches (each case hand-made, in this process)


def test_the_size_limit_message_gives_the_size_in_mb(tmp_path):
    over = tmp_path / "huge.png"
    with open(over, "wb") as f:
        f.truncate(300 * 2**20 + 1)  # sparse: nothing is written
    with pytest.raises(ImageError) as e:
        prepare(over)
    assert str(e.value) == f"{over}: 300 MB is over the 256 MB limit"


@pytest.mark.parametrize(
    ("mode", "kind"),
    [
        (stat.S_IFIFO, "a named pipe (FIFO)"),
        (stat.S_IFSOCK, "a socket"),
        (stat.S_IFCHR, "a character device"),
        (stat.S_IFBLK, "a block device"),
        (0, "not a regular file"),  # no such file type on Linux; the words for whatever else exists
    ],
)
def test_special_files_are_named_by_kind(mode, kind):
    assert P._kind(mode) == kind


def test_a_socket_is_refused_unread(tmp_path):
    if not hasattr(socket, "AF_UNIX"):
        pytest.skip("no Unix sockets on this platform")
    path = Path(tempfile.mkdtemp(dir="/tmp" if os.path.isdir("/tmp") else None)) / "s.png"  # short: bind() limit
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        with pytest.raises(ImageError) as e:
            prepare(path)
    assert str(e.value) == f"{path}: is a socket, not an image file; not read"


def test_missing_files_and_broken_links_say_why(tmp_path):
    missing = tmp_path / "missing.png"
    with pytest.raises(ImageError) as e:
        prepare(missing)
    assert str(e.value) == f"{missing}: cannot read (No such file or directory)"

    dangling = tmp_path / "dangling.png"
    os.symlink(missing, dangling)
    with pytest.raises(ImageError) as e:
        prepare(dangling)
    assert str(e.value) == f"{dangling}: cannot read (No such file or directory: a symbolic link to a missing file)"

    loop = tmp_path / "loop.png"
    os.symlink(loop.name, loop)
    with pytest.raises(ImageError) as e:
        prepare(loop)
    assert str(e.value) == f"{loop}: cannot read (Too many levels of symbolic links: a loop of symbolic links)"

    # A link whose target cannot exist (a path below a plain file) is not called a missing file.
    plain = tmp_path / "plain.txt"
    plain.write_bytes(b"x")
    below = tmp_path / "below.png"
    os.symlink(plain / "x.png", below)
    with pytest.raises(ImageError) as e:
        prepare(below)
    assert str(e.value) == f"{below}: cannot read (Not a directory)"


@pytest.fixture
def swapped_after_first_look(monkeypatch, tmp_path):
    """Simulates the race the loader guards against: the file at a path is swapped for another
    between the loader's os.stat() and its os.open(). os.stat() reports a plain image file for the
    returned path; open() then finds what really is there."""
    decoy = tmp_path / "decoy.png"
    Image.new("RGB", (4, 4)).save(decoy)
    real_stat, target = os.stat, tmp_path / "swapped.png"

    def stat_before_swap(path, *args, **kwargs):
        return real_stat(decoy if Path(path) == target else path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat_before_swap)
    return target


def test_a_fifo_swapped_in_after_the_check_is_refused_without_blocking(swapped_after_first_look):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    os.mkfifo(swapped_after_first_look)

    def _alarm(*_):
        raise TimeoutError("open() blocked on a FIFO: it was not opened non-blocking")

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(2)
    try:
        with pytest.raises(ImageError) as e:
            prepare(swapped_after_first_look)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert str(e.value) == f"{swapped_after_first_look}: is a named pipe (FIFO), not an image file; not read"


def test_a_file_deleted_after_the_check_is_reported(swapped_after_first_look):
    with pytest.raises(ImageError) as e:
        prepare(swapped_after_first_look)  # nothing there at open()
    assert str(e.value) == f"{swapped_after_first_look}: cannot read (No such file or directory)"


def test_the_descriptor_handed_to_the_decoder_blocks(tmp_path):
    """Opened non-blocking (a FIFO cannot hang the open), then switched back for the decoder."""
    path = tmp_path / "ok.png"
    Image.new("RGB", (4, 4)).save(path)
    fd = P._open_regular(path)
    try:
        assert os.get_blocking(fd)
        assert not os.get_inheritable(fd)
    finally:
        os.close(fd)


def test_decoder_errors_name_the_file_and_the_decoders_reason(tmp_path):
    path = tmp_path / "cut.png"
    path.write_bytes(encode(Image.fromarray(scene()), "PNG")[:400])
    with pytest.raises(ImageError) as e:
        prepare(path)
    assert str(e.value) == f"{path}: corrupt or truncated image (image file is truncated)"


def test_pillows_own_bomb_guard_is_reported_as_a_bomb(tmp_path):
    path = tmp_path / "bomb.png"  # 400 MP declared: over twice Pillow's MAX_IMAGE_PIXELS, refused by Image.open
    path.write_bytes(png_bytes(20000, 20000, zlib.compress(b"\x00")))
    with pytest.raises(ImageError) as e:
        prepare(path)
    assert str(e.value) == f"{path}: image dimensions are too large (decompression bomb guard)"


def test_our_pixel_limit_message_names_the_file(tmp_path):
    over = tmp_path / "over.png"
    over.write_bytes(png_bytes(8000, 8001, zlib.compress(b"\x00")))
    with pytest.raises(ImageError) as e:
        prepare(over)
    assert str(e.value) == f"{over}: 8000x8001 is over the 64 MP limit (decompression bomb guard)"


def test_to_rgb_names_its_source_image_by_default():
    with pytest.raises(ImageError) as e:
        to_rgb(Image.new("RGB", (3, 0)))
    assert str(e.value) == "image: image has no pixels (3x0)"


def test_unconvertible_modes_are_an_image_error():
    """Pillow cannot convert premultiplied grey+alpha (La) to anything; that is a refusal, not a crash."""
    with pytest.raises(ImageError) as e:
        to_rgb(Image.new("La", (2, 2)), source="la.png")
    assert str(e.value) == "la.png: colour mode La cannot be converted to RGB (conversion from La to L not supported)"


def test_to_input_refuses_what_is_not_rgb():
    with pytest.raises(ImageError) as e:
        to_input(Image.new("L", (40, 40)))
    assert str(e.value) == "internal: preprocessing produced shape (32, 32)"


def test_an_rgb_image_is_returned_as_is():
    img = Image.new("RGB", (5, 4), (1, 2, 3))
    assert to_rgb(img) is img  # no copy of a big photo


def test_the_first_frame_even_when_the_image_was_left_on_another(tmp_path):
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (4, 4), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50)
    for frame in (1, 2):
        with Image.open(path) as img:
            img.seek(frame)
            assert np.asarray(to_rgb(img))[0, 0].tolist() == [255, 0, 0], frame


@pytest.mark.parametrize(
    ("mode", "size", "reduced"),
    [
        # The largest reduction r in (1, 2, 4, 8) with min(w, h) / r >= 128 (4x the model input):
        ("RGB", (800, 1100), (200, 275)),  # 800 / 128 = 6.25 -> r = 4
        ("RGB", (1100, 800), (275, 200)),
        ("RGB", (1100, 2000), (138, 250)),  # 1100 / 128 = 8.6 -> r = 8; sizes round up
        ("RGB", (2000, 1100), (250, 138)),
        ("L", (1100, 800), (275, 200)),
        ("CMYK", (800, 1100), (200, 275)),
        ("RGB", (200, 300), (200, 300)),  # under 256 on a side: no reduction
    ],
)
def test_jpegs_are_decoded_at_the_documented_reduction(tmp_path, mode, size, reduced):
    path = tmp_path / "photo.jpg"
    colour = {"RGB": (10, 120, 230), "L": 77, "CMYK": (0, 0, 0, 0)}[mode]
    Image.new(mode, size, colour).save(path, quality=95)
    img = P.load_image(path)
    assert img.size == reduced and img.mode == "RGB"
    want = {"RGB": (10, 120, 230), "L": (77, 77, 77), "CMYK": (255, 255, 255)}[mode]
    assert np.abs(np.asarray(img, dtype=int) - want).max() <= 2


def test_exif_orientation_reads_the_tag():
    img = Image.new("RGB", (2, 2))
    assert P.exif_orientation(img) == 1  # absent
    img.getexif()[0x0112] = 6
    assert P.exif_orientation(img) == 6
    img.getexif()[0x0112] = "6"  # a damaged tag of the wrong type means no orientation
    assert P.exif_orientation(img) == 1
    broken = Image.new("RGB", (2, 2))
    broken.info["exif"] = b"Exif\x00\x00garbage!"  # Pillow cannot parse this EXIF block at all
    assert P.exif_orientation(broken) == 1


def test_a_damaged_exif_block_is_no_orientation_not_a_bad_image(tmp_path):
    path = tmp_path / "exif.png"
    arr = np.zeros((2, 3, 3), np.uint8)
    arr[:, 0] = (200, 0, 0)  # left column red: a mirror or rotation would move it
    Image.fromarray(arr).save(path, exif=b"Exif\x00\x00garbage!")
    got = np.asarray(P.load_image(path))
    np.testing.assert_array_equal(got, arr)


@pytest.mark.parametrize(
    ("values", "want"),
    [
        ([[0, 128, 255, 256]], [[0, 0, 0, 1]]),  # max 256 does not fit: as 16-bit (>> 8)
        ([[0, 128, 256, 384, 511]], [[0, 0, 1, 1, 1]]),  # rounding down, as >> 8 does
        ([[-5, -1, 0, 100, 255]], [[0, 0, 0, 100, 255]]),  # negatives are 0
    ],
)
def test_32bit_integer_images_at_the_8bit_boundary(values, want):
    out = np.asarray(to_rgb(_mode_image("I", values)))
    np.testing.assert_array_equal(out[..., 0], np.array(want, np.uint8))


def test_float_images_round_half_up():
    out = np.asarray(to_rgb(_mode_image("F", [[0.004, 0.0061, 0.3, 1.0]])))  # x 255 = 1.02, 1.56, 76.5, 255
    np.testing.assert_array_equal(out[..., 0], np.array([[1, 2, 77, 255]], np.uint8))


def test_palette_alpha_is_composited_on_white():
    img = Image.new("P", (2, 1))
    img.putpalette([200, 100, 50, 0] + [10, 20, 30, 255] * 255, "RGBA")  # index 0 fully transparent
    img.putpixel((1, 0), 1)
    assert np.asarray(to_rgb(img)).tolist() == [[[255, 255, 255], [10, 20, 30]]]


@pytest.mark.parametrize(
    ("img", "want"),
    [
        # (200,100,50) at alpha 128 on white: c * 128/255 + 255 * 127/255, rounded
        (Image.new("PA", (1, 1), (0, 128)), [227, 177, 152]),
        (Image.new("LA", (1, 1), (200, 128)), [227, 227, 227]),
        (Image.new("RGBa", (1, 1), (100, 50, 25, 128)), [227, 177, 152]),  # premultiplied: (199, 99, 49) / 128
    ],
    ids=["PA", "LA", "RGBa"],
)
def test_every_alpha_mode_is_composited_on_white(img, want):
    if img.mode == "PA":
        img.putpalette([200, 100, 50] * 256)
    assert np.asarray(to_rgb(img))[0, 0].tolist() == want


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_a_colour_key_is_composited_on_white(tmp_path, mode):
    arr = np.array([[[0, 0, 0], [90, 90, 90]]], np.uint8)
    img = Image.fromarray(arr if mode == "RGB" else arr[..., 0])
    path = tmp_path / "key.png"
    img.save(path, transparency=(0, 0, 0) if mode == "RGB" else 0)
    assert np.asarray(P.load_image(path)).tolist() == [[[255, 255, 255], [90, 90, 90]]]


def test_an_mpo_photo_is_decoded_at_the_jpeg_reduction(tmp_path):
    """Phone cameras write JPEGs with an MPF segment, which Pillow opens as MPO: still a JPEG."""
    path = tmp_path / "phone.jpg"
    first, second = Image.new("RGB", (1100, 800), (10, 120, 230)), Image.new("RGB", (1100, 800), (200, 0, 0))
    first.save(path, "MPO", save_all=True, append_images=[second], quality=95)
    with Image.open(path) as img:
        assert img.format == "MPO" and img.n_frames == 2
    img = P.load_image(path)
    assert img.size == (275, 200)  # as a plain 1100x800 JPEG (test_jpegs_are_decoded_at_the_documented_reduction)
    assert np.abs(np.asarray(img, dtype=int) - (10, 120, 230)).max() <= 2  # the first frame


@pytest.mark.parametrize(("key", "want"), [(0, [255, 255, 255]), (1, [0, 0, 0])])
def test_a_colour_key_on_a_1bit_png_is_composited_on_white(tmp_path, key, want):
    img = Image.new("1", (2, 1))
    img.putpixel((1, 0), 1)  # black, white
    path = tmp_path / "key1.png"
    img.save(path, transparency=key)
    with Image.open(path) as check:
        assert check.mode == "1" and "transparency" in check.info
    # Keyed black becomes white; with white keyed, black stays black (white on white is white).
    assert np.asarray(P.load_image(path)).tolist() == [[want, [255, 255, 255]]]


def _grey_png(values: list[int], bits: int, key: int | None) -> bytes:
    """One row of grey at 2 or 4 bits a pixel, with a tRNS key or none (Pillow writes grey only at 1, 8 or 16)."""
    bitstring = "".join(format(v, f"0{bits}b") for v in values)
    bitstring += "0" * (-len(bitstring) % 8)
    row = b"\0" + int(bitstring, 2).to_bytes(len(bitstring) // 8, "big")  # filter type 0
    trns = b"" if key is None else png_chunk(b"tRNS", key.to_bytes(2, "big"))
    return png_bytes(len(values), 1, zlib.compress(row), color_type=0, depth=bits, extra=trns)


@pytest.mark.parametrize("bits", [2, 4])
def test_a_colour_key_on_a_2_or_4bit_grey_png_hits_its_pixels_only(tmp_path, bits):
    """Pillow widens these pixels to 8 bits (x85, x17) but not their key: the key must be widened too."""
    top = 2**bits - 1
    values = list(range(top + 1))
    path = tmp_path / f"key{bits}.png"
    path.write_bytes(_grey_png(values, bits, key=1))
    with Image.open(path) as check:
        assert check.mode == "L" and check.info["transparency"] == 1  # the key as the file stores it
    out = np.asarray(P.load_image(path))
    step = 255 // top
    want = [255 if v == 1 else v * step for v in values]  # only value 1 is keyed, onto white
    assert out[..., 0].tolist() == [want] and out.std(axis=-1).max() == 0
    # With a key no pixel holds, or none, pixel 1 keeps its grey: the key is what turned it white.
    path.write_bytes(_grey_png(values, bits, key=top))
    assert np.asarray(P.load_image(path))[0, :2, 0].tolist() == [0, step]
    path.write_bytes(_grey_png(values, bits, key=None))
    assert np.asarray(P.load_image(path))[..., 0].tolist() == [[v * step for v in values]]


@pytest.mark.parametrize("mode", ["I;16", "I"])
def test_a_16bit_colour_key_is_matched_before_scaling(tmp_path, mode):
    """The key is a 16-bit value: 1000 is keyed, 1001 (also 3 after >> 8) is not."""
    values = [[0, 1000, 1001, 65535]]
    if mode == "I;16":  # through a real 16-bit grey PNG
        path = tmp_path / "key16.png"
        _mode_image("I;16", values).save(path, transparency=1000)
        with Image.open(path) as check:
            assert check.mode == "I;16" and check.info["transparency"] == 1000
        out = P.load_image(path)
    else:  # 32-bit images keep their key in info too (older Pillows open 16-bit PNGs as I)
        img = _mode_image("I", values)
        img.info["transparency"] = 1000
        out = to_rgb(img)
    assert np.asarray(out)[..., 0].tolist() == [[0, 255, 3, 255]]
    assert np.asarray(out).std(axis=-1).max() == 0  # grey
