"""Shared fixtures: tiny CIFAR-format data, a tiny trained + exported model, the real data if present."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
BIN = Path(sys.executable).parent
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def has_torch() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


needs_torch = pytest.mark.skipif(not has_torch(), reason="needs the [train] extra (torch)")


def real_data_dir() -> Path | None:
    return SHARED_DATA if (SHARED_DATA / "cifar-10-batches-py" / "test_batch").exists() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    d = real_data_dir()
    if d is None:
        pytest.skip("real CIFAR-10 not found at ../shared/data")
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
    obj = {b"batch_label": b"synthetic", b"labels": [int(v) for v in labels], b"data": flat,
           b"filenames": [f"img_{i}.png".encode() for i in range(len(images))]}  # fmt: skip
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
    return make_tiny_cifar(tmp_path_factory.mktemp("tiny-cifar"))


# ----------------------------------------------------------------------------------------------
# A tiny trained model, exported through the real pipeline


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_cifar) -> Path:
    if not has_torch():
        pytest.skip("needs the [train] extra (torch)")
    from cifar10kit.train.trainer import make_config, train

    out = tmp_path_factory.mktemp("runs")
    cfg = make_config("smoke", data_dir=str(tiny_cifar), out=str(out), name="tiny", epochs=2, subset=1000,
                      batch_size=250)  # fmt: skip
    return train(cfg)


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory, trained_run, tiny_cifar) -> Path:
    """Path of a small .onnx file that follows the contract (exported from trained_run)."""
    from cifar10kit.export.exporter import export

    path = tmp_path_factory.mktemp("models") / "tiny.onnx"
    export(trained_run, path, data_dir=str(tiny_cifar), log=lambda *_: None)
    return path


# ----------------------------------------------------------------------------------------------
# Running the installed console script


def cli(*args: str, env: dict | None = None, timeout: float = 300, cwd: Path | None = None):
    """Run `cifar10 ARGS` as a user would; returns the CompletedProcess (text)."""
    exe = shutil.which("cifar10", path=str(BIN)) or str(BIN / "cifar10")
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout, env=full_env,
                          cwd=cwd)  # fmt: skip
