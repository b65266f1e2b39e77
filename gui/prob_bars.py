"""The ranked class probabilities as horizontal bars; a click on a row picks that class's heatmap."""

from __future__ import annotations

import tkinter as tk
import tkinter.font as tkfont
from collections.abc import Callable, Sequence

from .theme import ACCENT, ACCENT_SOFT, PANEL_BG, SELECTED, TRACK


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
