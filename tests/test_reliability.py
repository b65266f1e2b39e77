"""Reliability and security, measured: hostile images, bad model files, corrupt data and checkpoints,
interrupted checkpoint writes.

What is asserted, and the figures behind it (2-core CPU machine, Pillow 13, onnxruntime 1.31):

- The hostile corpus (tests/hostile.py, ~300 files) goes through `prepare()` in a separate worker
  process, one file at a time with a 30 s limit each: every file gives a uint8 [32, 32, 3] array or
  an ImageError whose message holds the file name, exactly as the corpus expects. Crashes (the worker
  dying), hangs (no answer in 30 s) and other exception types are counted and must all be 0.
- `cifar10 predict CORPUS --json --provider cpu` prints exactly one JSON line per scanned file, with
  an error naming the file for each bad one and a label for each good one, exits 1 and does not
  crash. Its peak RSS (ru_maxrss of the child) measured ~340 MB with the 64 MP image in the corpus;
  the bound asserted is PREDICT_RSS_BOUND_MB = 1024 (3x headroom; the CPU provider is forced because
  a CUDA context alone can take hundreds of MB).
- Properties (hypothesis) of the preprocessing: any size 1..600 in modes L, LA, P, RGB, RGBA, I;16,
  CMYK, 1, F with random content gives uint8 [32, 32, 3]; a constant colour stays that colour; a fully
  transparent image becomes BACKGROUND; the margins cut away by the centre crop have no influence.
- Bad model files -> ContractError naming the file and the breach; the CLI exits non-zero with a
  one-line message. Bad checkpoints -> `cifar10 export` exits non-zero with a clear message. Corrupt
  and malicious CIFAR batches -> DatasetError naming the file, and the malicious pickle never runs.
- Checkpoint writes killed with SIGKILL at random moments always leave a target that loads with
  `torch.load(weights_only=True)`. A killed write can leave its own `.NAME.*.tmp` behind (harmless:
  never read, and the name never matches a checkpoint); they are counted and reported.

The figures are printed by `test_zz_report` (run pytest with -s to see them).
"""

from __future__ import annotations

import json
import os
import pickle
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cifar10kit.runtime.preprocess import BACKGROUND, ImageError, fit, prepare, to_input, to_rgb

from conftest import BIN, CLASSES, cli, needs_torch, synthetic_images, write_batch
from hostile import EXIF_STORE, build_corpus, restore_permissions

PER_FILE_TIMEOUT_S = 30
PREDICT_TIMEOUT_S = 300
PREDICT_RSS_BOUND_MB = 1024
FIGURES: dict[str, object] = {}


def _exe() -> str:
    return shutil.which("cifar10", path=str(BIN)) or str(BIN / "cifar10")


def _one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """A failed CLI run: non-zero exit, no traceback, one `error:` line naming what went wrong."""
    assert proc.returncode not in (0, None), proc
    assert proc.returncode > 0, f"killed by signal {-proc.returncode}"
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


# ----------------------------------------------------------------------------------------------
# The hostile corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile") / "corpus"
    cases = build_corpus(root)
    yield root, cases
    restore_permissions(root)


WORKER = r"""
import json, sys
from cifar10kit.runtime.preprocess import ImageError, prepare
for line in sys.stdin:
    path = bytes.fromhex(line.strip()).decode("utf-8", "surrogateescape")
    try:
        x = prepare(path)
        out = {"status": "ok", "shape": list(x.shape), "dtype": str(x.dtype), "pixels": x.tobytes().hex()}
    except ImageError as e:
        out = {"status": "error", "message": str(e)}
    except BaseException as e:
        out = {"status": "exception", "message": f"{type(e).__name__}: {e}"}
    print(json.dumps(out), flush=True)
"""


class _Worker:
    """prepare() in a child process: a crash kills only the child, a hang is cut off by a timeout."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)  # fmt: skip
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
def prepared(corpus):
    """{path: worker answer} for every case, plus timing."""
    _, cases = corpus
    results, worker = {}, _Worker()
    t0 = time.perf_counter()
    try:
        for case in cases:
            out = worker.ask(case.path, PER_FILE_TIMEOUT_S)
            if out["status"] in ("hang", "crash"):
                worker = _Worker()
            results[case.path] = out
    finally:
        worker.close()
    FIGURES["prepare_seconds"] = round(time.perf_counter() - t0, 1)
    return results


def _pixels(answer: dict) -> np.ndarray:
    return np.frombuffer(bytes.fromhex(answer["pixels"]), np.uint8).reshape(32, 32, 3)


def test_corpus_is_big_and_varied(corpus):
    _, cases = corpus
    assert len(cases) >= 200
    assert len({c.path for c in cases}) == len(cases)
    families = {c.family for c in cases}
    for family in ("empty", "truncated", "random-bytes", "bomb", "modes", "exif", "filesystem", "names"):
        assert family in families
    assert {c.expected for c in cases} == {"ok", "error"}


def test_prepare_never_crashes_hangs_or_raises_other_errors(corpus, prepared):
    _, cases = corpus
    bad = {c.name: prepared[c.path] for c in cases if prepared[c.path]["status"] not in ("ok", "error")}
    FIGURES["prepare_crashes"] = sum(v["status"] == "crash" for v in bad.values())
    FIGURES["prepare_hangs"] = sum(v["status"] == "hang" for v in bad.values())
    FIGURES["prepare_other_exceptions"] = sum(v["status"] == "exception" for v in bad.values())
    assert not bad


def test_prepare_outcomes_match_the_corpus(corpus, prepared):
    _, cases = corpus
    wrong = []
    for c in cases:
        got = prepared[c.path]
        if got["status"] != c.expected:
            wrong.append(f"{c.name!r} ({c.family}): expected {c.expected}, got {got}")
        elif got["status"] == "ok":
            if got["shape"] != [32, 32, 3] or got["dtype"] != "uint8":
                wrong.append(f"{c.name!r}: {got['shape']} {got['dtype']}")
        elif str(c.path) not in got["message"]:
            wrong.append(f"{c.name!r}: message does not name the file: {got['message']!r}")
    FIGURES["corpus_files"] = len(cases)
    FIGURES["classified"] = sum(prepared[c.path]["status"] == "ok" for c in cases)
    FIGURES["rejected"] = sum(prepared[c.path]["status"] == "error" for c in cases)
    assert not wrong, "\n".join(wrong)


def test_bombs_are_refused_as_bombs(corpus, prepared):
    _, cases = corpus
    for c in cases:
        if c.family == "bomb" and "chunk" not in c.name:
            msg = prepared[c.path]["message"]
            assert "limit" in msg or "bomb" in msg, msg


def test_ok_files_match_their_reference_pixels(corpus, prepared):
    """EXIF orientations 1..8 give the upright picture; links, odd names and wrong extensions give the
    same pixels as the plain file."""
    _, cases = corpus
    checked = 0
    for c in cases:
        if c.reference is None:
            continue
        ref = next(x for x in cases if x.path == c.reference)
        a, b = _pixels(prepared[c.path]).astype(float), _pixels(prepared[ref.path]).astype(float)
        diff = float(np.abs(a - b).mean())
        assert diff <= c.tolerance, f"{c.name}: mean |diff| {diff:.2f} > {c.tolerance}"
        checked += 1
    assert checked >= 30


def test_exif_check_would_catch_a_wrong_rotation(corpus, prepared):
    """The tolerance used for the EXIF cases is far below the difference any wrong orientation makes."""
    root, cases = corpus
    upright = _pixels(prepared[root / "exif-reference.png"]).astype(float)
    tolerance = max(c.tolerance for c in cases if c.name.startswith("exif-orientation-"))
    shown = np.asarray(Image.open(root / "exif-reference.png").convert("RGB"))
    for o in range(2, 9):
        wrong = to_input(Image.fromarray(np.ascontiguousarray(EXIF_STORE[o](shown)))).astype(float)
        assert float(np.abs(wrong - upright).mean()) > 5 * tolerance, o


def test_transparent_and_constant_files(corpus, prepared):
    root, _ = corpus
    for ext in ("png", "webp", "tif"):
        px = _pixels(prepared[root / f"fully-transparent.{ext}"])
        assert (px == np.array(BACKGROUND, np.uint8)).all(), ext
    assert (_pixels(prepared[root / "large-8000x8000.png"]) == np.array([10, 200, 30], np.uint8)).all()


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
        with pytest.raises(ImageError, match="pipe") as e:
            prepare(fifo)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert str(fifo) in str(e.value)


# ----------------------------------------------------------------------------------------------
# The whole corpus through `cifar10 predict DIR --json`

RSS_WRAPPER = (
    "import resource, subprocess, sys\n"
    "p = subprocess.run(sys.argv[1:])\n"
    "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(p.returncode)\n"
)


def test_predict_corpus_folder(corpus, trained_model):
    root, cases = corpus
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", RSS_WRAPPER, _exe(), "predict", str(root), "--json", "--model", str(trained_model),
         "--provider", "cpu"],
        capture_output=True, text=True, timeout=PREDICT_TIMEOUT_S, errors="surrogateescape",
    )  # fmt: skip
    FIGURES["predict_seconds"] = round(time.perf_counter() - t0, 1)
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-3000:])
    rss_mb = int(re.search(r"MAXRSS_KB (\d+)", proc.stderr).group(1)) / 1024
    FIGURES["predict_peak_rss_mb"] = round(rss_mb)
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    by_path = {}
    for row in rows:
        assert row["path"] not in by_path, f"two lines for {row['path']!r}"
        by_path[row["path"]] = row
    scanned = {str(c.path): c for c in cases if c.scanned}
    FIGURES["predict_rows"] = len(rows)
    assert set(by_path) == set(scanned), set(by_path) ^ set(scanned)
    for path, case in scanned.items():
        row = by_path[path]
        if case.expected == "ok":
            assert row["error"] is None and row["label"] in CLASSES, row
            assert len(row["top_k"]) == 3 and 0.0 <= row["probability"] <= 1.0, row
        else:
            assert row["label"] is None and path in row["error"], row
    assert rss_mb < PREDICT_RSS_BOUND_MB, f"peak RSS {rss_mb:.0f} MB"


def test_predict_text_output_with_undecodable_names(corpus, trained_model, tmp_path):
    """Human-readable output to a strict UTF-8 stdout (the usual desktop locale) and --csv must
    survive file names that are not valid UTF-8."""
    root, _ = corpus
    folder = tmp_path / "names"
    folder.mkdir()
    for name in (b"caf\xe9.png", b"ok.png"):
        shutil.copyfile(root / "reference.png", folder / os.fsdecode(name))
    env = {"PYTHONIOENCODING": "utf-8"}  # strict, as under LANG=en_US.UTF-8
    proc = cli("predict", str(folder), "--model", str(trained_model), "--provider", "cpu",
               "--csv", str(tmp_path / "out.csv"), env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------------------------
# Properties of the preprocessing (hypothesis)

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
@given(mode=st.sampled_from(("L", "LA", "P", "RGB", "RGBA", "I;16", "1")), w=st.integers(1, 200),
       h=st.integers(1, 200), seed=st.integers(0, 2**32 - 1))  # fmt: skip
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


# ----------------------------------------------------------------------------------------------
# Bad model files


def _contract_model(path: Path, *, input_name="pixels", dtype="uint8", shape=("N", 32, 32, 3), outputs=10,
                    output_name="probabilities", output_dtype="float", meta=None, drop=(),
                    extra_input=False):  # fmt: skip
    """A tiny ONNX model that follows the contract unless told to break one thing."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from cifar10kit.runtime import contract as C

    types = {"uint8": TensorProto.UINT8, "float": TensorProto.FLOAT, "double": TensorProto.DOUBLE}
    nodes = [
        helper.make_node("Cast", [input_name], ["x"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["x", "axes"], ["m"], keepdims=0),
        helper.make_node("Unsqueeze", ["m", "one"], ["m1"]),
        helper.make_node("MatMul", ["m1", "w"], ["z"]),
        helper.make_node("Softmax", ["z"], ["p"], axis=1),
        helper.make_node("Cast", ["p"], [output_name], to=types[output_dtype]),
    ]
    inits = [
        numpy_helper.from_array(np.array([1, 2, 3], np.int64), "axes"),
        numpy_helper.from_array(np.array([1], np.int64), "one"),
        numpy_helper.from_array(np.linspace(-1, 1, outputs, dtype=np.float32)[None], "w"),
    ]
    inputs = [helper.make_tensor_value_info(input_name, types[dtype], list(shape))]
    if extra_input:
        inputs.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, [1]))
    out = [helper.make_tensor_value_info(output_name, types[output_dtype], ["N", outputs])]
    graph = helper.make_graph(nodes, "contract-test", inputs, out, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    values = {
        C.KEY_CONTRACT: C.CONTRACT_VERSION,
        C.KEY_CLASS_NAMES: json.dumps(list(CLASSES)),
        C.KEY_INPUT_LAYOUT: C.INPUT_LAYOUT,
        C.KEY_ARCHITECTURE: "test",
        C.KEY_DATASET: "CIFAR-10",
        C.KEY_TEST_ACCURACY: "",
        C.KEY_VERSION: "0",
        C.KEY_CREATED: "2024-01-01T00:00:00Z",
        **(meta or {}),
    }
    for key, value in values.items():
        if key not in drop:
            model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


def test_the_test_model_follows_the_contract(tmp_path):
    from cifar10kit.runtime.session import Classifier

    model = Classifier(_contract_model(tmp_path / "good.onnx"), provider="cpu")
    probs = model.run(np.zeros((2, 32, 32, 3), np.uint8)).probs
    assert probs.shape == (2, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)


BREACHES = {
    "nchw-shape": ({"shape": ("N", 3, 32, 32)}, "input shape"),
    "float-input": ({"dtype": "float"}, "tensor(uint8)"),
    "input-name": ({"input_name": "image"}, "one input named 'pixels'"),
    "two-inputs": ({"extra_input": True}, "one input named 'pixels'"),
    "no-probabilities": ({"output_name": "logits"}, "no 'probabilities' output"),
    "double-output": ({"output_dtype": "double"}, "not float32"),
    "no-metadata": (
        {
            "drop": (
                "cifar10kit.contract",
                "class_names",
                "input_layout",
                "architecture",
                "dataset",
                "test_accuracy",
                "version",
                "created",
            )
        },
        "metadata is missing",
    ),  # fmt: skip
    "no-contract-key": ({"drop": ("cifar10kit.contract",)}, "cifar10kit.contract"),
    "contract-v2": ({"meta": {"cifar10kit.contract": "2"}}, "contract version '2'"),
    "class-count": ({"meta": {"class_names": json.dumps(list(CLASSES[:5]))}}, "10 output columns but 5 class names"),
    "class-names-not-json": ({"meta": {"class_names": "cat,dog"}}, "class_names is not JSON"),
    "class-names-empty": ({"meta": {"class_names": "[]"}}, "class_names must be a non-empty"),
    "accuracy-not-number": ({"meta": {"test_accuracy": "high"}}, "test_accuracy is not a number"),
}


@pytest.fixture(scope="module")
def bad_models(tmp_path_factory, trained_model):
    d = tmp_path_factory.mktemp("bad-models")
    data = trained_model.read_bytes()
    files = {
        "truncated": (d / "truncated.onnx", data[: len(data) // 2], "not a loadable ONNX model"),
        "random": (d / "random.onnx", np.random.default_rng(5).bytes(4096), "not a loadable ONNX model"),
        "empty": (d / "empty.onnx", b"", "not a loadable ONNX model"),
        "text": (d / "text.onnx", b"this is not a model\n", "not a loadable ONNX model"),
    }
    out = {}
    for key, (path, content, needle) in files.items():
        path.write_bytes(content)
        out[key] = (path, needle)
    for key, (kw, needle) in BREACHES.items():
        out[key] = (_contract_model(d / f"{key}.onnx", **kw), needle)
    (d / "folder.onnx").mkdir()
    out["folder"] = (d / "folder.onnx", "is a folder")
    out["missing"] = (d / "missing.onnx", "no such model file")
    return out


@pytest.mark.parametrize("kind", ["truncated", "random", "empty", "text", *BREACHES, "folder", "missing"])
def test_bad_model_raises_contract_error(bad_models, kind):
    from cifar10kit.runtime.contract import ContractError
    from cifar10kit.runtime.session import Classifier

    path, needle = bad_models[kind]
    with pytest.raises(ContractError) as e:
        Classifier(path, provider="cpu")
    assert str(path) in str(e.value) and needle in str(e.value), str(e.value)


@pytest.mark.parametrize("kind", ["truncated", "random", "empty", "nchw-shape", "float-input", "no-metadata",
                                  "contract-v2", "class-count"])  # fmt: skip
def test_predict_with_bad_model_is_a_one_line_error(bad_models, corpus, kind):
    root, _ = corpus
    path, needle = bad_models[kind]
    proc = cli("predict", "--model", str(path), "--provider", "cpu", str(root / "reference.png"), timeout=120)
    _one_line_error(proc, str(path), needle)


# ----------------------------------------------------------------------------------------------
# Bad checkpoints


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def bad_checkpoints(tmp_path_factory, trained_run):
    import torch

    d = tmp_path_factory.mktemp("bad-ckpt")
    good = torch.load(trained_run / "model.pt", map_location="cpu", weights_only=True)
    marker = d / "MARKER"
    raw = (trained_run / "model.pt").read_bytes()
    made = {
        "foreign-dict": {"conv.weight": torch.randn(8, 3, 3, 3), "fc.weight": torch.randn(10, 8)},
        "other-widths": {**good, "widths": [w * 2 for w in good["widths"]]},
        "other-classes": {**good, "class_names": list(CLASSES[:5])},
        "tensor-top-level": torch.randn(3, 3),
        "missing-widths": {k: v for k, v in good.items() if k != "widths"},
        "two-widths": {**good, "widths": list(good["widths"][:2])},
    }
    out = {}
    for key, obj in made.items():
        torch.save(obj, d / f"{key}.pt")
        out[key] = d / f"{key}.pt"
    (d / "truncated.pt").write_bytes(raw[: len(raw) // 2])
    (d / "random.pt").write_bytes(np.random.default_rng(9).bytes(8192))
    (d / "empty.pt").write_bytes(b"")
    torch.save({"format": "cifar10kit-checkpoint", "model": _Evil(marker)}, d / "evil.pt")
    torch.save({"model": _Evil(marker)}, d / "evil-legacy.pt", _use_new_zipfile_serialization=False)
    for key in ("truncated", "random", "empty", "evil", "evil-legacy"):
        out[key] = d / f"{key}.pt"
    return out, marker


CKPT_OK_ERRORS = ["foreign-dict", "other-widths", "other-classes", "tensor-top-level", "truncated", "random", "evil",
                  "evil-legacy", "missing-widths", "two-widths", "empty"]  # fmt: skip


@needs_torch
@pytest.mark.parametrize(
    "kind",
    CKPT_OK_ERRORS,
)
def test_bad_checkpoint_is_refused_by_export(bad_checkpoints, tmp_path, kind):
    from cifar10kit.export.exporter import export
    from cifar10kit.train.checkpoint import CheckpointError

    files, marker = bad_checkpoints
    out = tmp_path / "out.onnx"
    with pytest.raises(CheckpointError) as e:
        export(files[kind], out, verify_n=10, log=lambda *_: None)
    assert str(files[kind]) in str(e.value)
    assert not out.exists()
    assert not marker.exists(), "the malicious checkpoint ran code"


@needs_torch
@pytest.mark.parametrize("kind", ["foreign-dict", "other-widths", "evil"])
def test_export_cli_with_bad_checkpoint(bad_checkpoints, tmp_path, kind):
    files, marker = bad_checkpoints
    proc = cli("export", str(files[kind]), "-o", str(tmp_path / "m.onnx"), "--verify-n", "10", timeout=300)
    line = _one_line_error(proc, str(files[kind]))
    assert "checkpoint" in line or "weights do not fit" in line, line
    assert not (tmp_path / "m.onnx").exists()
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------
# Corrupt and malicious CIFAR batches; labelled folders


def _malicious(marker: Path, protocol: int, top_level: bool = False) -> bytes:
    evil = _Evil(marker)
    obj = evil if top_level else {b"batch_label": b"x", b"labels": [1, 2], b"data": evil}
    return pickle.dumps(obj, protocol=protocol)


def test_corrupt_and_malicious_batches(tmp_path):
    from cifar10kit.runtime.dataset import DatasetError, read_batch, read_meta

    marker = tmp_path / "MARKER"
    images, labels = synthetic_images(20, 3)
    write_batch(tmp_path / "good", images, labels)
    good = (tmp_path / "good").read_bytes()
    cases = {
        "empty": b"",
        "truncated-half": good[: len(good) // 2],
        "truncated-last-byte": good[:-1],
        "random": np.random.default_rng(2).bytes(5000),
        "text": b"data_batch_1\n",
        "not-a-dict": pickle.dumps([1, 2, 3], protocol=3),
        "wrong-shape": pickle.dumps({b"data": np.zeros((20, 100), np.uint8), b"labels": list(range(20))}, 3),
        "float-data": pickle.dumps({b"data": np.zeros((20, 3072), np.float32), b"labels": list(range(20))}, 3),
        "label-count": pickle.dumps({b"data": np.zeros((20, 3072), np.uint8), b"labels": [0] * 3}, 3),
    }
    for protocol in (0, 1, 2, 3, 4, 5):
        cases[f"evil-p{protocol}"] = _malicious(marker, protocol)
        cases[f"evil-top-p{protocol}"] = _malicious(marker, protocol, top_level=True)
    for name, data in cases.items():
        f = tmp_path / name
        f.write_bytes(data)
        with pytest.raises(DatasetError) as e:
            read_batch(f)
        assert str(f) in str(e.value), (name, str(e.value))
    meta = tmp_path / "meta" / "batches.meta"
    meta.parent.mkdir()
    meta.write_bytes(_malicious(marker, 2, top_level=True))
    with pytest.raises(DatasetError, match="batches.meta"):
        read_meta(meta.parent)
    assert not marker.exists(), "unpickling ran code"


def _cifar_dir(root: Path, test_batch: bytes) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    (folder / "test_batch").write_bytes(test_batch)
    return root


def test_evaluate_with_malicious_batch(tmp_path, trained_model):
    marker = tmp_path / "MARKER"
    data = _cifar_dir(tmp_path / "d", _malicious(marker, 3))
    proc = cli("evaluate", "--model", str(trained_model), "--provider", "cpu", "--data-dir", str(data), timeout=120)
    _one_line_error(proc, "test_batch", "not a valid CIFAR-10 batch")
    assert proc.returncode == 2
    assert not marker.exists()


@pytest.mark.parametrize("label", [99, -1])
def test_evaluate_with_labels_out_of_range(tmp_path, trained_model, label):
    images, _ = synthetic_images(20, 4)
    write_batch(tmp_path / "b", images, np.full(20, label))
    data = _cifar_dir(tmp_path / "d", (tmp_path / "b").read_bytes())
    proc = cli("evaluate", "--model", str(trained_model), "--provider", "cpu", "--data-dir", str(data), timeout=120)
    _one_line_error(proc, "test_batch")


def test_evaluate_cifar_with_a_model_of_other_classes(tmp_path, tiny_cifar):
    """A 5-class model on the 10-class CIFAR-10 test batch: a clear error, not a reshape traceback."""
    model = _contract_model(tmp_path / "five.onnx", outputs=5, meta={"class_names": json.dumps(list(CLASSES[:5]))})
    proc = cli("evaluate", "--model", str(model), "--provider", "cpu", "--data-dir", str(tiny_cifar), timeout=120)
    _one_line_error(proc, "class")


def test_evaluate_folder_with_unknown_class(tmp_path, trained_model, corpus):
    root, _ = corpus
    for cls in ("cat", "unicorn"):
        (tmp_path / "f" / cls).mkdir(parents=True)
        shutil.copyfile(root / "reference.png", tmp_path / "f" / cls / "x.png")
    proc = cli("evaluate", "--model", str(trained_model), "--provider", "cpu", "--folder", str(tmp_path / "f"),
               timeout=120)  # fmt: skip
    _one_line_error(proc, "unicorn", "not classes of this model")
    assert proc.returncode == 2


def test_evaluate_folder_skips_hostile_files(tmp_path, trained_model, corpus):
    """Broken files inside a labelled folder are skipped with their name; the rest is evaluated."""
    root, _ = corpus
    cat = tmp_path / "f" / "cat"
    cat.mkdir(parents=True)
    shutil.copyfile(root / "reference.png", cat / "good.png")
    shutil.copyfile(root / "truncated-50pct.png", cat / "broken.png")
    if hasattr(os, "mkfifo"):
        os.mkfifo(cat / "pipe.png")
    proc = cli("evaluate", "--model", str(trained_model), "--provider", "cpu", "--folder", str(tmp_path / "f"),
               "--json", timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["n"] == 1
    assert "broken.png" in proc.stderr and "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------------------------
# Atomic checkpoint writes under SIGKILL

SAVER = r"""
import signal, sys, torch
from cifar10kit.train.checkpoint import atomic_save
# Ctrl+C must raise KeyboardInterrupt here even when the test runner was started in the background,
# where the shell sets SIGINT to "ignore" and children inherit that.
signal.signal(signal.SIGINT, signal.default_int_handler)
target, start = sys.argv[1], int(sys.argv[2])
big = torch.empty(8_000_000)  # 32 MB of float32
i = start
while True:
    i += 1
    big.fill_(float(i))
    atomic_save({"n": i, "w": big}, target)
    print(i, flush=True)
"""


@needs_torch
def test_atomic_save_survives_sigkill(tmp_path):
    import torch

    target = tmp_path / "last.pt"
    rng = random.Random(1234)
    kills, last_n, leftovers = 7, 0, []
    for _ in range(kills):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(target), str(last_n)], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)  # fmt: skip
        first = proc.stdout.readline()  # one complete save, then a random moment
        assert first.strip(), "saver did not start"
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done = [int(x) for x in [first, *proc.stdout.read().split()] if str(x).strip()]
        proc.stdout.close()
        obj = torch.load(target, map_location="cpu", weights_only=True)
        n = int(obj["n"])
        assert done[-1] <= n <= done[-1] + 1, (done[-1], n)  # the last reported save, or one just renamed
        w = obj["w"]
        assert w.numel() == 8_000_000 and float(w[0]) == float(w[-1]) == float(w.min()) == float(w.max()) == n
        last_n = n
        others = sorted(p.name for p in tmp_path.iterdir() if p != target)
        assert all(re.fullmatch(r"\.last\.pt\..+\.tmp", name) for name in others), others
        leftovers.append(len(others))
    FIGURES["atomic_kills"] = kills
    FIGURES["atomic_stale_tmp_files"] = leftovers[-1]
    FIGURES["atomic_stale_tmp_mb"] = round(sum(p.stat().st_size for p in tmp_path.glob(".last.pt.*.tmp")) / 2**20)
    assert leftovers[-1] <= kills


@needs_torch
def test_atomic_save_cleans_up_on_interrupt(tmp_path):
    """SIGINT (Ctrl+C) is an exception in Python: the temporary file is removed."""
    target = tmp_path / "last.pt"
    proc = subprocess.Popen([sys.executable, "-c", SAVER, str(target), "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    assert proc.stdout.readline().strip()
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    proc.stdout.close()
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


# ----------------------------------------------------------------------------------------------


def test_zz_report(capsys):
    """The figures for the README (pytest -s shows them)."""
    with capsys.disabled():
        print("\nreliability figures:", json.dumps(FIGURES, sort_keys=True))
    assert FIGURES.get("prepare_crashes", 0) == 0 and FIGURES.get("prepare_hangs", 0) == 0
