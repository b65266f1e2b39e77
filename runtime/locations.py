"""Where CIFAR-10 lives on the user's machine: the folder they name, or a per-user cache folder.

Order: an explicit `--data-dir`, then `$CIFAR10_DATA`, then the platform's cache folder for this
package (`default_data_dir`). Nothing here reads or writes data; it only names folders.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP_NAME = "cifar10kit"
DATA_ENV = "CIFAR10_DATA"
CIFAR_DIRNAME = "cifar-10-batches-py"


class DatasetError(ValueError):
    """A dataset that cannot be used; the message names the file or folder and what to do."""


def user_cache_dir(platform: str = sys.platform, environ: os._Environ | dict = os.environ) -> Path:
    """The per-user cache folder of this package, where each platform keeps caches.

    Linux and other Unixes: `$XDG_CACHE_HOME/cifar10kit` (default ~/.cache/cifar10kit); macOS:
    ~/Library/Caches/cifar10kit; Windows: %LOCALAPPDATA%\\cifar10kit\\Cache."""
    home = Path(environ.get("HOME") or Path.home())
    if platform == "win32":
        base = environ.get("LOCALAPPDATA") or str(home / "AppData" / "Local")
        return Path(base) / APP_NAME / "Cache"
    if platform == "darwin":
        return home / "Library" / "Caches" / APP_NAME
    xdg = environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says a relative path is invalid and must be ignored.
    base = Path(xdg) if xdg and os.path.isabs(xdg) else home / ".cache"
    return base / APP_NAME


def default_data_dir() -> Path:
    """`$CIFAR10_DATA` if set, else the per-user cache folder (`user_cache_dir`)."""
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else user_cache_dir()


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """The folder holding `cifar-10-batches-py/`; accepts that folder itself too."""
    root = Path(data_dir) if data_dir else default_data_dir()
    if root.name == CIFAR_DIRNAME:
        root = root.parent
    return root
