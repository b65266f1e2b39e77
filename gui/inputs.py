"""Where images come from besides a file dialog: pasted text, dropped paths, the clipboard, and the
other images in an opened file's folder (for Left/Right). Plain Python, no Tk."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from ..runtime.preprocess import is_image_file


def as_path(text: str) -> Path | None:
    """A path from dropped or pasted text: plain, quoted, or a file:// URI; None for blank text."""
    text = text.strip().strip('"').strip("'")
    if not text:
        return None
    if text.startswith("file://"):
        return Path(unquote(urlparse(text).path))
    return Path(text).expanduser()


def paste_candidates(grabbed: Any, text: str | None) -> list[Path]:
    """The paths a paste may mean, most likely first: files the clipboard holds as a list (what
    PIL's grabclipboard returns for copied files), then the first line of its text."""
    items = [str(g) for g in grabbed] if isinstance(grabbed, list) else []
    items += (text or "").strip().splitlines()[:1]
    return [p for p in map(as_path, items) if p is not None]


def folder_images(folder: Path) -> list[Path]:
    """The images beside an opened file, sorted by name ignoring case: Left/Right walk them."""
    try:
        entries = [p for p in folder.iterdir() if is_image_file(p)]
    except OSError:
        return []
    return sorted((p for p in entries if p.is_file()), key=lambda p: p.name.lower())


def grab_clipboard() -> Any:
    """An image, a list of file names, or None (PIL needs xclip or wl-paste on Linux)."""
    try:
        from PIL import ImageGrab

        return ImageGrab.grabclipboard()
    except Exception:  # noqa: BLE001 - unsupported platform or tool missing: fall back to text
        return None
