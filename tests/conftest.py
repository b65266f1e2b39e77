"""Shared fixtures: tiny CIFAR-format data, a tiny trained + exported model, the hostile image corpus,
small hand-made contract models, and the real CIFAR-10 when `$CIFAR10_DATA` points at it.

Real data: tests that need it take the `shared_data` fixture. Without `$CIFAR10_DATA` (the folder
holding cifar-10-batches-py/) they skip; under CI (`CI=true`) they fail instead, so a CI run whose
data went missing cannot pass by skipping them."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
# OpenMP threads that wait passively: with two test processes on two cores, spinning ones (the
# default) steal the core the other process needs, and the suite ran slower in parallel than serial.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
DATA_ENV = "CIFAR10_DATA"
BIN = Path(sys.executable).parent
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def has_torch() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


needs_torch = pytest.mark.skipif(not has_torch(), reason="needs the [train] extra (torch)")


def real_data_dir() -> Path | None:
    """`$CIFAR10_DATA` (the folder holding cifar-10-batches-py/, or that folder itself) when it holds
    the test batch; None otherwise."""
    env = os.environ.get(DATA_ENV)
    if not env:
        return None
    root = Path(env)
    if root.name == "cifar-10-batches-py":
        root = root.parent
    return root if (root / "cifar-10-batches-py" / "test_batch").is_file() else None


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    d = real_data_dir()
    if d is None:
        env = os.environ.get(DATA_ENV)
        why = f"${DATA_ENV}={env} holds no cifar-10-batches-py/test_batch" if env else f"${DATA_ENV} is not set"
        if in_ci():
            pytest.fail(f"real CIFAR-10 needed and missing under CI: {why}", pytrace=False)
        pytest.skip(f"real CIFAR-10 not found: {why}")
    return d


# ----------------------------------------------------------------------------------------------
# Tiny data in the official format


def synthetic_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable fake CIFAR: each class has its own colour and stripe direction, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    colours = np.array([[(c * 37) % 256, (c * 91) % 256, (c * 151) % 256] for c in range(10)], dtype=np.float64)
    yy, xx = np.mgrid[0:32, 0:32]
    images = np.empty((n, 32, 32, 3), dtype=np.uint8)
    for i, c in enumerate(labels):
        stripes = np.sin((xx * np.cos(c * 0.6) + yy * np.sin(c * 0.6)) * 0.8)[..., None]
        img = colours[c] * (0.6 + 0.4 * stripes) + rng.normal(0, 20, (32, 32, 3))
        images[i] = np.clip(img, 0, 255).astype(np.uint8)
    return images, labels


def write_batch(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """A batch file laid out like the official ones: {data: uint8 [N, 3072] (CHW), labels: [int]}."""
    flat = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    obj = {
        b"batch_label": b"synthetic",
        b"labels": [int(v) for v in labels],
        b"data": flat,
        b"filenames": [f"img_{i}.png".encode() for i in range(len(images))],
    }
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=3)


def make_tiny_cifar(root: Path, per_batch: int = 200, test: int = 200) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        write_batch(folder / f"data_batch_{i}", *synthetic_images(per_batch, i))
    write_batch(folder / "test_batch", *synthetic_images(test, 99))
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CLASSES], b"num_vis": 3072}, f, protocol=3)
    return root


@pytest.fixture(scope="session")
def tiny_cifar(tmp_path_factory) -> Path:
    return Path(built_once(tmp_path_factory, "tiny-cifar", lambda d: str(make_tiny_cifar(d))))


# ----------------------------------------------------------------------------------------------
# A tiny trained model, exported through the real pipeline


def built_once(tmp_path_factory, name: str, build):
    """build(folder) -> a JSON-able result, run once per test session and shared by pytest-xdist's
    workers: the first to ask builds it under a lock in the session's common temporary folder, the
    others wait for it and read its result. (Training and exports are the suite's costliest set-up.)"""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if root.name == f"popen-{os.environ.get('PYTEST_XDIST_WORKER')}":
        root = root.parent  # an xdist worker's own folder sits in the run's (a pytest it starts does not)
    folder, result = root / "built" / name, root / "built" / f"{name}.json"
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if not result.exists():
            folder.mkdir()
            result.write_text(json.dumps(build(folder)))
    return json.loads(result.read_text())


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_cifar) -> Path:
    if not has_torch():
        pytest.skip("needs the [train] extra (torch)")

    def build(out: Path) -> str:
        from cifar10kit.train.trainer import make_config, train

        cfg = make_config(
            "smoke", data_dir=str(tiny_cifar), out=str(out), name="tiny", epochs=2, subset=1000, batch_size=250
        )
        return str(train(cfg))

    return Path(built_once(tmp_path_factory, "trained-run", build))


@pytest.fixture(scope="session")
def trained_model(export_variant) -> Path:
    """Path of a small .onnx file that follows the contract: trained_run exported as `cifar10 export`
    would by default (fp32; the smoke preset trains without TTA, so none in the graph)."""
    return export_variant("fp32", "none")[0]


@pytest.fixture(scope="session")
def export_variant(tmp_path_factory, trained_run, tiny_cifar):
    """export_variant(precision, tta) -> (path, export result): each variant of trained_run exported once
    per session and shared by the tests that read it (exports dominate the suite's time)."""

    def get(precision: str, tta: str) -> tuple[Path, dict]:
        def build(folder: Path) -> list:
            from cifar10kit.export.exporter import export

            path = folder / "model.onnx"
            result = export(
                trained_run,
                path,
                data_dir=str(tiny_cifar),
                tta=tta,
                precision=precision,
                max_drop=0.2,
                calibration_n=128,  # int8 ranges from 2 batches: the tiny net needs no more
                log=lambda *_: None,
            )
            return [str(path), result]

        path, result = built_once(tmp_path_factory, f"variant-{precision}-{tta}", build)
        return Path(path), result

    return get


@pytest.fixture(scope="session")
def calibrated_export(tmp_path_factory, trained_run):
    """(data folder, .onnx path, export result): trained_run exported with flip TTA on tiny data with
    1,000 labelled test images, enough for the exporter to fit a temperature and a threshold."""

    def build(folder: Path) -> list:
        from cifar10kit.export.exporter import export

        data = make_tiny_cifar(folder / "data", per_batch=20, test=1000)
        path = folder / "calibrated.onnx"
        return [str(data), str(path), export(trained_run, path, data_dir=str(data), tta="flip", log=lambda *_: None)]

    data, path, result = built_once(tmp_path_factory, "calibrated-export", build)
    return Path(data), Path(path), result


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory) -> Path:
    """The project's wheel, built from a copy of the sources (the shared tree stays untouched)."""

    def build(folder: Path) -> str:
        src = folder / "src"
        for name in ("cli", "runtime", "train", "export", "gui"):
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(REPO / name, src / name)
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
        subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", folder / "whl", src], check=True)
        return str(next((folder / "whl").glob("*.whl")))

    return Path(built_once(tmp_path_factory, "wheel", build))


# ----------------------------------------------------------------------------------------------
# Running the installed console script


def cli(*args: str, env: dict | None = None, timeout: float = 300, cwd: Path | None = None):
    """Run `cifar10 ARGS` as a user would; returns the CompletedProcess (text)."""
    exe = shutil.which("cifar10", path=str(BIN))
    # Without the console script (an install with pip --target, as gpu_check.sh makes): the module.
    cmd = [exe] if exe else [sys.executable, "-m", "cifar10kit"]
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout, env=full_env, cwd=cwd)


def smoke_train_args(data_dir: Path, out: Path, *extra: str) -> list[str]:
    """`cifar10 train` arguments for a `smoke` run on data_dir, writing under out."""
    return ["train", "--preset", "smoke", "--data-dir", str(data_dir), "--out", str(out), *extra]


def one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """A failed CLI run: non-zero exit, no traceback, one `error:` line naming what went wrong."""
    assert proc.returncode > 0, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


# ----------------------------------------------------------------------------------------------
# The hostile image corpus (tests/hostile.py), built once per session


@pytest.fixture(scope="session")
def hostile_corpus(tmp_path_factory):
    """(root, cases): a few hundred hostile and odd-but-valid image files, and what each must give."""
    from hostile import build_corpus, restore_permissions

    root = tmp_path_factory.mktemp("hostile") / "corpus"
    cases = build_corpus(root)
    yield root, cases
    restore_permissions(root)


# ----------------------------------------------------------------------------------------------
# Hand-made contract models: tiny ONNX graphs whose probabilities are known in closed form


def probe_probabilities(pixels: np.ndarray, outputs: int = 10) -> np.ndarray:
    """What `make_contract_model` computes: softmax(mean pixel value * linspace(-1, 1, outputs))."""
    m = np.asarray(pixels, np.float64).reshape(len(pixels), -1).mean(1)
    z = m[:, None] * np.linspace(-1, 1, outputs)[None]
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def make_contract_model(
    path: Path,
    *,
    input_name="pixels",
    dtype="uint8",
    shape=("N", 32, 32, 3),
    outputs=10,
    output_name="probabilities",
    output_dtype="float",
    meta=None,
    drop=(),
    extra_input=False,
    probs_rank3=False,
) -> Path:
    """A tiny ONNX model that follows the contract unless told to break one thing.

    Its probabilities are `probe_probabilities(pixels)`: a black image gets 1/outputs for every class,
    brighter images put more and more weight on the last class. `meta` adds or overrides metadata
    (e.g. an uncertainty threshold)."""
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
    if probs_rank3:  # [N, 1, C]: the right numbers in the wrong shape
        nodes[-1:] = [
            helper.make_node("Unsqueeze", ["p", "one"], ["p3"]),
            helper.make_node("Cast", ["p3"], [output_name], to=types[output_dtype]),
        ]
    inits = [
        numpy_helper.from_array(np.array([1, 2, 3], np.int64), "axes"),
        numpy_helper.from_array(np.array([1], np.int64), "one"),
        numpy_helper.from_array(np.linspace(-1, 1, outputs, dtype=np.float32)[None], "w"),
    ]
    inputs = [helper.make_tensor_value_info(input_name, types[dtype], list(shape))]
    if extra_input:
        inputs.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, [1]))
    out_shape = ["N", 1, outputs] if probs_rank3 else ["N", outputs]
    out = [helper.make_tensor_value_info(output_name, types[output_dtype], out_shape)]
    graph = helper.make_graph(nodes, "contract-test", inputs, out, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    values = {
        C.KEY_CONTRACT: C.CONTRACT_VERSION,
        C.KEY_CLASS_NAMES: json.dumps(list(CLASSES[:outputs]) if outputs <= 10 else [f"c{i}" for i in range(outputs)]),
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


# ----------------------------------------------------------------------------------------------
# Run folders: progress of a run, and two runs' final weights compared


def epochs_done(run_dir: Path) -> int:
    """Completed epochs of a run folder (the lines of metrics.jsonl; 0 before the first)."""
    try:
        return len((run_dir / "metrics.jsonl").read_text().splitlines())
    except FileNotFoundError:
        return 0


def assert_same_run(reference: Path, run: Path, atol: float = 1e-3) -> None:
    """Two finished runs end with the same accuracy (within a point) and the same weights."""
    import torch

    ref = json.loads((reference / "summary.json").read_text())
    got = json.loads((run / "summary.json").read_text())
    assert abs(ref["test_acc"] - got["test_acc"]) <= 0.01
    a = torch.load(reference / "model.pt", weights_only=True)["model"]
    b = torch.load(run / "model.pt", weights_only=True)["model"]
    for key in a:
        np.testing.assert_allclose(a[key].float().numpy(), b[key].float().numpy(), atol=atol, err_msg=key)
