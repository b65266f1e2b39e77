"""Colours, fonts and ttk styles, scaled to the screen's DPI; shared by every tab."""

from __future__ import annotations

import sys
import tkinter as tk
import tkinter.font as tkfont
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
        ("TkDefaultFont", 10),
        ("TkTextFont", 10),
        ("TkMenuFont", 10),
        ("TkHeadingFont", 10),
        ("TkCaptionFont", 11),
        ("TkSmallCaptionFont", 9),
        ("TkIconFont", 10),
        ("TkTooltipFont", 9),
    ):
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
    """A Tk image of `img`; the caller keeps a reference (Tk forgets images Python collects)."""
    return ImageTk.PhotoImage(img)
