"""Example images shipped inside the package, so the app and the CLI have something to show without
the dataset: 100 CIFAR-10 test images, the first 10 of each class in the test batch.

They live in `examples/<class>/test_<index>.png` beside this file (package data), where `<index>` is
the image's position in the official test batch; `tools/make_examples.py` writes them. The layout is
the one `cifar10 evaluate --folder` reads, and `cifar10 predict` takes the folder as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from .contract import CIFAR10_CLASSES
from .preprocess import prepare


@dataclass(frozen=True)
class Example:
    path: Path
    label: str  # the true class, one of CIFAR10_CLASSES
    test_index: int  # position in the CIFAR-10 test batch


def examples_dir() -> Path:
    """The installed folder of example images (one sub-folder per class)."""
    return Path(str(resources.files(__package__).joinpath("examples")))


def example_images() -> list[Example]:
    """Every shipped example, class by class (CIFAR-10 order), then by test-batch index."""
    root = examples_dir()
    out = []
    for name in CIFAR10_CLASSES:
        for f in sorted((root / name).glob("test_*.png")):
            out.append(Example(f, name, int(f.stem.removeprefix("test_"))))
    return out


def load_examples() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """(pixels uint8 [N, 32, 32, 3], labels int64 [N], class names): the shape `load_cifar10` returns."""
    items = example_images()
    if not items:
        raise FileNotFoundError(f"{examples_dir()}: no example images (the package was installed without them)")
    pixels = np.stack([prepare(e.path) for e in items])
    labels = np.array([CIFAR10_CLASSES.index(e.label) for e in items], dtype=np.int64)
    return pixels, labels, CIFAR10_CLASSES
