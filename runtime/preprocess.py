"""Any image file -> the model's input: uint8 RGB [32, 32, 3]. One function for every caller.

Policy (documented in the README):
- EXIF orientation is applied, so a phone photo is classified the way it is displayed.
- Transparency is composited on white (`BACKGROUND`): cut-out objects are usually shown on white.
- Grayscale, palette, CMYK, 16-bit and float images become 8-bit RGB; 16-bit values are scaled
  (>> 8), not clipped.
- Animated or multi-page files: the first frame.
- Resize: centre-crop to a square (CIFAR objects fill a square frame; squashing a 16:9 photo would
  distort them), then an antialiased (Lanczos) reduction to 32x32. JPEGs are decoded at reduced size
  first (`draft`), which is faster and, for big photos, what makes them cheap.
- Limits: files over `MAX_FILE_BYTES` and images over `MAX_PIXELS` declared pixels are refused
  before decoding (decompression bombs), with a message saying so.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .contract import IMAGE_SIZE

BACKGROUND = (255, 255, 255)
MAX_PIXELS = 64_000_000  # 64 MP: 8000x8000; bigger declared sizes are refused unread
MAX_FILE_BYTES = 256 * 1024 * 1024


class ImageError(ValueError):
    """An image that cannot be classified; the message names the file and the reason."""


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open, check and normalise one image file to an RGB PIL image (full size, oriented)."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror or e})") from None
    if path.is_dir():
        raise ImageError(f"{path}: is a folder, not an image")
    if size == 0:
        raise ImageError(f"{path}: empty file (0 bytes)")
    if size > MAX_FILE_BYTES:
        raise ImageError(f"{path}: {size / 2**20:.0f} MB is over the {MAX_FILE_BYTES >> 20} MB limit")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
            return to_rgb(img, source=str(path))
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{path}: image dimensions are too large (decompression bomb guard)") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image format Pillow can read") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as e:
        reason = str(e) or type(e).__name__
        raise ImageError(f"{path}: corrupt or truncated image ({reason})") from None
    except MemoryError:
        raise ImageError(f"{path}: too large to decode in memory") from None


def to_rgb(img: Image.Image, source: str = "image") -> Image.Image:
    """Orientation, first frame, transparency, bit depth and colour space -> 8-bit RGB."""
    w, h = img.size
    if w < 1 or h < 1:
        raise ImageError(f"{source}: image has no pixels ({w}x{h})")
    if w * h > MAX_PIXELS:
        raise ImageError(
            f"{source}: {w}x{h} is over the {MAX_PIXELS // 1_000_000} MP limit (decompression bomb guard)"
        )
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)
    if img.format == "JPEG" and img.mode in ("RGB", "L", "CMYK", "YCbCr"):
        # Decode at the smallest power-of-two reduction that still leaves >= 4x the target size.
        img.draft(img.mode, (IMAGE_SIZE * 4, IMAGE_SIZE * 4))
    img.load()
    img = ImageOps.exif_transpose(img) or img
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        if mode == "F":
            top = max(float(arr.max(initial=0)), 1.0) if arr.max(initial=0) > 1 else 1.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr, "L")
        mode = "L"
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode in ("LA", "La", "PA", "RGBa"):
        img = img.convert("RGBA")
    elif mode == "L" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        canvas = Image.new("RGB", img.size, BACKGROUND)
        canvas.paste(img, mask=img.getchannel("A"))
        return canvas
    return img.convert("RGB") if img.mode != "RGB" else img


def fit(img: Image.Image, size: int = IMAGE_SIZE) -> Image.Image:
    """Centre square crop, then antialiased resize to size x size."""
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return img.resize((size, size), Image.Resampling.LANCZOS, box=(left, top, left + side, top + side))


def to_input(img: Image.Image) -> np.ndarray:
    """An RGB image -> uint8 [32, 32, 3], the contract's per-image input."""
    arr = np.asarray(fit(img), dtype=np.uint8)
    if arr.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise ImageError(f"internal: preprocessing produced shape {arr.shape}")
    return arr


def prepare(path: str | os.PathLike) -> np.ndarray:
    """Image file -> uint8 [32, 32, 3]. Raises ImageError naming the file on any problem."""
    return to_input(load_image(path))
