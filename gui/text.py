"""What the app says: labels, captions, status lines and table cells, as plain functions of plain
values (no Tk), so each is tested without a window.

Sections: small helpers, the Classify tab, the Batch tab, the Model tab.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ..runtime.contract import KEY_CHECKPOINT_SHA256, KEY_SEED, member_recipes
from ..runtime.predict import Result
from ..runtime.session import MODELS_DIR, Classifier

# ----------------------------------------------------------------------------------------------
# Small helpers


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def short_provider(provider: str) -> str:
    """'CPUExecutionProvider' -> 'CPU'."""
    return provider.replace("ExecutionProvider", "")


def relative(path: str, folder: Path | None) -> str:
    """`path` inside `folder` (as the batch table shows it), else `path` unchanged."""
    try:
        return str(Path(path).relative_to(folder)) if folder else path
    except ValueError:
        return path


def without_prefix(error: str, path: str) -> str:
    """Runtime messages start with the file's path, which the table already shows."""
    return error[len(path) + 2 :] if error.startswith(f"{path}: ") else error


# ----------------------------------------------------------------------------------------------
# Classify tab

PLACEHOLDER = "Open an image (Ctrl+O), paste one (Ctrl+V){dnd}\nor pick one from the Gallery tab"


def placeholder(dnd_works: bool) -> str:
    return PLACEHOLDER.format(dnd=" or drop a file here" if dnd_works else "")


def prediction_detail(probability: float, true_label: str | None, top: str) -> str:
    """'87.5% confident', plus the true label and a tick or cross when it is known."""
    detail = f"{probability * 100:.1f}% confident"
    if true_label is not None:
        detail += f"  ·  true label: {true_label} " + ("✓" if true_label == top else "✗")
    return detail


def uncertain_warning(threshold: float | None) -> str:
    t = threshold or 0.0
    return (
        f"⚠ Uncertain: the top class is under the model's {t * 100:.0f}% threshold, "
        "so the image may show none of these classes."
    )


def heat_caption(class_name: str | None, method: str | None, grid: str | None) -> str:
    """Under the model's view: whether a heatmap is drawn, of which class, and by which method.
    method None with a class: the heatmap is being computed."""
    if class_name is None:
        return "Heatmap off: press H or click a class"
    if method is None:
        return f"Heatmap: computing the evidence for “{class_name}”…"
    return f"Heatmap: evidence for “{class_name}”\n(heatmap: {method}, {grid})"


def opened_status(name: str, size: tuple[int, int], top: str, probability: float, seconds: float) -> str:
    w, h = size
    return f"{name} ({w}×{h}): {top} {probability * 100:.1f}% in {seconds * 1000:.1f} ms"


def paste_failure(text: str | None) -> str:
    """Why a paste opened nothing."""
    if text and text.strip():
        return f"The clipboard text is not the path of an image file: {text.strip()[:80]!r}"
    return "The clipboard holds no image and no image file path"


def latency(seconds: float | None) -> str:
    """The Model tab's "Last prediction" value; seconds None: nothing predicted by this model yet."""
    return "no prediction yet" if seconds is None else f"{seconds * 1000:.1f} ms (one image)"


def runtime_line(model: Classifier | None, seconds: float | None) -> str:
    """The right end of the status bar: the model, where it runs, the last prediction's time."""
    if model is None:
        return "no model"
    text = f"{model.info.architecture} · {short_provider(model.provider)}"
    return text + (f" · {seconds * 1000:.1f} ms" if seconds is not None else "")


# ----------------------------------------------------------------------------------------------
# Batch tab


def batch_cells(r: Result) -> tuple[str, str, str, str]:
    """A result's label, probability, uncertain and error cells (BATCH_COLUMNS order)."""
    return (
        r.label or "",
        f"{r.probability * 100:.1f}%" if r.probability is not None else "",
        "yes" if r.uncertain else "",
        without_prefix(r.error, r.path) if r.error else "",
    )


def batch_progress(done: int, total: int, errors: int) -> str:
    return f"{done:,} / {total:,} images · {plural(errors, 'error')}"


def batch_finished(done: int, errors: int, seconds: float) -> str:
    rate = done / seconds if seconds else 0
    return f"Classified {plural(done, 'image')} ({plural(errors, 'error')}) in {seconds:.1f} s, {rate:.0f}/s"


# ----------------------------------------------------------------------------------------------
# Model tab: one (label, value) row per fact; the labels are written here and nowhere else

LATENCY_FIELD = "Last prediction"
NO_MODEL = "No model loaded: use “Open model…”"


def file_text(path: Path) -> str:
    """A model file as the Model tab names it: a shipped model by name (its install folder says nothing
    to the user), one under the home folder from ~, any other by its full path."""
    size = path.stat().st_size / 1e6 if path.exists() else 0.0  # decimal megabytes, as the README and file browsers
    resolved, home = path.resolve(), Path.home().resolve()
    if resolved.parent == MODELS_DIR.resolve():
        where = f"{path.name}, shipped with the app"
    elif resolved.is_relative_to(home):
        where = str(Path("~") / resolved.relative_to(home))
    else:
        where = str(resolved)
    return f"{where}  ({size:.1f} MB)"


def _file(m: Classifier) -> str:
    return file_text(m.path)


def threshold_text(t: float | None) -> str:
    if t is None or t <= 0:
        return "none: no prediction is flagged uncertain"
    return f"{t * 100:.1f}%: a top class below this is flagged uncertain"


def calibration_text(temperature: float | None, cascade: dict | None = None) -> str:
    temperatures = (cascade or {}).get("temperatures")
    if temperatures and len(temperatures) == 2 and temperatures != [1.0, 1.0]:
        return (
            f"temperatures {temperatures[0]:.3f} (first net alone) and {temperatures[1]:.3f} (every net): "
            "probabilities are calibrated confidences"
        )
    if temperature is None or temperature == 1.0:
        return "none: probabilities are the net's raw confidences"
    return f"temperature {temperature:.3f}: probabilities are calibrated confidences"


def _accuracy(a: float | None) -> str:
    return f"{a * 100:.2f}%" if a is not None else "not recorded"


_FIELDS: tuple[tuple[str, Callable[[Classifier], str]], ...] = (
    ("File", _file),
    ("Classes", lambda m: f"{m.info.num_classes}: {', '.join(m.info.class_names)}"),
    ("Test accuracy", lambda m: _accuracy(m.info.test_accuracy)),
    ("Test set", lambda m: m.info.test_set or "—"),
    ("Architecture", lambda m: m.info.architecture),
    ("Dataset", lambda m: m.info.dataset),
    ("Test-time augmentation", lambda m: m.info.tta_summary),
    ("Uncertainty threshold", lambda m: threshold_text(m.info.uncertainty_threshold)),
    ("Precision", lambda m: m.info.precision),
    ("Calibration", lambda m: calibration_text(m.info.temperature, m.info.cascade)),
    ("Heatmaps (cam output)", lambda m: "yes" if m.info.has_cam else "no"),
    ("Created", lambda m: m.info.created),
    ("Written by", lambda m: m.info.exporter or f"cifar10kit {m.info.version}"),
    ("Provider", lambda m: m.provider),
)
MODEL_FIELDS = tuple(name for name, _ in _FIELDS) + (LATENCY_FIELD,)


def model_fields(model: Classifier | None, last_prediction: str) -> dict[str, str]:
    """The Model tab's rows in display order: label -> value."""
    if model is None:
        return {name: NO_MODEL if name == "File" else "—" for name in MODEL_FIELDS}
    return {**{name: get(model) for name, get in _FIELDS}, LATENCY_FIELD: last_prediction}


def recipe_text(model: Classifier | None) -> str:
    """The training recipe one setting a line ("epochs  8"), then seed and checkpoint hash."""
    if model is None:
        return ""
    info = model.info
    lines = _setting_lines(info.recipe) or ["(not recorded in this file)"]
    pairs = ((KEY_SEED, info.seed), (KEY_CHECKPOINT_SHA256, info.checkpoint_sha256))
    extra = [f"{key}: {value}" for key, value in pairs if value is not None]
    return "\n".join(lines + ([""] + extra if extra else []))


def _setting_lines(recipe: dict) -> list[str]:
    """One setting a line; an ensemble's members ("member 1": {...}) each under their own heading."""
    members = member_recipes(recipe)
    if len(members) > 1:
        return [line for k, v in zip(recipe, members) for line in [k, *("  " + s for s in _setting_lines(v))]]
    width = max((len(k) for k in recipe), default=0)
    return [f"{k:<{width}}  {json.dumps(v)}" for k, v in recipe.items()]


def model_failed(reason: str, still_using: str | None) -> str:
    keep = f"; still using {still_using}" if still_using else ""
    return f"Could not open the model: {reason}{keep}"
