"""Honest confidences: the softmax temperature fitted at export, and the uncertainty threshold.

Label smoothing trains a net to say "80%" when it is right 99% of the time. One number, the
temperature T that divides the logits (Guo et al., 2017, "On calibration of modern neural
networks"), fixes most of that without changing any prediction.

numpy only (no torch): the numbers are computed on logits and probabilities already at hand.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..runtime.evaluate import expected_calibration_error

MIN_CALIBRATION_IMAGES = 500  # below this a fitted temperature is mostly noise


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """softmax(logits / temperature) over the last axis, in float64."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The softmax temperature T that minimises the negative log-likelihood of softmax(logits / T).

    The NLL is unimodal in log T, so a golden-section search over T in [0.05, 20] finds it."""
    z = np.asarray(logits, dtype=np.float64)
    rows = np.arange(len(z))

    def nll(log_t: float) -> float:
        s = z / np.exp(log_t)
        s = s - s.max(1, keepdims=True)
        return float((np.log(np.exp(s).sum(1)) - s[rows, labels]).mean())

    lo, hi = np.log(0.05), np.log(20.0)
    g = (np.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(a), nll(b)
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(b)
    return float(np.exp((lo + hi) / 2))


def fit_calibration(
    logits: np.ndarray, labels: np.ndarray | None, log: Callable[[str], object] = print
) -> dict[str, Any]:
    """Fit the temperature on the even-numbered labelled images and measure the expected calibration
    error on the odd-numbered ones, which the fit never saw. {} when there are too few labels."""
    if labels is None or len(labels) < MIN_CALIBRATION_IMAGES:
        have = 0 if labels is None else len(labels)
        log(f"not calibrated: needs {MIN_CALIBRATION_IMAGES}+ labelled images, have {have}")
        return {}
    t = fit_temperature(logits[0::2], labels[0::2])
    held, held_y = logits[1::2], labels[1::2]
    before = expected_calibration_error(softmax(held), held_y)
    after = expected_calibration_error(softmax(held, t), held_y)
    log(
        f"calibrated: temperature {t:.3f} fitted on {len(labels[0::2])} images; expected calibration error "
        f"on the other {len(held_y)}: {before:.4f} -> {after:.4f}"
    )
    return {
        "temperature": t,
        "fit_images": len(labels[0::2]),
        "held_out_images": len(held_y),
        "ece_before": before,
        "ece_after": after,
    }


def uncertainty_threshold(probs: np.ndarray, labels: np.ndarray, window: int = 200) -> float:
    """Top-1 probability below which predictions are more often wrong than right.

    Sorted by confidence, a sliding window's accuracy rises with it; the threshold is the confidence
    where that accuracy first reaches 50%. Chosen on images the net never trained on: held-out training
    images or test images."""
    conf = probs.max(1)
    order = np.argsort(conf)
    correct = (probs.argmax(1) == labels)[order].astype(np.float64)
    if len(correct) < window * 2:
        return 0.0
    running = np.convolve(correct, np.ones(window) / window, mode="valid")
    reached = np.flatnonzero(running >= 0.5)
    return float(conf[order][reached[0] + window // 2]) if len(reached) else float(conf.max())
