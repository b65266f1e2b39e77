"""The Gallery tab: CIFAR-10 test images with their true and predicted labels, page by page.

It shows the full test set when a data folder is found (gallery_pages.find_data_dir) and the
examples shipped with the package otherwise, so it is never empty. Images are classified in the
background chunk by chunk; a page redraws when its own images get their predictions.

Sections: the view, the controller (loading, classifying, drawing, navigation).
"""

from __future__ import annotations

import os
import tkinter as tk
import tkinter.font as tkfont
from collections.abc import Callable, Sequence
from pathlib import Path
from tkinter import filedialog, ttk
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageTk

from ..runtime.dataset import CIFAR_DIRNAME
from ..runtime.session import Classifier
from . import gallery_pages as pages
from . import imaging
from .gallery_pages import GalleryImages
from .theme import BAD, MUTED, OK, PANEL_BG, photo

if TYPE_CHECKING:
    from .app import App

CHUNK = 256  # images per background step: small enough that an opened image never waits long

# ----------------------------------------------------------------------------------------------
# The view


class GalleryView(ttk.Frame):
    def __init__(self, master: tk.Misc, scale: float, actions: dict[str, Callable[..., None]]):
        super().__init__(master, padding=round(8 * scale))
        self.scale = scale
        pad = round(6 * scale)
        bar = ttk.Frame(self)
        bar.pack(fill="x", pady=(0, pad))
        self._mistakes_var = tk.BooleanVar(value=False)
        for text, value, padx in (("All", False, 0), ("Mistakes only", True, pad)):
            ttk.Radiobutton(bar, text=text, value=value, variable=self._mistakes_var, command=actions["filter"]).pack(
                side="left", padx=(padx, 0)
            )
        ttk.Button(bar, text="◀", width=3, command=lambda: actions["page"](-1)).pack(side="left", padx=(pad * 3, 0))
        self._page = ttk.Label(bar, text="", width=16, anchor="center")
        self._page.pack(side="left")
        ttk.Button(bar, text="▶", width=3, command=lambda: actions["page"](1)).pack(side="left")
        ttk.Button(bar, text="Data folder…", command=actions["data_dir"]).pack(side="right")
        self._summary = ttk.Label(bar, text="", style="Muted.TLabel", anchor="e")
        self._summary.pack(side="right", fill="x", expand=True, padx=pad)

        self._canvas = tk.Canvas(self, background=PANEL_BG, highlightthickness=0)
        self._canvas.pack(fill="both", expand=True)
        self._canvas.bind("<Configure>", lambda e: actions["resize"]())
        self._note = ttk.Label(self, text="", style="Small.TLabel")
        self._note.pack(anchor="w", pady=(pad, 0))
        self._font = tkfont.nametofont("C10Small")
        self._photos: list[ImageTk.PhotoImage] = []
        self._cells: list[tuple[int, str, str | None]] = []

    def cell_size(self) -> tuple[int, int, int]:
        """(cell width, cell height, image side) in pixels."""
        side = round(96 * self.scale)
        line = self._font.metrics("linespace")
        return side + round(16 * self.scale), side + 2 * line + round(14 * self.scale), side

    def grid_shape(self) -> tuple[int, int]:
        cw, ch, _ = self.cell_size()
        return max(1, self._canvas.winfo_width() // cw), max(1, self._canvas.winfo_height() // ch)

    def mistakes_only(self) -> bool:
        return bool(self._mistakes_var.get())

    def set_mistakes_only(self, on: bool) -> None:
        self._mistakes_var.set(on)

    def show_status(self, page: str, summary: str, note: str) -> None:
        self._page.configure(text=page)
        self._summary.configure(text=summary)
        self._note.configure(text=note)

    def show_summary(self, summary: str) -> None:
        self._summary.configure(text=summary)

    def show_message(self, text: str) -> None:
        self._canvas.delete("all")
        self._photos, self._cells = [], []
        w, h = self._canvas.winfo_width(), self._canvas.winfo_height()
        self._canvas.create_text(
            w // 2, h // 2, text=text, fill=MUTED, font="C10Title", justify="center", width=max(w - 60, 200)
        )

    def show_cells(
        self, cells: Sequence[tuple[int, Image.Image, str, str | None]], on_click: Callable[[int], None]
    ) -> None:
        """cells: (image index, tile image, true label, predicted label or None while pending)."""
        c = self._canvas
        c.delete("all")
        self._photos = []
        self._cells = [(index, true, pred) for index, _, true, pred in cells]
        cw, ch, side = self.cell_size()
        cols, _ = self.grid_shape()
        x_off = (c.winfo_width() - cols * cw) // 2
        line = self._font.metrics("linespace")
        for k, (index, img, true, pred) in enumerate(cells):
            x = x_off + (k % cols) * cw + cw // 2
            y = (k // cols) * ch + round(6 * self.scale)
            tag = f"cell{index}"
            ph = photo(img)
            self._photos.append(ph)
            c.create_image(x, y, image=ph, anchor="n", tags=tag)
            ty = y + side + round(3 * self.scale)
            c.create_text(x, ty, text=true, anchor="n", font=self._font, fill=MUTED, tags=tag)
            if pred is None:
                text, color = "…", MUTED
            elif pred == true:
                text, color = f"✓ {pred}", OK
            else:
                text, color = f"✗ {pred}", BAD
            c.create_text(x, ty + line, text=text, anchor="n", font=self._font, fill=color, tags=tag)
            c.tag_bind(tag, "<Button-1>", lambda e, i=index: on_click(i))
            c.tag_bind(tag, "<Enter>", lambda e: c.configure(cursor="hand2"))
            c.tag_bind(tag, "<Leave>", lambda e: c.configure(cursor=""))

    def cells(self) -> list[tuple[int, str, str | None]]:
        """What the page shows: (image index, true label, predicted label or None while pending)."""
        return list(self._cells)


# ----------------------------------------------------------------------------------------------
# The controller

HINT = "Click an image to inspect it · ◀ ▶ or Left/Right turn pages"


class GalleryTab:
    def __init__(self, app: App, notebook: ttk.Notebook, data_dir: str | os.PathLike | None, limit: int | None):
        self.app = app
        self.view = GalleryView(
            notebook,
            app.scale,
            {
                "filter": self._filter_changed,
                "page": self.turn,
                "data_dir": self.data_dir_dialog,
                "resize": self.render,
            },
        )
        self.data_dir = Path(data_dir) if data_dir else None
        self.limit = limit  # first N test images only (tests)
        self.images: GalleryImages | None = None
        self._loading = False
        self._page = 0
        self._note = ""

    # -- loading ---------------------------------------------------------------------------------

    def load(self) -> None:
        """Load the test set (or the shipped examples) in the background, once, then classify it."""
        if self.images is not None or self._loading:
            return
        found = pages.find_data_dir(self.data_dir)
        self._loading = True
        self._note = f"Loading CIFAR-10 test images from {found}…" if found else "Loading the example images…"
        self.render()
        limit = self.limit

        def job() -> GalleryImages:
            return pages.load_test_set(found, limit) if found else pages.load_shipped_examples()

        self.app.tasks.submit("infer", job, on_done=self._loaded, on_error=self._failed)

    def _loaded(self, images: GalleryImages) -> None:
        self._loading = False
        self.images = images
        self._page = 0
        self._note = ""
        self.render()
        self.classify()

    def _failed(self, error: BaseException) -> None:
        self._loading = False
        self._note = f"Could not load the gallery images:\n{error}"
        self.render()
        self.app.report_error(str(error), modal=False)

    def data_dir_dialog(self) -> None:
        folder = filedialog.askdirectory(parent=self.app.root, title=f"Folder holding {CIFAR_DIRNAME}/")
        if folder:
            self.set_data_dir(folder)

    def set_data_dir(self, folder: str | os.PathLike) -> None:
        if not pages.has_test_set(folder):
            self.app.report_error(f"{folder}: no {CIFAR_DIRNAME}/test_batch there", modal=True)
            return
        self.data_dir = Path(folder)
        self.images = None
        self._loading = False
        self.load()

    # -- classifying, chunk by chunk -------------------------------------------------------------

    def classify(self) -> None:
        """Start a fresh pass over the images with the current model (a new model starts another)."""
        g, model = self.images, self.app.model
        if g is None or model is None:
            return
        g.preds[:] = -1
        g.done = 0
        g.token = token = object()
        self._step(g, model, token)

    def _step(self, g: GalleryImages, model: Classifier, token: object) -> None:
        start = g.done
        if start >= len(g.labels):
            return
        chunk = g.images[start : start + CHUNK]

        def done(preds: np.ndarray) -> None:
            if g is not self.images or token is not g.token or model is not self.app.model:
                return  # a newer pass (new model, new data folder) has replaced this one
            g.preds[start : start + len(preds)] = preds
            g.done = start + len(preds)
            cols, rows = self.view.grid_shape()
            on_page = [i for i, _, _ in self.view.cells()]
            if pages.page_changes(on_page, start, g.done, self.view.mistakes_only(), cols * rows):
                self.render()
            else:
                self.view.show_summary(pages.summary(g, model.class_names))
            self._step(g, model, token)

        self.app.tasks.submit("infer", lambda: np.argmax(model.run(chunk).probs, axis=1), on_done=done)

    # -- drawing and navigation ------------------------------------------------------------------

    def _model_classes(self) -> tuple[str, ...] | None:
        return self.app.model.class_names if self.app.model is not None else None

    def _visible(self) -> np.ndarray:
        return pages.visible(self.images, self._model_classes(), self.view.mistakes_only())

    def render(self) -> None:
        g, v = self.images, self.view
        if g is None:
            v.show_status("", "", HINT)
            v.show_message(self._note or "Open this tab to load the CIFAR-10 test images")
            return
        if self.app.current_tab() != "gallery" and v.cells():
            return  # drawn when the tab is shown; saves work while a pass runs in the background
        shown = self._visible()
        cols, rows = v.grid_shape()
        self._page, count, on_page = pages.paginate(shown, self._page, cols * rows)
        names = self._model_classes() or ()
        side = v.cell_size()[2]
        cells = [
            (
                int(i),
                imaging.tile(g.images[i], side),
                g.class_names[g.labels[i]],
                names[g.preds[i]] if g.preds[i] >= 0 else None,
            )
            for i in on_page
        ]
        note = pages.examples_note() if g.examples else HINT
        v.show_status(f"Page {self._page + 1} / {count}", pages.summary(g, self._model_classes()), note)
        if v.mistakes_only() and not len(shown):
            v.show_message("No mistakes (yet)" if self.app.model is not None else "Load a model to find mistakes")
        else:
            v.show_cells(cells, self.inspect)

    def tab_shown(self) -> None:
        if self.images is None:
            self.load()
        self.view.show_message("")  # forget the old cells, so the page is drawn for the current size
        self.render()

    def set_mistakes_only(self, on: bool) -> None:
        self.view.set_mistakes_only(on)
        self._filter_changed()

    def _filter_changed(self) -> None:
        self._page = 0
        self.render()

    def turn(self, step: int) -> None:
        """Next (+1) or previous (-1) page."""
        self._page += step
        self.render()

    def inspect(self, index: int, switch: bool = True) -> None:
        """Show image `index` in the Classify tab (a click on a cell)."""
        g = self.images
        if g is None:
            return
        self.app.classify.show_gallery_image(g.images[index], g.name(index), g.class_names[g.labels[index]], index)
        if switch:
            self.app.show_tab("classify")

    def step(self, current: int, step: int) -> None:
        """Left/Right in the Classify tab after a gallery image: the next one under the filter."""
        index = pages.step_within(self._visible(), current, step)
        if index is not None:
            self.inspect(index, switch=False)
