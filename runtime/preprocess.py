"""Any image file -> the model's input: uint8 RGB [32, 32, 3]. One function for every caller.

Policy (documented in the README):
- EXIF orientation is applied, so a phone photo is classified the way it is displayed.
- Transparency is composited on white (`BACKGROUND`): cut-out objects are usually shown on white.
  That covers alpha channels, palette transparency and the colour-key transparency of grey/RGB PNGs
  (1-, 2-, 4- and 16-bit grey included; a 16-bit key is matched before scaling).
- Grayscale, palette, CMYK, 16-bit and float images become 8-bit RGB; 16-bit values are scaled
  (>> 8), not clipped. 32-bit integer images are read as 8-bit when their values fit, else as
  16-bit. Float images in [0, 1] are scaled by 255, others by their largest finite value; NaN
  becomes 0, +inf the maximum.
- Animated or multi-page files: the first frame.
- Resize: centre-crop to a square (CIFAR objects fill a square frame; squashing a 16:9 photo would
  distort them), then an antialiased (Lanczos) reduction to 32x32. JPEGs (MPO too: the JPEG with an
  MPF segment that phones write) are decoded at reduced size first (`draft`), which is faster and,
  for big photos, what makes them cheap.
- Limits: files over `MAX_FILE_BYTES` and images over `MAX_PIXELS` declared pixels are refused
  before decoding (decompression bombs), with a message saying so.
- Only regular files are read (symbolic links to them are fine). FIFOs, sockets and devices are
  refused before anything is read from them, so a named pipe called `x.png` cannot hang a batch,
  and the file is opened non-blocking and checked again after opening (no check-then-open race).
- Every failure is an `ImageError` whose message starts with the file name; nothing else escapes.
  The loader touches no global state (no warning filters), so it is safe on several threads.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .contract import IMAGE_SIZE

BACKGROUND = (255, 255, 255)
MAX_PIXELS = 64_000_000  # 64 MP: 8000x8000; bigger declared sizes are refused unread
MAX_FILE_BYTES = 256 * 1024 * 1024

_ORIENTATION = 0x0112  # EXIF tag
_HIGH_DEPTH = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_CHUNK_ROWS = 512  # bit-depth conversion works on row blocks, so temporaries stay small


class ImageError(ValueError):
    """An image that cannot be classified; the message names the file and the reason."""


# ----------------------------------------------------------------------------------------------
# Which files count as images: one rule for predict's folders, training folders and the app

IMAGE_SUFFIXES = (
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".gif",
    ".webp",
    ".tif",
    ".tiff",
    ".ppm",
    ".pgm",
    ".pbm",
)


def is_image_file(path: str | os.PathLike) -> bool:
    """An image suffix (any case), not hidden (`.DS_Store`, `._x.jpg` from macOS), not a folder.

    Decided by name, not content: a bad file with an image name is still picked up, so it is
    reported instead of silently skipped."""
    path = Path(path)
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and not path.is_dir()


# ----------------------------------------------------------------------------------------------
# Opening: regular files only, never blocking


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _check_stat(path: Path, st: os.stat_result) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(f"{path}: is a folder, not an image")
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(f"{path}: is {_kind(st.st_mode)}, not an image file; not read")
    if st.st_size == 0:
        raise ImageError(f"{path}: empty file (0 bytes)")
    if st.st_size > MAX_FILE_BYTES:
        raise ImageError(f"{path}: {st.st_size / 2**20:.0f} MB is over the {MAX_FILE_BYTES >> 20} MB limit")


def _open_regular(path: Path) -> int:
    """A read-only descriptor of the regular file at `path` (links followed), or ImageError."""
    try:
        st = os.stat(path)
    except OSError as e:
        reason = e.strerror or str(e)
        if e.errno == errno.ELOOP:
            reason += ": a loop of symbolic links"
        elif e.errno == errno.ENOENT and os.path.islink(path):
            reason += ": a symbolic link to a missing file"
        raise ImageError(f"{path}: cannot read ({reason})") from None
    _check_stat(path, st)
    flags = os.O_RDONLY
    for name in ("O_NONBLOCK", "O_NOCTTY", "O_CLOEXEC", "O_BINARY"):
        flags |= getattr(os, name, 0)
    try:
        fd = os.open(path, flags)
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        _check_stat(path, os.fstat(fd))  # the file may have been swapped since the first look
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open, check and normalise one image file to an RGB PIL image (oriented; JPEGs drafted)."""
    path = Path(os.fsdecode(path))  # str, bytes or PathLike
    fd = _open_regular(path)
    try:
        with os.fdopen(fd, "rb") as f:
            img = Image.open(f)
            return to_rgb(img, source=str(path))
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{path}: image dimensions are too large (decompression bomb guard)") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image format Pillow can read") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except MemoryError:
        raise ImageError(f"{path}: too large to decode in memory") from None
    except Exception as e:  # noqa: BLE001 - decoders raise OSError, SyntaxError, struct.error, ...
        reason = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
        raise ImageError(f"{path}: corrupt or truncated image ({reason})") from None


# ----------------------------------------------------------------------------------------------
# Normalising: orientation, transparency, bit depth, colour space


def exif_orientation(img: Image.Image) -> int:
    """The EXIF orientation tag (1-8; 1 when absent or unreadable). 5-8 swap width and height."""
    try:
        value = img.getexif().get(_ORIENTATION, 1)
        return int(value) if isinstance(value, int) else 1
    except Exception:  # noqa: BLE001 - a damaged EXIF block means "no orientation", not a bad image
        return 1


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer and float images -> 8-bit grey, in row blocks (bounded temporaries).

    An integer image's colour key becomes an alpha channel (LA): the key is a value at the source
    depth, so it is matched before scaling (after >> 8 it would also hit its 255 neighbours)."""
    arr = np.asarray(img)
    mode = img.mode
    out = np.empty(arr.shape, dtype=np.uint8)
    key = img.info.get("transparency") if mode != "F" else None
    alpha = np.empty(arr.shape, dtype=np.uint8) if isinstance(key, int) else None
    if mode == "F":
        finite = np.isfinite(arr)
        top = float(arr.max(where=finite, initial=1.0))  # at least 1: [0, 1] images are scaled by 255
        scale = 255.0 / top
    elif mode == "I":
        scale = 1.0 if int(arr.max()) <= 255 else 1.0 / 256.0  # never empty: to_rgb refuses 0 pixels
    for r0 in range(0, arr.shape[0], _CHUNK_ROWS):
        block = arr[r0 : r0 + _CHUNK_ROWS]
        if mode.startswith("I;16"):
            out[r0 : r0 + _CHUNK_ROWS] = block >> 8
        elif mode == "I":
            out[r0 : r0 + _CHUNK_ROWS] = np.clip(block * scale, 0, 255)
        else:
            vals = np.nan_to_num(block.astype(np.float32), nan=0.0, posinf=top, neginf=0.0)
            out[r0 : r0 + _CHUNK_ROWS] = np.clip(vals * np.float32(scale) + np.float32(0.5), 0, 255)
        if alpha is not None:
            alpha[r0 : r0 + _CHUNK_ROWS] = np.where(block == key, 0, 255)
    if alpha is not None:
        return Image.merge("LA", (Image.fromarray(out), Image.fromarray(alpha)))
    return Image.fromarray(out)


def _low_depth_grey_key(img: Image.Image) -> int | None:
    """The colour key of a 2- or 4-bit grey PNG, widened as Pillow widens its pixels (x85, x17).

    Pillow scales those pixels to 8 bits but leaves the key at the source depth, so key 1 of a
    2-bit image would miss its pixels (85) and hit nothing. The depth shows only in the tile,
    which load() clears: read it first."""
    key, tile = img.info.get("transparency"), getattr(img, "tile", None)  # only files have a tile
    if not isinstance(key, int) or not tile:
        return None
    rawmode = tile[0][3]  # (codec, extents, offset, args): a tuple before Pillow 11, named since
    scale = 85 if rawmode == "L;2" else 17 if rawmode == "L;4" else None  # a GIF's args are a tuple: no dict lookup
    return None if scale is None else key * scale


def to_rgb(img: Image.Image, source: str = "image") -> Image.Image:
    """Orientation, first frame, transparency, bit depth and colour space -> 8-bit RGB."""
    if img.tell() != 0:
        img.seek(0)
    w, h = img.size
    if w < 1 or h < 1:
        raise ImageError(f"{source}: image has no pixels ({w}x{h})")
    if w * h > MAX_PIXELS:
        raise ImageError(f"{source}: {w}x{h} is over the {MAX_PIXELS // 1_000_000} MP limit (decompression bomb guard)")
    # MPO is a JPEG with an MPF segment (most phone photos): its first frame drafts like any JPEG.
    if img.format in ("JPEG", "MPO") and img.mode in ("RGB", "L", "CMYK"):  # the modes Pillow opens JPEGs in
        # Decode at the smallest power-of-two reduction that still leaves >= 4x the target size.
        img.draft(img.mode, (IMAGE_SIZE * 4, IMAGE_SIZE * 4))
    low_depth_key = _low_depth_grey_key(img)
    img.load()
    if low_depth_key is not None:
        img.info["transparency"] = low_depth_key
    if exif_orientation(img) in range(2, 9):
        img = ImageOps.exif_transpose(img)
    if img.mode in _HIGH_DEPTH:
        img = _to_8bit(img)
    mode = img.mode
    has_key = "transparency" in img.info
    if mode == "P":
        alpha = has_key or (img.palette is not None and img.palette.mode == "RGBA")
        img = img.convert("RGBA" if alpha else "RGB")
    elif mode in ("LA", "PA", "RGBa") or (mode in ("1", "L", "RGB") and has_key):  # 1-bit PNGs have keys too
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        canvas = Image.new("RGB", img.size, BACKGROUND)
        canvas.paste(img, mask=img.getchannel("A"))
        return canvas
    if img.mode == "RGB":
        return img
    try:
        return img.convert("RGB")
    except ValueError as e:
        raise ImageError(f"{source}: colour mode {img.mode} cannot be converted to RGB ({e})") from None


# ----------------------------------------------------------------------------------------------
# The model input


def fit(img: Image.Image, size: int = IMAGE_SIZE) -> Image.Image:
    """Centre square crop, then antialiased resize to size x size.

    The crop is a real crop: `resize(box=...)` would let the Lanczos kernel reach ~3 source pixels
    per output pixel beyond the box, so the cropped-away margins would tint the edge columns."""
    if img.width != img.height:
        img = img.crop(center_square(img.size))
    return img.resize((size, size), Image.Resampling.LANCZOS)


def center_square(size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The centre square `fit` keeps of an image of `size` (w, h): (left, top, right, bottom)."""
    w, h = size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return left, top, left + side, top + side


def to_input(img: Image.Image) -> np.ndarray:
    """An RGB image -> uint8 [32, 32, 3], the contract's per-image input."""
    arr = np.asarray(fit(img))  # uint8 for an RGB image
    if arr.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise ImageError(f"internal: preprocessing produced shape {arr.shape}")
    return arr


def prepare(path: str | os.PathLike) -> np.ndarray:
    """Image file -> uint8 [32, 32, 3]. Raises ImageError naming the file on any problem."""
    return to_input(load_image(path))
