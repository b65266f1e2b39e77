"""Prediction results as CSV: one writer, one dialect, for `cifar10 predict --csv` and the app.

Dialect: UTF-8, comma-separated, Python's `csv.excel` quoting (a field is quoted only when it holds
a comma, a quote or a line break), CRLF line ends, one header row. File names that are not valid
UTF-8 are written with their original bytes (surrogate escapes), so a path can be found again.

Columns, in order (K = the number of ranked classes asked for, `--top-k`):

| column | value |
|---|---|
| `path` | the file as given or found |
| `label` | the top class; empty when the file failed |
| `probability` | its probability, 6 decimals; empty when the file failed |
| `top1_label`, `top1_probability`, ... `topK_label`, `topK_probability` | the K best classes, best first |
| `uncertain` | `true` when the top probability is under the model's uncertainty threshold, else `false` |
| `error` | why the file could not be classified; empty on success |
| `provider` | the onnxruntime execution provider that ran the model, e.g. `CPUExecutionProvider` |

The file is written to a temporary name beside the target and renamed into place when closed, so a
reader never sees half a file and an interrupted run leaves the previous file untouched.
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol


class ResultLike(Protocol):
    """What a row needs; `runtime.predict.Result` has it."""

    path: str
    label: str | None
    probability: float | None
    top_k: list[tuple[str, float]]
    uncertain: bool
    error: str | None


def columns(top_k: int) -> list[str]:
    """The header for K ranked classes."""
    ranked = [f"top{i}_{part}" for i in range(1, top_k + 1) for part in ("label", "probability")]
    return ["path", "label", "probability", *ranked, "uncertain", "error", "provider"]


def _number(p: float | None) -> str:
    return "" if p is None else f"{p:.6f}"


def row(result: ResultLike, top_k: int, provider: str) -> list[str]:
    """One result as the cells under `columns(top_k)`."""
    ranked: list[str] = []
    for i in range(top_k):
        name, p = result.top_k[i] if i < len(result.top_k) else ("", None)
        ranked += [name, _number(p)]
    failed = result.error is not None
    return [
        result.path,
        "" if failed else (result.label or ""),
        "" if failed else _number(result.probability),
        *ranked,
        "true" if result.uncertain and not failed else "false",
        result.error or "",
        provider,
    ]


class ResultsCsv:
    """Write rows as they come; the file appears, complete, on `close()` (or leaving a `with`)."""

    def __init__(self, path: str | os.PathLike, top_k: int, provider: str):
        self.path = Path(path)
        self.top_k, self.provider = top_k, provider
        fd, self._tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        self._file = os.fdopen(fd, "w", newline="", encoding="utf-8", errors="surrogateescape")
        self._writer = csv.writer(self._file, dialect="excel")
        self._writer.writerow(columns(top_k))

    def write(self, result: ResultLike) -> None:
        self._writer.writerow(row(result, self.top_k, self.provider))

    def close(self) -> None:
        """Finish the file and move it into place."""
        if self._file.closed:
            return
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        # mkstemp makes the file private (0600); give it the mode an ordinary new file would get.
        mode = self.path.stat().st_mode & 0o777 if self.path.exists() else 0o644
        os.chmod(self._tmp, mode)
        os.replace(self._tmp, self.path)

    def discard(self) -> None:
        """Drop what was written; the target is left as it was."""
        if not self._file.closed:
            self._file.close()
        if os.path.exists(self._tmp):
            os.unlink(self._tmp)

    def __enter__(self) -> ResultsCsv:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()


def write_results(path: str | os.PathLike, results: Iterable[ResultLike], top_k: int, provider: str) -> None:
    """All rows at once (the app's "Save CSV")."""
    with ResultsCsv(path, top_k, provider) as out:
        for result in results:
            out.write(result)


def read_results(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows back as dicts keyed by column name (for tests and scripts)."""
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
        return list(csv.DictReader(f))
