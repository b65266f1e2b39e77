"""The whole pipeline as a user runs it: cifar10 train -> export -> predict -> evaluate (CLI only)."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from cifar10kit.runtime.dataset import load_cifar10

from conftest import cli, has_torch, smoke_train_args

pytestmark = pytest.mark.skipif(not has_torch(), reason="needs the [train] extra (torch)")


def test_train_export_predict_evaluate(tiny_cifar, tmp_path):
    train = cli(*smoke_train_args(tiny_cifar, tmp_path / "runs", "--name", "e2e", "--epochs", "1", "--subset", "1000"))
    assert train.returncode == 0, train.stderr
    run = tmp_path / "runs" / "e2e"
    assert (run / "model.pt").exists() and "export it with" in train.stdout

    model = tmp_path / "e2e.onnx"
    export = cli("export", str(run), "-o", str(model), "--data-dir", str(tiny_cifar), "--json")
    assert export.returncode == 0, export.stderr
    assert "top-1 agreement 100" in export.stdout
    result = json.loads(export.stdout.splitlines()[-1])
    assert result["verification"]["agreement"] >= 0.999 and result["metadata"]["precision"] == "fp32"

    x, y, names = load_cifar10(tiny_cifar, "test")
    for i in range(3):
        Image.fromarray(x[i]).resize((64, 64)).save(tmp_path / f"{i}.png")
    pred = cli("predict", *(str(tmp_path / f"{i}.png") for i in range(3)), "--model", str(model), "--json")
    assert pred.returncode == 0, pred.stderr
    rows = [json.loads(line) for line in pred.stdout.splitlines()]
    assert [r["error"] for r in rows] == [None] * 3 and all(r["label"] in names for r in rows)

    ev = cli("evaluate", "--model", str(model), "--data-dir", str(tiny_cifar), "--json")
    assert ev.returncode == 0, ev.stderr
    out = json.loads(ev.stdout)
    assert out["n"] == len(y) and 0.0 <= out["accuracy"] <= 1.0
    info = json.loads(cli("info", "--model", str(model), "--json").stdout)
    assert float(info["metadata"]["test_accuracy"]) == pytest.approx(out["accuracy"], abs=1e-4)
