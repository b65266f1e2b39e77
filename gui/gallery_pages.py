"""The Gallery tab's data and logic without Tk: which images it shows (the CIFAR-10 test set when a
data folder is found, else the examples shipped with the package), the mistakes filter, paging, and
its summary line.

Data folder: `--data-dir`, then `$CIFAR10_DATA`, then the per-user cache folder, then whatever the
user picks with "Data folder…"; the first that holds the test batch wins.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..runtime.dataset import CIFAR_DIRNAME, DATA_ENV, default_data_dir, load_cifar10, resolve_data_dir
from ..runtime.examples import example_images, load_examples

# ----------------------------------------------------------------------------------------------
# What the gallery holds


@dataclass
class GalleryImages:
    images: np.ndarray  # uint8 [N, 32, 32, 3]
    labels: np.ndarray  # int [N], index into class_names
    class_names: tuple[str, ...]
    numbers: np.ndarray  # int [N]: each image's position in the CIFAR-10 test batch
    origin: str  # where the images came from, for the user
    examples: bool  # the shipped examples, not a data folder
    preds: np.ndarray = field(init=False)  # int [N] model column per image; -1 while not yet classified
    done: int = 0  # images classified so far (a pass goes front to back)
    token: object = None  # identifies the current classification pass; older passes are ignored

    def __post_init__(self) -> None:
        self.preds = np.full(len(self.labels), -1, np.int64)

    def name(self, index: int) -> str:
        return f"CIFAR-10 test image #{int(self.numbers[index])}"


def has_test_set(folder: str | os.PathLike) -> bool:
    return (resolve_data_dir(folder) / CIFAR_DIRNAME / "test_batch").is_file()


def find_data_dir(explicit: str | os.PathLike | None) -> Path | None:
    """The first of `explicit`, $CIFAR10_DATA and the per-user cache that holds the test batch."""
    for candidate in (explicit, os.environ.get(DATA_ENV), default_data_dir()):
        if candidate and has_test_set(candidate):
            return resolve_data_dir(candidate)
    return None


def load_test_set(data_dir: Path, limit: int | None = None) -> GalleryImages:
    images, labels, names = load_cifar10(data_dir, "test")
    if limit:
        images, labels = images[:limit], labels[:limit]
    return GalleryImages(images, labels, names, np.arange(len(labels)), f"the CIFAR-10 test set in {data_dir}", False)


def load_shipped_examples() -> GalleryImages:
    images, labels, names = load_examples()
    numbers = np.array([e.test_index for e in example_images()], np.int64)
    return GalleryImages(images, labels, names, numbers, "the examples shipped with the app", True)


def examples_note() -> str:
    """Shown while the gallery holds the shipped examples."""
    return (
        f"{len(example_images())} examples shipped with the app. For all 10,000 test images, choose the folder "
        f"that holds {CIFAR_DIRNAME}/ with “Data folder…” (or start with --data-dir, or set ${DATA_ENV})."
    )


# ----------------------------------------------------------------------------------------------
# Filtering and paging


def mistakes(g: GalleryImages, model_classes: Sequence[str]) -> np.ndarray:
    """Boolean [N]: classified and wrong. Classes are matched by name, not column."""
    column_to_true = np.array([g.class_names.index(n) if n in g.class_names else -2 for n in model_classes])
    done = g.preds >= 0
    wrong = np.zeros(len(g.preds), bool)
    wrong[done] = column_to_true[g.preds[done]] != g.labels[done]
    return wrong


def visible(g: GalleryImages | None, model_classes: Sequence[str] | None, mistakes_only: bool) -> np.ndarray:
    """Indices shown under the filter, ascending. Without a model there are no mistakes to filter by,
    so every image shows."""
    if g is None:
        return np.zeros(0, np.int64)
    if mistakes_only and model_classes is not None:
        return np.flatnonzero(mistakes(g, model_classes))
    return np.arange(len(g.labels))


def paginate(shown: np.ndarray, page: int, per_page: int) -> tuple[int, int, np.ndarray]:
    """(page clamped into range, number of pages, the indices on that page)."""
    pages = max(1, -(-len(shown) // per_page))
    page = max(0, min(page, pages - 1))
    return page, pages, shown[page * per_page : (page + 1) * per_page]


def step_within(shown: np.ndarray, current: int, step: int) -> int | None:
    """The image `step` (+1/-1) from `current` in `shown`, wrapping; when `current` left the selection
    (the filter changed), the nearest one in that direction. None if nothing is shown."""
    if len(shown) == 0:
        return None
    pos = int(np.searchsorted(shown, current))
    if pos < len(shown) and shown[pos] == current:
        pos = (pos + step) % len(shown)
    else:
        pos = pos % len(shown) if step > 0 else (pos - 1) % len(shown)
    return int(shown[pos])


def page_changes(on_page: Sequence[int], start: int, end: int, mistakes_only: bool, per_page: int) -> bool:
    """Whether images [start, end), newly classified, change a page showing `on_page`."""
    if not on_page:
        return True
    if mistakes_only:  # new mistakes can only land on a page with room
        return len(on_page) < per_page
    return any(start <= index < end for index in on_page)


def summary(g: GalleryImages, model_classes: Sequence[str] | None) -> str:
    n = len(g.labels)
    noun = "examples" if g.examples else "test images"
    if model_classes is None:
        return f"{n:,} {noun} · no model loaded"
    wrong = int(mistakes(g, model_classes).sum())
    acc = 1 - wrong / g.done if g.done else 0.0
    progress = f"classified {g.done:,} / {n:,}" if g.done < n else f"{n:,} {'examples' if g.examples else 'images'}"
    return f"{progress} · accuracy {acc * 100:.1f}% · {wrong:,} mistakes"
