"""Accuracy, per-class accuracy, confusion matrix and calibration of a model on labelled images."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Report:
    n: int
    accuracy: float
    per_class: dict[str, float]
    confusion: np.ndarray  # [true, predicted] counts
    ece: float  # expected calibration error, 15 equal-width confidence bins
    class_names: tuple[str, ...]
    skipped: int = 0

    def as_json(self) -> dict:
        return {
            "n": self.n,
            "accuracy": self.accuracy,
            "per_class_accuracy": self.per_class,
            "confusion": self.confusion.tolist(),
            "ece": self.ece,
            "class_names": list(self.class_names),
            "skipped": self.skipped,
        }

    def table(self) -> str:
        k = len(self.class_names)
        # The name column is as wide as its header or the longest name, so counts sit under their class.
        w = max(len("true/pred"), max(len(n) for n in self.class_names))
        short = [n[:5] for n in self.class_names]
        lines = [
            f"accuracy {self.accuracy:.4f} on {self.n} images"
            + (f" ({self.skipped} unreadable, skipped)" if self.skipped else "")
            + f"; expected calibration error {self.ece:.4f}",
            "",
            "true/pred".rjust(w) + " " + " ".join(f"{s:>5}" for s in short) + "   acc",
        ]
        for i in range(k):
            row = " ".join(f"{c:>5d}" for c in self.confusion[i])
            lines.append(f"{self.class_names[i]:>{w}} {row}  {self.per_class[self.class_names[i]]:.3f}")
        return "\n".join(lines)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    conf = probs.max(1)
    correct = probs.argmax(1) == labels
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - conf[inside].mean())
    return float(ece)


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, k: int) -> np.ndarray:
    """Counts [true, predicted] over k classes."""
    return np.bincount(np.asarray(labels) * k + np.asarray(preds), minlength=k * k).reshape(k, k)


def report(probs: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...], skipped: int = 0) -> Report:
    k = len(class_names)
    preds = probs.argmax(1)
    confusion = confusion_matrix(labels, preds, k)
    totals = confusion.sum(1)
    per_class = {n: float(confusion[i, i] / max(totals[i], 1)) for i, n in enumerate(class_names)}
    return Report(
        n=len(labels),
        accuracy=float((preds == labels).mean()) if len(labels) else np.nan,
        per_class=per_class,
        confusion=confusion,
        ece=expected_calibration_error(probs, labels) if len(labels) else np.nan,
        class_names=tuple(class_names),
        skipped=skipped,
    )
