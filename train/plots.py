"""Plots of a run: loss and accuracy curves, confusion matrix, per-class accuracy (matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_run(run_dir: Path, history: list[dict[str, Any]], confusion: np.ndarray, names) -> None:
    epochs = [r["epoch"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [r["train_loss"] for r in history], marker="o")
    ax1.set(title="training loss (label-smoothed)", xlabel="epoch", ylabel="loss")
    ax2.plot(epochs, [r["train_acc"] for r in history], marker="o", label="train (augmented)")
    tested = [(r["epoch"], r["test_acc"]) for r in history if r["test_acc"] is not None]
    if tested:
        ax2.plot(*zip(*tested), marker="o", label="test (no TTA)")
    ax2.set(title="accuracy", xlabel="epoch", ylabel="accuracy")
    ax2.grid(alpha=0.3)
    ax2.legend()
    fig.tight_layout()
    fig.savefig(run_dir / "curves.png", dpi=120)
    plt.close(fig)
    plot_confusion(confusion, names, run_dir / "confusion.png")


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
