"""Files written whole or not at all.

Every file the project writes for later (checkpoints, a run's metrics and teacher cache, heatmaps) goes
through `atomic_write`: a temporary file beside the target, fsync, then one rename. A kill or a full
disk at any moment leaves the old file or the new one, never half of one, and never a file `--resume`
or a viewer would choke on. A killed write can leave its own `.NAME.*.tmp` behind; it is never read.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call `write(f)` on a temporary binary file in `path`'s folder, then move it over `path`.

    The new file gets the mode of the one it replaces, or 0644 (mkstemp's files are private)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
