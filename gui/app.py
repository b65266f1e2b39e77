"""The desktop app: classify an image, browse CIFAR-10's test set, classify a folder, inspect a model.

Built on cifar10kit.runtime only (onnxruntime, numpy, Pillow): never PyTorch. Decoding and inference
run in background lanes (see tasks.py), so the window never freezes; a bad image or model file is
reported in the status bar (and a dialog, for explicit actions) and changes nothing else.

Read top to bottom: state, construction, the Classify tab, the Gallery tab, the Batch tab, the Model
tab, shared plumbing (status, errors, keys, drag and drop), entry points.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import sys
import threading
import time
import tkinter as tk
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from tkinter import filedialog, messagebox, ttk
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
from PIL import Image

from ..runtime.contract import ContractError
from ..runtime.dataset import (
    CIFAR_DIRNAME,
    DATA_ENV,
    IMAGE_EXTENSIONS,
    default_data_dir,
    load_cifar10,
    resolve_data_dir,
)
from ..runtime.predict import Result, classify_paths, collect
from ..runtime.preprocess import ImageError, load_image, prepare, to_input, to_rgb
from ..runtime.session import Classifier, default_model_path
from . import imaging
from .tasks import Tasks
from .views import (
    BATCH_COLUMNS,
    BatchView,
    ClassifyView,
    GalleryView,
    ModelView,
    StatusBar,
    apply_theme,
    photo,
)

TITLE = "CIFAR-10 classifier"
TABS = ("classify", "gallery", "batch", "model")
GALLERY_CHUNK = 256  # images per background step: small enough that an opened image never waits long
BATCH_THUMBS = 2000  # rows past this get no thumbnail, to bound memory on huge folders
PLACEHOLDER = "Open an image (Ctrl+O), paste one (Ctrl+V){dnd}\nor pick one from the Gallery tab"

# ----------------------------------------------------------------------------------------------
# State


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
    cam: np.ndarray | None = None  # [C, h, w]; None when the model has no cam output
    seconds: float = 0.0
    model: Classifier | None = None  # the model that produced probs


@dataclass
class Opened:
    """A worker's answer to "open this file": the image, or why not, and the file's neighbours."""

    path: Path
    shown: Shown | None
    error: str | None
    siblings: list[Path] | None  # None: not from a folder (clipboard); Left/Right keep their folder


@dataclass
class Gallery:
    images: np.ndarray  # uint8 [N, 32, 32, 3]
    labels: np.ndarray  # int [N]
    class_names: tuple[str, ...]
    data_dir: Path
    preds: np.ndarray  # int [N] model column per image; -1 while not yet classified
    done: int = 0
    token: object = None  # identifies the current classification pass; older passes are ignored


# ----------------------------------------------------------------------------------------------
# Construction


class App:
    """The main window. Usable without mainloop (tests): call actions, then `wait_idle()`.

    modal_errors: False reports errors in the status bar only (never a blocking dialog)."""

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        image: str | os.PathLike | None = None,
        provider: str = "auto",
        data_dir: str | os.PathLike | None = None,
        modal_errors: bool = True,
        top_k: int = 10,
        gallery_limit: int | None = None,
        root: tk.Tk | None = None,
    ):
        _windows_dpi_awareness()
        self.root = root or tk.Tk(className="cifar10kit")
        self.root.title(TITLE)
        self.root.report_callback_exception = self._on_tk_exception
        self.scale = apply_theme(self.root)
        self.provider = provider
        self.modal_errors = modal_errors
        self.top_k = top_k
        self.gallery_limit = gallery_limit
        self.data_dir_arg = Path(data_dir) if data_dir else None

        # State read by the Tk thread only, except where a comment says otherwise.
        self.classifier: Classifier | None = None
        self._lane_model: Classifier | None = None  # the "infer" lane's model: that thread only
        self.shown: Shown | None = None
        self.displayed_image: Image.Image | None = None  # what the main canvas shows now
        self.model_view_image: Image.Image | None = None
        self.cam_class: str | None = None  # None: the top class
        self.last_error: str | None = None
        self._view_seq = 0  # bumps on every open, so a slow stale result never replaces a newer one
        # Left/Right: through the folder of the last opened file, or the gallery's selection. Both
        # move when the key is pressed, not when the image arrives, so fast presses are not lost.
        self._nav_mode = "folder"
        self._nav: list[Path] = []
        self._nav_pos = -1
        self._gallery_current = -1
        self._error_text: str | None = None  # shown in the canvas after a failed open
        self.gallery: Gallery | None = None
        self._gallery_loading = False
        self._gallery_page = 0
        self._gallery_note = ""
        self._gallery_cells: list[tuple[int, str, str | None]] = []
        self._batch_run = 0
        self._batch_cancel: threading.Event | None = None
        self._batch_folder: Path | None = None
        self._batch_data: dict[str, Result] = {}
        self._batch_photos: dict[str, Any] = {}
        self._batch_sort: tuple[str | None, bool] = (None, False)
        self._render_pending: str | None = None
        self._closed = False

        self._build()
        self.tasks = Tasks(self.root, self._on_worker_error)
        self.dnd_error = self._setup_dnd()
        self._bind_keys()
        self._render()
        self.root.protocol("WM_DELETE_WINDOW", self.close)

        # Show the window first, then load the model in the background: the window is usable at
        # once and onnxruntime's start-up is not on the critical path.
        self.root.update_idletasks()
        path = Path(model) if model else default_model_path()
        self.load_model(path, modal=False)
        if image:
            self.open_image(image)

    def _build(self) -> None:
        s = self.scale
        screen_w, screen_h = self.root.winfo_screenwidth(), self.root.winfo_screenheight()
        w, h = min(round(1240 * s), screen_w - 40), min(round(800 * s), screen_h - 60)
        self.root.geometry(f"{w}x{h}")
        self.root.minsize(min(round(880 * s), w), min(round(580 * s), h))

        outer = ttk.Frame(self.root)
        outer.pack(fill="both", expand=True)
        self.notebook = ttk.Notebook(outer)
        self.notebook.pack(fill="both", expand=True, padx=round(6 * s), pady=(round(6 * s), 0))
        self.classify_view = ClassifyView(
            self.notebook, s,
            {"open": self.open_dialog, "paste": self.paste, "prev": lambda: self.step_image(-1),
             "next": lambda: self.step_image(1), "heatmap": self._heat_changed, "cam_class": self.set_cam_class},
        )  # fmt: skip
        self.gallery_view = GalleryView(
            self.notebook, s,
            {"filter": self._gallery_filter_changed, "page": self.gallery_turn, "data_dir": self.gallery_dialog},
        )  # fmt: skip
        self.batch_view = BatchView(
            self.notebook, s,
            {"choose": self.batch_dialog, "cancel": self.batch_cancel, "export": self.batch_export_dialog,
             "sort": self.batch_sort, "inspect": self._batch_inspect_selected},
        )  # fmt: skip
        self.model_view = ModelView(self.notebook, s, {"open_model": self.open_model_dialog})
        for view, text in (
            (self.classify_view, "Classify"), (self.gallery_view, "Gallery"),
            (self.batch_view, "Batch"), (self.model_view, "Model"),
        ):  # fmt: skip
            self.notebook.add(view, text=text, underline=0)
        self.notebook.bind("<<NotebookTabChanged>>", self._on_tab_changed)
        self.notebook.enable_traversal()  # Ctrl+Tab, and Alt + the underlined letter
        # The notebook takes focus when a tab is clicked, and its own Left/Right would then switch
        # tabs: here they keep meaning previous/next image (or page), as everywhere else.
        self.notebook.bind("<Left>", lambda e: (self._on_arrow(e, -1), "break")[1])
        self.notebook.bind("<Right>", lambda e: (self._on_arrow(e, 1), "break")[1])
        self.status = StatusBar(outer)
        self.status.pack(fill="x", side="bottom")
        self.classify_view.canvas.bind("<Configure>", lambda e: self._schedule_render())
        self.gallery_view.canvas.bind("<Configure>", lambda e: self._gallery_render())

    # -- test and scripting surface ----------------------------------------------------------------

    @property
    def status_text(self) -> str:
        return str(self.status.message.cget("text"))

    @property
    def status_is_error(self) -> bool:
        return str(self.status.message.cget("style")).startswith("Error")

    @property
    def shown_top_class(self) -> str | None:
        s = self.shown
        if s is None or s.probs is None or s.model is None:
            return None
        return s.model.class_names[int(np.argmax(s.probs))]

    @property
    def shown_uncertain(self) -> bool:
        """Whether the shown prediction is flagged "uncertain / none of these"."""
        s = self.shown
        return s is not None and s.probs is not None and s.model is not None and s.model.is_uncertain(s.probs)

    @property
    def uncertain_text(self) -> str:
        return str(self.classify_view.uncertain.cget("text"))

    @property
    def heatmap_on(self) -> bool:
        return bool(self.classify_view.heat_var.get())

    @property
    def tab(self) -> str:
        return TABS[self.notebook.index(self.notebook.select())]

    def show_tab(self, name: str) -> None:
        self.notebook.select(TABS.index(name))
        self.root.update_idletasks()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Pump events until background work is finished (tests, scripts)."""
        return self.tasks.wait_idle(timeout)

    def run(self) -> None:
        self.root.mainloop()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._render_pending is not None:
            self.root.after_cancel(self._render_pending)
        if self._batch_cancel is not None:
            self._batch_cancel.set()
        self.tasks.close()
        try:
            self.root.destroy()
        except tk.TclError:
            pass

    # ------------------------------------------------------------------------------------------
    # Classify tab: open, paste, drop, navigate, render

    def open_dialog(self) -> None:
        """Ctrl+O and the Open button."""
        start = self._nav[0].parent if self._nav else Path.cwd()
        patterns = " ".join(f"*{e}" for e in IMAGE_EXTENSIONS)
        path = filedialog.askopenfilename(
            parent=self.root, title="Open an image", initialdir=str(start),
            filetypes=[("Images", patterns), ("All files", "*")],
        )  # fmt: skip
        if path:
            self.show_tab("classify")
            self.open_image(path)

    def open_image(self, path: str | os.PathLike) -> None:
        """Decode and classify `path` in the background; the result replaces the shown image."""
        path = Path(path)
        self._view_seq += 1
        seq = self._view_seq
        self._nav_mode = "folder"
        if path in self._nav:
            self._nav_pos = self._nav.index(path)
        self.set_status(f"Opening {path.name}…")
        self.tasks.submit("infer", self._open_job, path, on_done=lambda o: self._on_opened(seq, o))

    def _open_job(self, path: Path) -> Opened:  # "infer" lane
        siblings = _folder_images(path.parent)
        try:
            img = load_image(path)
        except ImageError as e:
            return Opened(path, None, str(e), siblings)
        display = imaging.display_from_file(str(path), img)
        shown = Shown(str(path), display, to_input(img), imaging.original_size(str(path), img))
        return Opened(path, self._predict(shown), None, siblings)

    def _predict(self, shown: Shown) -> Shown:  # "infer" lane
        model = self._lane_model
        if model is None:
            return dataclasses.replace(shown, probs=None, cam=None, model=None)
        pred = model.run(shown.pixels, with_cam=model.info.has_cam)
        cam = pred.cam[0] if pred.cam is not None else None
        return dataclasses.replace(shown, probs=pred.probs[0], cam=cam, seconds=pred.seconds, model=model)

    def _on_opened(self, seq: int, opened: Opened) -> None:
        if seq != self._view_seq:
            return  # the user has opened something else since
        if opened.siblings is not None:
            self._nav = opened.siblings
            resolved = opened.path.resolve()
            self._nav_pos = next((i for i, p in enumerate(self._nav) if p.resolve() == resolved), -1)
        if opened.error is not None and opened.siblings is None:
            self.report_error(opened.error, modal=False)  # a bad paste: keep the image that is shown
            return
        if opened.error is not None:
            self.shown = None
            self._error_text = opened.error
            self.root.title(f"{TITLE} — {opened.path.name}")
            self.report_error(opened.error, modal=False)
            self._render()
            return
        self._show(opened.shown, new=True)

    def _show(self, shown: Shown, new: bool) -> None:
        self.shown = shown
        self._error_text = None
        if new:
            self.cam_class = None
        name = Path(shown.source).name if shown.gallery_index is None else shown.source
        self.root.title(f"{TITLE} — {name}")
        self._render()
        self._update_runtime_line()
        if shown.model is None:
            self.set_status(f"{name}: no model loaded, so no prediction (open one in the Model tab)")
            return
        top, p = shown.model.topk(shown.probs, 1)[0]
        w, h = shown.size
        self.set_status(f"{name} ({w}×{h}): {top} {p * 100:.1f}% in {shown.seconds * 1000:.1f} ms")

    def paste(self) -> None:
        """Ctrl+V: an image on the clipboard, else a file path (or file:// URI) as clipboard text."""
        try:
            text = self.root.clipboard_get()
        except tk.TclError:
            text = None
        self._view_seq += 1
        seq = self._view_seq
        self.set_status("Pasting…")
        self.show_tab("classify")
        self.tasks.submit("infer", self._paste_job, text, on_done=lambda o: self._on_opened(seq, o))

    def _paste_job(self, text: str | None) -> Opened:  # "infer" lane
        grabbed = _grab_clipboard()
        if isinstance(grabbed, Image.Image):
            try:
                img = to_rgb(grabbed, source="clipboard image")
            except ImageError as e:
                return Opened(Path("clipboard"), None, str(e), None)
            shown = Shown("clipboard", imaging.display_copy(img), to_input(img), img.size)
            return Opened(Path("clipboard"), self._predict(shown), None, None)
        candidates = [str(g) for g in grabbed] if isinstance(grabbed, list) else []
        candidates += (text or "").strip().splitlines()[:1]
        for c in candidates:
            path = _as_path(c)
            if path is not None and path.is_file():
                return self._open_job(path)
        if text and text.strip():
            shown_text = text.strip()[:80]
            message = f"The clipboard text is not the path of an image file: {shown_text!r}"
        else:
            message = "The clipboard holds no image and no image file path"
        return Opened(Path("clipboard"), None, message, None)

    def step_image(self, step: int) -> None:
        """Next (+1) or previous (-1) image in the current folder, or in the gallery's selection."""
        if self._nav_mode == "gallery" and self.gallery is not None:
            visible = self._gallery_visible()
            if len(visible) == 0:
                return
            current = self._gallery_current
            pos = int(np.searchsorted(visible, current))
            if pos < len(visible) and visible[pos] == current:
                pos = (pos + step) % len(visible)
            else:  # no longer in the selection (filter changed): the nearest one in that direction
                pos = pos % len(visible) if step > 0 else (pos - 1) % len(visible)
            self.gallery_inspect(int(visible[pos]), switch=False)
            return
        if not self._nav:
            self.set_status("Open an image first: Left/Right then move through its folder")
            return
        self._nav_pos = (self._nav_pos + step) % len(self._nav) if self._nav_pos >= 0 else 0
        self.open_image(self._nav[self._nav_pos])

    # -- heatmap -----------------------------------------------------------------------------------

    def toggle_heatmap(self) -> None:
        """H and the Heatmap check box."""
        self.classify_view.heat_var.set(not self.heatmap_on)
        self._heat_changed()

    def _heat_changed(self) -> None:
        model = self.classifier
        if self.heatmap_on and model is not None and not model.info.has_cam:
            self.classify_view.heat_var.set(False)
            self.set_status("This model has no heatmap output ('cam'); re-export it with `cifar10 export`")
        self._render()

    def set_cam_class(self, name: str) -> None:
        """Show the heatmap of class `name` (a click on its bar); turns the heatmap on."""
        self.cam_class = name
        if not self.heatmap_on:
            self.classify_view.heat_var.set(True)
            self._heat_changed()
        else:
            self._render()

    def _cam_for_display(self) -> tuple[np.ndarray | None, str | None]:
        s = self.shown
        if s is None or s.cam is None or s.model is None or s.probs is None or not self.heatmap_on:
            return None, None
        names = s.model.class_names
        name = self.cam_class if self.cam_class in names else names[int(np.argmax(s.probs))]
        return s.cam[names.index(name)], name

    # -- rendering ---------------------------------------------------------------------------------

    def _schedule_render(self) -> None:
        # Window resizes fire many <Configure> events: redraw once they settle.
        if self._render_pending is not None:
            self.root.after_cancel(self._render_pending)
        self._render_pending = self.root.after(40, self._render)

    def _render(self) -> None:
        self._render_pending = None
        v = self.classify_view
        s = self.shown
        cam, cam_name = self._cam_for_display()
        if s is None:
            self.displayed_image = self.model_view_image = None
            dnd = " or drop a file here" if self.dnd_error is None else ""
            v.show_main(None, self._error_text or PLACEHOLDER.format(dnd=dnd))
            v.show_model_view(None)
            v.top_label.configure(text="—")
            v.detail.configure(text="Cannot show this file" if self._error_text else "No image yet")
            v.show_uncertain("")
            v.bars.show([], None)
            v.heat_caption.configure(text="")
            v.source.configure(text="")
            return
        pad = round(12 * self.scale)
        img = imaging.fit_into(s.display, v.canvas.winfo_width() - 2 * pad, v.canvas.winfo_height() - 2 * pad)
        outline = None
        if cam is not None:
            img = imaging.with_heatmap(img, cam)
        elif img.width != img.height:
            outline = imaging.crop_box(img.size)  # the square the model sees
        self.displayed_image = img
        v.show_main(img, "", outline)
        self.model_view_image = imaging.model_view(s.pixels, round(200 * self.scale), cam)
        v.show_model_view(self.model_view_image)
        w, h = s.size
        v.source.configure(text=f"{s.source}  ·  {w}×{h}")
        if s.probs is None or s.model is None:
            v.top_label.configure(text="—")
            v.detail.configure(text="No model loaded")
            v.show_uncertain("")
            v.bars.show([], None)
            v.heat_caption.configure(text="")
            return
        model = s.model
        rows = model.topk(s.probs, min(self.top_k, len(model.class_names)))
        top, p = rows[0]
        v.top_label.configure(text=top)
        detail = f"{p * 100:.1f}% confident"
        if s.true_label is not None:
            detail += f"  ·  true label: {s.true_label} " + ("✓" if s.true_label == top else "✗")
        v.detail.configure(text=detail)
        if self.shown_uncertain:
            t = model.info.threshold or 0.0
            v.show_uncertain(
                f"⚠ Uncertain: the top class is under the model's {t * 100:.0f}% threshold, "
                "so the image may show none of these classes."
            )
        else:
            v.show_uncertain("")
        selected = cam_name if cam is not None else None
        v.bars.show(rows, selected)
        if not model.info.has_cam:
            caption = "This model has no heatmap output"
        elif cam is None:
            caption = "Heatmap off: press H or click a class"
        else:
            caption = f"Heatmap: evidence for “{cam_name}”"
        v.heat_caption.configure(text=caption)

    # ------------------------------------------------------------------------------------------
    # Gallery tab: CIFAR-10 test images with true and predicted labels

    def find_data_dir(self) -> Path | None:
        """--data-dir, then $CIFAR10_DATA, then ../shared/data from the working folder, then the
        download cache: the first that holds the CIFAR-10 test batch."""
        candidates = [self.data_dir_arg, os.environ.get(DATA_ENV), Path.cwd().parent / "shared" / "data",
                      default_data_dir()]  # fmt: skip
        for c in candidates:
            if c and (resolve_data_dir(c) / CIFAR_DIRNAME / "test_batch").is_file():
                return resolve_data_dir(c)
        return None

    def gallery_load(self) -> None:
        """Load the test set in the background (once) and start classifying it."""
        if self.gallery is not None or self._gallery_loading:
            return
        data_dir = self.find_data_dir()
        if data_dir is None:
            self._gallery_note = (
                "The CIFAR-10 test set was not found.\n\nLooked in --data-dir, $CIFAR10_DATA, "
                "../shared/data and ~/.cache/cifar10kit.\nUse “Data folder…” to choose the folder that "
                f"holds {CIFAR_DIRNAME}/."
            )
            self._gallery_render()
            return
        self._gallery_loading = True
        self._gallery_note = f"Loading CIFAR-10 test images from {data_dir}…"
        self._gallery_render()
        limit = self.gallery_limit

        def job() -> Gallery:
            images, labels, names = load_cifar10(data_dir, "test")
            if limit:
                images, labels = images[:limit], labels[:limit]
            return Gallery(images, labels, names, data_dir, np.full(len(labels), -1, np.int64))

        self.tasks.submit("infer", job, on_done=self._on_gallery_loaded, on_error=self._on_gallery_failed)

    def _on_gallery_loaded(self, gallery: Gallery) -> None:
        self._gallery_loading = False
        self.gallery = gallery
        self._gallery_page = 0
        self._gallery_note = ""
        self._gallery_render()
        self._gallery_classify()

    def _on_gallery_failed(self, error: BaseException) -> None:
        self._gallery_loading = False
        self._gallery_note = f"Could not load the CIFAR-10 test set:\n{error}"
        self._gallery_render()
        self.report_error(str(error), modal=False)

    def _gallery_classify(self) -> None:
        """Start a fresh pass over the gallery with the current model, chunk by chunk."""
        g, model = self.gallery, self.classifier
        if g is None or model is None:
            return
        g.preds[:] = -1
        g.done = 0
        g.token = token = object()
        self._gallery_step(g, model, token)

    def _gallery_step(self, g: Gallery, model: Classifier, token: object) -> None:
        start = g.done
        if start >= len(g.labels):
            return
        chunk = g.images[start : start + GALLERY_CHUNK]

        def job() -> np.ndarray:
            return np.argmax(model.run(chunk).probs, axis=1)

        def done(preds: np.ndarray) -> None:
            if g is not self.gallery or token is not g.token or model is not self.classifier:
                return  # a newer pass (new model, new data folder) has replaced this one
            g.preds[start : start + len(preds)] = preds
            g.done = start + len(preds)
            if self._gallery_page_changes(start, g.done):
                self._gallery_render()
            else:
                self._gallery_summary()
            self._gallery_step(g, model, token)

        self.tasks.submit("infer", job, on_done=done)

    def _gallery_page_changes(self, start: int, end: int) -> bool:
        """Whether newly classified images [start, end) change what the current page shows."""
        cells = self._gallery_cells
        if not cells:
            return True
        if self.gallery_view.mistakes_var.get():  # new mistakes can only land on a page with room
            cols, rows = self.gallery_view.grid_shape()
            return len(cells) < cols * rows
        return any(start <= index < end for index, _, _ in cells)

    def _gallery_mistakes(self) -> np.ndarray:
        """Boolean [N]: classified and wrong. Classes are matched by name, not column."""
        g = self.gallery
        assert g is not None and self.classifier is not None
        names = self.classifier.class_names
        column_to_true = np.array([g.class_names.index(n) if n in g.class_names else -2 for n in names])
        done = g.preds >= 0
        wrong = np.zeros(len(g.preds), bool)
        wrong[done] = column_to_true[g.preds[done]] != g.labels[done]
        return wrong

    def _gallery_visible(self) -> np.ndarray:
        """Indices shown under the current filter, ascending."""
        g = self.gallery
        if g is None:
            return np.zeros(0, np.int64)
        if self.gallery_view.mistakes_var.get() and self.classifier is not None:
            return np.flatnonzero(self._gallery_mistakes())
        return np.arange(len(g.labels))

    def gallery_set_mistakes_only(self, on: bool) -> None:
        self.gallery_view.mistakes_var.set(on)
        self._gallery_filter_changed()

    def _gallery_filter_changed(self) -> None:
        self._gallery_page = 0
        self._gallery_render()

    def gallery_turn(self, step: int) -> None:
        """Next (+1) or previous (-1) page."""
        self._gallery_page += step
        self._gallery_render()

    def gallery_dialog(self) -> None:
        folder = filedialog.askdirectory(parent=self.root, title=f"Folder holding {CIFAR_DIRNAME}/")
        if folder:
            self.set_gallery_data_dir(folder)

    def set_gallery_data_dir(self, folder: str | os.PathLike) -> None:
        self.data_dir_arg = Path(folder)
        if not (resolve_data_dir(folder) / CIFAR_DIRNAME / "test_batch").is_file():
            self.report_error(f"{folder}: no {CIFAR_DIRNAME}/test_batch there", modal=True)
            return
        self.gallery = None
        self._gallery_loading = False
        self.gallery_load()

    @property
    def gallery_cells(self) -> list[tuple[int, str, str | None]]:
        """What the current page shows: (test image index, true label, predicted label or None)."""
        return list(self._gallery_cells)

    def _gallery_render(self) -> None:
        v = self.gallery_view
        g = self.gallery
        if g is None:
            self._gallery_cells = []
            v.page_label.configure(text="")
            v.summary.configure(text="")
            v.show_message(self._gallery_note or "Open this tab to load the CIFAR-10 test images")
            return
        if self.tab != "gallery" and self._gallery_cells:
            return  # drawn when the tab is shown; saves work while a pass runs in the background
        visible = self._gallery_visible()
        cols, rows = v.grid_shape()
        per_page = cols * rows
        pages = max(1, -(-len(visible) // per_page))
        self._gallery_page = max(0, min(self._gallery_page, pages - 1))
        page = visible[self._gallery_page * per_page : (self._gallery_page + 1) * per_page]
        model = self.classifier
        pred_names = model.class_names if model is not None else ()
        cells, info = [], []
        side = v.cell_size()[2]
        for i in page:
            true = g.class_names[g.labels[i]]
            pred = pred_names[g.preds[i]] if g.preds[i] >= 0 else None
            cells.append((int(i), imaging.tile(g.images[i], side), true, pred))
            info.append((int(i), true, pred))
        self._gallery_cells = info
        v.page_label.configure(text=f"Page {self._gallery_page + 1} / {pages}")
        if self.gallery_view.mistakes_var.get() and not len(visible):
            v.show_message("No mistakes (yet)" if model is not None else "Load a model to find mistakes")
        else:
            v.show_cells(cells, self.gallery_inspect)
        self._gallery_summary()

    def _gallery_summary(self) -> None:
        g, model = self.gallery, self.classifier
        if g is None:
            return
        n = len(g.labels)
        if model is None:
            text = f"{n:,} test images · no model loaded"
        else:
            wrong = int(self._gallery_mistakes().sum())
            acc = 1 - wrong / g.done if g.done else 0.0
            progress = f"classified {g.done:,} / {n:,}" if g.done < n else f"{n:,} images"
            text = f"{progress} · accuracy {acc * 100:.1f}% · {wrong:,} mistakes"
        self.gallery_view.summary.configure(text=text)

    def gallery_inspect(self, index: int, switch: bool = True) -> None:
        """Show test image `index` in the Classify tab (a click on a gallery cell)."""
        g = self.gallery
        if g is None:
            return
        pixels = g.images[index]
        shown = Shown(
            f"CIFAR-10 test image #{index}", Image.fromarray(pixels), pixels, (32, 32),
            true_label=g.class_names[g.labels[index]], gallery_index=index,
        )  # fmt: skip
        self._view_seq += 1
        seq = self._view_seq
        self._nav_mode, self._gallery_current = "gallery", index

        def done(result: Shown) -> None:
            if seq == self._view_seq:
                self._show(result, new=True)

        self.tasks.submit("infer", self._predict, shown, on_done=done)
        if switch:
            self.show_tab("classify")

    # ------------------------------------------------------------------------------------------
    # Batch tab: a folder classified in the background into a sortable table

    def batch_dialog(self) -> None:
        """Ctrl+B and the Choose folder button."""
        self.show_tab("batch")
        folder = filedialog.askdirectory(parent=self.root, title="Classify every image in a folder")
        if folder:
            self.batch_start(folder)

    @property
    def batch_running(self) -> bool:
        return self._batch_cancel is not None

    def batch_start(self, folder: str | os.PathLike) -> None:
        model = self.classifier
        if model is None:
            self.report_error("Load a model before classifying a folder (Model tab)", modal=True)
            return
        if self.batch_running:
            self.report_error("A folder is already being classified: cancel it first", modal=True)
            return
        folder = Path(folder)
        self.show_tab("batch")
        v = self.batch_view
        v.tree.delete(*v.tree.get_children())
        self._batch_data.clear()
        self._batch_photos.clear()
        self._batch_sort = (None, False)
        v.mark_sorted(None, False)
        v.folder.configure(text=str(folder))
        v.progress.configure(value=0, maximum=1)
        v.count.configure(text="Looking for images…")
        v.cancel_button.configure(state="normal")
        v.export_button.configure(state="disabled")
        self._batch_run += 1
        self._batch_folder = folder
        self._batch_cancel = cancel = threading.Event()
        self.set_status(f"Classifying the images in {folder}…")
        self.tasks.submit(
            "batch", self._batch_job, model, folder, cancel, self._batch_run,
            on_done=self._on_batch_done, on_error=self._on_batch_failed,
        )  # fmt: skip

    def _batch_job(
        self, model: Classifier, folder: Path, cancel: threading.Event, run: int
    ) -> tuple[int, int, int, float]:  # "batch" lane
        t0 = time.perf_counter()
        errors: list[Result] = []
        paths = collect([str(folder)], errors)
        total = len(paths) + len(errors)
        rows: list[tuple[Result, Image.Image | None]] = [(r, None) for r in errors]
        done, side = len(errors), round(40 * self.scale)
        last_post = time.perf_counter()
        results = classify_paths(model, paths, top_k=5, batch_size=32)
        try:
            for r in results:
                if cancel.is_set():
                    break
                rows.append((r, _thumbnail(r, side) if done < BATCH_THUMBS else None))
                done += 1
                if time.perf_counter() - last_post > 0.1 or done == total:
                    self.tasks.post(self._batch_rows, run, rows, done, total)
                    rows, last_post = [], time.perf_counter()
        finally:
            results.close()
        if rows:
            self.tasks.post(self._batch_rows, run, rows, done, total)
        return run, done, total, time.perf_counter() - t0

    def _batch_rows(self, run: int, rows: list[tuple[Result, Image.Image | None]], done: int, total: int) -> None:
        if run != self._batch_run:
            return
        v = self.batch_view
        for r, thumb in rows:
            iid = str(len(self._batch_data))
            self._batch_data[iid] = r
            name = _relative(r.path, self._batch_folder)
            values = (
                r.label or "",
                f"{r.probability * 100:.1f}%" if r.probability is not None else "",
                "yes" if r.uncertain else "",
                _without_prefix(r.error, r.path) if r.error else "",
            )
            tags = ("error",) if r.error else ("uncertain",) if r.uncertain else ()
            kwargs: dict[str, Any] = {}
            if thumb is not None:
                self._batch_photos[iid] = kwargs["image"] = photo(thumb)
            v.tree.insert("", "end", iid=iid, text=" " + name, values=values, tags=tags, **kwargs)
        v.progress.configure(maximum=max(total, 1), value=done)
        errors = sum(1 for r in self._batch_data.values() if r.error)
        v.count.configure(text=f"{done:,} / {total:,} images · {_plural(errors, 'error')}")

    def _on_batch_done(self, outcome: tuple[int, int, int, float]) -> None:
        run, done, total, seconds = outcome
        if run != self._batch_run:
            return
        cancelled = self._batch_cancel is not None and self._batch_cancel.is_set()
        self._batch_cancel = None
        v = self.batch_view
        v.cancel_button.configure(state="disabled")
        v.export_button.configure(state="normal" if self._batch_data else "disabled")
        errors = sum(1 for r in self._batch_data.values() if r.error)
        if cancelled:
            self.set_status(f"Cancelled after {done:,} of {total:,} images")
        elif total == 0:
            self.report_error(f"{self._batch_folder}: no images found", modal=False)
        elif errors == done:  # an empty folder (collect reports it as an error row) or only bad files
            first = next(r.error for r in self._batch_data.values() if r.error)
            self.report_error(first if done == 1 else f"None of {done:,} files could be read; {first}", modal=False)
        else:
            rate = done / seconds if seconds else 0
            self.set_status(
                f"Classified {_plural(done, 'image')} ({_plural(errors, 'error')}) in {seconds:.1f} s, {rate:.0f}/s"
            )
        if self._batch_sort[0] is not None:
            self._apply_batch_sort()

    def _on_batch_failed(self, error: BaseException) -> None:
        self._batch_cancel = None
        self.batch_view.cancel_button.configure(state="disabled")
        self.batch_view.export_button.configure(state="normal" if self._batch_data else "disabled")
        self._on_worker_error(error)

    def batch_cancel(self) -> None:
        if self._batch_cancel is not None:
            self._batch_cancel.set()
            self.set_status("Cancelling…")

    def batch_sort(self, column: str) -> None:
        """A click on a column heading: sort by it; a second click reverses."""
        current, reverse = self._batch_sort
        self._batch_sort = (column, not reverse if current == column else False)
        self._apply_batch_sort()

    def _apply_batch_sort(self) -> None:
        column, reverse = self._batch_sort
        keys: dict[str | None, Callable[[Result], Any]] = {
            "#0": lambda r: r.path.lower(),
            "label": lambda r: (r.label is None, r.label or ""),
            "probability": lambda r: r.probability if r.probability is not None else -1.0,
            "uncertain": lambda r: r.uncertain,
            "error": lambda r: (r.error is None, r.error or ""),
        }
        key = keys[column]
        order = sorted(self._batch_data, key=lambda iid: key(self._batch_data[iid]), reverse=reverse)
        for pos, iid in enumerate(order):
            self.batch_view.tree.move(iid, "", pos)
        self.batch_view.mark_sorted(column, reverse)

    def batch_rows(self) -> list[dict[str, Any]]:
        """The table as shown, top to bottom."""
        rows = []
        for iid in self.batch_view.tree.get_children():
            r = self._batch_data[iid]
            values = dict(zip(BATCH_COLUMNS, self.batch_view.tree.item(iid, "values")))
            rows.append({"file": self.batch_view.tree.item(iid, "text").strip(), "result": r, **values})
        return rows

    def batch_export_dialog(self) -> None:
        if not self._batch_data:
            self.set_status("Nothing to export yet: classify a folder first")
            return
        path = filedialog.asksaveasfilename(
            parent=self.root, title="Export results as CSV", defaultextension=".csv",
            initialfile="predictions.csv", filetypes=[("CSV", "*.csv"), ("All files", "*")],
        )  # fmt: skip
        if path:
            self.batch_export_csv(path)

    def batch_export_csv(self, path: str | os.PathLike) -> bool:
        """Write the table, in its current order, as CSV; False (and a message) on failure."""
        header = ["path", "label", "probability", "uncertain", "top_k", "error"]
        try:
            with open(path, "w", newline="", encoding="utf-8") as f:
                w = csv.writer(f)
                w.writerow(header)
                for row in self.batch_rows():
                    r: Result = row["result"]
                    top = ";".join(f"{n}:{p:.4f}" for n, p in r.top_k)
                    prob = f"{r.probability:.6f}" if r.probability is not None else ""
                    w.writerow([r.path, r.label or "", prob, "yes" if r.uncertain else "", top, r.error or ""])
        except OSError as e:
            self.report_error(f"{path}: could not write ({e.strerror or e})", modal=True)
            return False
        self.set_status(f"Wrote {len(self._batch_data):,} rows to {path}")
        return True

    def _batch_inspect_selected(self) -> None:
        selected = self.batch_view.tree.selection()
        if selected and selected[0] in self._batch_data:
            self.show_tab("classify")
            self.open_image(self._batch_data[selected[0]].path)

    # ------------------------------------------------------------------------------------------
    # Model tab: open another model, show what it says about itself

    def open_model_dialog(self) -> None:
        start = self.classifier.path.parent if self.classifier else Path.cwd()
        path = filedialog.askopenfilename(
            parent=self.root, title="Open a model", initialdir=str(start),
            filetypes=[("ONNX models", "*.onnx"), ("All files", "*")],
        )  # fmt: skip
        if path:
            self.load_model(path)

    def load_model(self, path: str | os.PathLike, modal: bool = True) -> None:
        """Open a model in the background; on failure the current model stays in use."""
        path = Path(path)
        self.set_status(f"Loading model {path.name}…")
        self.model_view.note.configure(text=f"Loading {path}…")

        def job() -> Classifier:  # "infer" lane: later jobs in the lane use this model at once
            model = Classifier(path, provider=self.provider, notify=lambda m: self.tasks.post(self.set_status, m))
            self._lane_model = model
            return model

        self.tasks.submit(
            "infer", job, on_done=self._on_model_loaded, on_error=lambda e: self._on_model_failed(path, e, modal)
        )

    def _on_model_loaded(self, model: Classifier) -> None:
        self.classifier = model
        self.model_view.note.configure(text="")
        self._show_model_info()
        if self.heatmap_on and not model.info.has_cam:
            self.classify_view.heat_var.set(False)
        self.set_status(f"Model {model.path.name} ready ({model.info.architecture}, {_short(model.provider)})")
        if self.shown is not None:  # the shown image, re-classified by the new model
            seq = self._view_seq
            self.tasks.submit(
                "infer", self._predict, self.shown,
                on_done=lambda s: self._show(s, new=False) if seq == self._view_seq else None,
            )  # fmt: skip
        self._gallery_classify()
        self._render()

    def _on_model_failed(self, path: Path, error: BaseException, modal: bool) -> None:
        reason = str(error) if isinstance(error, (ContractError, ValueError, RuntimeError, OSError)) else repr(error)
        keep = f"; still using {self.classifier.path.name}" if self.classifier else ""
        self.model_view.note.configure(text="")
        self.report_error(f"Could not open the model: {reason}{keep}", modal=modal)
        if self.classifier is None:
            self._show_model_info()

    @property
    def model_fields(self) -> dict[str, str]:
        """The Model tab's values by field name."""
        return {name: str(label.cget("text")) for name, label in self.model_view.values.items()}

    def _show_model_info(self) -> None:
        m = self.classifier
        if m is None:
            self.model_view.show({"File": "No model loaded: use “Open model…”"}, "")
            return
        info, raw = m.info, m.info.raw
        size = m.path.stat().st_size / 2**20 if m.path.exists() else 0.0
        t = info.threshold
        fields = {
            "File": f"{m.path}  ({size:.1f} MB)",
            "Classes": f"{info.num_classes}: {', '.join(info.class_names)}",
            "Test accuracy": f"{info.test_accuracy * 100:.2f}%" if info.test_accuracy is not None else "not recorded",
            "Test set": raw.get("test_set", "—"),
            "Architecture": info.architecture,
            "Dataset": info.dataset,
            "Test-time augmentation": info.tta,
            "Uncertainty threshold": _threshold_text(t),
            "Precision": raw.get("precision", "—"),
            "Calibration": _calibration_text(raw.get("temperature")),
            "Heatmaps (cam output)": "yes" if info.has_cam else "no",
            "Created": info.created,
            "Written by": raw.get("exporter", f"cifar10kit {info.version}"),
            "Provider": m.provider,
            "Last prediction": self._latency_text(),
        }
        self.model_view.show(fields, _recipe_text(raw))

    def _latency_text(self) -> str:
        s = self.shown
        if s is None or s.model is None or s.model is not self.classifier:
            return "no prediction yet"
        return f"{s.seconds * 1000:.1f} ms (one image, {'with' if s.cam is not None else 'without'} heatmaps)"

    def _update_runtime_line(self) -> None:
        m = self.classifier
        if m is None:
            self.status.runtime.configure(text="no model")
            return
        text = f"{m.info.architecture} · {_short(m.provider)}"
        s = self.shown
        if s is not None and s.model is m:
            text += f" · {s.seconds * 1000:.1f} ms"
        self.status.runtime.configure(text=text)
        self.model_view.values["Last prediction"].configure(text=self._latency_text())

    # ------------------------------------------------------------------------------------------
    # Shared plumbing: status, errors, tabs, keys, drag and drop

    def set_status(self, text: str) -> None:
        self.status.set(text)
        self._update_runtime_line()

    def report_error(self, message: str, modal: bool = True) -> None:
        """Status bar always; a dialog too for explicit actions, unless modal_errors is off."""
        self.last_error = message
        self.status.set(message, error=True)
        if modal and self.modal_errors:
            messagebox.showerror(TITLE, message, parent=self.root)

    def _on_worker_error(self, error: BaseException) -> None:
        if isinstance(error, (ImageError, ContractError, OSError)):
            self.report_error(str(error), modal=False)
            return
        traceback.print_exception(type(error), error, error.__traceback__)
        self.report_error(f"Unexpected error: {type(error).__name__}: {error}", modal=False)

    def _on_tk_exception(self, exc: type, value: BaseException, tb: Any) -> None:
        traceback.print_exception(exc, value, tb)
        self.report_error(f"Unexpected error: {exc.__name__}: {value}", modal=False)

    def _on_tab_changed(self, _event: Any = None) -> None:
        if self.tab == "gallery":
            self.root.update_idletasks()  # the canvas needs its real size to lay out the grid
            if self.gallery is None:
                self.gallery_load()
            self._gallery_cells = []
            self._gallery_render()

    def _bind_keys(self) -> None:
        r = self.root
        pairs: list[tuple[str, Callable[[], None]]] = [
            ("o", self.open_dialog), ("v", self.paste), ("b", self.batch_dialog),
        ]  # fmt: skip
        modifier = "Command" if sys.platform == "darwin" else "Control"
        for key, action in pairs:
            for k in (key, key.upper()):
                r.bind(f"<{modifier}-{k}>", lambda e, a=action: (a(), "break")[1])
        for i, name in enumerate(TABS, start=1):
            r.bind(f"<{modifier}-Key-{i}>", lambda e, n=name: self.show_tab(n))
        r.bind("<Left>", lambda e: self._on_arrow(e, -1))
        r.bind("<Right>", lambda e: self._on_arrow(e, 1))
        for k in ("h", "H"):
            r.bind(f"<KeyPress-{k}>", self._on_h)

    def _typing(self, event: Any) -> bool:
        """Whether a key went to a widget that uses it itself (text fields, the table)."""
        return isinstance(event.widget, (tk.Text, tk.Entry, ttk.Entry, ttk.Treeview))

    def _on_arrow(self, event: Any, step: int) -> None:
        if self._typing(event):
            return
        if self.tab == "classify":
            self.step_image(step)
        elif self.tab == "gallery":
            self.gallery_turn(step)

    def _on_h(self, event: Any) -> None:
        if not self._typing(event) and self.tab == "classify":
            self.toggle_heatmap()

    def _setup_dnd(self) -> str | None:
        """Drag and drop through tkinterdnd2's Tk extension; None if it works, else why not."""
        try:
            from tkinterdnd2 import TkinterDnD  # noqa: F401 - adds the dnd methods to widgets

            TkinterDnD._require(self.root)
            targets = [self.classify_view.canvas, self.classify_view.side, self.classify_view,
                       self.batch_view.tree, self.batch_view]  # fmt: skip
            for widget in targets:
                widget.drop_target_register("DND_Files")  # type: ignore[attr-defined]
                widget.dnd_bind("<<Drop>>", self._on_drop)  # type: ignore[attr-defined]
        except Exception as e:  # noqa: BLE001 - missing package, no binary for this platform, old Tk
            reason = "tkinterdnd2 is not installed" if isinstance(e, ImportError) else str(e)
            self.set_status(f"Drag and drop unavailable ({reason}); use Ctrl+O or Ctrl+V")
            return reason
        return None

    def _on_drop(self, event: Any) -> str:
        """A drop: a folder runs a batch, a file is opened."""
        items = [p for p in self.root.tk.splitlist(event.data) if p]
        path = _as_path(items[0]) if items else None
        if path is None:
            self.set_status("Drop an image file or a folder")
        elif path.is_dir():
            self.batch_start(path)
        else:
            self.show_tab("classify")
            self.open_image(path)
        return str(getattr(event, "action", "copy"))


# ----------------------------------------------------------------------------------------------
# Helpers


def _folder_images(folder: Path) -> list[Path]:
    try:
        entries = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")]
    except OSError:
        return []
    return sorted((p for p in entries if p.is_file()), key=lambda p: p.name.lower())


def _grab_clipboard() -> Any:
    """An image, a list of file names, or None (PIL needs xclip or wl-paste on Linux)."""
    try:
        from PIL import ImageGrab

        return ImageGrab.grabclipboard()
    except Exception:  # noqa: BLE001 - unsupported platform or tool missing: fall back to text
        return None


def _as_path(text: str) -> Path | None:
    """A path from dropped or pasted text: plain, quoted, or a file:// URI."""
    text = text.strip().strip('"').strip("'")
    if not text:
        return None
    if text.startswith("file://"):
        return Path(unquote(urlparse(text).path))
    return Path(text).expanduser()


def _thumbnail(result: Result, side: int) -> Image.Image | None:
    if result.error:
        return None
    try:
        return imaging.tile(prepare(result.path), side)
    except Exception:  # noqa: BLE001 - a thumbnail is decoration; the row still shows the result
        return None


def _without_prefix(error: str, path: str) -> str:
    """Runtime messages start with the file's path, which the table already shows."""
    return error[len(path) + 2 :] if error.startswith(f"{path}: ") else error


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def _relative(path: str, folder: Path | None) -> str:
    try:
        return str(Path(path).relative_to(folder)) if folder else path
    except ValueError:
        return path


def _recipe_text(raw: dict[str, str]) -> str:
    """The training recipe one setting a line ("epochs: 8"), then seed and checkpoint hash."""
    lines = []
    try:
        recipe = json.loads(raw.get("recipe", "") or "{}")
    except json.JSONDecodeError:
        recipe = raw.get("recipe")
    if isinstance(recipe, dict):
        width = max((len(k) for k in recipe), default=0)
        lines += [f"{k:<{width}}  {json.dumps(v)}" for k, v in recipe.items()]
    elif recipe:
        lines.append(str(recipe))
    else:
        lines.append("(not recorded in this file)")
    extra = [f"{k}: {raw[k]}" for k in ("seed", "checkpoint_sha256") if k in raw]
    return "\n".join(lines + ([""] + extra if extra else []))


def _calibration_text(temperature: str | None) -> str:
    try:
        t = float(temperature) if temperature is not None else 1.0
    except ValueError:
        return f"unreadable temperature {temperature!r}"
    if t == 1.0:
        return "none: probabilities are the net's raw confidences"
    return f"temperature {t:.3f}: probabilities are calibrated confidences"


def _threshold_text(t: float | None) -> str:
    if t is None or t <= 0:
        return "none: no prediction is flagged uncertain"
    return f"{t * 100:.1f}%: a top class below this is flagged uncertain"


def _short(provider: str) -> str:
    return provider.replace("ExecutionProvider", "")


def _windows_dpi_awareness() -> None:
    """Without this, Windows bitmap-stretches the whole window on high-DPI screens (blurry text)."""
    if sys.platform != "win32":
        return
    try:
        import ctypes

        ctypes.windll.shcore.SetProcessDpiAwareness(1)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - older Windows: blurry but working
        pass


# ----------------------------------------------------------------------------------------------
# Entry points


def main(
    model: str | None = None,
    image: str | None = None,
    provider: str = "auto",
    data_dir: str | None = None,
) -> int:
    """Open the window; returns the exit status when it is closed. model: default_model_path()."""
    try:
        app = App(model=model, image=image, provider=provider, data_dir=data_dir)
    except tk.TclError as e:
        print(f"cannot open a window: {e} (no display? set DISPLAY or use the command line)", file=sys.stderr)
        return 1
    app.run()
    return 0


def _cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser("python -m cifar10kit.gui", description="The CIFAR-10 classifier desktop app")
    p.add_argument("image", nargs="?", help="an image to classify at start")
    p.add_argument("--model", help="a .onnx model file (default: $CIFAR10_MODEL or the shipped model)")
    p.add_argument("--provider", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--data-dir", help=f"folder holding {CIFAR_DIRNAME}/ for the Gallery tab")
    a = p.parse_args(argv)
    return main(a.model, a.image, a.provider, a.data_dir)


if __name__ == "__main__":
    sys.exit(_cli())
