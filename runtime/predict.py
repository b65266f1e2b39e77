"""Classifying files and folders: input collection, batched inference, per-file errors, output rows."""

from __future__ import annotations

import glob
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .preprocess import ImageError, is_image_file, prepare
from .session import Classifier


@dataclass
class Result:
    path: str
    label: str | None = None
    probability: float | None = None
    top_k: list[tuple[str, float]] = field(default_factory=list)
    uncertain: bool = False
    error: str | None = None

    def as_json(self) -> dict:
        return {
            "path": self.path,
            "label": self.label,
            "probability": self.probability,
            "top_k": [{"label": n, "probability": p} for n, p in self.top_k],
            "uncertain": self.uncertain,
            "error": self.error,
        }


def collect(inputs: Iterable[str], errors: list[Result] | None = None) -> list[Path]:
    """Files as given; folders searched recursively for images; glob patterns expanded.

    Inputs that match nothing become error results in `errors` rather than vanishing."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if is_image_file(f))
            if not found and errors is not None:
                errors.append(Result(str(p), error=f"{p}: folder holds no images"))
            out.extend(found)
        elif p.exists() or p.is_symlink():
            out.append(p)
        elif glob.has_magic(item):
            matched = sorted(Path(m) for m in glob.glob(item, recursive=True) if not os.path.isdir(m))
            if not matched and errors is not None:
                errors.append(Result(item, error=f"{item}: pattern matches no files"))
            out.extend(matched)
        elif errors is not None:
            errors.append(Result(item, error=f"{item}: no such file or folder"))
    return out


def _load(path: Path) -> tuple[Path, np.ndarray | None, str | None]:
    try:
        return path, prepare(path), None
    except ImageError as e:
        return path, None, str(e)
    except Exception as e:  # noqa: BLE001 - one bad file never stops a batch
        return path, None, f"{path}: unexpected error ({type(e).__name__}: {e})"


def classify_paths(
    model: Classifier,
    paths: list[Path],
    top_k: int = 5,
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[Result]:
    """Results in input order. Images are decoded on a few threads while the model runs."""
    done = 0
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for start in range(0, len(paths), batch_size):
            loaded = list(pool.map(_load, paths[start : start + batch_size]))
            good = [(p, x) for p, x, err in loaded if err is None]
            probs = model.run(np.stack([x for _, x in good])).probs if good else []
            row = iter(probs)
            for path, _, err in loaded:
                if err is not None:
                    yield Result(str(path), error=err)
                    continue
                pr = next(row)
                top = model.topk(pr, top_k)
                yield Result(str(path), top[0][0], top[0][1], top, model.is_uncertain(pr))
            done += len(loaded)
            if progress:
                progress(done, len(paths))


class ProgressLine:
    """A one-line progress meter on stderr (only when it is a terminal, or when forced)."""

    def __init__(self, label: str, force: bool = False, min_items: int = 50):
        self.label, self.t0 = label, time.perf_counter()
        self.enabled = force or sys.stderr.isatty()
        self.min_items = min_items

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total < self.min_items:
            return
        rate = done / max(time.perf_counter() - self.t0, 1e-9)
        eta = (total - done) / rate if rate else 0
        bar = "#" * int(30 * done / total)
        end = "\n" if done >= total else ""
        sys.stderr.write(f"\r{self.label} [{bar:<30}] {done}/{total} {rate:.0f}/s ETA {eta:.0f}s{end}")
        sys.stderr.flush()
