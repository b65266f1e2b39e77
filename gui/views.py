"""The widgets of each tab. They draw what they are given and report clicks through callbacks; the
state and the work live in app.py.

Sections: theme and fonts, the probability bars, then one class per tab, then the status bar.
"""

from __future__ import annotations

import sys
import tkinter as tk
import tkinter.font as tkfont
from collections.abc import Callable, Sequence
from tkinter import ttk

from PIL import Image, ImageTk

ACCENT = "#2563eb"
ACCENT_SOFT = "#93c5fd"
TRACK = "#e5e7eb"
SELECTED = "#dbeafe"
OK = "#15803d"
BAD = "#b91c1c"
WARN = "#b45309"
MUTED = "#6b7280"
IMAGE_BG = "#2b2b2b"
PANEL_BG = "#ffffff"

# ----------------------------------------------------------------------------------------------
# Theme and fonts


def apply_theme(root: tk.Tk) -> float:
    """Scale Tk to the screen's real DPI, set point-sized fonts and ttk styles; returns the factor by
    which pixel sizes (images, padding) should grow over a 96-DPI screen."""
    dpi = float(root.winfo_fpixels("1i"))
    if not 50 <= dpi <= 600:  # nonsense from a misconfigured X server: assume a normal screen
        dpi = 96.0
    # Tk's scaling is pixels per point; fonts given in points then come out the same physical size
    # on any screen.
    root.tk.call("tk", "scaling", dpi / 72.0)
    scale = max(1.0, dpi / 96.0)

    for name, size in (
        ("TkDefaultFont", 10), ("TkTextFont", 10), ("TkMenuFont", 10), ("TkHeadingFont", 10),
        ("TkCaptionFont", 11), ("TkSmallCaptionFont", 9), ("TkIconFont", 10), ("TkTooltipFont", 9),
    ):  # fmt: skip
        try:
            f = tkfont.nametofont(name)
        except tk.TclError:
            continue
        if f.cget("size") < 0 or f.cget("size") < size:  # negative sizes are pixels: not DPI-aware
            f.configure(size=size)
    family = tkfont.nametofont("TkDefaultFont").cget("family")
    fonts = {
        "C10Big": dict(size=22, weight="bold"),
        "C10Title": dict(size=12, weight="bold"),
        "C10Bold": dict(size=10, weight="bold"),
        "C10Small": dict(size=9),
    }
    # Tk deletes a named font when its Python object is collected: keep them with the window.
    kept = []
    for name, opts in fonts.items():
        if name in tkfont.names(root):
            tkfont.nametofont(name).configure(family=family, **opts)
        else:
            kept.append(tkfont.Font(root, name=name, family=family, **opts))
    root._cifar10kit_fonts = kept  # type: ignore[attr-defined]
    fixed = tkfont.nametofont("TkFixedFont")
    if fixed.cget("size") < 0:
        fixed.configure(size=10)

    style = ttk.Style(root)
    if sys.platform.startswith("linux") and "clam" in style.theme_names():
        style.theme_use("clam")  # the X11 default theme looks dated; native themes elsewhere
    pad = round(4 * scale)
    style.configure("TButton", padding=(round(8 * scale), pad))
    style.configure("TNotebook.Tab", padding=(round(14 * scale), pad))
    style.configure("Big.TLabel", font="C10Big")
    style.configure("Title.TLabel", font="C10Title")
    style.configure("Muted.TLabel", foreground=MUTED)
    style.configure("Small.TLabel", font="C10Small", foreground=MUTED)
    style.configure("Warn.TLabel", font="C10Bold", foreground=WARN)
    style.configure("Key.TLabel", foreground=MUTED)
    style.configure("Status.TLabel", padding=(pad * 2, pad))
    style.configure("Error.Status.TLabel", foreground=BAD)
    if scale > 1.2:  # clam draws these in fixed pixels: grow them with the screen
        style.configure("TCheckbutton", indicatorsize=round(10 * scale))
        style.configure("TRadiobutton", indicatorsize=round(10 * scale))
        style.configure("TScrollbar", arrowsize=round(14 * scale))
    style.configure(
        "Horizontal.TProgressbar", background=ACCENT, lightcolor=ACCENT, darkcolor=ACCENT, troughcolor=TRACK
    )
    line = tkfont.nametofont("TkDefaultFont").metrics("linespace")
    style.configure("Treeview", rowheight=line + round(6 * scale))
    style.configure("Batch.Treeview", rowheight=max(line + round(6 * scale), round(44 * scale)))
    return scale


def photo(img: Image.Image) -> ImageTk.PhotoImage:
    return ImageTk.PhotoImage(img)


# ----------------------------------------------------------------------------------------------
# Probability bars: ranked classes, clickable to choose the heatmap's class


class ProbBars(tk.Canvas):
    def __init__(self, master: tk.Misc, on_click: Callable[[str], None], scale: float):
        super().__init__(master, highlightthickness=0, background=PANEL_BG, height=10, cursor="hand2")
        self.on_click = on_click
        self.scale = scale
        self.rows: list[tuple[str, float]] = []
        self.selected: str | None = None
        self.font = tkfont.nametofont("TkDefaultFont")
        self.bold = tkfont.nametofont("C10Bold")
        self.bind("<Configure>", lambda e: self.redraw())

    def show(self, rows: Sequence[tuple[str, float]], selected: str | None) -> None:
        self.rows, self.selected = list(rows), selected
        self.redraw()

    def redraw(self) -> None:
        self.delete("all")
        line = self.font.metrics("linespace")
        row_h = round(line * 1.75)
        self.configure(height=max(row_h * len(self.rows), 1))
        if not self.rows:
            return
        pad = round(6 * self.scale)
        width = max(self.winfo_width(), 200)
        name_w = max(self.bold.measure(n) for n, _ in self.rows) + 2 * pad
        pct_w = self.bold.measure("100.0%") + pad
        x0, x1 = name_w, width - pct_w - pad
        for i, (name, p) in enumerate(self.rows):
            tag = f"row{i}"
            y0, y1 = i * row_h, (i + 1) * row_h
            mid = (y0 + y1) // 2
            chosen = name == self.selected
            # A filled full-width rectangle makes the whole row clickable, not just its text.
            self.create_rectangle(0, y0, width, y1, fill=SELECTED if chosen else PANEL_BG, width=0, tags=tag)
            font = self.bold if i == 0 or chosen else self.font
            self.create_text(pad, mid, text=name, anchor="w", font=font, tags=tag)
            bar_h = max(4, round(line * 0.55))
            self.create_rectangle(x0, mid - bar_h // 2, x1, mid + bar_h // 2, fill=TRACK, width=0, tags=tag)
            filled = x0 + (x1 - x0) * max(0.0, min(1.0, p))
            color = ACCENT if i == 0 else ACCENT_SOFT
            if filled > x0:
                self.create_rectangle(x0, mid - bar_h // 2, filled, mid + bar_h // 2, fill=color, width=0, tags=tag)
            self.create_text(width - pad, mid, text=f"{p * 100:.1f}%", anchor="e", font=font, tags=tag)
            self.tag_bind(tag, "<Button-1>", lambda e, n=name: self.on_click(n))


# ----------------------------------------------------------------------------------------------
# Classify tab


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
        self.heat_var = tk.BooleanVar(value=False)
        self.heat_check = ttk.Checkbutton(bar, text="Heatmap (H)", variable=self.heat_var, command=actions["heatmap"])
        self.heat_check.pack(side="left", padx=(pad * 3, 0))
        self.source = ttk.Label(bar, text="", style="Muted.TLabel", anchor="e")
        self.source.pack(side="right", fill="x", expand=True)

        body = ttk.Frame(self)
        body.pack(fill="both", expand=True)
        body.columnconfigure(0, weight=1)
        body.rowconfigure(0, weight=1)
        self.canvas = tk.Canvas(body, background=IMAGE_BG, highlightthickness=0, width=480, height=400)
        self.canvas.grid(row=0, column=0, sticky="nsew")

        side = tk.Frame(body, background=PANEL_BG, width=round(380 * scale), padx=pad * 2, pady=pad * 2)
        side.grid(row=0, column=1, sticky="ns", padx=(pad * 2, 0))
        side.grid_propagate(False)
        side.pack_propagate(False)
        self.side = side
        ttk.Label(side, text="PREDICTION", style="Small.TLabel", background=PANEL_BG).pack(anchor="w")
        self.top_label = ttk.Label(side, text="—", style="Big.TLabel", background=PANEL_BG)
        self.top_label.pack(anchor="w")
        self.detail = ttk.Label(side, text="", style="Muted.TLabel", background=PANEL_BG)
        self.detail.pack(anchor="w")
        self.uncertain = ttk.Label(
            side, text="", style="Warn.TLabel", background=PANEL_BG, wraplength=round(340 * scale)
        )  # packed only while it has something to say
        self.hint = ttk.Label(side, text="Click a class to see its heatmap", style="Small.TLabel", background=PANEL_BG)
        self.hint.pack(anchor="w", pady=(pad * 2, 2))
        self.bars = ProbBars(side, actions["cam_class"], scale)
        self.bars.pack(fill="x")
        ttk.Label(side, text="WHAT THE MODEL SEES (32×32)", style="Small.TLabel", background=PANEL_BG).pack(
            anchor="w", pady=(pad * 2, 2)
        )
        seen = tk.Frame(side, background=PANEL_BG)
        seen.pack(fill="x")
        self.model_image = ttk.Label(seen, background=PANEL_BG)
        self.model_image.pack(side="left", anchor="n")
        self.heat_caption = ttk.Label(
            seen, text="", style="Small.TLabel", background=PANEL_BG, wraplength=round(150 * scale), justify="left"
        )
        self.heat_caption.pack(side="left", anchor="n", padx=(pad * 2, 0))
        self._photos: list[ImageTk.PhotoImage] = []

    def show_main(self, img: Image.Image | None, placeholder: str, outline: tuple | None = None) -> None:
        """Draw `img` centred (already scaled to fit), or the placeholder text when there is none."""
        c = self.canvas
        c.delete("all")
        w, h = c.winfo_width(), c.winfo_height()
        if img is None:
            c.create_text(
                w // 2, h // 2, text=placeholder, fill="#d1d5db", font="C10Title", justify="center",
                width=max(w - 40, 100),
            )  # fmt: skip
            return
        ph = photo(img)
        self._photos = [ph]
        c.create_image(w // 2, h // 2, image=ph, anchor="center")
        if outline is not None:
            ox, oy = (w - img.width) // 2, (h - img.height) // 2
            left, top, right, bottom = outline
            c.create_rectangle(ox + left, oy + top, ox + right - 1, oy + bottom - 1, outline="#fbbf24", dash=(6, 4))

    def show_uncertain(self, text: str) -> None:
        self.uncertain.configure(text=text)
        if text:
            self.uncertain.pack(anchor="w", pady=(round(6 * self.scale), 0), before=self.hint)
        else:
            self.uncertain.pack_forget()

    def show_model_view(self, img: Image.Image | None) -> None:
        if img is None:
            self.model_image.configure(image="")
            self._model_photo = None
            return
        self._model_photo = photo(img)
        self.model_image.configure(image=self._model_photo)


# ----------------------------------------------------------------------------------------------
# Gallery tab


class GalleryView(ttk.Frame):
    def __init__(self, master: tk.Misc, scale: float, actions: dict[str, Callable[..., None]]):
        super().__init__(master, padding=round(8 * scale))
        self.scale = scale
        pad = round(6 * scale)
        bar = ttk.Frame(self)
        bar.pack(fill="x", pady=(0, pad))
        self.mistakes_var = tk.BooleanVar(value=False)
        ttk.Radiobutton(bar, text="All", value=False, variable=self.mistakes_var, command=actions["filter"]).pack(
            side="left"
        )
        ttk.Radiobutton(
            bar, text="Mistakes only", value=True, variable=self.mistakes_var, command=actions["filter"]
        ).pack(side="left", padx=(pad, 0))
        ttk.Button(bar, text="◀", width=3, command=lambda: actions["page"](-1)).pack(side="left", padx=(pad * 3, 0))
        self.page_label = ttk.Label(bar, text="", width=16, anchor="center")
        self.page_label.pack(side="left")
        ttk.Button(bar, text="▶", width=3, command=lambda: actions["page"](1)).pack(side="left")
        ttk.Button(bar, text="Data folder…", command=actions["data_dir"]).pack(side="right")
        self.summary = ttk.Label(bar, text="", style="Muted.TLabel", anchor="e")
        self.summary.pack(side="right", fill="x", expand=True, padx=pad)

        self.canvas = tk.Canvas(self, background=PANEL_BG, highlightthickness=0)
        self.canvas.pack(fill="both", expand=True)
        ttk.Label(self, text="Click an image to inspect it · ◀ ▶ or Left/Right turn pages", style="Small.TLabel").pack(
            anchor="w", pady=(pad, 0)
        )
        self.font = tkfont.nametofont("C10Small")
        self._photos: list[ImageTk.PhotoImage] = []

    def cell_size(self) -> tuple[int, int, int]:
        """(cell width, cell height, image side) in pixels."""
        side = round(96 * self.scale)
        line = self.font.metrics("linespace")
        return side + round(16 * self.scale), side + 2 * line + round(14 * self.scale), side

    def grid_shape(self) -> tuple[int, int]:
        cw, ch, _ = self.cell_size()
        return max(1, self.canvas.winfo_width() // cw), max(1, self.canvas.winfo_height() // ch)

    def show_message(self, text: str) -> None:
        self.canvas.delete("all")
        self._photos = []
        w, h = self.canvas.winfo_width(), self.canvas.winfo_height()
        self.canvas.create_text(
            w // 2, h // 2, text=text, fill=MUTED, font="C10Title", justify="center", width=max(w - 60, 200)
        )

    def show_cells(
        self,
        cells: Sequence[tuple[int, Image.Image, str, str | None]],
        on_click: Callable[[int], None],
    ) -> None:
        """cells: (dataset index, tile image, true label, predicted label or None while pending)."""
        c = self.canvas
        c.delete("all")
        self._photos = []
        cw, ch, side = self.cell_size()
        cols, _ = self.grid_shape()
        x_off = (c.winfo_width() - cols * cw) // 2
        line = self.font.metrics("linespace")
        for k, (index, img, true, pred) in enumerate(cells):
            x = x_off + (k % cols) * cw + cw // 2
            y = (k // cols) * ch + round(6 * self.scale)
            tag = f"cell{index}"
            ph = photo(img)
            self._photos.append(ph)
            c.create_image(x, y, image=ph, anchor="n", tags=tag)
            ty = y + side + round(3 * self.scale)
            c.create_text(x, ty, text=true, anchor="n", font=self.font, fill=MUTED, tags=tag)
            if pred is None:
                text, color = "…", MUTED
            elif pred == true:
                text, color = f"✓ {pred}", OK
            else:
                text, color = f"✗ {pred}", BAD
            c.create_text(x, ty + line, text=text, anchor="n", font=self.font, fill=color, tags=tag)
            c.tag_bind(tag, "<Button-1>", lambda e, i=index: on_click(i))
            c.tag_bind(tag, "<Enter>", lambda e: c.configure(cursor="hand2"))
            c.tag_bind(tag, "<Leave>", lambda e: c.configure(cursor=""))


# ----------------------------------------------------------------------------------------------
# Batch tab

BATCH_COLUMNS = ("label", "probability", "uncertain", "error")


class BatchView(ttk.Frame):
    def __init__(self, master: tk.Misc, scale: float, actions: dict[str, Callable[..., None]]):
        super().__init__(master, padding=round(8 * scale))
        pad = round(6 * scale)
        bar = ttk.Frame(self)
        bar.pack(fill="x", pady=(0, pad))
        ttk.Button(bar, text="Choose folder…", command=actions["choose"]).pack(side="left")
        self.cancel_button = ttk.Button(bar, text="Cancel", command=actions["cancel"], state="disabled")
        self.cancel_button.pack(side="left", padx=(pad, 0))
        self.export_button = ttk.Button(bar, text="Export CSV…", command=actions["export"], state="disabled")
        self.export_button.pack(side="left", padx=(pad, 0))
        self.folder = ttk.Label(bar, text="No folder chosen (Ctrl+B)", style="Muted.TLabel", anchor="e")
        self.folder.pack(side="right", fill="x", expand=True)

        prog = ttk.Frame(self)
        prog.pack(fill="x", pady=(0, pad))
        self.progress = ttk.Progressbar(prog, mode="determinate", maximum=1)
        self.progress.pack(side="left", fill="x", expand=True)
        self.count = ttk.Label(prog, text="", width=28, anchor="e")
        self.count.pack(side="right", padx=(pad, 0))

        table = ttk.Frame(self)
        table.pack(fill="both", expand=True)
        self.tree = ttk.Treeview(table, columns=BATCH_COLUMNS, style="Batch.Treeview", selectmode="browse")
        scroll = ttk.Scrollbar(table, orient="vertical", command=self.tree.yview)
        self.tree.configure(yscrollcommand=scroll.set)
        self.tree.pack(side="left", fill="both", expand=True)
        scroll.pack(side="right", fill="y")
        headings = {"#0": "File", "label": "Label", "probability": "Probability", "uncertain": "Uncertain",
                    "error": "Error"}  # fmt: skip
        widths = {"#0": 320, "label": 120, "probability": 100, "uncertain": 90, "error": 360}
        for col, text in headings.items():
            self.tree.heading(col, text=text, anchor="w", command=lambda c=col: actions["sort"](c))
            anchor = "e" if col == "probability" else "w"
            stretch = col in ("#0", "error")
            self.tree.column(col, width=round(widths[col] * scale), anchor=anchor, stretch=stretch)
        self.headings = headings
        self.tree.tag_configure("error", foreground=BAD)
        self.tree.tag_configure("uncertain", foreground=WARN)
        self.tree.bind("<Double-1>", lambda e: actions["inspect"]())
        self.tree.bind("<Return>", lambda e: actions["inspect"]())
        ttk.Label(
            self, text="Double-click a row to inspect it · click a column heading to sort", style="Small.TLabel"
        ).pack(anchor="w", pady=(pad, 0))

    def mark_sorted(self, column: str | None, reverse: bool) -> None:
        for col, text in self.headings.items():
            arrow = (" ▼" if reverse else " ▲") if col == column else ""
            self.tree.heading(col, text=text + arrow)


# ----------------------------------------------------------------------------------------------
# Model tab

MODEL_FIELDS = (
    "File", "Classes", "Test accuracy", "Test set", "Architecture", "Dataset", "Test-time augmentation",
    "Uncertainty threshold", "Precision", "Calibration", "Heatmaps (cam output)", "Created", "Written by", "Provider",
    "Last prediction",
)  # fmt: skip


class ModelView(ttk.Frame):
    def __init__(self, master: tk.Misc, scale: float, actions: dict[str, Callable[..., None]]):
        super().__init__(master, padding=round(8 * scale))
        pad = round(6 * scale)
        bar = ttk.Frame(self)
        bar.pack(fill="x", pady=(0, pad))
        ttk.Button(bar, text="Open model…", command=actions["open_model"]).pack(side="left")
        self.note = ttk.Label(bar, text="", style="Muted.TLabel", anchor="e")
        self.note.pack(side="right", fill="x", expand=True)

        box = ttk.LabelFrame(self, text="About this model file", padding=pad * 2)
        box.pack(fill="x")
        box.columnconfigure(1, weight=1)
        self.values: dict[str, ttk.Label] = {}
        wrap = round(800 * scale)
        for row, name in enumerate(MODEL_FIELDS):
            ttk.Label(box, text=name, style="Key.TLabel").grid(row=row, column=0, sticky="nw", padx=(0, pad * 3))
            value = ttk.Label(box, text="—", wraplength=wrap, justify="left")
            value.grid(row=row, column=1, sticky="w", pady=1)
            self.values[name] = value

        recipe = ttk.LabelFrame(self, text="Training recipe", padding=pad)
        recipe.pack(fill="both", expand=True, pady=(pad * 2, 0))
        self.recipe = tk.Text(
            recipe, height=8, wrap="word", font="TkFixedFont", relief="flat", background="#f9fafb",
            borderwidth=0, padx=pad, pady=pad,
        )  # fmt: skip
        scroll = ttk.Scrollbar(recipe, orient="vertical", command=self.recipe.yview)
        self.recipe.configure(yscrollcommand=scroll.set, state="disabled")
        self.recipe.pack(side="left", fill="both", expand=True)
        scroll.pack(side="right", fill="y")

    def show(self, fields: dict[str, str], recipe: str) -> None:
        for name, label in self.values.items():
            label.configure(text=fields.get(name, "—"))
        self.recipe.configure(state="normal")
        self.recipe.delete("1.0", "end")
        self.recipe.insert("1.0", recipe)
        self.recipe.configure(state="disabled")


# ----------------------------------------------------------------------------------------------
# Status bar


class StatusBar(ttk.Frame):
    def __init__(self, master: tk.Misc):
        super().__init__(master)
        ttk.Separator(self, orient="horizontal").pack(fill="x")
        # Packed first, so a long message is cut rather than pushing the model line out of view.
        self.runtime = ttk.Label(self, text="", style="Status.TLabel", anchor="e")
        self.runtime.pack(side="right")
        self.message = ttk.Label(self, text="", style="Status.TLabel", anchor="w", width=1)
        self.message.pack(side="left", fill="x", expand=True)

    def set(self, text: str, error: bool = False) -> None:
        self.message.configure(text=text, style="Error.Status.TLabel" if error else "Status.TLabel")
