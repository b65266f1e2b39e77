"""The corruption report: `measure` on a real (tiny) model file, and `cifar10 robustness` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cifar10kit.runtime.corruptions import FAMILIES, SEVERITIES, corrupt
from cifar10kit.runtime.dataset import load_cifar10
from cifar10kit.runtime.evaluate import expected_calibration_error
from cifar10kit.runtime.robustness import RobustnessReport, measure, table
from cifar10kit.runtime.session import Classifier

from conftest import cli


@pytest.fixture(scope="module")
def model(trained_model) -> Classifier:
    return Classifier(trained_model, provider="cpu")


@pytest.fixture(scope="module")
def test_set(tiny_cifar):
    images, labels, _ = load_cifar10(str(tiny_cifar), "test")
    return images[:120], labels[:120]


def test_every_cell_is_the_model_on_those_corrupted_pictures(model, test_set):
    images, labels = test_set
    reports = measure({"tiny": model.predict_probs}, images, labels, ["jpeg", "contrast"], seed=3)
    r = reports["tiny"]
    clean = model.predict_probs(images)
    assert r.clean_accuracy == pytest.approx(float((clean.argmax(1) == labels).mean()))
    assert r.clean_ece == pytest.approx(expected_calibration_error(clean, labels))
    assert [(c.family, c.severity) for c in r.cells] == [(f, s) for f in ("jpeg", "contrast") for s in range(1, 6)]
    for c in r.cells:
        probs = model.predict_probs(corrupt(images, c.family, c.severity, seed=3))
        assert c.accuracy == pytest.approx(float((probs.argmax(1) == labels).mean()))
        assert c.ece == pytest.approx(expected_calibration_error(probs, labels))
        assert c.strength == SEVERITIES[c.family][c.severity - 1]
    assert r.mean_corruption_accuracy == pytest.approx(np.mean([c.accuracy for c in r.cells]))
    # the severest contrast leaves the tiny model near chance; it is far better on clean pictures
    assert r.cell("contrast", 5).accuracy < r.clean_accuracy


def test_compare_measures_both_models_on_the_same_pictures(model, test_set):
    images, labels = test_set
    reports = measure({"a": model.predict_probs, "b": model.predict_probs}, images, labels, ["gaussian_noise"], seed=1)
    a, b = reports["a"], reports["b"]
    assert [c.accuracy for c in a.cells] == [c.accuracy for c in b.cells]  # same noise draws for both
    text = table([a, b])
    assert "better than the baseline in 0 of 5 cells, worse in none" in text
    assert "+0.00" in text and "baseline b" in text
    with pytest.raises(ValueError, match="unknown corruption 'snow'"):
        measure({"a": model.predict_probs}, images, labels, ["snow"])


def test_json_holds_every_family_and_severity(model, test_set):
    images, labels = test_set
    r = measure({"tiny": model.predict_probs}, images[:40], labels[:40])["tiny"]
    data = r.as_json()
    assert set(data["families"]) == set(FAMILIES)
    for entry in data["families"].values():
        assert [s["severity"] for s in entry["severities"]] == [1, 2, 3, 4, 5]
        assert entry["mean_accuracy"] == pytest.approx(np.mean([s["accuracy"] for s in entry["severities"]]))
    assert data["n"] == 40 and data["clean"]["accuracy"] == r.clean_accuracy
    again = RobustnessReport.from_json(json.loads(json.dumps(data)))
    assert again == r  # a saved report reads back whole (the model card compares old and new from files)


def test_robustness_command_prints_writes_json_and_plots(trained_model, tiny_cifar, tmp_path):
    plot = tmp_path / "robustness.png"
    args = [
        "robustness",
        "--model",
        str(trained_model),
        "--data-dir",
        str(tiny_cifar),
        "--limit",
        "60",
        "--families",
        "jpeg",
        "pixelate",
        "--provider",
        "cpu",
    ]
    text = cli(*args, "--plot", str(plot), "--compare", str(trained_model))
    assert text.returncode == 0, text.stderr
    assert "jpeg" in text.stdout and "pixelate" in text.stdout and "mean corruption accuracy" in text.stdout
    assert plot.stat().st_size > 10_000 and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    js = cli(*args, "--json")
    assert js.returncode == 0, js.stderr
    out = json.loads(js.stdout)
    assert out["provider"] == "CPUExecutionProvider"
    (report,) = out["reports"]
    assert report["n"] == 60 and set(report["families"]) == {"jpeg", "pixelate"}
    bad = cli("robustness", "--model", str(trained_model), "--data-dir", str(tiny_cifar), "--families", "fog")
    assert bad.returncode == 2 and "unknown corruption 'fog'" in bad.stderr
