"""The runtime and the command line without PyTorch: sessions, predict, evaluate, info, bench."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cifar10kit.runtime import contract as C
from cifar10kit.runtime.dataset import load_cifar10
from cifar10kit.runtime.heatmap import overlay
from cifar10kit.runtime.session import Classifier

from conftest import cli


@pytest.fixture(scope="module")
def images_dir(tmp_path_factory, tiny_cifar):
    """Eight test images saved as files (several sizes and formats) plus one corrupt file."""
    d = tmp_path_factory.mktemp("images")
    x, y, names = load_cifar10(tiny_cifar, "test")
    (d / "sub").mkdir()
    for i in range(8):
        target = d / ("sub" if i % 2 else "") / f"{i}_{names[y[i]]}.{'png' if i % 3 else 'bmp'}"
        Image.fromarray(x[i]).save(target)
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return d


def test_classifier_reads_the_contract(trained_model):
    model = Classifier(trained_model, provider="cpu")
    assert model.provider == "CPUExecutionProvider"
    assert model.info.num_classes == 10 and model.info.has_cam
    x = np.zeros((3, 32, 32, 3), np.uint8)
    pred = model.run(x, with_cam=True)
    assert pred.probs.shape == (3, 10) and pred.cam.shape[:2] == (3, 10)
    top = model.topk(pred.probs[0], 3)
    assert len(top) == 3 and top[0][1] >= top[1][1] >= top[2][1]
    with pytest.raises(ValueError, match="uint8"):
        model.run(np.zeros((1, 32, 32, 3), np.float32))


def test_provider_auto_falls_back_and_cuda_is_strict(trained_model):
    import onnxruntime as ort

    assert Classifier(trained_model, provider="auto").provider in ort.get_available_providers()
    from cifar10kit.runtime.session import cuda_driver_present

    if not cuda_driver_present():
        with pytest.raises(RuntimeError, match="--provider cuda"):
            Classifier(trained_model, provider="cuda")


def test_predict_json_lines(trained_model, images_dir):
    r = cli("predict", str(images_dir), "--model", str(trained_model), "--json", "-k", "4")
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == 9
    assert r.returncode == 1  # one input failed
    bad = [row for row in rows if row["error"]]
    assert len(bad) == 1 and "broken.png" in bad[0]["error"] and bad[0]["label"] is None
    model = Classifier(trained_model, provider="cpu")
    from cifar10kit.runtime.preprocess import prepare

    for row in rows:
        if row["error"] is None:
            assert len(row["top_k"]) == 4 and row["label"] == row["top_k"][0]["label"]
            probs = model.run(prepare(row["path"])).probs[0]
            assert row["label"] == model.class_names[int(probs.argmax())]
            assert abs(row["probability"] - float(probs.max())) < 1e-6


def test_predict_table_csv_and_globs(trained_model, images_dir, tmp_path):
    out = tmp_path / "r.csv"
    r = cli(
        "predict",
        str(images_dir / "*.png"),
        str(images_dir / "*.bmp"),
        "--model",
        str(trained_model),
        "--csv",
        str(out),
    )
    lines = r.stdout.splitlines()
    assert r.returncode == 1 and any("broken.png: ERROR" in e for e in r.stderr.splitlines())
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == len(lines) + 1  # the table shows the good ones; the CSV has the failure too
    ok = cli("predict", str(images_dir / "sub"), "--model", str(trained_model))
    assert ok.returncode == 0 and len(ok.stdout.splitlines()) == 4
    none = cli("predict", str(images_dir / "nothing*.png"), "--model", str(trained_model))
    assert none.returncode == 1 and "matches no files" in none.stderr


def test_evaluate_json_matches_direct_computation(trained_model, tiny_cifar):
    r = cli("evaluate", "--model", str(trained_model), "--data-dir", str(tiny_cifar), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    x, y, _ = load_cifar10(tiny_cifar, "test")
    probs = Classifier(trained_model, provider="cpu").predict_probs(x)
    assert out["n"] == len(y)
    assert out["accuracy"] == pytest.approx(float((probs.argmax(1) == y).mean()))
    assert np.array(out["confusion"]).sum() == len(y) and 0 <= out["ece"] <= 1


def test_evaluate_folder_and_plot(trained_model, tmp_path, tiny_cifar):
    x, y, names = load_cifar10(tiny_cifar, "test")
    for i in range(30):
        (tmp_path / "f" / names[y[i]]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[i]).save(tmp_path / "f" / names[y[i]] / f"{i}.png")
    plot = tmp_path / "cm.png"
    r = cli("evaluate", "--model", str(trained_model), "--folder", str(tmp_path / "f"), "--json", "--plot", str(plot))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    probs = Classifier(trained_model, provider="cpu").predict_probs(x[:30])
    assert out["n"] == 30 and out["accuracy"] == pytest.approx(float((probs.argmax(1) == y[:30]).mean()))
    assert Image.open(plot).size[0] > 500
    (tmp_path / "f" / "unicorn").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "f" / "unicorn" / "u.png")
    bad = cli("evaluate", "--model", str(trained_model), "--folder", str(tmp_path / "f"))
    assert bad.returncode == 2 and "unicorn" in bad.stderr


def test_info_and_bench(trained_model):
    info = json.loads(cli("info", "--model", str(trained_model), "--json").stdout)
    assert info["provider"] == "CPUExecutionProvider" and C.KEY_CLASS_NAMES in info["metadata"]
    r = cli("bench", "--model", str(trained_model), "--json", "--repeats", "20", "--batch-size", "32")
    b = json.loads(r.stdout)
    res = b["results"]["onnxruntime"]
    assert res["batch1_p50_ms"] > 0 and res["images_per_s"] > 0 and res["gflop_per_s"] > 0


def test_bad_model_files_give_one_line_errors(tmp_path, images_dir):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx at all")
    r = cli("predict", str(images_dir / "sub"), "--model", str(bad))
    assert r.returncode != 0 and "bad.onnx" in r.stderr and "Traceback" not in r.stderr
    r = cli("info", "--model", str(tmp_path / "missing.onnx"))
    assert r.returncode != 0 and "no such model file" in r.stderr


def test_heatmap_overlay(trained_model):
    model = Classifier(trained_model, provider="cpu")
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    cam = model.run(np.asarray(img), with_cam=True).cam[0, 0]
    out = overlay(img.resize((256, 256)), cam)
    assert out.size == (256, 256) and out.mode == "RGB"
    assert np.abs(np.asarray(out, int) - np.asarray(img.resize((256, 256)), int)).mean() > 1


def test_runtime_and_gui_never_import_torch(trained_model, images_dir, tmp_path):
    """In a child where `import torch` raises, the runtime and GUI modules import and predict."""
    code = f"""
import sys
sys.modules['torch'] = None  # any import of torch now raises ImportError
import cifar10kit.runtime.session, cifar10kit.runtime.predict, cifar10kit.runtime.evaluate
import cifar10kit.runtime.heatmap, cifar10kit.runtime.bench, cifar10kit.main
import cifar10kit.gui.app
from cifar10kit.main import main
rc = main(['predict', {str(images_dir / "sub")!r}, '--model', {str(trained_model)!r}, '--json'])
assert rc == 0, rc
assert sys.modules['torch'] is None
print('torch-free ok')
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "torch-free ok" in r.stdout


@pytest.mark.slow
def test_plain_install_has_no_torch(built_wheel, tmp_path):
    """The wheel, no extras, into a new venv: torch is absent, `cifar10 predict` works."""
    if os.environ.get("CIFAR10_SKIP_VENV_TEST"):
        pytest.skip("CIFAR10_SKIP_VENV_TEST set")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    install = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q", str(built_wheel)]
    pip = subprocess.run(install, capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr[-2000:]
    probe = "import importlib.util as u; print(u.find_spec('torch'))"
    check = subprocess.run([str(venv / "bin" / "python"), "-c", probe], capture_output=True, text=True)
    assert check.stdout.strip() == "None"
    img = tmp_path / "x.png"
    Image.new("RGB", (50, 40), (200, 30, 30)).save(img)
    r = subprocess.run([str(venv / "bin" / "cifar10"), "predict", str(img), "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["label"] in C.CIFAR10_CLASSES
    r = subprocess.run([str(venv / "bin" / "cifar10"), "train"], capture_output=True, text=True)
    assert r.returncode != 0 and "cifar10kit[train]" in r.stderr
