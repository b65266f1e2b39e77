"""A corpus of hostile image files, and what the loader must do with each.

`build_corpus(dir)` writes a few hundred files (and a few non-files) under `dir` and returns one
`Case` per path, with the outcome the image loader (`cifar10kit.runtime.preprocess.prepare`) must
give: "ok" (a uint8 [32, 32, 3] array) or "error" (an `ImageError` naming the file).

Families: empty files; files truncated at many cut points in every format; text, markup and random
bytes with image names; decompression bombs (huge declared sizes with valid checksums, and real
files over the pixel limit); extreme sizes (1x1, 1xN, the largest allowed 8000x8000 and a real
10000x10000 over the limit); every colour mode and depth (I;16, I, F, CMYK, P with transparency, LA,
RGBA, 1-bit...); animated and multi-page files; EXIF orientations 1..8 and damaged EXIF; file-system
oddities (dangling links, link loops, FIFOs, devices, folders named like images, unreadable files,
non-UTF-8, long and odd names); valid images under the wrong extension.

Everything is generated (nothing downloaded); the whole corpus takes a few seconds and ~5 MB of disk
(the 300 MB "too big" file is sparse).
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

# What the folder scan of `cifar10 predict DIR` picks up (runtime/dataset.py IMAGE_EXTENSIONS).
SCANNED_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")

# EXIF orientation -> how the stored pixels relate to the displayed image (numpy, per the EXIF spec:
# which visual side the stored 0th row and 0th column show). stored = STORE[o](displayed).
EXIF_STORE = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # mirrored left-right
    3: lambda a: a[::-1, ::-1],  # rotated 180
    4: lambda a: a[::-1, :],  # mirrored top-bottom
    5: lambda a: a.transpose(1, 0, 2),  # 0th row = visual left, 0th column = visual top
    6: lambda a: np.rot90(a, 1),  # 0th row = visual right, 0th column = visual top (rotate 90 CW to show)
    7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),  # 0th row = visual right, 0th column = visual bottom
    8: lambda a: np.rot90(a, -1),  # 0th row = visual left, 0th column = visual bottom (rotate 90 CCW)
}


@dataclass(frozen=True)
class Case:
    path: Path
    expected: str  # "ok" or "error"
    family: str  # short group name, for the summary
    note: str = ""
    scanned: bool = True  # `cifar10 predict DIR` must print a row for it
    reference: Path | None = None  # for "ok" cases: a plain file that must give the same pixels
    tolerance: float = 0.0  # mean absolute difference allowed against `reference` or `expected`
    # For "ok" cases without a reference file: the full-size 8-bit RGB picture the documented policy
    # promises (uint8 [h, w, 3], or one (r, g, b) colour for the whole image). The loader's output
    # must equal this picture after the same centre crop and resize.
    expected_rgb: np.ndarray | tuple | None = field(default=None, compare=False, repr=False)

    @property
    def name(self) -> str:
        return os.fsdecode(self.path.name)


# ----------------------------------------------------------------------------------------------
# Building blocks


def scene(w: int = 96, h: int = 64, seed: int = 0) -> np.ndarray:
    """A deterministic RGB picture with four distinct quadrants, so any rotation or mirror shows."""
    rng = np.random.default_rng(seed)
    a = np.zeros((h, w, 3), np.uint8)
    a[: h // 2, : w // 2] = (230, 30, 30)
    a[: h // 2, w // 2 :] = (30, 200, 40)
    a[h // 2 :, : w // 2] = (40, 60, 220)
    a[h // 2 :, w // 2 :] = (240, 220, 40)
    noise = rng.integers(-6, 7, size=a.shape)
    return np.clip(a.astype(int) + noise, 0, 255).astype(np.uint8)


def on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The policy's transparency: composite on white."""
    a = alpha.astype(np.float64)[..., None] / 255.0
    return np.round(rgb.astype(np.float64) * a + 255.0 * (1.0 - a)).astype(np.uint8)


def grey3(grey: np.ndarray) -> np.ndarray:
    return np.dstack([grey] * 3).astype(np.uint8)


def palette_rgb(img: Image.Image) -> np.ndarray:
    """A palette image's colours, looked up by hand."""
    pal = np.array(img.getpalette(), np.uint8).reshape(-1, 3)
    return pal[np.asarray(img)]


# Lossy formats change pixels a little; lossless ones must match up to compositing rounding.
LOSSY_TOLERANCE = {"jpg": 8.0, "jpeg": 8.0, "webp": 10.0}  # the noisy scene at default quality
LOSSLESS_TOLERANCE = 0.6


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    img.save(b, fmt, **kw)
    return b.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(w: int, h: int, idat: bytes, color_type: int = 2, depth: int = 8, extra: bytes = b"") -> bytes:
    """A PNG with the given IHDR and IDAT payload; all CRCs correct, whatever the header claims."""
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def write_constant_png(path: Path, w: int, h: int, rgb: tuple[int, int, int]) -> None:
    """A real, fully valid w x h RGB PNG of one colour, streamed (no w*h*3 buffer in this process)."""
    row = b"\x00" + bytes(rgb) * w
    co = zlib.compressobj(9)
    idat = b"".join(co.compress(row) for _ in range(h)) + co.flush()
    path.write_bytes(png_bytes(w, h, idat))


def gif_header_bomb(w: int, h: int) -> bytes:
    """GIF89a whose logical screen and only frame claim w x h, with a 1-pixel LZW stream."""
    head = b"GIF89a" + struct.pack("<HHBBB", w, h, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    desc = b"\x2c" + struct.pack("<HHHHB", 0, 0, w, h, 0)
    return head + desc + b"\x02\x02\x44\x01\x00" + b"\x3b"


def bmp_header_bomb(w: int, h: int) -> bytes:
    """A 24-bit BMP header claiming w x h with only a few bytes of pixels."""
    pixels = b"\x00" * 64
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, 0, 2835, 2835, 0, 0)
    head = b"BM" + struct.pack("<IHHI", 14 + 40 + len(pixels), 0, 0, 14 + 40)
    return head + info + pixels


def tiff_header_bomb(w: int, h: int) -> bytes:
    """A little-endian TIFF whose only IFD claims w x h, 8-bit grey, one tiny strip."""
    entries = [
        (256, 4, 1, w),  # ImageWidth LONG
        (257, 4, 1, h),  # ImageLength
        (258, 3, 1, 8),  # BitsPerSample
        (259, 3, 1, 1),  # Compression none
        (262, 3, 1, 1),  # BlackIsZero
        (273, 4, 1, 8 + 2 + 12 * 9 + 4),  # StripOffsets: just after the IFD
        (277, 3, 1, 1),  # SamplesPerPixel
        (278, 4, 1, h),  # RowsPerStrip
        (279, 4, 1, 16),  # StripByteCounts
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        packed = struct.pack("<I", value) if typ == 4 else struct.pack("<HH", value, 0)
        ifd += struct.pack("<HHI", tag, typ, count) + packed
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + b"\x00" * 16


def jpeg_sof_bomb(w: int, h: int) -> bytes:
    """A real small JPEG whose SOF0 frame header is rewritten to claim w x h."""
    data = bytearray(encode(Image.new("RGB", (16, 16), (90, 90, 90)), "JPEG"))
    i = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, i + 5, h, w)
    return bytes(data)


def webp_canvas_bomb(w: int, h: int) -> bytes:
    """A VP8X WebP header claiming a w x h canvas (24-bit fields), with no real image data."""
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00" + (w - 1).to_bytes(3, "little")
    vp8x += (h - 1).to_bytes(3, "little")
    body = b"WEBP" + vp8x
    return b"RIFF" + struct.pack("<I", len(body)) + body


def tiff_ifd_loop() -> bytes:
    """A valid small TIFF whose IFD's next-IFD pointer points back at itself (an endless page list)."""
    data = bytearray(encode(Image.fromarray(scene(24, 16)), "TIFF"))
    first = struct.unpack_from("<I", data, 4)[0]
    n = struct.unpack_from("<H", data, first)[0]
    struct.pack_into("<I", data, first + 2 + 12 * n, first)
    return bytes(data)


def with_exif_app1(jpeg: bytes, app1_payload: bytes) -> bytes:
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1_payload) + 2) + app1_payload + jpeg[2:]


# ----------------------------------------------------------------------------------------------
# The corpus


class _Builder:
    def __init__(self, root: Path):
        self.root = root
        self.cases: list[Case] = []

    def add(self, name: str | bytes, data: bytes | None, expected: str, family: str, note: str = "", **kw) -> Path:
        path = Path(os.fsdecode(name)) if isinstance(name, bytes) else Path(name)
        path = self.root / path
        if data is not None:
            path.write_bytes(data)
        scanned = kw.pop("scanned", path.suffix.lower() in SCANNED_SUFFIXES and not path.name.startswith("."))
        self.cases.append(Case(path, expected, family, note, scanned=scanned, **kw))
        return path


def build_corpus(dir: Path) -> list[Case]:  # noqa: A002 - the name the issue asks for
    """Write the hostile corpus under `dir` (created if needed); one Case per path."""
    root = Path(dir)
    root.mkdir(parents=True, exist_ok=True)
    b = _Builder(root)
    base = Image.fromarray(scene())
    ref = b.add("reference.png", encode(base, "PNG"), "ok", "valid", expected_rgb=np.asarray(base))

    # -- empty files -----------------------------------------------------------------------------
    for ext in ("png", "jpg", "gif", "webp", "bmp", "tif"):
        b.add(f"empty.{ext}", b"", "error", "empty")

    # -- truncated at many cut points --------------------------------------------------------------
    formats = {
        "png": ("PNG", {}),
        "jpg": ("JPEG", {"quality": 90}),
        "progressive.jpg": ("JPEG", {"quality": 90, "progressive": True}),
        "gif": ("GIF", {}),
        "webp": ("WEBP", {"quality": 80}),
        "lossless.webp": ("WEBP", {"lossless": True}),
        "bmp": ("BMP", {}),
        "tif": ("TIFF", {}),
        "deflate.tif": ("TIFF", {"compression": "tiff_deflate"}),
        "ppm": ("PPM", {}),
    }
    for ext, (fmt, kw) in formats.items():
        data = encode(base, fmt, **kw)
        cuts = {f"{int(f * 100)}pct": int(len(data) * f) for f in (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99)}
        cuts["header4"] = 4
        for label, cut in cuts.items():
            b.add(f"truncated-{label}.{ext}", data[: max(cut, 1)], "error", "truncated")
    # Cut only after the last pixel: all image data is there, so these are readable (policy: fine).
    png = encode(base, "PNG")
    b.add("truncated-no-iend.png", png[:-12], "ok", "truncated-tail", "IEND chunk missing", reference=ref)
    gif = encode(base, "GIF")
    gif_rgb = np.asarray(Image.open(io.BytesIO(gif)).convert("RGB"))  # GIF quantises the colours
    b.add(
        "truncated-no-trailer.gif",
        gif[:-1],
        "ok",
        "truncated-tail",
        "GIF trailer byte missing",
        expected_rgb=gif_rgb,
        tolerance=LOSSLESS_TOLERANCE,
    )

    # -- corrupted inside ------------------------------------------------------------------------
    bad_crc = bytearray(png)
    bad_crc[png.find(b"IDAT") + 40] ^= 0xFF
    b.add("corrupt-idat-crc.png", bytes(bad_crc), "error", "corrupt", "IDAT byte flipped: CRC mismatch")
    bad_ihdr = bytearray(png)
    bad_ihdr[20] ^= 0x01
    b.add("corrupt-ihdr-crc.png", bytes(bad_ihdr), "error", "corrupt", "IHDR width changed, CRC not")
    b.add("zero-width.png", png_bytes(0, 16, zlib.compress(b"\x00" * 16)), "error", "corrupt", "IHDR width 0")
    b.add("bad-depth.png", png_bytes(8, 8, zlib.compress(b"\x00" * 80), depth=7), "error", "corrupt", "bit depth 7")
    b.add("idat-garbage.png", png_bytes(8, 8, os.urandom(64)), "error", "corrupt", "IDAT is not zlib")
    b.add("idat-short.png", png_bytes(64, 64, zlib.compress(b"\x00" * 100)), "error", "corrupt", "too few rows")
    b.add("gif-no-frames.gif", b"GIF89a" + struct.pack("<HHBBB", 8, 8, 0, 0, 0) + b"\x3b", "error", "corrupt")

    # -- not images at all -----------------------------------------------------------------------
    rng = np.random.default_rng(1234)
    texts = {
        "text.png": b"hello, I am not a picture\n",
        "text.jpg": b"JFIF? no.\n" * 20,
        "page.jpg": b"<!doctype html><html><body><img src=x.png></body></html>\n",
        "vector.png": b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>',
        "data.gif": b'{"label": "cat", "probability": 1.0}\n',
        "script.bmp": b"#!/bin/sh\nrm -rf /\n",
        "doc.tif": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n",
        "archive.webp": b"PK\x03\x04" + bytes(26) + b"x.png",
        "zeros.png": bytes(1 << 20),
        "ones.jpg": b"\xff" * 4096,
        "utf16.png": "an image?".encode("utf-16"),
        "nul.ppm": b"\x00",
    }
    for name, data in texts.items():
        b.add(name, data, "error", "not-an-image")
    for size in (1, 16, 1024, 65536):
        for ext in ("png", "jpg", "gif", "webp", "bmp", "tif", "ppm"):
            b.add(f"random-{size}.{ext}", rng.bytes(size), "error", "random-bytes")
    magics = {
        "png": b"\x89PNG\r\n\x1a\n",
        "jpg": b"\xff\xd8\xff\xe0",
        "gif": b"GIF89a",
        "bmp": b"BM",
        "tif": b"II*\x00",
        "webp": b"RIFF\x00\x10\x00\x00WEBPVP8 ",
        "ppm": b"P6\n",
    }
    for ext, magic in magics.items():
        for size in (64, 4096):
            b.add(f"magic-then-random-{size}.{ext}", magic + rng.bytes(size), "error", "magic+random")

    # -- decompression bombs ---------------------------------------------------------------------
    idat1 = zlib.compress(b"\x00" + b"\x00\x00\x00")
    bombs = {
        "bomb-100000x100000.png": png_bytes(100_000, 100_000, idat1),
        "bomb-65535x65535.png": png_bytes(65_535, 65_535, idat1),
        "bomb-2147483647x1.png": png_bytes(2**31 - 1, 1, idat1),
        "bomb-9000x9000.png": png_bytes(9_000, 9_000, idat1),  # 81 MP: over our 64 MP, under Pillow's 89 MP
        "bomb-8001x8000-grey.png": png_bytes(8_001, 8_000, idat1, color_type=0),
        "bomb-65535x65535.gif": gif_header_bomb(65_535, 65_535),
        "bomb-9000x9000.gif": gif_header_bomb(9_000, 9_000),
        "bomb-100000x100000.bmp": bmp_header_bomb(100_000, 100_000),
        "bomb-100000x-100000.bmp": bmp_header_bomb(100_000, -100_000),
        "bomb-9000x9000.bmp": bmp_header_bomb(9_000, 9_000),
        "bomb-100000x100000.tif": tiff_header_bomb(100_000, 100_000),
        "bomb-9000x9000.tif": tiff_header_bomb(9_000, 9_000),
        "bomb-65500x65500.jpg": jpeg_sof_bomb(65_500, 65_500),
        "bomb-9000x9000.jpg": jpeg_sof_bomb(9_000, 9_000),
        "bomb-16384x16384.webp": webp_canvas_bomb(16_384, 16_384),
    }
    for name, data in bombs.items():
        b.add(name, data, "error", "bomb")
    # Compressed metadata that expands to 200 MB (text and ICC profile chunks): refused by Pillow's caps.
    row = b"\x00" + b"\x10\x20\x30" * 4
    zeros = zlib.compress(b"\0" * (200 << 20), 9)
    for kind, label in ((b"zTXt", "text"), (b"iCCP", "icc")):
        extra = png_chunk(kind, b"k\x00\x00" + zeros)
        b.add(f"bomb-{label}-chunk.png", png_bytes(4, 4, zlib.compress(row * 4), extra=extra), "error", "bomb")
    # Real, complete files: 10000x10000 (100 MP) is over the limit; 8000x8000 (exactly 64 MP) is not.
    write_constant_png(root / "huge-10000x10000.png", 10_000, 10_000, (200, 40, 40))
    b.add("huge-10000x10000.png", None, "error", "bomb", "real 100 MP PNG: over the 64 MP limit")
    write_constant_png(root / "large-8000x8000.png", 8_000, 8_000, (10, 200, 30))
    b.add(
        "large-8000x8000.png",
        None,
        "ok",
        "extreme-size",
        "real 64 MP PNG: at the limit, classified",
        expected_rgb=(10, 200, 30),
    )
    with open(root / "sparse-300MB.png", "wb") as f:
        f.write(png)
        f.truncate(300 << 20)  # sparse: no disk used
    b.add("sparse-300MB.png", None, "error", "bomb", "file over MAX_FILE_BYTES")

    # -- extreme sizes -----------------------------------------------------------------------------
    one = Image.new("RGB", (1, 1), (12, 34, 56))
    for ext, fmt in (
        ("png", "PNG"),
        ("jpg", "JPEG"),
        ("gif", "GIF"),
        ("bmp", "BMP"),
        ("tif", "TIFF"),
        ("webp", "WEBP"),
    ):
        b.add(
            f"1x1.{ext}",
            encode(one, fmt),
            "ok",
            "extreme-size",
            expected_rgb=(12, 34, 56),
            tolerance=LOSSY_TOLERANCE.get(ext, 0.0),
        )
    for w, h in ((1, 5000), (5000, 1), (2, 2), (31, 33), (33, 31), (100_000, 1)):
        img = Image.fromarray(np.full((h, w, 3), 77, np.uint8))
        b.add(f"size-{w}x{h}.png", encode(img, "PNG"), "ok", "extreme-size", expected_rgb=(77, 77, 77))
    big = Image.fromarray(np.kron(scene(40, 30), np.ones((100, 100, 1), np.uint8)))  # 4000x3000
    b.add(
        "photo-4000x3000.jpg",
        encode(big, "JPEG", quality=85),
        "ok",
        "extreme-size",
        expected_rgb=np.asarray(big),
        tolerance=LOSSY_TOLERANCE["jpg"],
    )

    # -- colour modes, depths, frames --------------------------------------------------------------
    rgb = scene(48, 40, seed=3)
    grey = rgb.mean(axis=2).astype(np.uint8)
    alpha = np.tile(np.linspace(0, 255, 48, dtype=np.uint8), (40, 1))
    modes: dict[str, Image.Image] = {
        "L": Image.fromarray(grey),
        "LA": Image.fromarray(np.dstack([grey, alpha]), "LA"),
        "RGB": Image.fromarray(rgb),
        "RGBA": Image.fromarray(np.dstack([rgb, alpha]), "RGBA"),
        "1": Image.fromarray(grey).convert("1"),
        "P": Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16),
        "I16": Image.fromarray(grey.astype(np.uint16) * 257),  # mode I;16
        "I": Image.fromarray(grey.astype(np.int32) * 100),
        "F": Image.fromarray(grey.astype(np.float32) / 255.0),
        "F-wide": Image.fromarray(grey.astype(np.float32) * 1000.0 - 5000.0),
        "CMYK": Image.fromarray(rgb).convert("CMYK"),
        "YCbCr": Image.fromarray(rgb).convert("YCbCr"),
        "I-fits": Image.fromarray(grey.astype(np.int32)),  # 32-bit, values 0..255: read as 8-bit
    }
    # What the policy promises for each (README: 16-bit scaled, not clipped; 32-bit integers as 8-bit
    # when they fit, else as 16-bit; floats in [0, 1] times 255, others over their largest value).
    wide = grey.astype(np.float32) * 1000.0 - 5000.0
    promised = {
        "L": grey3(grey),
        "LA": on_white(grey3(grey), alpha),
        "RGB": rgb,
        "RGBA": on_white(rgb, alpha),
        "1": grey3(np.asarray(modes["1"]).astype(np.uint8) * 255),
        "P": palette_rgb(modes["P"]),
        "I16": grey3(grey),  # g * 257 >> 8 == g
        "I": grey3(((grey.astype(np.int64) * 100) >> 8).astype(np.uint8)),
        "I-fits": grey3(grey),
        "F": grey3(grey),
        "F-wide": grey3(np.clip(wide * np.float32(255.0 / wide.max()) + np.float32(0.5), 0, 255).astype(np.uint8)),
        "CMYK": rgb,
        "YCbCr": rgb,
    }
    near = {"YCbCr": 1.5}  # YCbCr <-> RGB rounds each way
    fmt_modes = {
        "png": ("PNG", ("L", "LA", "RGB", "RGBA", "1", "P", "I16")),
        "tif": ("TIFF", ("L", "LA", "RGB", "RGBA", "1", "P", "I16", "I", "I-fits", "F", "F-wide", "CMYK", "YCbCr")),
        "jpg": ("JPEG", ("L", "RGB", "CMYK")),
        "bmp": ("BMP", ("L", "RGB", "RGBA", "1", "P")),
        "gif": ("GIF", ("L", "P", "1")),
        "webp": ("WEBP", ("RGB", "RGBA")),
        "ppm": ("PPM", ("RGB",)),
        "pgm": ("PPM", ("L", "I16")),
        "pbm": ("PPM", ("1",)),
    }
    for ext, (fmt, names) in fmt_modes.items():
        for mode in names:
            tol = LOSSY_TOLERANCE.get(ext, near.get(mode, LOSSLESS_TOLERANCE))
            # Pillow writes RGBA as a plain 32-bit BMP (BI_RGB): the file holds no alpha, so no compositing.
            want = rgb if (ext, mode) == ("bmp", "RGBA") else promised[mode]
            b.add(f"mode-{mode}.{ext}", encode(modes[mode], fmt), "ok", "modes", expected_rgb=want, tolerance=tol)
    # Palette with a transparent index, grey/RGB with a colour key, all fully transparent.
    pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    pal_shown = palette_rgb(pal)
    pal_shown[np.asarray(pal) == 0] = 255  # index 0 is transparent: white
    for ext, fmt in (("png", "PNG"), ("gif", "GIF")):
        b.add(
            f"palette-transparency.{ext}",
            encode(pal, fmt, transparency=0),
            "ok",
            "modes",
            expected_rgb=pal_shown,
            tolerance=LOSSLESS_TOLERANCE,
        )
    keyed_grey = grey3(np.where(grey == grey[0, 0], 255, grey))
    b.add(
        "grey-colour-key.png",
        encode(modes["L"], "PNG", transparency=int(grey[0, 0])),
        "ok",
        "modes",
        expected_rgb=keyed_grey,
        tolerance=LOSSLESS_TOLERANCE,
    )
    keyed_rgb = np.where((rgb == rgb[0, 0]).all(2, keepdims=True), np.uint8(255), rgb)
    b.add(
        "rgb-colour-key.png",
        encode(modes["RGB"], "PNG", transparency=tuple(int(v) for v in rgb[0, 0])),
        "ok",
        "modes",
        expected_rgb=keyed_rgb,
        tolerance=LOSSLESS_TOLERANCE,
    )
    clear = Image.new("RGBA", (40, 30), (255, 0, 0, 0))
    for ext, fmt in (("png", "PNG"), ("webp", "WEBP"), ("tif", "TIFF")):
        b.add(
            f"fully-transparent.{ext}",
            encode(clear, fmt),
            "ok",
            "modes",
            "must come out as BACKGROUND",
            expected_rgb=(255, 255, 255),
        )
    # 16-bit RGB PNG (Pillow reads it as 8-bit RGB) written by hand.
    rgb16 = (rgb.astype(">u2") * 257).astype(">u2")
    raw16 = b"".join(b"\x00" + r.tobytes() for r in rgb16)
    b.add(
        "rgb-16bit.png",
        png_bytes(48, 40, zlib.compress(raw16), color_type=2, depth=16),
        "ok",
        "modes",
        expected_rgb=rgb,
    )
    # Frames: animated GIF / WebP / APNG, multi-page TIFF (first frame is used), an IFD loop.
    frames = [Image.fromarray(scene(40, 30, seed=s)) for s in range(5)]
    first = np.asarray(frames[0])  # the first frame, whatever the others hold
    # GIF quantises each frame to 256 colours, hence the wider tolerance.
    b.add(
        "animated.gif",
        encode(frames[0], "GIF", save_all=True, append_images=frames[1:], loop=0),
        "ok",
        "frames",
        expected_rgb=first,
        tolerance=6.0,
    )
    b.add(
        "animated.webp",
        encode(frames[0], "WEBP", save_all=True, append_images=frames[1:]),
        "ok",
        "frames",
        expected_rgb=first,
        tolerance=LOSSY_TOLERANCE["webp"],
    )
    b.add(
        "animated-apng.png",
        encode(frames[0], "PNG", save_all=True, append_images=frames[1:]),
        "ok",
        "frames",
        expected_rgb=first,
    )
    b.add(
        "multipage.tif",
        encode(frames[0], "TIFF", save_all=True, append_images=frames[1:]),
        "ok",
        "frames",
        expected_rgb=first,
    )
    b.add(
        "ifd-loop.tif", tiff_ifd_loop(), "ok", "frames", "next-IFD pointer points at itself", expected_rgb=scene(24, 16)
    )

    # -- EXIF orientation ------------------------------------------------------------------------
    shown = scene(120, 80, seed=7)
    upright = b.add("exif-reference.png", encode(Image.fromarray(shown), "PNG"), "ok", "exif", expected_rgb=shown)
    for o, store in EXIF_STORE.items():
        exif = Image.Exif()
        exif[0x0112] = o
        stored = Image.fromarray(np.ascontiguousarray(store(shown)))
        data = encode(stored, "JPEG", quality=95, exif=exif.tobytes())
        b.add(f"exif-orientation-{o}.jpg", data, "ok", "exif", reference=upright, tolerance=4.0)
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = Image.fromarray(np.ascontiguousarray(EXIF_STORE[6](shown)))
    b.add("exif-orientation-6.png", encode(stored, "PNG", exif=exif.tobytes()), "ok", "exif", reference=upright)
    b.add(
        "exif-orientation-6.webp",
        encode(stored, "WEBP", lossless=True, exif=exif.tobytes()),
        "ok",
        "exif",
        reference=upright,
    )
    plain = encode(Image.fromarray(shown), "JPEG", quality=95)
    for o in (0, 9, 65535):
        exif = Image.Exif()
        exif[0x0112] = o
        data = encode(Image.fromarray(shown), "JPEG", quality=95, exif=exif.tobytes())
        b.add(f"exif-orientation-invalid-{o}.jpg", data, "ok", "exif", "ignored", reference=upright, tolerance=4.0)
    b.add(
        "exif-garbage.jpg",
        with_exif_app1(plain, b"Exif\x00\x00" + rng.bytes(300)),
        "ok",
        "exif",
        "damaged EXIF block: image still readable",
        reference=upright,
        tolerance=4.0,
    )
    b.add(
        "exif-bad-offset.jpg",
        with_exif_app1(plain, b"Exif\x00\x00MM\x00\x2a\xff\xff\xff\x00"),
        "ok",
        "exif",
        reference=upright,
        tolerance=4.0,
    )
    b.add(
        "exif-huge-count.jpg",
        with_exif_app1(plain, b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\xff\xff" + bytes(40)),
        "ok",
        "exif",
        reference=upright,
        tolerance=4.0,
    )

    # -- valid content, wrong or odd extension -------------------------------------------------------
    jpeg = encode(base, "JPEG", quality=95)
    wrong = {
        "jpeg-named.png": jpeg,
        "png-named.jpg": png,
        "gif-named.bmp": gif,
        "webp-named.tif": encode(base, "WEBP", lossless=True),
        "tiff-named.webp": encode(base, "TIFF"),
        "bmp-named.gif": encode(base, "BMP"),
        "png-named.ppm": png,
        "UPPER.PNG": png,
        "double.png.jpg": png,
        "jpeg-ext.jpeg": jpeg,
        "tiff-ext.tiff": encode(base, "TIFF"),
    }
    for name, data in wrong.items():
        if data is png:
            b.add(name, data, "ok", "wrong-extension", reference=ref)
        else:
            shown_rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))  # the same bytes, decoded plainly
            b.add(name, data, "ok", "wrong-extension", expected_rgb=shown_rgb)
    b.add("no-extension", png, "ok", "wrong-extension", "not scanned: no image extension", reference=ref)
    b.add("image.dat", png, "ok", "wrong-extension", "not scanned: unknown extension", reference=ref)

    # -- names -------------------------------------------------------------------------------------
    names: list[str | bytes] = [
        b"latin1-caf\xe9.png",  # not UTF-8
        b"\xff\xfe-bom-bytes.jpg",
        b"bad\x80\x81name.png",
        "猫の写真.png",
        "🐱 cat.jpg",
        "with space and 'quotes\".png",
        "new\nline.png",
        "tab\tand\rcr.png",
        "-starts-with-dash.png",
        "--json.png",
        "%s%n%x.png",
        "back\\slash.png",
        "$(touch pwned).png",
        "a" * 251 + ".png",  # 255 bytes: the longest name most file systems allow
        "é" * 125 + ".png",  # 254 bytes of UTF-8
    ]
    for i, name in enumerate(names):
        data = jpeg if str(os.fsdecode(name)).endswith(".jpg") else png
        if data is png:
            b.add(name, data, "ok", "names", reference=ref)
        else:
            b.add(name, data, "ok", "names", expected_rgb=np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")))
        if i < 3:  # the same odd names on broken files: the error must still name them
            bad = name + b".broken.png" if isinstance(name, bytes) else name + ".broken.png"
            b.add(bad, b"\x89PNG\r\n\x1a\n" + bytes(20), "error", "names")
    b.add("n" * 300 + ".png", None, "error", "names", "name too long to exist (ENAMETOOLONG)", scanned=False)
    b.add("does-not-exist.png", None, "error", "names", "missing file", scanned=False)

    # -- file-system oddities ----------------------------------------------------------------------
    os.symlink(root / "nowhere" / "missing.png", root / "dangling-link.png")
    b.add("dangling-link.png", None, "error", "filesystem")
    os.symlink(root / "loop-b.png", root / "loop-a.png")
    os.symlink(root / "loop-a.png", root / "loop-b.png")
    b.add("loop-a.png", None, "error", "filesystem")
    b.add("loop-b.png", None, "error", "filesystem")
    os.symlink("self-loop.png", root / "self-loop.png")
    b.add("self-loop.png", None, "error", "filesystem")
    os.symlink(ref, root / "link-to-reference.png")
    b.add("link-to-reference.png", None, "ok", "filesystem", reference=ref)
    os.symlink("reference.png", root / "relative-link.jpg")
    b.add("relative-link.jpg", None, "ok", "filesystem", reference=ref)
    (root / "folder.png").mkdir()
    b.add("folder.png", None, "error", "filesystem", "a folder named like an image", scanned=False)
    (root / "folder.jpg").mkdir()
    os.symlink(root / "folder.jpg", root / "link-to-folder.gif")
    b.add("link-to-folder.gif", None, "error", "filesystem", scanned=False)
    if hasattr(os, "mkfifo"):
        os.mkfifo(root / "fifo.png")
        b.add("fifo.png", None, "error", "filesystem", "named pipe: must be refused without opening it")
        os.mkfifo(root / "fifo-target")
        os.symlink(root / "fifo-target", root / "link-to-fifo.jpg")
        b.add("link-to-fifo.jpg", None, "error", "filesystem")
    for dev in ("/dev/zero", "/dev/null", "/dev/urandom"):
        if os.path.exists(dev):
            name = f"device-{Path(dev).name}.png"
            os.symlink(dev, root / name)
            b.add(name, None, "error", "filesystem", "character device")
    locked = b.add("unreadable.png", png, "error", "filesystem", "chmod 000")
    os.chmod(locked, 0)
    if _readable_anyway(locked):  # root (or CAP_DAC_OVERRIDE): permissions are not enforced here
        b.cases[-1] = Case(locked, "ok", "filesystem", "chmod 000, but readable: running as root", reference=ref)
    locked_dir = root / "locked-dir"
    locked_dir.mkdir()
    inner = locked_dir / "inside.png"
    inner.write_bytes(png)
    os.chmod(locked_dir, 0)
    if _readable_anyway(inner):
        b.cases.append(Case(inner, "ok", "filesystem", "folder chmod 000, but root", reference=ref))
    else:  # the folder scan cannot list it either, so predict DIR prints no row for it
        b.cases.append(Case(inner, "error", "filesystem", "inside a chmod 000 folder", scanned=False))
    return b.cases


def _readable_anyway(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            f.read(1)
        return True
    except OSError:
        return False


def restore_permissions(dir: Path) -> None:  # noqa: A002
    """Make the corpus deletable and listable again (pytest removes its temp dirs)."""
    for p in (Path(dir) / "locked-dir", Path(dir) / "unreadable.png"):
        if p.exists() and not p.is_symlink():
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
