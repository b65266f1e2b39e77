"""Pictures for the screen, in plain PIL (no Tk, so they are testable and cheap to reason about)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from ..runtime.heatmap import overlay
from ..runtime.preprocess import center_square, exif_orientation, to_rgb

# Below this size an image is "small": enlarged by whole-number factors with nearest-neighbour, so
# each source pixel stays a crisp square instead of a blur (CIFAR-10 images are 32x32).
SMALL_SIDE = 256
# Decoded images are kept at most this big for display; the model input comes from the full image.
DISPLAY_MAX_SIDE = 2048


def display_copy(img: Image.Image) -> Image.Image:
    """A copy no bigger than DISPLAY_MAX_SIDE, so re-rendering on resize stays fast."""
    if max(img.size) <= DISPLAY_MAX_SIDE:
        return img
    out = img.copy()
    out.thumbnail((DISPLAY_MAX_SIDE, DISPLAY_MAX_SIDE), Image.Resampling.LANCZOS)
    return out


def display_from_file(path: str, decoded: Image.Image) -> Image.Image:
    """A screen copy of the image file at `path`; `decoded` is what the runtime decoded for the model.

    The runtime decodes JPEGs at reduced size (enough for 32x32, and fast), which is too coarse to
    look at, so JPEGs are decoded again here at up to DISPLAY_MAX_SIDE. Other formats are full size
    already and `decoded` is reused."""
    try:
        with Image.open(path) as img:
            if img.format != "JPEG":
                return display_copy(decoded)
            if img.mode in ("RGB", "L", "CMYK", "YCbCr"):
                img.draft(img.mode, (DISPLAY_MAX_SIDE, DISPLAY_MAX_SIDE))
            img.load()  # loaded, so to_rgb's own (smaller) draft request does nothing
            return display_copy(to_rgb(img, source=path))
    except Exception:  # noqa: BLE001 - the model's copy is still a faithful picture, only smaller
        return display_copy(decoded)


def original_size(path: str, decoded: Image.Image) -> tuple[int, int]:
    """The file's pixel size as displayed (EXIF rotation applied), not the reduced decode's."""
    try:
        with Image.open(path) as img:
            w, h = img.size
            return (h, w) if exif_orientation(img) in (5, 6, 7, 8) else (w, h)
    except Exception:  # noqa: BLE001
        return decoded.size


def fit_into(img: Image.Image, width: int, height: int) -> Image.Image:
    """Scale `img` to fit inside width x height, keeping its aspect ratio.

    Small images grow by whole-number factors with nearest-neighbour (crisp pixels); large images are
    resized smoothly to use the space."""
    width, height = max(width, 1), max(height, 1)
    w, h = img.size
    scale = min(width / w, height / h)
    if max(w, h) < SMALL_SIDE and scale >= 1:
        f = int(scale)
        return img.resize((w * f, h * f), Image.Resampling.NEAREST) if f > 1 else img
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size == img.size:
        return img
    method = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC
    return img.resize(size, method, reducing_gap=3.0 if scale < 0.5 else None)


def with_heatmap(img: Image.Image, heat: np.ndarray) -> Image.Image:
    """A heatmap blended over the part of `img` the model saw (its centre square);
    the cropped-away margins are dimmed, since they played no part in the prediction."""
    box = center_square(img.size)
    if box == (0, 0, *img.size):
        return overlay(img, heat)
    out = Image.blend(img.convert("RGB"), Image.new("RGB", img.size, (0, 0, 0)), 0.55)
    out.paste(overlay(img.crop(box), heat), box[:2])
    return out


def model_view(pixels: np.ndarray, side: int, heat: np.ndarray | None = None) -> Image.Image:
    """The 32x32 model input enlarged (nearest) to about `side` pixels, optionally with its heatmap."""
    img = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8))
    f = max(1, side // img.width)
    big = img.resize((img.width * f, img.height * f), Image.Resampling.NEAREST)
    return overlay(big, heat) if heat is not None else big


def tile(pixels: np.ndarray, side: int, border: tuple[int, int, int] | None = None) -> Image.Image:
    """A gallery or table thumbnail: nearest-enlarged, with an optional coloured frame."""
    img = model_view(pixels, side)
    if border is not None:
        ImageDraw.Draw(img).rectangle((0, 0, img.width - 1, img.height - 1), outline=border, width=3)
    return img
