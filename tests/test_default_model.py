"""The model shipped inside the package: contract, a few real images, and full test-set accuracy."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cifar10kit.runtime.session import DEFAULT_MODEL, Classifier

from conftest import cli


def test_shipped_model_is_installed_and_follows_the_contract():
    assert DEFAULT_MODEL.exists(), "the default model must ship inside the package"
    assert DEFAULT_MODEL.stat().st_size < 20_000_000
    model = Classifier()  # no path: the default
    assert model.path == DEFAULT_MODEL
    assert model.info.class_names[:3] == ("airplane", "automobile", "bird")
    assert model.info.test_accuracy is not None and model.info.test_accuracy >= 0.95
    assert model.info.has_cam and model.info.threshold is not None
    assert float(model.info.raw["temperature"]) < 1  # calibrated at export: label smoothing under-states confidence


def test_shipped_model_classifies_real_test_images(shared_data):
    from cifar10kit.runtime.dataset import load_cifar10

    x, y, _ = load_cifar10(shared_data, "test")
    model = Classifier(provider="cpu")
    # A fixed spread of 50 test images; a 95% model gets nearly all right (chance: 5).
    idx = np.arange(0, 10000, 200)
    preds = model.predict_probs(x[idx]).argmax(1)
    assert (preds == y[idx]).sum() >= 45


@pytest.mark.slow
def test_shipped_model_accuracy_on_the_full_test_set(shared_data):
    r = cli("evaluate", "--data-dir", str(shared_data), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["n"] == 10000
    assert out["accuracy"] >= 0.950
    assert out["ece"] < 0.03  # temperature-scaled at export; uncalibrated, this recipe scores about 0.2
