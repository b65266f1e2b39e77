"""Common image corruptions, with numpy and Pillow only: what users' pictures go through.

One definition serves two jobs: the robustness report (`cifar10 robustness`) applies each family at
five fixed severities, and training's robustness augmentation (`train/augment.py`) draws random
strengths from the same functions. In the spirit of CIFAR-10-C (Hendrycks & Dietterich, 2019), but
generated on the fly from a seed, so nothing is downloaded and every run sees the same pictures.

Every function takes a uint8 batch [N, 32, 32, 3] and returns a new uint8 batch of the same shape;
`strength` is one number per image (an array of N) so that training can vary it image by image.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter

# ----------------------------------------------------------------------------------------------
# The families. Strength units are the natural ones for each: JPEG quality, noise sigma on a 0..1
# scale, blur sigma in pixels, multiplicative factors for the colour ones, the down-scale for
# pixelation.


def jpeg(images: np.ndarray, quality: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """Re-encode as JPEG at `quality` (1-95) with Pillow's default 4:2:0 chroma subsampling, as
    cameras and web pages do."""
    out = np.empty_like(images)
    for i, (img, q) in enumerate(zip(images, quality)):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=int(round(q)))
        buf.seek(0)
        with Image.open(buf) as decoded:
            out[i] = np.asarray(decoded.convert("RGB"))
    return out


def gaussian_noise(images: np.ndarray, sigma: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """Add independent Gaussian noise per pixel and channel (sensor noise, low light)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    x = images.astype(np.float32) / 255.0
    x += rng.standard_normal(x.shape, dtype=np.float32) * np.asarray(sigma, np.float32).reshape(-1, 1, 1, 1)
    return _to_uint8(x)


def gaussian_blur(images: np.ndarray, sigma: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """Gaussian blur of standard deviation `sigma` pixels (defocus, motion-free camera shake)."""
    out = np.empty_like(images)
    for i, (img, s) in enumerate(zip(images, sigma)):
        out[i] = img if s <= 0 else np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(float(s))))
    return out


def brightness(images: np.ndarray, factor: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """Scale all channels by `factor`: below 1 darkens (under-exposure), above 1 brightens."""
    x = images.astype(np.float32) * np.asarray(factor, np.float32).reshape(-1, 1, 1, 1)
    return _to_uint8(x / 255.0)


def contrast(images: np.ndarray, factor: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """Pull every pixel towards the image's mean by `factor` (1 = unchanged; low = washed out)."""
    x = images.astype(np.float32)
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    x = mean + (x - mean) * np.asarray(factor, np.float32).reshape(-1, 1, 1, 1)
    return _to_uint8(x / 255.0)


def saturation(images: np.ndarray, factor: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """Blend with the image's own grey version (factor 0 = greyscale, 1 = unchanged, >1 = vivid)."""
    x = images.astype(np.float32)
    grey = (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]  # ITU-R 601 luma, as Pillow's "L"
    x = grey + (x - grey) * np.asarray(factor, np.float32).reshape(-1, 1, 1, 1)
    return _to_uint8(x / 255.0)


def pixelate(images: np.ndarray, scale: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """Down-scale by `scale` (box filter), then back up with nearest neighbour: a small picture
    blown up, or a heavy video codec."""
    out = np.empty_like(images)
    h, w = images.shape[1:3]
    for i, (img, s) in enumerate(zip(images, scale)):
        small = max(1, int(round(h * float(s))))
        if small >= h:
            out[i] = img
            continue
        pic = Image.fromarray(img).resize((small, small), Image.Resampling.BOX)
        out[i] = np.asarray(pic.resize((w, h), Image.Resampling.NEAREST))
    return out


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """[0, 1] floats to uint8 with rounding (not truncation: that would darken every image)."""
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


Corruption = Callable[..., np.ndarray]

FAMILIES: dict[str, Corruption] = {
    "jpeg": jpeg,
    "gaussian_noise": gaussian_noise,
    "gaussian_blur": gaussian_blur,
    "brightness": brightness,
    "contrast": contrast,
    "saturation": saturation,
    "pixelate": pixelate,
}

# Five severities per family, mildest first, for the report. Noise and blur follow CIFAR-10-C's
# values; JPEG includes quality 75, the common web default; brightness darkens (users' pictures are
# more often too dark than too bright); saturation fades to greyscale at the top severity.
SEVERITIES: dict[str, tuple[float, ...]] = {
    "jpeg": (90, 75, 50, 30, 15),
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
    "brightness": (0.8, 0.65, 0.5, 0.35, 0.25),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "saturation": (0.7, 0.5, 0.3, 0.15, 0.0),
    "pixelate": (0.9, 0.75, 0.6, 0.5, 0.4),
}


def corrupt(images: np.ndarray, family: str, severity: int, seed: int = 0) -> np.ndarray:
    """`images` under one family at severity 1-5, the same pixels for the same seed."""
    if family not in FAMILIES:
        raise ValueError(f"unknown corruption {family!r}; choose from {', '.join(FAMILIES)}")
    if not 1 <= severity <= len(SEVERITIES[family]):
        raise ValueError(f"severity must be 1-{len(SEVERITIES[family])}, got {severity}")
    strength = np.full(len(images), SEVERITIES[family][severity - 1], np.float32)
    return FAMILIES[family](images, strength, np.random.default_rng([seed, severity]))


def odds_text(odds: dict[str, float]) -> str:
    """{"jpeg": 1.0, "pixelate": 0.0} -> "jpeg=1, pixelate=0": a mix of families as logs and model cards state it
    (the form `cifar10 train --robust-mix` reads, with spaces)."""
    return ", ".join(f"{name}={value:g}" for name, value in odds.items())
