"""The example images shipped inside the package: what they are, where they come from, that they install."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from cifar10kit.runtime.contract import CIFAR10_CLASSES
from cifar10kit.runtime.examples import example_images, examples_dir, load_examples
from cifar10kit.runtime.session import Classifier

from conftest import cli


def test_hundred_examples_ten_per_class():
    items = example_images()
    assert len(items) == 100
    assert Counter(e.label for e in items) == {c: 10 for c in CIFAR10_CLASSES}
    assert len({e.test_index for e in items}) == 100
    assert all(e.path.parent.name == e.label and e.path.is_file() for e in items)
    pixels, labels, names = load_examples()
    assert pixels.shape == (100, 32, 32, 3) and pixels.dtype == np.uint8
    assert names == CIFAR10_CLASSES
    assert [names[i] for i in labels] == [e.label for e in items]
    assert sum(e.path.stat().st_size for e in items) < 400_000


def test_examples_are_the_first_ten_of_each_class_in_the_real_test_batch(shared_data):
    from cifar10kit.runtime.dataset import load_cifar10

    images, labels, names = load_cifar10(shared_data, "test")
    expected = sorted(int(i) for c in range(10) for i in np.flatnonzero(labels == c)[:10])
    items = example_images()
    assert sorted(e.test_index for e in items) == expected
    pixels, ex_labels, _ = load_examples()
    index = [e.test_index for e in items]
    np.testing.assert_array_equal(ex_labels, labels[index])
    np.testing.assert_array_equal(pixels, images[index])  # lossless: the very pixels of the test batch


def test_shipped_model_gets_most_examples_right():
    pixels, labels, _ = load_examples()
    probs = Classifier(provider="cpu").predict_probs(pixels)
    correct = int((probs.argmax(1) == labels).sum())
    assert correct >= 90, f"{correct}/100"  # 95 with the shipped model; its test accuracy is 0.95


def test_predict_and_evaluate_take_the_examples_folder():
    r = cli("predict", str(examples_dir()), "--json", "--provider", "cpu")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == 100 and all(row["error"] is None for row in rows)
    right = sum(Path(row["path"]).parent.name == row["label"] for row in rows)
    assert right >= 90
    r = cli("evaluate", "--folder", str(examples_dir()), "--json", "--provider", "cpu")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["accuracy"] == right / 100


def test_examples_are_in_the_built_wheel_and_load_from_it(built_wheel, tmp_path):
    """Install the wheel into a folder, and load the examples from there with the editable install
    out of the way (-S)."""
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--no-deps", "--target", tmp_path / "site", built_wheel], check=True)
    site_packages = next(p for p in sys.path if p.endswith("site-packages"))  # numpy, PIL; no .pth hooks
    code = (
        "from cifar10kit.runtime.examples import examples_dir, load_examples\n"
        "x, y, n = load_examples(); print(examples_dir(), x.shape, len(set(y.tolist())))"
    )
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'site'}{os.pathsep}{site_packages}"}
    r = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    folder, rest = r.stdout.split(" ", 1)
    assert Path(folder).is_relative_to(tmp_path / "site")
    assert rest.strip() == "(100, 32, 32, 3) 10"
