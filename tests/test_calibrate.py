"""Honest confidences (export/calibrate.py, numpy only): softmax temperature, held-out calibration and
the uncertainty threshold on small cases computed by hand; then the threshold an export writes."""

from __future__ import annotations

import numpy as np
import pytest

from cifar10kit.export.calibrate import (
    MIN_CALIBRATION_IMAGES,
    fit_calibration,
    fit_temperature,
    softmax,
    uncertainty_threshold,
)
from cifar10kit.runtime.evaluate import expected_calibration_error

from conftest import needs_torch

SIGMOID_1 = 1 / (1 + np.exp(-1.0))  # softmax([0, 1])[1]

# ----------------------------------------------------------------------------------------------
# softmax and the temperature


def test_softmax_by_hand():
    np.testing.assert_allclose(softmax(np.array([[0.0, np.log(3)]])), [[0.25, 0.75]])
    r3 = np.sqrt(3)
    np.testing.assert_allclose(softmax(np.array([0.0, np.log(3)]), 2.0), [1 / (1 + r3), r3 / (1 + r3)])
    big = softmax(np.array([[1000.0, 0.0, -1000.0]]))  # no overflow
    np.testing.assert_allclose(big, [[1.0, 0.0, 0.0]])
    assert softmax(np.zeros((2, 4))).sum(1).tolist() == [1.0, 1.0]


def test_softmax_is_float64_and_stable_row_by_row():
    third = np.array([[0.0, np.log(3)]], np.float32)
    out = softmax(third)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, [[0.25, 0.75]], rtol=1e-7)  # float32 input is only good to ~1e-7
    # Each row is shifted by its own maximum: a row far below another's scale still sums to 1.
    rows = softmax(np.array([[1000.0, 0.0], [-1000.0, -1000.0 + np.log(3)]]))
    np.testing.assert_allclose(rows, [[1.0, 0.0], [0.25, 0.75]])


def _three_in_four(gap: float, n: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Every row has logits (0, gap); the second class is right 3 times in 4."""
    return np.tile([0.0, gap], (n, 1)), np.tile([1, 1, 1, 0], n // 4)


@pytest.mark.parametrize("gap", [1.0, 2.0, 0.5])
def test_fit_temperature_closed_form(gap):
    """softmax((0, gap) / T) must say 75% for answers right 75% of the time: gap / T = ln 3."""
    logits, labels = _three_in_four(gap)
    assert fit_temperature(logits, labels) == pytest.approx(gap / np.log(3), rel=1e-6)


def test_fit_temperature_in_float64_for_float32_logits():
    """Logits usually come out of a net as float32; the likelihood is still computed in float64
    (a float32 one would be flat to within its rounding over a ~1e-4 range of T)."""
    logits, labels = _three_in_four(1.0)
    assert fit_temperature(logits.astype(np.float32), labels) == pytest.approx(1 / np.log(3), rel=1e-6)


def test_fit_temperature_ignores_each_rows_offset():
    """Adding a constant to a row's logits changes no probability, however large it is: each row is
    shifted by its own maximum before exp (one shared shift would overflow or underflow)."""
    logits, labels = _three_in_four(1.0)
    offsets = np.array([0.0, 1e4, -1e4, 5e3])[:, None]
    assert fit_temperature(logits + offsets, labels) == pytest.approx(1 / np.log(3), rel=1e-6)


def test_fit_temperature_with_uninformative_logits_ends_at_the_top():
    """Equal logits give the same likelihood at every T; on ties the search moves up, to T = 20
    (which changes nothing for these rows)."""
    assert fit_temperature(np.zeros((4, 3)), np.array([0, 1, 2, 0])) == pytest.approx(20.0, rel=1e-9)


def test_fit_temperature_stays_in_its_range():
    always_right = np.tile([0.0, 1.0], (4, 1))
    assert fit_temperature(always_right, np.ones(4, int)) == pytest.approx(0.05, rel=1e-4)
    coin_flip = np.tile([0.0, 1.0], (4, 1))
    assert fit_temperature(coin_flip, np.array([0, 1, 0, 1])) == pytest.approx(20.0, rel=1e-4)


def test_fit_temperature_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, (20000, 10))
    for true_t in (0.5, 2.5):
        p = np.exp(logits / true_t)
        p /= p.sum(1, keepdims=True)
        labels = (p.cumsum(1) > rng.random((len(p), 1))).argmax(1)  # labels drawn from softmax(z / T)
        assert fit_temperature(logits, labels) == pytest.approx(true_t, rel=0.05)


# ----------------------------------------------------------------------------------------------
# Fit on the even-numbered images, measure on the odd-numbered ones


def test_fit_calibration_fits_on_even_and_measures_on_odd():
    n = 504
    logits = np.tile([0.0, 1.0], (n, 1))
    labels = np.empty(n, int)
    labels[0::2] = np.tile([1, 1, 1, 0], n // 8)  # fit half: right 3 times in 4 -> T = 1 / ln 3
    labels[1::2] = np.tile([1, 0], n // 4)  # held-out half: right half the time
    notes = []
    out = fit_calibration(logits, labels, log=notes.append)
    assert out["temperature"] == pytest.approx(1 / np.log(3), rel=1e-6)
    assert out["fit_images"] == out["held_out_images"] == 252
    assert out["ece_before"] == pytest.approx(SIGMOID_1 - 0.5)  # says 73%, right 50%
    assert out["ece_after"] == pytest.approx(0.25)  # says 75%, right 50%
    assert len(notes) == 1 and "temperature 0.910" in notes[0] and "252" in notes[0]


def test_fit_calibration_fits_on_the_even_logits_too():
    """The even-numbered labels go with the even-numbered logits (here the odd rows differ)."""
    n = 504
    logits = np.tile([0.0, 1.0], (n, 1))
    logits[1::2] = [0.0, 3.0]
    labels = np.ones(n, int)
    labels[0::2] = np.tile([1, 1, 1, 0], n // 8)  # right 3 times in 4 at (0, 1): T = 1 / ln 3
    assert fit_calibration(logits, labels, log=lambda _: None)["temperature"] == pytest.approx(1 / np.log(3), rel=1e-6)


def test_fit_calibration_needs_enough_labels():
    logits, labels = _three_in_four(1.0, 500)
    notes = []
    assert fit_calibration(logits[:-1], labels[:-1], log=notes.append) == {}
    assert fit_calibration(logits, None, log=notes.append) == {}
    assert notes == [
        f"not calibrated: needs {MIN_CALIBRATION_IMAGES}+ labelled images, have 499",
        f"not calibrated: needs {MIN_CALIBRATION_IMAGES}+ labelled images, have 0",
    ]
    assert MIN_CALIBRATION_IMAGES == 500
    assert fit_calibration(logits, labels, log=notes.append)["fit_images"] == 250  # exactly 500 is enough


# ----------------------------------------------------------------------------------------------
# The uncertainty threshold


def _rows(confidences, right) -> tuple[np.ndarray, np.ndarray]:
    """Two-class probability rows with these top-1 confidences; label = the top class when `right`."""
    conf = np.asarray(confidences, float)
    probs = np.stack([conf, 1 - conf], 1)  # class 0 is always the top one (conf > 0.5)
    labels = np.where(np.asarray(right, bool), 0, 1)
    return probs, labels


def test_threshold_by_hand():
    # Sorted by confidence: wrong, wrong, right, wrong, right, right. Windows of 2 reach 50% accuracy
    # first at the second window (0.60, 0.65); the threshold is the confidence at its middle: 0.65.
    probs, labels = _rows([0.55, 0.60, 0.65, 0.70, 0.80, 0.90], [0, 0, 1, 0, 1, 1])
    order = np.random.default_rng(1).permutation(6)  # the input order does not matter
    assert uncertainty_threshold(probs[order], labels[order], window=2) == pytest.approx(0.65)


def test_threshold_needs_two_windows_of_images():
    probs, labels = _rows(np.linspace(0.55, 0.95, 8), [0, 0, 0, 0, 1, 1, 1, 1])
    assert uncertainty_threshold(probs[:7], labels[:7], window=4) == 0.0
    assert uncertainty_threshold(probs, labels, window=4) == pytest.approx(np.linspace(0.55, 0.95, 8)[4])


def test_threshold_when_never_right_is_the_top_confidence():
    probs, labels = _rows([0.6, 0.7, 0.8, 0.9], [0, 0, 0, 0])
    assert uncertainty_threshold(probs, labels, window=2) == pytest.approx(0.9)


def test_threshold_at_the_default_window_is_where_right_answers_start():
    """400 images, the 200 least confident wrong and the 200 most confident right: the window of 200
    reaches 50% half-way in, and the threshold is the confidence of the first right answer."""
    conf = np.linspace(0.3, 0.99, 400)
    probs = np.zeros((400, 10))
    probs[:] = ((1 - conf) / 9)[:, None]
    probs[:, 3] = conf
    labels = np.where(np.arange(400) < 200, 7, 3)
    assert uncertainty_threshold(probs, labels) == pytest.approx(conf[200])
    assert uncertainty_threshold(probs[1:], labels[1:]) == 0.0  # 399 images: too few to say


# ----------------------------------------------------------------------------------------------
# What an export writes


@needs_torch
def test_export_writes_the_threshold_of_its_own_probabilities(calibrated_export):
    """With enough labelled images (1,000) the threshold is non-zero, and it is the one computed from
    the written file's own probabilities on those images."""
    import onnxruntime as ort

    from cifar10kit.runtime import contract as C
    from cifar10kit.runtime.dataset import load_cifar10

    data, out, result = calibrated_export
    meta = result["metadata"]
    x, y, _ = load_cifar10(data, "test")
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    probs = sess.run([C.OUTPUT_PROBS], {C.INPUT_NAME: x})[0]
    want = uncertainty_threshold(probs, y)
    assert float(meta[C.KEY_THRESHOLD]) == pytest.approx(want, abs=5e-5)
    assert 0.0 < want <= float(probs.max())
    written = dict(sess.get_modelmeta().custom_metadata_map)
    assert written[C.KEY_THRESHOLD] == meta[C.KEY_THRESHOLD]
    fit = result["calibration"]
    assert fit["held_out_images"] == 500  # the file's own probabilities are calibrated like the fit said
    assert fit["ece_after"] == pytest.approx(expected_calibration_error(probs[1::2], y[1::2]), abs=5e-3)
