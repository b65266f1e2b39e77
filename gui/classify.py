"""The Classify tab: one image, what the model says about it, and where it looked.

An image arrives from a file (Open, Left/Right through its folder, a drop), the clipboard, the
gallery or the batch table. It is decoded and classified in the "infer" lane, so the window never
waits; a result that arrives after the user has opened something newer is dropped.

Sections: the view, the controller. The jobs it runs in the background are in classify_jobs.py.
"""

from __future__ import annotations

import os
import tkinter as tk
from collections.abc import Callable
from pathlib import Path
from tkinter import filedialog, ttk
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageTk

from ..runtime.preprocess import IMAGE_SUFFIXES, center_square
from . import imaging, text
from .classify_jobs import Heatmap, Opened, Shown, compute_heatmaps, open_clipboard, open_file, predict
from .prob_bars import ProbBars
from .theme import IMAGE_BG, PANEL_BG, photo

if TYPE_CHECKING:
    from .app import App

# ----------------------------------------------------------------------------------------------
# The view: draws what it is given, reports clicks


class ClassifyView(ttk.Frame):
    def __init__(self, master: tk.Misc, scale: float, actions: dict[str, Callable[..., None]]):
        super().__init__(master, padding=round(8 * scale))
        self.scale = scale
        pad = round(6 * scale)

        bar = ttk.Frame(self)
        bar.pack(fill="x", pady=(0, pad))
        ttk.Button(bar, text="Open…", command=actions["open"]).pack(side="left")
        ttk.Button(bar, text="Paste", command=actions["paste"]).pack(side="left", padx=(pad, 0))
        ttk.Button(bar, text="◀ Previous", command=actions["prev"]).pack(side="left", padx=(pad * 2, 0))
        ttk.Button(bar, text="Next ▶", command=actions["next"]).pack(side="left", padx=(pad, 0))
        self._heat_var = tk.BooleanVar(value=False)
        ttk.Checkbutton(bar, text="Heatmap (H)", variable=self._heat_var, command=actions["heatmap"]).pack(
            side="left", padx=(pad * 3, 0)
        )
        self._source = ttk.Label(bar, text="", style="Muted.TLabel", anchor="e")
        self._source.pack(side="right", fill="x", expand=True)

        body = ttk.Frame(self)
        body.pack(fill="both", expand=True)
        body.columnconfigure(0, weight=1)
        body.rowconfigure(0, weight=1)
        self._canvas = tk.Canvas(body, background=IMAGE_BG, highlightthickness=0, width=480, height=400)
        self._canvas.grid(row=0, column=0, sticky="nsew")
        self._canvas.bind("<Configure>", lambda e: actions["resize"]())

        side = tk.Frame(body, background=PANEL_BG, width=round(380 * scale), padx=pad * 2, pady=pad * 2)
        side.grid(row=0, column=1, sticky="ns", padx=(pad * 2, 0))
        side.grid_propagate(False)
        side.pack_propagate(False)
        self._side = side
        ttk.Label(side, text="PREDICTION", style="Small.TLabel", background=PANEL_BG).pack(anchor="w")
        self._top = ttk.Label(side, text="—", style="Big.TLabel", background=PANEL_BG)
        self._top.pack(anchor="w")
        self._detail = ttk.Label(side, text="", style="Muted.TLabel", background=PANEL_BG)
        self._detail.pack(anchor="w")
        self._uncertain = ttk.Label(
            side, text="", style="Warn.TLabel", background=PANEL_BG, wraplength=round(340 * scale)
        )  # packed only while it has something to say
        self._hint = ttk.Label(side, text="Click a class to see its heatmap", style="Small.TLabel", background=PANEL_BG)
        self._hint.pack(anchor="w", pady=(pad * 2, 2))
        self._bars = ProbBars(side, actions["heat_class"], scale)
        self._bars.pack(fill="x")
        ttk.Label(side, text="WHAT THE MODEL SEES (32×32)", style="Small.TLabel", background=PANEL_BG).pack(
            anchor="w", pady=(pad * 2, 2)
        )
        seen = tk.Frame(side, background=PANEL_BG)
        seen.pack(fill="x")
        self._model_label = ttk.Label(seen, background=PANEL_BG)
        self._model_label.pack(side="left", anchor="n")
        self._caption = ttk.Label(
            seen, text="", style="Small.TLabel", background=PANEL_BG, wraplength=round(150 * scale), justify="left"
        )
        self._caption.pack(side="left", anchor="n", padx=(pad * 2, 0))
        self._photos: list[ImageTk.PhotoImage] = []
        self.picture: Image.Image | None = None  # what the main canvas shows now
        self.model_picture: Image.Image | None = None  # what "what the model sees" shows now

    # -- drawing ---------------------------------------------------------------------------------

    def room(self) -> tuple[int, int]:
        """The space an image may fill in the canvas, inside a margin."""
        pad = round(12 * self.scale)
        return self._canvas.winfo_width() - 2 * pad, self._canvas.winfo_height() - 2 * pad

    def show_message(self, message: str, detail: str) -> None:
        """No image: a message in the canvas, an empty prediction panel."""
        c = self._canvas
        c.delete("all")
        w, h = c.winfo_width(), c.winfo_height()
        c.create_text(
            w // 2, h // 2, text=message, fill="#d1d5db", font="C10Title", justify="center", width=max(w - 40, 100)
        )
        self.picture = None
        self._show_model_picture(None)
        self._source.configure(text="")
        self.show_no_prediction(detail)

    def show_picture(self, img: Image.Image, model_img: Image.Image, source: str, outline: bool) -> None:
        """`img` centred (already scaled to fit); outline: dash the centre square the model sees."""
        c = self._canvas
        c.delete("all")
        w, h = c.winfo_width(), c.winfo_height()
        self._photos = [photo(img)]
        c.create_image(w // 2, h // 2, image=self._photos[0], anchor="center")
        if outline:
            ox, oy = (w - img.width) // 2, (h - img.height) // 2
            left, top, right, bottom = center_square(img.size)
            c.create_rectangle(ox + left, oy + top, ox + right - 1, oy + bottom - 1, outline="#fbbf24", dash=(6, 4))
        self.picture = img
        self._show_model_picture(model_img)
        self._source.configure(text=source)

    def show_prediction(
        self, top: str, detail: str, warning: str, rows: list, selected: str | None, caption: str
    ) -> None:
        self._top.configure(text=top)
        self._detail.configure(text=detail)
        self._show_warning(warning)
        self._bars.show(rows, selected)
        self._caption.configure(text=caption)

    def show_no_prediction(self, detail: str) -> None:
        self.show_prediction("—", detail, "", [], None, "")

    def _show_warning(self, warning: str) -> None:
        self._uncertain.configure(text=warning)
        if warning:
            self._uncertain.pack(anchor="w", pady=(round(6 * self.scale), 0), before=self._hint)
        else:
            self._uncertain.pack_forget()

    def _show_model_picture(self, img: Image.Image | None) -> None:
        self.model_picture = img
        self._model_photo = photo(img) if img is not None else None
        self._model_label.configure(image=self._model_photo or "")

    # -- what it shows, for the controller and for tests -----------------------------------------

    def heatmap_on(self) -> bool:
        return bool(self._heat_var.get())

    def set_heatmap(self, on: bool) -> None:
        self._heat_var.set(on)

    def top_class(self) -> str | None:
        value = str(self._top.cget("text"))
        return None if value == "—" else value

    def warning(self) -> str:
        return str(self._uncertain.cget("text"))

    def caption(self) -> str:
        return str(self._caption.cget("text"))

    def drop_targets(self) -> list[tk.Misc]:
        return [self._canvas, self._side, self]


# ----------------------------------------------------------------------------------------------
# The controller


class ClassifyTab:
    def __init__(self, app: App, notebook: ttk.Notebook):
        self.app = app
        self.view = ClassifyView(
            notebook,
            app.scale,
            {
                "open": self.open_dialog,
                "paste": self.paste,
                "prev": lambda: self.step_image(-1),
                "next": lambda: self.step_image(1),
                "heatmap": self.render,
                "heat_class": self.set_heat_class,
                "resize": self._schedule_render,
            },
        )
        self.shown: Shown | None = None
        self.heat_class: str | None = None  # None: the top class
        self._error: str | None = None  # shown in the canvas after a failed open
        self._seq = 0  # bumps on every open, so a slow stale result never replaces a newer one
        # Left/Right: through the folder of the last opened file, or the gallery's selection. Both
        # move when the key is pressed, not when the image arrives, so fast presses are not lost.
        self._nav_mode = "folder"
        self._nav: list[Path] = []
        self._nav_pos = -1
        self._gallery_index = -1
        self._render_pending: str | None = None
        self._heat_pending: set[int] = set()  # ids of the Shown whose heatmaps are being computed

    # -- opening ---------------------------------------------------------------------------------

    def open_dialog(self) -> None:
        """Ctrl+O and the Open button."""
        start = self._nav[0].parent if self._nav else Path.cwd()
        path = filedialog.askopenfilename(
            parent=self.app.root,
            title="Open an image",
            initialdir=str(start),
            filetypes=[("Images", " ".join(f"*{e}" for e in IMAGE_SUFFIXES)), ("All files", "*")],
        )
        if path:
            self.app.show_tab("classify")
            self.open_image(path)

    def open_image(self, path: str | os.PathLike) -> None:
        """Decode and classify `path` in the background; the result replaces the shown image."""
        path = Path(path)
        seq = self._next_seq()
        self._nav_mode = "folder"
        if path in self._nav:
            self._nav_pos = self._nav.index(path)
        self.app.set_status(f"Opening {path.name}…")
        self.app.tasks.submit(
            "infer", lambda: open_file(path, self.app.lane_model), on_done=lambda o: self._opened(seq, o)
        )

    def paste(self) -> None:
        """Ctrl+V: an image on the clipboard, else a file path (or file:// URI) as clipboard text."""
        try:
            clip = self.app.root.clipboard_get()
        except tk.TclError:
            clip = None
        seq = self._next_seq()
        self.app.set_status("Pasting…")
        self.app.show_tab("classify")
        self.app.tasks.submit(
            "infer", lambda: open_clipboard(clip, self.app.lane_model), on_done=lambda o: self._opened(seq, o)
        )

    def show_gallery_image(self, pixels: np.ndarray, name: str, true_label: str, index: int) -> None:
        """A gallery image: Left/Right then move through the gallery's selection."""
        shown = Shown(name, Image.fromarray(pixels), pixels, (32, 32), true_label=true_label, gallery_index=index)
        seq = self._next_seq()
        self._nav_mode, self._gallery_index = "gallery", index
        self.app.tasks.submit(
            "infer",
            lambda: predict(self.app.lane_model, shown),
            on_done=lambda s: self._show(s, new=True) if seq == self._seq else None,
        )

    def step_image(self, step: int) -> None:
        """Next (+1) or previous (-1) image in the current folder, or in the gallery's selection."""
        if self._nav_mode == "gallery":
            self.app.gallery.step(self._gallery_index, step)
            return
        if not self._nav:
            self.app.set_status("Open an image first: Left/Right then move through its folder")
            return
        self._nav_pos = (self._nav_pos + step) % len(self._nav) if self._nav_pos >= 0 else 0
        self.open_image(self._nav[self._nav_pos])

    def model_changed(self) -> None:
        """A new model is in use: classify the shown image again with it."""
        if self.shown is not None:
            seq, shown = self._seq, self.shown
            self.app.tasks.submit(
                "infer",
                lambda: predict(self.app.lane_model, shown),
                on_done=lambda s: self._show(s, new=False) if seq == self._seq else None,
            )
        self.render()

    def latency(self) -> float | None:
        """Seconds the current model took for the shown image; None if it has not classified it."""
        s = self.shown
        return s.seconds if s is not None and s.model is not None and s.model is self.app.model else None

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _opened(self, seq: int, opened: Opened) -> None:
        if seq != self._seq:
            return  # the user has opened something else since
        if opened.siblings is not None:
            self._nav = opened.siblings
            resolved = opened.path.resolve()
            self._nav_pos = next((i for i, p in enumerate(self._nav) if p.resolve() == resolved), -1)
        if opened.error is not None and opened.siblings is None:
            self.app.report_error(opened.error, modal=False)  # a bad paste: keep the image that is shown
        elif opened.error is not None:
            self.shown, self._error = None, opened.error
            self.app.set_title(opened.path.name)
            self.app.report_error(opened.error, modal=False)
            self.render()
        else:
            assert opened.shown is not None
            self._show(opened.shown, new=True)

    def _show(self, shown: Shown, new: bool) -> None:
        self.shown, self._error = shown, None
        if new:
            self.heat_class = None
        name = Path(shown.source).name if shown.gallery_index is None else shown.source
        self.app.set_title(name)
        self.render()
        if shown.model is None or shown.probs is None:
            self.app.set_status(f"{name}: no model loaded, so no prediction (open one in the Model tab)")
            return
        top, p = shown.model.topk(shown.probs, 1)[0]
        self.app.set_status(text.opened_status(name, shown.size, top, p, shown.seconds))

    # -- heatmap ---------------------------------------------------------------------------------

    def toggle_heatmap(self) -> None:
        """H and the Heatmap check box."""
        self.view.set_heatmap(not self.view.heatmap_on())
        self.render()

    def set_heat_class(self, name: str) -> None:
        """Show the heatmap of class `name` (a click on its bar); turns the heatmap on."""
        self.heat_class = name
        self.view.set_heatmap(True)
        self.render()

    def _heatmap(self) -> tuple[Heatmap | None, str | None]:
        """The heatmap to draw and its class; (None, name) while it is being computed, (None, None)
        when the heatmap is off or there is no prediction to explain."""
        s = self.shown
        if s is None or s.model is None or s.probs is None or not self.view.heatmap_on():
            return None, None
        names = s.model.class_names
        name = self.heat_class if self.heat_class in names else names[int(np.argmax(s.probs))]
        if not s.heatmaps:
            self._request_heatmaps(s)
        return s.heatmaps.get(name), name

    def _request_heatmaps(self, shown: Shown) -> None:
        if id(shown) in self._heat_pending:
            return
        self._heat_pending.add(id(shown))
        assert shown.model is not None

        def done(maps: dict[str, Heatmap]) -> None:
            self._heat_pending.discard(id(shown))
            shown.heatmaps.update(maps)
            if shown is self.shown:
                self.render()

        def failed(error: BaseException) -> None:
            self._heat_pending.discard(id(shown))
            self.app.on_worker_error(error)

        self.app.tasks.submit("infer", compute_heatmaps, shown.model, shown, on_done=done, on_error=failed)

    # -- rendering -------------------------------------------------------------------------------

    def _schedule_render(self) -> None:
        # Window resizes fire many <Configure> events: redraw once they settle.
        if self._render_pending is not None:
            self.app.root.after_cancel(self._render_pending)
        self._render_pending = self.app.root.after(40, self.render)

    def cancel_render(self) -> None:
        if self._render_pending is not None:
            self.app.root.after_cancel(self._render_pending)
            self._render_pending = None

    def render(self) -> None:
        self._render_pending = None
        s, v = self.shown, self.view
        if s is None:
            message = self._error or text.placeholder(self.app.dnd_works)
            v.show_message(message, "Cannot show this file" if self._error else "No image yet")
            return
        heat, heat_class = self._heatmap()
        values = heat.values if heat is not None else None
        img = imaging.fit_into(s.display, *v.room())
        if values is not None:
            img = imaging.with_heatmap(img, values)
        model_img = imaging.model_view(s.pixels, round(200 * self.app.scale), values)
        w, h = s.size
        v.show_picture(img, model_img, f"{s.source}  ·  {w}×{h}", outline=values is None and img.width != img.height)
        if s.probs is None or s.model is None:
            v.show_no_prediction("No model loaded")
            return
        model = s.model
        rows = model.topk(s.probs, min(self.app.top_k, len(model.class_names)))
        top, p = rows[0]
        warning = text.uncertain_warning(model.info.uncertainty_threshold) if s.uncertain else ""
        caption = text.heat_caption(heat_class, heat.method if heat else None, heat.grid if heat else None)
        v.show_prediction(top, text.prediction_detail(p, s.true_label, top), warning, rows, heat_class, caption)
