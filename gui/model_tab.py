"""The Model tab: open another model file, and see what the current one says about itself.

Loading runs in the "infer" lane, so every image submitted after it is classified by the new model;
a file that fails to load changes nothing (the previous model stays in use).
"""

from __future__ import annotations

import os
import tkinter as tk
from collections.abc import Callable
from pathlib import Path
from tkinter import filedialog, ttk
from typing import TYPE_CHECKING

from ..runtime.contract import ContractError
from ..runtime.session import Classifier
from . import text

if TYPE_CHECKING:
    from .app import App

# ----------------------------------------------------------------------------------------------
# The view


class ModelView(ttk.Frame):
    def __init__(self, master: tk.Misc, scale: float, actions: dict[str, Callable[..., None]]):
        super().__init__(master, padding=round(8 * scale))
        pad = round(6 * scale)
        bar = ttk.Frame(self)
        bar.pack(fill="x", pady=(0, pad))
        ttk.Button(bar, text="Open model…", command=actions["open_model"]).pack(side="left")
        self._note = ttk.Label(bar, text="", style="Muted.TLabel", anchor="e")
        self._note.pack(side="right", fill="x", expand=True)

        box = ttk.LabelFrame(self, text="About this model file", padding=pad * 2)
        box.pack(fill="x")
        box.columnconfigure(1, weight=1)
        self._values: dict[str, ttk.Label] = {}
        for row, name in enumerate(text.MODEL_FIELDS):
            ttk.Label(box, text=name, style="Key.TLabel").grid(row=row, column=0, sticky="nw", padx=(0, pad * 3))
            value = ttk.Label(box, text="—", wraplength=round(800 * scale), justify="left")
            value.grid(row=row, column=1, sticky="w", pady=1)
            self._values[name] = value

        recipe = ttk.LabelFrame(self, text="Training recipe", padding=pad)
        recipe.pack(fill="both", expand=True, pady=(pad * 2, 0))
        self._recipe = tk.Text(
            recipe,
            height=8,
            wrap="word",
            font="TkFixedFont",
            relief="flat",
            background="#f9fafb",
            borderwidth=0,
            padx=pad,
            pady=pad,
        )
        scroll = ttk.Scrollbar(recipe, orient="vertical", command=self._recipe.yview)
        self._recipe.configure(yscrollcommand=scroll.set, state="disabled")
        self._recipe.pack(side="left", fill="both", expand=True)
        scroll.pack(side="right", fill="y")

    def show(self, fields: dict[str, str], recipe: str) -> None:
        for name, label in self._values.items():
            label.configure(text=fields.get(name, "—"))
        self._recipe.configure(state="normal")
        self._recipe.delete("1.0", "end")
        self._recipe.insert("1.0", recipe)
        self._recipe.configure(state="disabled")

    def show_field(self, name: str, value: str) -> None:
        self._values[name].configure(text=value)

    def show_note(self, note: str) -> None:
        self._note.configure(text=note)

    def fields(self) -> dict[str, str]:
        """What the tab shows, by field name."""
        return {name: str(label.cget("text")) for name, label in self._values.items()}


# ----------------------------------------------------------------------------------------------
# The controller


class ModelTab:
    def __init__(self, app: App, notebook: ttk.Notebook):
        self.app = app
        self.view = ModelView(notebook, app.scale, {"open_model": self.open_dialog})

    def open_dialog(self) -> None:
        model = self.app.model
        start = model.path.parent if model else Path.cwd()
        path = filedialog.askopenfilename(
            parent=self.app.root,
            title="Open a model",
            initialdir=str(start),
            filetypes=[("ONNX models", "*.onnx"), ("All files", "*")],
        )
        if path:
            self.load(path)

    def load(self, path: str | os.PathLike, modal: bool = True) -> None:
        """Open a model in the background; on failure the current model stays in use."""
        path = Path(path)
        app = self.app
        app.set_status(f"Loading model {path.name}…")
        self.view.show_note(f"Loading {path}…")

        def job() -> Classifier:  # "infer" lane: later jobs in the lane use this model at once
            model = Classifier(
                path, provider=app.provider, threads=app.threads, notify=lambda m: app.tasks.post(app.set_status, m)
            )
            app.lane_model = model
            return model

        app.tasks.submit("infer", job, on_done=self._loaded, on_error=lambda e: self._failed(e, modal))

    def _loaded(self, model: Classifier) -> None:
        self.view.show_note("")
        self.app.use_model(model)
        self.refresh()

    def _failed(self, error: BaseException, modal: bool) -> None:
        reason = str(error) if isinstance(error, (ContractError, ValueError, RuntimeError, OSError)) else repr(error)
        current = self.app.model
        self.view.show_note("")
        self.app.report_error(text.model_failed(reason, current.path.name if current else None), modal=modal)
        if current is None:
            self.refresh()

    def refresh(self) -> None:
        """Show the current model's facts."""
        model = self.app.model
        self.view.show(text.model_fields(model, self._latency()), text.recipe_text(model))

    def show_latency(self) -> None:
        self.view.show_field(text.LATENCY_FIELD, self._latency())

    def _latency(self) -> str:
        return text.latency(self.app.classify.latency())
