"""The Classify tab's work off the Tk thread, in plain Python: decode an image from a file or the
clipboard, classify it, compute a class's heatmap. Each job returns a value for the Tk thread.

Sections: what is shown, the jobs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..runtime.heatmap import Heatmap, heatmaps
from ..runtime.preprocess import ImageError, load_image, to_input, to_rgb
from ..runtime.session import Classifier
from . import imaging, text
from .inputs import folder_images, grab_clipboard, paste_candidates

# How heatmaps are drawn: occlusion (8x8, any model file) is finer than the model's own 3x3 `cam` map.
HEATMAP_METHOD = "occlusion"

# ----------------------------------------------------------------------------------------------
# The shown image


@dataclass
class Shown:
    """The image in the Classify tab and what the model said about it."""

    source: str  # what the user opened: a path, "clipboard", "CIFAR-10 test image #12"
    display: Image.Image  # screen copy, at most imaging.DISPLAY_MAX_SIDE
    pixels: np.ndarray  # the model input, uint8 [32, 32, 3]
    size: tuple[int, int]  # original size
    true_label: str | None = None  # known for gallery images
    gallery_index: int | None = None
    probs: np.ndarray | None = None  # [C]; None while no model is loaded
    seconds: float = 0.0
    model: Classifier | None = None  # the model that produced probs
    heatmaps: dict[str, Heatmap] = field(default_factory=dict)  # by class name; empty until asked for

    @property
    def uncertain(self) -> bool:
        """Whether the prediction is flagged "uncertain / none of these"."""
        return self.probs is not None and self.model is not None and self.model.is_uncertain(self.probs)


@dataclass
class Opened:
    """A worker's answer to "open this file": the image, or why not, and the file's neighbours."""

    path: Path
    shown: Shown | None
    error: str | None
    siblings: list[Path] | None  # None: not from a folder (clipboard); Left/Right keep their folder


# ----------------------------------------------------------------------------------------------
# The jobs (run in the "infer" lane)


def predict(model: Classifier | None, shown: Shown) -> Shown:
    if model is None:
        return dataclasses.replace(shown, probs=None, model=None, heatmaps={})
    pred = model.run(shown.pixels)
    return dataclasses.replace(shown, probs=pred.probs[0], seconds=pred.seconds, model=model, heatmaps={})


def compute_heatmaps(model: Classifier, shown: Shown) -> dict[str, Heatmap]:
    """Where the model found evidence for each class in the shown image, by class name (one model
    run for all classes, so switching classes later is free)."""
    return dict(zip(model.class_names, heatmaps(model, shown.pixels, method=HEATMAP_METHOD)))


def open_file(path: Path, model: Classifier | None) -> Opened:
    siblings = folder_images(path.parent)
    try:
        img = load_image(path)
    except ImageError as e:
        return Opened(path, None, str(e), siblings)
    display = imaging.display_from_file(str(path), img)
    shown = Shown(str(path), display, to_input(img), imaging.original_size(str(path), img))
    return Opened(path, predict(model, shown), None, siblings)


def open_clipboard(clip_text: str | None, model: Classifier | None) -> Opened:
    """An image on the clipboard, else the first pasted path that is a file."""
    grabbed = grab_clipboard()
    where = Path("clipboard")
    if isinstance(grabbed, Image.Image):
        try:
            img = to_rgb(grabbed, source="clipboard image")
        except ImageError as e:
            return Opened(where, None, str(e), None)
        shown = Shown("clipboard", imaging.display_copy(img), to_input(img), img.size)
        return Opened(where, predict(model, shown), None, None)
    for path in paste_candidates(grabbed, clip_text):
        if path.is_file():
            return open_file(path, model)
    return Opened(where, None, text.paste_failure(clip_text), None)
