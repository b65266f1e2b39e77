"""Metrics (runtime/evaluate.py) on small hand-computed cases, and `cifar10 evaluate` on good and bad
data: malicious or out-of-range CIFAR batches, a model of other classes, labelled folders with
unknown classes or broken files."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from cifar10kit.runtime.evaluate import expected_calibration_error, report

from conftest import (
    CLASSES,
    cli,
    make_contract_model,
    one_line_error,
    probe_probabilities,
    synthetic_images,
    write_batch,
)

# ----------------------------------------------------------------------------------------------
# Expected calibration error: 15 equal-width bins over (0, 1], each bin (lo, hi]


def test_ece_one_sample_per_bin():
    # confidences 0.9, 0.62, 0.82 fall in three different bins; right, wrong, right
    probs = np.array([[0.9, 0.1], [0.38, 0.62], [0.18, 0.82]])
    labels = np.array([0, 0, 1])
    assert expected_calibration_error(probs, labels) == pytest.approx((0.1 + 0.62 + 0.18) / 3)


def test_ece_averages_within_a_bin_before_taking_the_gap():
    # 0.90 (right) and 0.91 (wrong) share a bin: accuracy 0.5 vs mean confidence 0.905;
    # 0.50 (right) is alone in its bin. Per-sample gaps would give (0.1 + 0.91 + 0.5) / 3 instead.
    probs = np.array([[0.9, 0.1], [0.91, 0.09], [0.5, 0.5]])
    labels = np.array([0, 1, 0])
    assert expected_calibration_error(probs, labels) == pytest.approx(2 / 3 * 0.405 + 1 / 3 * 0.5)


def test_ece_bin_edges_belong_to_the_lower_bin():
    # 4 bins: (0, .25], (.25, .5], (.5, .75], (.75, 1]. 0.5 is alone in the second; 0.75 joins 0.7.
    probs = np.array([[0.5, 0.5], [0.75, 0.25], [0.7, 0.3]])
    labels = np.array([0, 1, 0])
    want = 1 / 3 * 0.5 + 2 / 3 * abs(0.5 - 0.725)
    assert expected_calibration_error(probs, labels, bins=4) == pytest.approx(want)
    # With 2 bins the grouping is the same: 0.5 alone in (0, 0.5], the others in (0.5, 1].
    want2 = 1 / 3 * 0.5 + 2 / 3 * abs(0.5 - 0.725)
    assert expected_calibration_error(probs, labels, bins=2) == pytest.approx(want2)
    # With 1 bin everything is together: accuracy 2/3 against mean confidence 0.65.
    assert expected_calibration_error(probs, labels, bins=1) == pytest.approx(abs(2 / 3 - 0.65))


def test_ece_default_is_15_bins():
    # 0.93 and 0.935 straddle the 15-bin edge 14/15 = 0.9333 but share the 16-bin (0.875, 0.9375].
    probs = np.array([[0.93, 0.07], [0.935, 0.065]])
    labels = np.array([0, 1])  # right, wrong
    separate = 0.5 * (1 - 0.93) + 0.5 * 0.935
    assert expected_calibration_error(probs, labels) == pytest.approx(separate)
    assert expected_calibration_error(probs, labels, bins=16) == pytest.approx(abs(0.5 - 0.9325))


def test_ece_extremes():
    honest = np.tile([0.75, 0.25], (4, 1))  # 75% confident, right 3 times in 4
    assert expected_calibration_error(honest, np.array([0, 0, 0, 1])) == pytest.approx(0.0, abs=1e-12)
    sure_and_wrong = np.tile([1.0, 0.0], (5, 1))
    assert expected_calibration_error(sure_and_wrong, np.ones(5, int)) == pytest.approx(1.0)
    ten = np.full((3, 10), 0.1)  # a uniform 10-class row: confidence 0.1, first class predicted
    assert expected_calibration_error(ten, np.array([0, 1, 2])) == pytest.approx(abs(1 / 3 - 0.1))


# ----------------------------------------------------------------------------------------------
# The report: accuracy, per-class accuracy, confusion matrix, table


def _onehot(preds, k=3, p=0.8):
    probs = np.full((len(preds), k), (1 - p) / (k - 1))
    probs[np.arange(len(preds)), preds] = p
    return probs


def test_report_by_hand():
    labels = np.array([0, 1, 2, 2])
    probs = _onehot([0, 2, 2, 1])
    r = report(probs, labels, ("a", "b", "c"), skipped=1)
    assert r.n == 4 and r.skipped == 1 and r.accuracy == 0.5
    assert r.confusion.tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 1]]  # [true, predicted]
    assert r.per_class == {"a": 1.0, "b": 0.0, "c": 0.5}
    assert r.ece == pytest.approx(abs(0.5 - 0.8))
    out = r.as_json()
    assert out == {
        "n": 4,
        "accuracy": 0.5,
        "per_class_accuracy": {"a": 1.0, "b": 0.0, "c": 0.5},
        "confusion": [[1, 0, 0], [0, 0, 1], [0, 1, 1]],
        "ece": r.ece,
        "class_names": ["a", "b", "c"],
        "skipped": 1,
    }
    json.dumps(out)  # plain types only


def test_report_table():
    r = report(_onehot([0, 2, 2, 1]), np.array([0, 1, 2, 2]), ("airplane", "b", "c"), skipped=2)
    lines = r.table().splitlines()
    assert lines[0] == "accuracy 0.5000 on 4 images (2 unreadable, skipped); expected calibration error 0.3000"
    assert lines[1] == ""
    assert lines[2].split() == ["true/pred", "airpl", "b", "c", "acc"]
    assert lines[3].split() == ["airplane", "1", "0", "0", "1.000"]
    assert lines[5].split() == ["c", "0", "1", "1", "0.500"]
    assert len(lines) == 6
    assert "skipped" not in report(_onehot([0]), np.array([0]), ("a", "b", "c")).table()


def test_report_table_exactly():
    """Counts sit right under their (5-letter) class headers, whatever the length of the names."""
    probs = _onehot([0, 2, 2, 1])
    labels = np.array([0, 1, 2, 2])
    assert report(probs, labels, ("cat", "dog", "frog")).table() == (
        "accuracy 0.5000 on 4 images; expected calibration error 0.3000\n"
        "\n"
        "true/pred   cat   dog  frog   acc\n"
        "      cat     1     0     0  1.000\n"
        "      dog     0     0     1  0.000\n"
        "     frog     0     1     1  0.500"
    )
    assert report(probs, labels, ("automobile", "b", "c")).table().splitlines()[2:4] == [
        " true/pred autom     b     c   acc",
        "automobile     1     0     0  1.000",
    ]


def test_report_class_without_images_and_no_images():
    r = report(_onehot([0, 0]), np.array([0, 0]), ("a", "b", "c"))
    assert r.per_class == {"a": 1.0, "b": 0.0, "c": 0.0} and r.accuracy == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy "mean of empty slice" warning for an empty set
        empty = report(np.zeros((0, 3)), np.zeros(0, int), ("a", "b", "c"))
    assert empty.n == 0 and np.isnan(empty.accuracy) and np.isnan(empty.ece)
    assert empty.confusion.shape == (3, 3) and empty.confusion.sum() == 0


# ----------------------------------------------------------------------------------------------
# `cifar10 evaluate` with a model whose probabilities are known


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    return make_contract_model(tmp_path_factory.mktemp("probe") / "probe.onnx")


def test_evaluate_cli_reports_what_the_model_computes(probe, tiny_cifar):
    from cifar10kit.runtime.dataset import load_cifar10

    proc = cli("evaluate", "--model", str(probe), "--provider", "cpu", "--data-dir", str(tiny_cifar), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    x, y, _ = load_cifar10(tiny_cifar, "test")
    p = probe_probabilities(x)
    assert out["n"] == len(y) == 200
    assert out["accuracy"] == pytest.approx(float((p.argmax(1) == y).mean()))
    assert out["ece"] == pytest.approx(expected_calibration_error(p, y), abs=1e-5)
    assert np.array(out["confusion"]).sum(0).tolist() == np.bincount(p.argmax(1), minlength=10).tolist()


def _cifar_dir(root: Path, test_batch: bytes) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    (folder / "test_batch").write_bytes(test_batch)
    return root


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_evaluate_with_malicious_batch(tmp_path, probe):
    marker = tmp_path / "MARKER"
    evil = pickle.dumps({b"batch_label": b"x", b"labels": [1, 2], b"data": _Evil(marker)}, protocol=3)
    data = _cifar_dir(tmp_path / "d", evil)
    proc = cli("evaluate", "--model", str(probe), "--provider", "cpu", "--data-dir", str(data), timeout=120)
    one_line_error(proc, "test_batch", "not a valid CIFAR-10 batch")
    assert proc.returncode == 2
    assert not marker.exists()


@pytest.mark.parametrize("label", [10, 99, -1])
def test_evaluate_with_labels_out_of_range(tmp_path, probe, label):
    images, _ = synthetic_images(20, 4)
    labels = np.arange(20) % 10
    labels[7] = label
    write_batch(tmp_path / "b", images, labels)
    data = _cifar_dir(tmp_path / "d", (tmp_path / "b").read_bytes())
    proc = cli("evaluate", "--model", str(probe), "--provider", "cpu", "--data-dir", str(data), timeout=120)
    one_line_error(proc, "test_batch", "labels must be 0..9")
    assert proc.returncode == 2


def test_evaluate_cifar_with_a_model_of_other_classes(tmp_path, tiny_cifar):
    """A 5-class model on the 10-class CIFAR-10 test batch: a clear error, not a reshape traceback."""
    model = make_contract_model(tmp_path / "five.onnx", outputs=5)
    proc = cli("evaluate", "--model", str(model), "--provider", "cpu", "--data-dir", str(tiny_cifar), timeout=120)
    one_line_error(proc, "classes")
    assert proc.returncode == 2


def test_evaluate_folder_with_unknown_class(tmp_path, probe, hostile_corpus):
    root, _ = hostile_corpus
    for cls in ("cat", "unicorn"):
        (tmp_path / "f" / cls).mkdir(parents=True)
        shutil.copyfile(root / "reference.png", tmp_path / "f" / cls / "x.png")
    proc = cli("evaluate", "--model", str(probe), "--provider", "cpu", "--folder", str(tmp_path / "f"), timeout=120)
    one_line_error(proc, "unicorn", "not classes of this model")
    assert proc.returncode == 2


def test_evaluate_folder_skips_hostile_files(tmp_path, probe, hostile_corpus):
    """Broken files inside a labelled folder are skipped with their name; the rest is evaluated."""
    root, _ = hostile_corpus
    cat = tmp_path / "f" / "cat"
    cat.mkdir(parents=True)
    shutil.copyfile(root / "reference.png", cat / "good.png")
    shutil.copyfile(root / "truncated-50pct.png", cat / "broken.png")
    if hasattr(os, "mkfifo"):
        os.mkfifo(cat / "pipe.png")
    proc = cli(
        "evaluate", "--model", str(probe), "--provider", "cpu", "--folder", str(tmp_path / "f"), "--json", timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["n"] == 1 and out["skipped"] == 2 and out["class_names"] == list(CLASSES)
    assert "broken.png" in proc.stderr and "pipe.png" in proc.stderr and "Traceback" not in proc.stderr
