"""Checkpoints: written atomically, read with weights_only=True (no arbitrary unpickling)."""

from __future__ import annotations

import os
import pickle
import tempfile
import time
from pathlib import Path
from typing import Any

import torch


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what to do."""


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over `path`.

    A crash or kill at any moment leaves either the old file or the new one, never half of one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _remove_stale_temps(path, keep_newer_than=600)


def _remove_stale_temps(path: Path, keep_newer_than: float) -> None:
    """A kill mid-write leaves its temp file behind (never read, but it costs disk); sweep old ones.
    Recent ones may belong to another writer still at work, so they stay."""
    cutoff = time.time() - keep_newer_than
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            if stale.stat().st_mtime < cutoff:
                stale.unlink()
        except OSError:
            pass

def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint (a run folder holds last.pt and model.pt)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path}: refused: it holds Python objects, not just weights (not a cifar10kit checkpoint)"
        ) from None
    except Exception as e:  # noqa: BLE001 - truncated zip, empty file, ...
        first = next(iter(str(e).splitlines()), "") or type(e).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({first})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: not a cifar10kit checkpoint (top level is {type(obj).__name__})")
    return obj
