"""The robustness report: accuracy and calibration of a model under common corruptions.

`cifar10 robustness` runs the test set through every family in `corruptions.py` at its five
severities, generated on the fly from a seed (numpy and Pillow only, nothing downloaded), beside the
clean figure. Several models can be measured on the very same corrupted pictures (`--compare`), which
is how the model card puts a new default beside the old one.

Mean corruption accuracy (mCA) is the plain mean over all family x severity cells, as CIFAR-10-C
reports it; its published numbers are context only, our pictures are generated differently.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .corruptions import FAMILIES, SEVERITIES, corrupt
from .evaluate import expected_calibration_error

Predict = Callable[[np.ndarray], np.ndarray]  # uint8 [N, 32, 32, 3] -> probabilities [N, C]

# ----------------------------------------------------------------------------------------------
# Results


@dataclass
class Cell:
    family: str
    severity: int  # 1 (mildest) .. 5
    strength: float  # the family's own unit: JPEG quality, noise sigma, ...
    accuracy: float
    ece: float


@dataclass
class RobustnessReport:
    model: str
    n: int
    seed: int
    clean_accuracy: float
    clean_ece: float
    cells: list[Cell] = field(default_factory=list)

    @property
    def mean_corruption_accuracy(self) -> float:
        return float(np.mean([c.accuracy for c in self.cells])) if self.cells else float("nan")

    def family_accuracy(self, family: str) -> float:
        return float(np.mean([c.accuracy for c in self.cells if c.family == family]))

    def cell(self, family: str, severity: int) -> Cell:
        return next(c for c in self.cells if c.family == family and c.severity == severity)

    @classmethod
    def from_json(cls, data: dict) -> RobustnessReport:
        """The inverse of `as_json`: a saved report, to print or plot beside a new one."""
        cells = [
            Cell(family, s["severity"], s["strength"], s["accuracy"], s["ece"])
            for family, entry in data["families"].items()
            for s in entry["severities"]
        ]
        clean = data["clean"]
        return cls(data["model"], data["n"], data["seed"], clean["accuracy"], clean["ece"], cells)

    def as_json(self) -> dict:
        return {
            "model": self.model,
            "n": self.n,
            "seed": self.seed,
            "clean": {"accuracy": self.clean_accuracy, "ece": self.clean_ece},
            "mean_corruption_accuracy": self.mean_corruption_accuracy,
            "families": {
                f: {
                    "mean_accuracy": self.family_accuracy(f),
                    "severities": [
                        {"severity": c.severity, "strength": c.strength, "accuracy": c.accuracy, "ece": c.ece}
                        for c in self.cells
                        if c.family == f
                    ],
                }
                for f in dict.fromkeys(c.family for c in self.cells)
            },
        }


# ----------------------------------------------------------------------------------------------
# Measuring


def measure(
    models: dict[str, Predict],
    images: np.ndarray,
    labels: np.ndarray,
    families: Sequence[str] | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, RobustnessReport]:
    """One report per model, all on the same corrupted pictures (each is made once)."""
    families = list(families or FAMILIES)
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown corruption {unknown[0]!r}; choose from {', '.join(FAMILIES)}")
    labels = np.asarray(labels)
    reports = {}
    for name, predict in models.items():
        probs = predict(images)
        reports[name] = RobustnessReport(
            name, len(labels), seed, _accuracy(probs, labels), expected_calibration_error(probs, labels)
        )
    total, done = sum(len(SEVERITIES[f]) for f in families), 0
    for family in families:
        for severity, strength in enumerate(SEVERITIES[family], start=1):
            corrupted = corrupt(images, family, severity, seed)
            for name, predict in models.items():
                probs = predict(corrupted)
                cell = Cell(family, severity, float(strength), _accuracy(probs, labels), 0.0)
                cell.ece = expected_calibration_error(probs, labels)
                reports[name].cells.append(cell)
            done += 1
            if progress:
                progress(done, total)
    return reports


def _accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float((probs.argmax(1) == labels).mean())


# ----------------------------------------------------------------------------------------------
# Printing


def table(reports: Sequence[RobustnessReport]) -> str:
    """Accuracy (and ECE) per family and severity; with two reports, the second is the baseline and
    a column shows the first one's gain over it in points."""
    main = reports[0]
    base = reports[1] if len(reports) > 1 else None
    head = f"{'corruption':<15}{'sev':>4}{'strength':>9}  {'acc':>6} {'ECE':>6}"
    if base is not None:
        head += f"  {'base acc':>8} {'base ECE':>8} {'gain':>6}"
    lines = [f"model {main.model} on {main.n} test images, seed {main.seed}", head]

    def row(label: str, sev: str, strength: str, acc: float, ece: float, b_acc=None, b_ece=None) -> str:
        text = f"{label:<15}{sev:>4}{strength:>9}  {acc:6.4f} {ece:6.4f}"
        if b_acc is not None:
            text += f"  {b_acc:8.4f} {b_ece:8.4f} {100 * (acc - b_acc):+6.2f}"
        return text

    lines.append(
        row(
            "clean",
            "-",
            "-",
            main.clean_accuracy,
            main.clean_ece,
            base.clean_accuracy if base else None,
            base.clean_ece if base else None,
        )
    )
    for c in main.cells:
        b = base.cell(c.family, c.severity) if base else None
        lines.append(
            row(
                c.family,
                str(c.severity),
                f"{c.strength:g}",
                c.accuracy,
                c.ece,
                b.accuracy if b else None,
                b.ece if b else None,
            )
        )
    lines.append("")
    lines.append(f"mean corruption accuracy {main.mean_corruption_accuracy:.4f} (clean {main.clean_accuracy:.4f})")
    if base is not None:
        lines.append(
            f"baseline {base.model}: mean corruption accuracy {base.mean_corruption_accuracy:.4f} "
            f"(clean {base.clean_accuracy:.4f})"
        )
        worse = [c for c in main.cells if c.accuracy < base.cell(c.family, c.severity).accuracy]
        better = [c for c in main.cells if c.accuracy > base.cell(c.family, c.severity).accuracy]
        lines.append(
            f"better than the baseline in {len(better)} of {len(main.cells)} cells"
            + (", worse in: " + ", ".join(f"{c.family} {c.severity}" for c in worse) if worse else ", worse in none")
        )
    return "\n".join(lines)


class CellProgress:
    """'corruptions 12/35, 40 s, about 76 s left' on stderr, when it is a terminal or when forced."""

    def __init__(self, force: bool = False):
        self.enabled = force or sys.stderr.isatty()
        self.t0 = time.perf_counter()

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        spent = time.perf_counter() - self.t0
        left = spent / done * (total - done)
        end = "\n" if done >= total else ""
        sys.stderr.write(f"\rcorruptions {done}/{total}, {spent:.0f} s, about {left:.0f} s left   {end}")
        sys.stderr.flush()
