"""Plots of a run: loss and accuracy curves, confusion matrix, per-class accuracy (matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..runtime.plots import plot_confusion  # noqa: E402


def plot_run(run_dir: Path, history: list[dict[str, Any]], confusion: np.ndarray, names) -> None:
    epochs = [r["epoch"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [r["train_loss"] for r in history], marker="o")
    ax1.set(title="training loss (label-smoothed)", xlabel="epoch", ylabel="loss")
    ax2.plot(epochs, [r["train_acc"] for r in history], marker="o", label="train (augmented)")
    tested = [(r["epoch"], r["test_acc"]) for r in history if r["test_acc"] is not None]
    if tested:
        ax2.plot(*zip(*tested), marker="o", label="test (no TTA)")
    held = [(r["epoch"], r["holdout_acc"]) for r in history if r.get("holdout_acc") is not None]
    if held:
        ax2.plot(*zip(*held), marker="o", label="held-out training images (no TTA)")
    ax2.set(title="accuracy", xlabel="epoch", ylabel="accuracy")
    ax2.grid(alpha=0.3)
    ax2.legend()
    fig.tight_layout()
    fig.savefig(run_dir / "curves.png", dpi=120)
    plt.close(fig)
    plot_confusion(confusion, names, run_dir / "confusion.png")
