"""Plots of evaluation results (matplotlib, an optional extra: `pip install 'cifar10kit[plot]'`)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_confusion(confusion: np.ndarray, names, path: Path, title: str = "") -> None:
    """Row-normalised confusion matrix beside per-class accuracy bars."""
    confusion = np.asarray(confusion)
    rows = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    k = len(names)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 5.5), gridspec_kw=dict(width_ratios=[1.3, 1]))
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), names, rotation=45, ha="right")
    ax.set_yticks(range(k), names)
    ax.set(xlabel="predicted", ylabel="true", title=title or "confusion matrix (row-normalised)")
    for i in range(k):
        for j in range(k):
            if confusion[i, j]:
                ax.text(j, i, int(confusion[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if rows[i, j] > 0.5 else "black")  # fmt: skip
    acc = np.diag(rows)
    bx.barh(range(k), acc, color="tab:blue")
    bx.set_yticks(range(k), names)
    bx.invert_yaxis()
    bx.set_xlim(min(0.5, float(acc.min()) - 0.05), 1.0)
    bx.set(title="per-class accuracy", xlabel="accuracy")
    for i, a in enumerate(acc):
        bx.text(a, i, f" {a:.3f}", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
