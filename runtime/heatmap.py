"""Class-activation heatmaps: the model's `cam` output drawn over the image, without PyTorch."""

from __future__ import annotations

import numpy as np
from PIL import Image

# A perceptually ordered colour ramp (dark blue -> cyan -> yellow -> red), 5 stops interpolated.
_STOPS = np.array(
    [[0, 0, 128], [0, 160, 255], [120, 255, 120], [255, 220, 0], [220, 0, 0]], dtype=np.float64
)


def colormap(values: np.ndarray) -> np.ndarray:
    """values in [0, 1] -> uint8 RGB."""
    v = np.clip(values, 0.0, 1.0) * (len(_STOPS) - 1)
    lo = np.floor(v).astype(int).clip(0, len(_STOPS) - 2)
    t = (v - lo)[..., None]
    return (_STOPS[lo] * (1 - t) + _STOPS[lo + 1] * t).astype(np.uint8)


def normalise_map(cam: np.ndarray) -> np.ndarray:
    """One class's map [h, w] -> [0, 1]: positive evidence only, scaled by its own maximum."""
    m = np.maximum(np.asarray(cam, dtype=np.float64), 0.0)
    top = m.max()
    return m / top if top > 0 else m


def overlay(image: Image.Image, cam: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """Blend the colour-mapped, smoothly upsampled map of one class over `image` (any size)."""
    rgb = image.convert("RGB")
    heat = Image.fromarray(colormap(normalise_map(cam)), "RGB").resize(rgb.size, Image.Resampling.BICUBIC)
    return Image.blend(rgb, heat, alpha)
