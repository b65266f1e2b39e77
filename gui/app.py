"""The desktop app's window: the four tabs in a notebook, the status bar, keys, drag and drop, and the
entry point. Each tab lives in its own module with its view and controller (classify.py,
gallery.py, batch.py, model_tab.py); this file only wires them together.

Built on cifar10kit.runtime only (onnxruntime, numpy, Pillow): never PyTorch. Decoding and inference
run in background lanes (tasks.py), so the window never freezes; a bad image or model file is
reported in the status bar (and a dialog, for explicit actions) and changes nothing else.
"""

from __future__ import annotations

import os
import sys
import tkinter as tk
import traceback
from collections.abc import Callable
from tkinter import messagebox, ttk
from typing import Any

from ..runtime.contract import ContractError
from ..runtime.preprocess import ImageError
from ..runtime.session import Classifier, resolve_model_path
from . import text
from .batch import BatchTab
from .classify import ClassifyTab
from .gallery import GalleryTab
from .inputs import as_path
from .model_tab import ModelTab
from .tasks import Tasks
from .theme import apply_theme

TITLE = "CIFAR-10 classifier"
TABS = ("classify", "gallery", "batch", "model")

# ----------------------------------------------------------------------------------------------
# The status bar


class StatusBar(ttk.Frame):
    def __init__(self, master: tk.Misc):
        super().__init__(master)
        ttk.Separator(self, orient="horizontal").pack(fill="x")
        # Packed first, so a long message is cut rather than pushing the model line out of view.
        self._runtime = ttk.Label(self, text="", style="Status.TLabel", anchor="e")
        self._runtime.pack(side="right")
        self._message = ttk.Label(self, text="", style="Status.TLabel", anchor="w", width=1)
        self._message.pack(side="left", fill="x", expand=True)

    def show(self, message: str, error: bool = False) -> None:
        self._message.configure(text=message, style="Error.Status.TLabel" if error else "Status.TLabel")

    def show_runtime(self, line: str) -> None:
        self._runtime.configure(text=line)

    def message(self) -> str:
        return str(self._message.cget("text"))

    def is_error(self) -> bool:
        return str(self._message.cget("style")).startswith("Error")


# ----------------------------------------------------------------------------------------------
# The window


class App:
    """The main window. Usable without mainloop (scripts, tests): call the tabs' actions, then
    `app.tasks.wait_idle()`.

    modal_errors: False reports errors in the status bar only (never a blocking dialog).
    threads: onnxruntime's CPU threads (0: the runtime's default, the cores this process may use)."""

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        image: str | os.PathLike | None = None,
        provider: str = "auto",
        data_dir: str | os.PathLike | None = None,
        modal_errors: bool = True,
        top_k: int = 10,
        gallery_limit: int | None = None,
        threads: int = 0,
        root: tk.Tk | None = None,
    ):
        _windows_dpi_awareness()
        self.root = root or tk.Tk(className="cifar10kit")
        self.root.title(TITLE)
        self.root.report_callback_exception = self._on_tk_exception
        self.scale = apply_theme(self.root)
        self.provider, self.threads, self.top_k = provider, threads, top_k
        self.modal_errors = modal_errors
        self.model: Classifier | None = None  # the model in use; Tk thread
        self.lane_model: Classifier | None = None  # the same, as the "infer" lane sees it; that thread only
        self._closed = False

        self._build(data_dir, gallery_limit)
        self.tasks = Tasks(self.root, self.on_worker_error)
        self.dnd_error = self._setup_dnd()
        self._bind_keys()
        self.classify.render()
        self.model_tab.refresh()
        self.root.protocol("WM_DELETE_WINDOW", self.close)

        # Show the window first, then load the model in the background: the window is usable at
        # once and onnxruntime's start-up is not on the critical path.
        self.root.update_idletasks()
        self.model_tab.load(resolve_model_path(model), modal=False)
        if image:
            self.classify.open_image(image)

    def _build(self, data_dir: str | os.PathLike | None, gallery_limit: int | None) -> None:
        s = self.scale
        screen_w, screen_h = self.root.winfo_screenwidth(), self.root.winfo_screenheight()
        w, h = min(round(1240 * s), screen_w - 40), min(round(800 * s), screen_h - 60)
        self.root.geometry(f"{w}x{h}")
        self.root.minsize(min(round(880 * s), w), min(round(580 * s), h))

        outer = ttk.Frame(self.root)
        outer.pack(fill="both", expand=True)
        self.notebook = ttk.Notebook(outer)
        self.notebook.pack(fill="both", expand=True, padx=round(6 * s), pady=(round(6 * s), 0))
        self.classify = ClassifyTab(self, self.notebook)
        self.gallery = GalleryTab(self, self.notebook, data_dir, gallery_limit)
        self.batch = BatchTab(self, self.notebook)
        self.model_tab = ModelTab(self, self.notebook)
        for tab, label in (
            (self.classify, "Classify"),
            (self.gallery, "Gallery"),
            (self.batch, "Batch"),
            (self.model_tab, "Model"),
        ):
            self.notebook.add(tab.view, text=label, underline=0)
        self.notebook.bind("<<NotebookTabChanged>>", self._on_tab_changed)
        self.notebook.enable_traversal()  # Ctrl+Tab, and Alt + the underlined letter
        # The notebook takes focus when a tab is clicked, and its own Left/Right would then switch
        # tabs: here they keep meaning previous/next image (or page), as everywhere else.
        self.notebook.bind("<Left>", lambda e: (self._on_arrow(e, -1), "break")[1])
        self.notebook.bind("<Right>", lambda e: (self._on_arrow(e, 1), "break")[1])
        self.status = StatusBar(outer)
        self.status.pack(fill="x", side="bottom")

    @property
    def dnd_works(self) -> bool:
        return getattr(self, "dnd_error", "not set up yet") is None

    # -- tabs, model, status ---------------------------------------------------------------------

    def current_tab(self) -> str:
        return TABS[self.notebook.index(self.notebook.select())]

    def show_tab(self, name: str) -> None:
        self.notebook.select(TABS.index(name))
        self.root.update_idletasks()

    def _on_tab_changed(self, _event: Any = None) -> None:
        if self.current_tab() == "gallery":
            self.root.update_idletasks()  # the canvas needs its real size to lay out the grid
            self.gallery.tab_shown()

    def use_model(self, model: Classifier) -> None:
        """A model has loaded (Model tab): every tab switches to it."""
        self.model = model
        where = text.short_provider(model.provider)
        self.set_status(f"Model {model.path.name} ready ({model.info.architecture}, {where})")
        self.classify.model_changed()
        self.gallery.classify()

    def set_title(self, name: str) -> None:
        self.root.title(f"{TITLE} — {name}")

    def set_status(self, message: str) -> None:
        self.status.show(message)
        self._refresh_runtime_line()

    def _refresh_runtime_line(self) -> None:
        self.status.show_runtime(text.runtime_line(self.model, self.classify.latency()))
        self.model_tab.show_latency()

    def report_error(self, message: str, modal: bool = True) -> None:
        """Status bar always; a dialog too for explicit actions, unless modal_errors is off."""
        self.status.show(message, error=True)
        if modal and self.modal_errors:
            messagebox.showerror(TITLE, message, parent=self.root)

    def on_worker_error(self, error: BaseException) -> None:
        if isinstance(error, (ImageError, ContractError, OSError)):
            self.report_error(str(error), modal=False)
            return
        traceback.print_exception(type(error), error, error.__traceback__)
        self.report_error(f"Unexpected error: {type(error).__name__}: {error}", modal=False)

    def _on_tk_exception(self, exc: type, value: BaseException, tb: Any) -> None:
        traceback.print_exception(exc, value, tb)
        self.report_error(f"Unexpected error: {exc.__name__}: {value}", modal=False)

    # -- keys ------------------------------------------------------------------------------------

    def _bind_keys(self) -> None:
        r = self.root
        pairs: list[tuple[str, Callable[[], None]]] = [
            ("o", self.classify.open_dialog),
            ("v", self.classify.paste),
            ("b", self.batch.choose_dialog),
        ]
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
        if self.current_tab() == "classify":
            self.classify.step_image(step)
        elif self.current_tab() == "gallery":
            self.gallery.turn(step)

    def _on_h(self, event: Any) -> None:
        if not self._typing(event) and self.current_tab() == "classify":
            self.classify.toggle_heatmap()

    # -- drag and drop ---------------------------------------------------------------------------

    def _setup_dnd(self) -> str | None:
        """Drag and drop through tkinterdnd2's Tk extension; None if it works, else why not."""
        try:
            from tkinterdnd2 import TkinterDnD  # noqa: F401 - adds the dnd methods to widgets

            TkinterDnD._require(self.root)
            for widget in self.classify.view.drop_targets() + self.batch.view.drop_targets():
                widget.drop_target_register("DND_Files")  # type: ignore[attr-defined]
                widget.dnd_bind("<<Drop>>", self._on_drop)  # type: ignore[attr-defined]
        except Exception as e:  # noqa: BLE001 - missing package, no binary for this platform, old Tk
            reason = "tkinterdnd2 is not installed" if isinstance(e, ImportError) else str(e)
            self.set_status(f"Drag and drop unavailable ({reason}); use Ctrl+O or Ctrl+V")
            return reason
        return None

    def _on_drop(self, event: Any) -> str:
        self.drop(event.data)
        return str(getattr(event, "action", "copy"))

    def drop(self, data: str) -> None:
        """A drop, as Tcl's list of paths (braces around paths with spaces): a folder runs a batch,
        a file is opened."""
        items = [p for p in self.root.tk.splitlist(data) if p]
        path = as_path(items[0]) if items else None
        if path is None:
            self.set_status("Drop an image file or a folder")
        elif path.is_dir():
            self.batch.start(path)
        else:
            self.show_tab("classify")
            self.classify.open_image(path)

    # -- running and closing ---------------------------------------------------------------------

    def run(self) -> None:
        self.root.mainloop()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.classify.cancel_render()
        self.batch.cancel()
        self.tasks.close()
        try:
            self.root.destroy()
        except tk.TclError:
            pass


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
# Entry point (`cifar10 gui` and `python -m cifar10kit.gui`, both parsed by cifar10kit.main)


def main(
    model: str | None = None,
    image: str | None = None,
    provider: str = "auto",
    data_dir: str | None = None,
    threads: int = 0,
) -> int:
    """Open the window; returns the exit status when it is closed. model: a path or a shipped model's name."""
    try:
        app = App(model=model, image=image, provider=provider, data_dir=data_dir, threads=threads)
    except tk.TclError as e:
        print(f"cannot open a window: {e} (no display? set DISPLAY or use the command line)", file=sys.stderr)
        return 1
    app.run()
    return 0
