"""The Batch tab: every image in a folder, classified in the background into a sortable table that
can be saved as CSV (the same writer as `cifar10 predict --csv`).

Sections: sorting (plain Python), the view, the controller.
"""

from __future__ import annotations

import os
import threading
import time
import tkinter as tk
from collections.abc import Callable, Sequence
from pathlib import Path
from tkinter import filedialog, ttk
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageTk

from ..runtime.predict import Result, classify_paths, collect
from ..runtime.preprocess import prepare
from ..runtime.results_csv import write_results
from ..runtime.session import Classifier
from . import imaging, text
from .theme import BAD, WARN, photo

if TYPE_CHECKING:
    from .app import App

COLUMNS = ("label", "probability", "uncertain", "error")
HEADINGS = {"#0": "File", "label": "Label", "probability": "Probability", "uncertain": "Uncertain", "error": "Error"}
TOP_K = 5  # ranked classes kept per image (and written to the CSV)
THUMBS = 2000  # rows past this get no thumbnail, to bound memory on huge folders

# ----------------------------------------------------------------------------------------------
# Sorting

SORT_KEYS: dict[str, Callable[[Result], Any]] = {
    "#0": lambda r: r.path.lower(),
    "label": lambda r: (r.label is None, r.label or ""),
    "probability": lambda r: r.probability if r.probability is not None else -1.0,
    "uncertain": lambda r: r.uncertain,
    "error": lambda r: (r.error is None, r.error or ""),
}


def sorted_ids(results: dict[str, Result], column: str, reverse: bool) -> list[str]:
    """Row ids ordered by `column` (a heading id); failed files sort after the rest when ascending."""
    key = SORT_KEYS[column]
    return sorted(results, key=lambda iid: key(results[iid]), reverse=reverse)


def thumbnail(result: Result, side: int) -> Image.Image | None:
    if result.error:
        return None
    try:
        return imaging.tile(prepare(result.path), side)
    except Exception:  # noqa: BLE001 - a thumbnail is decoration; the row still shows the result
        return None


# ----------------------------------------------------------------------------------------------
# The view


class BatchView(ttk.Frame):
    def __init__(self, master: tk.Misc, scale: float, actions: dict[str, Callable[..., None]]):
        super().__init__(master, padding=round(8 * scale))
        pad = round(6 * scale)
        bar = ttk.Frame(self)
        bar.pack(fill="x", pady=(0, pad))
        ttk.Button(bar, text="Choose folder…", command=actions["choose"]).pack(side="left")
        self._cancel = ttk.Button(bar, text="Cancel", command=actions["cancel"], state="disabled")
        self._cancel.pack(side="left", padx=(pad, 0))
        self._export = ttk.Button(bar, text="Export CSV…", command=actions["export"], state="disabled")
        self._export.pack(side="left", padx=(pad, 0))
        self._folder = ttk.Label(bar, text="No folder chosen (Ctrl+B)", style="Muted.TLabel", anchor="e")
        self._folder.pack(side="right", fill="x", expand=True)

        prog = ttk.Frame(self)
        prog.pack(fill="x", pady=(0, pad))
        self._progress = ttk.Progressbar(prog, mode="determinate", maximum=1)
        self._progress.pack(side="left", fill="x", expand=True)
        self._count = ttk.Label(prog, text="", width=28, anchor="e")
        self._count.pack(side="right", padx=(pad, 0))

        table = ttk.Frame(self)
        table.pack(fill="both", expand=True)
        self._tree = ttk.Treeview(table, columns=COLUMNS, style="Batch.Treeview", selectmode="browse")
        scroll = ttk.Scrollbar(table, orient="vertical", command=self._tree.yview)
        self._tree.configure(yscrollcommand=scroll.set)
        self._tree.pack(side="left", fill="both", expand=True)
        scroll.pack(side="right", fill="y")
        widths = {"#0": 320, "label": 120, "probability": 100, "uncertain": 90, "error": 360}
        for col, heading in HEADINGS.items():
            self._tree.heading(col, text=heading, anchor="w", command=lambda c=col: actions["sort"](c))
            anchor = "e" if col == "probability" else "w"
            self._tree.column(col, width=round(widths[col] * scale), anchor=anchor, stretch=col in ("#0", "error"))
        self._tree.tag_configure("error", foreground=BAD)
        self._tree.tag_configure("uncertain", foreground=WARN)
        self._tree.bind("<Double-1>", lambda e: actions["inspect"]())
        self._tree.bind("<Return>", lambda e: actions["inspect"]())
        ttk.Label(
            self, text="Double-click a row to inspect it · click a column heading to sort", style="Small.TLabel"
        ).pack(anchor="w", pady=(pad, 0))
        self._photos: dict[str, ImageTk.PhotoImage] = {}

    def start(self, folder: Path) -> None:
        """An empty table for a new folder, with Cancel on."""
        self._tree.delete(*self._tree.get_children())
        self._photos.clear()
        self.mark_sorted(None, False)
        self._folder.configure(text=str(folder))
        self._progress.configure(value=0, maximum=1)
        self._count.configure(text="Looking for images…")
        self.set_running(True, can_export=False)

    def set_running(self, running: bool, can_export: bool) -> None:
        self._cancel.configure(state="normal" if running else "disabled")
        self._export.configure(state="normal" if can_export else "disabled")

    def add_row(self, iid: str, name: str, cells: Sequence[str], tag: str | None, thumb: Image.Image | None) -> None:
        kwargs: dict[str, Any] = {}
        if thumb is not None:
            self._photos[iid] = kwargs["image"] = photo(thumb)
        self._tree.insert(
            "", "end", iid=iid, text=" " + name, values=tuple(cells), tags=(tag,) if tag else (), **kwargs
        )

    def show_progress(self, done: int, total: int, line: str) -> None:
        self._progress.configure(maximum=max(total, 1), value=done)
        self._count.configure(text=line)

    def order(self, ids: Sequence[str]) -> None:
        for pos, iid in enumerate(ids):
            self._tree.move(iid, "", pos)

    def mark_sorted(self, column: str | None, reverse: bool) -> None:
        for col, heading in HEADINGS.items():
            arrow = (" ▼" if reverse else " ▲") if col == column else ""
            self._tree.heading(col, text=heading + arrow)

    def row_ids(self) -> list[str]:
        """Row ids top to bottom."""
        return list(self._tree.get_children())

    def selected(self) -> str | None:
        chosen = self._tree.selection()
        return chosen[0] if chosen else None

    def rows(self) -> list[dict[str, str]]:
        """The table as shown, top to bottom: {"file": ..., "label": ..., "probability": ...}."""
        return [
            {"file": str(self._tree.item(iid, "text")).strip(), **dict(zip(COLUMNS, self._tree.item(iid, "values")))}
            for iid in self._tree.get_children()
        ]

    def drop_targets(self) -> list[tk.Misc]:
        return [self._tree, self]


# ----------------------------------------------------------------------------------------------
# The controller


class BatchTab:
    def __init__(self, app: App, notebook: ttk.Notebook):
        self.app = app
        self.view = BatchView(
            notebook,
            app.scale,
            {
                "choose": self.choose_dialog,
                "cancel": self.cancel,
                "export": self.export_dialog,
                "sort": self.sort,
                "inspect": self._inspect_selected,
            },
        )
        self._run = 0  # bumps per folder, so rows of an older run are ignored
        self._cancel: threading.Event | None = None
        self._folder: Path | None = None
        self._results: dict[str, Result] = {}  # by table row id
        self._sort: tuple[str | None, bool] = (None, False)
        self._provider = ""  # of the model that classified the table

    @property
    def running(self) -> bool:
        return self._cancel is not None

    def results(self) -> list[Result]:
        """The results in the table's current order."""
        return [self._results[iid] for iid in self.view.row_ids()]

    # -- running a folder ------------------------------------------------------------------------

    def choose_dialog(self) -> None:
        """Ctrl+B and the Choose folder button."""
        self.app.show_tab("batch")
        folder = filedialog.askdirectory(parent=self.app.root, title="Classify every image in a folder")
        if folder:
            self.start(folder)

    def start(self, folder: str | os.PathLike) -> None:
        model = self.app.model
        if model is None:
            self.app.report_error("Load a model before classifying a folder (Model tab)", modal=True)
            return
        if self.running:
            self.app.report_error("A folder is already being classified: cancel it first", modal=True)
            return
        folder = Path(folder)
        self.app.show_tab("batch")
        self.view.start(folder)
        self._results.clear()
        self._sort = (None, False)
        self._run += 1
        self._folder, self._provider = folder, model.provider
        self._cancel = cancel = threading.Event()
        self.app.set_status(f"Classifying the images in {folder}…")
        self.app.tasks.submit(
            "batch",
            self._job,
            model,
            folder,
            cancel,
            self._run,
            round(40 * self.app.scale),
            on_done=self._done,
            on_error=self._failed,
        )

    def _job(
        self, model: Classifier, folder: Path, cancel: threading.Event, run: int, side: int
    ) -> tuple[int, int, int, float]:  # "batch" lane
        t0 = time.perf_counter()
        errors: list[Result] = []
        paths = collect([str(folder)], errors)
        total = len(paths) + len(errors)
        rows: list[tuple[Result, Image.Image | None]] = [(r, None) for r in errors]
        done = len(errors)
        last_post = time.perf_counter()
        results = classify_paths(model, paths, top_k=TOP_K, batch_size=32)
        try:
            for r in results:
                if cancel.is_set():
                    break
                rows.append((r, thumbnail(r, side) if done < THUMBS else None))
                done += 1
                if time.perf_counter() - last_post > 0.1 or done == total:
                    self.app.tasks.post(self._add_rows, run, rows, done, total)
                    rows, last_post = [], time.perf_counter()
        finally:
            results.close()
        if rows:
            self.app.tasks.post(self._add_rows, run, rows, done, total)
        return run, done, total, time.perf_counter() - t0

    def _errors(self) -> int:
        return sum(1 for r in self._results.values() if r.error)

    def _add_rows(self, run: int, rows: list[tuple[Result, Image.Image | None]], done: int, total: int) -> None:
        if run != self._run:
            return
        for r, thumb in rows:
            iid = str(len(self._results))
            self._results[iid] = r
            tag = "error" if r.error else "uncertain" if r.uncertain else None
            self.view.add_row(iid, text.relative(r.path, self._folder), text.batch_cells(r), tag, thumb)
        self.view.show_progress(done, total, text.batch_progress(done, total, self._errors()))

    def _done(self, outcome: tuple[int, int, int, float]) -> None:
        run, done, total, seconds = outcome
        if run != self._run:
            return
        cancelled = self._cancel is not None and self._cancel.is_set()
        self._cancel = None
        self.view.set_running(False, can_export=bool(self._results))
        errors = self._errors()
        if cancelled:
            self.app.set_status(f"Cancelled after {done:,} of {total:,} images")
        elif total == 0:
            self.app.report_error(f"{self._folder}: no images found", modal=False)
        elif errors == done:  # an empty folder (collect reports it as an error row) or only bad files
            first = next(r.error for r in self._results.values() if r.error)
            self.app.report_error(first if done == 1 else f"None of {done:,} files could be read; {first}", modal=False)
        else:
            self.app.set_status(text.batch_finished(done, errors, seconds))
        if self._sort[0] is not None:
            self._apply_sort()

    def _failed(self, error: BaseException) -> None:
        self._cancel = None
        self.view.set_running(False, can_export=bool(self._results))
        self.app.on_worker_error(error)

    def cancel(self) -> None:
        if self._cancel is not None:
            self._cancel.set()
            self.app.set_status("Cancelling…")

    # -- the table -------------------------------------------------------------------------------

    def sort(self, column: str) -> None:
        """A click on a column heading: sort by it; a second click reverses."""
        current, reverse = self._sort
        self._sort = (column, not reverse if current == column else False)
        self._apply_sort()

    def _apply_sort(self) -> None:
        column, reverse = self._sort
        assert column is not None
        self.view.order(sorted_ids(self._results, column, reverse))
        self.view.mark_sorted(column, reverse)

    def _inspect_selected(self) -> None:
        iid = self.view.selected()
        if iid in self._results:
            self.app.show_tab("classify")
            self.app.classify.open_image(self._results[iid].path)

    def export_dialog(self) -> None:
        if not self._results:
            self.app.set_status("Nothing to export yet: classify a folder first")
            return
        path = filedialog.asksaveasfilename(
            parent=self.app.root,
            title="Export results as CSV",
            defaultextension=".csv",
            initialfile="predictions.csv",
            filetypes=[("CSV", "*.csv"), ("All files", "*")],
        )
        if path:
            self.export_csv(path)

    def export_csv(self, path: str | os.PathLike) -> bool:
        """Write the table, in its current order, as CSV; False (and a message) on failure."""
        try:
            write_results(path, self.results(), TOP_K, self._provider)
        except OSError as e:
            self.app.report_error(f"{path}: could not write ({e.strerror or e})", modal=True)
            return False
        self.app.set_status(f"Wrote {len(self._results):,} rows to {path}")
        return True
