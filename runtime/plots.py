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
                ax.text(
                    j,
                    i,
                    int(confusion[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if rows[i, j] > 0.5 else "black",
                )
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


def plot_robustness(reports, path: Path) -> None:
    """Accuracy against severity (0 = clean) per corruption family, one line per model; the last
    panel is the mean over families. `reports`: RobustnessReport objects, first one drawn boldest."""
    families = list(dict.fromkeys(c.family for c in reports[0].cells))
    cols = 4
    rows = (len(families) + 1 + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.9 * rows), sharey=True, squeeze=False)
    panels = [*families, "mean"]
    for ax, family in zip(axes.flat, panels):
        for r, style in zip(reports, ["-o", "--s", ":^", "-.v"]):
            if family == "mean":
                sev = sorted({c.severity for c in r.cells})
                acc = [np.mean([c.accuracy for c in r.cells if c.severity == s]) for s in sev]
            else:
                cells = [c for c in r.cells if c.family == family]
                sev, acc = [c.severity for c in cells], [c.accuracy for c in cells]
            ax.plot([0, *sev], [r.clean_accuracy, *acc], style, label=Path(r.model).name, markersize=4)
        ax.set_title(family.replace("_", " "), fontsize=10)
        ax.set_xticks(range(6))
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy")
    for ax in axes[-1]:
        ax.set_xlabel("severity (0 = clean)")
    axes.flat[0].legend(fontsize=8, loc="lower left")
    fig.suptitle(f"accuracy under corruptions ({reports[0].n} test images, seed {reports[0].seed})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
