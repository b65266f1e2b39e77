"""Data augmentation: flips, translations, crops and cutout on whole tensors (no per-image
Python), and robustness corruptions on the uint8 images before them.

All are deterministic functions of (seed, epoch), so a resumed run sees the same data as an
uninterrupted one.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..runtime.corruptions import FAMILIES


def epoch_generator(seed: int, epoch: int, device: torch.device | str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed * 100_003 + epoch)


def alternating_flip(images: torch.Tensor, seed: int, epoch: int) -> torch.Tensor:
    """Mirror a fixed random half of the images on even epochs and the other half on odd ones.

    Every image is seen both ways within two epochs, which beats independent coin flips when
    runs are only a few epochs long (airbench's finding)."""
    gen = epoch_generator(seed, -1, images.device)  # same mask every epoch
    mask = torch.rand(len(images), generator=gen, device=images.device) < 0.5
    if epoch % 2 == 1:
        mask = ~mask
    return torch.where(mask.view(-1, 1, 1, 1), images.flip(-1), images)


def _shifted_windows(source: torch.Tensor, h: int, w: int, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """out[i] = source[i, :, dy[i]:dy[i]+h, dx[i]:dx[i]+w], one slice per distinct offset pair
    instead of a gather per pixel."""
    layout = torch.channels_last if source.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    out = torch.empty(
        (len(source), source.shape[1], h, w), dtype=source.dtype, device=source.device, memory_format=layout
    )
    for y in range(int(dy.max()) + 1):
        for x in range(int(dx.max()) + 1):
            idx = ((dy == y) & (dx == x)).nonzero().squeeze(1)
            if len(idx):
                out[idx] = source[idx, :, y : y + h, x : x + w]
    return out


def random_crop(images: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """A random size x size window of each image, at the same scale (objects keep their size in
    pixels, so filters learnt on crops carry over to full images unchanged)."""
    n, _, h, w = images.shape
    if size >= min(h, w):
        return images
    dy = torch.randint(0, h - size + 1, (n,), generator=gen, device=images.device)
    dx = torch.randint(0, w - size + 1, (n,), generator=gen, device=images.device)
    return _shifted_windows(images, size, size, dy, dx)


def random_translate(images: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by up to `pad` pixels in x and y, filling from a reflection of itself."""
    if pad == 0:
        return images
    n, _, h, w = images.shape
    padded = F.pad(images, (pad,) * 4, mode="reflect")
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen, device=images.device)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen, device=images.device)
    return _shifted_windows(padded, h, w, dy, dx)


def random_cutout(images: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """Blank a size x size square at a random centre of each image (DeVries & Taylor, 2017).

    The square may hang over the edge, so objects are sometimes cut at the border only. The fill
    is 0, the dataset mean after normalisation: the net learns to classify from the parts it sees,
    which is what long runs need once the training set is fitted (airbench96 adds 12 pixels)."""
    if size <= 0:
        return images
    n, _, h, w = images.shape
    cy = torch.randint(0, h, (n, 1), generator=gen, device=images.device)
    cx = torch.randint(0, w, (n, 1), generator=gen, device=images.device)
    ys = torch.arange(h, device=images.device) - (cy - size // 2)  # [n, h]: row minus the square's top
    xs = torch.arange(w, device=images.device) - (cx - size // 2)
    inside = ((ys >= 0) & (ys < size)).view(n, 1, h, 1) & ((xs >= 0) & (xs < size)).view(n, 1, 1, w)
    return images.masked_fill(inside, 0)


# ----------------------------------------------------------------------------------------------
# Robustness: a share of each epoch's images goes through one of the corruptions users' pictures
# suffer (JPEG, noise, blur, exposure, colour, pixelation), at a random strength. The functions are
# the report's own (`runtime/corruptions.py`), so training and measurement mean the same thing.

# Relative odds of each family among corrupted images. JPEG leads: nearly every picture a user
# drops on the app has been through it, and it is the largest gap on the clean-trained model.
ROBUST_MIX: dict[str, float] = {
    "jpeg": 0.35,
    "gaussian_noise": 0.15,
    "gaussian_blur": 0.1,
    "brightness": 0.1,
    "contrast": 0.1,
    "saturation": 0.1,
    "pixelate": 0.1,
}
# Strength ranges drawn uniformly; they span the report's five severities and a little past them.
ROBUST_RANGES: dict[str, tuple[float, float]] = {
    "jpeg": (10, 95),
    "gaussian_noise": (0.01, 0.12),
    "gaussian_blur": (0.3, 1.2),
    "brightness": (0.2, 1.4),
    "contrast": (0.1, 1.2),
    "saturation": (0.0, 1.6),
    "pixelate": (0.35, 0.9),
}


def robust_odds(overrides: dict[str, float] | None = None) -> dict[str, float]:
    """ROBUST_MIX with some families' odds replaced (0 leaves a family out); checked, not normalised."""
    odds = {**ROBUST_MIX, **(overrides or {})}
    unknown = sorted(set(odds) - set(ROBUST_MIX))
    if unknown:
        raise ValueError(
            f"unknown corruption famil{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}; "
            f"choose from {', '.join(ROBUST_MIX)}"
        )
    if any(not np.isfinite(v) or v < 0 for v in odds.values()) or sum(odds.values()) <= 0:
        raise ValueError("corruption odds must be 0 or more, and at least one above 0")
    return odds


def robust_corrupt(
    images: np.ndarray, share: float, seed: int, epoch: int, mix: dict[str, float] | None = None
) -> np.ndarray:
    """uint8 NHWC images with `share` of them corrupted; a pure function of (seed, epoch, mix).
    `mix` replaces some families' odds in ROBUST_MIX (e.g. {"jpeg": 1.0} for more JPEG).

    Cheap next to an epoch of training (a few seconds of Pillow per 50,000 images), and the
    trainer computes the next epoch's copy on a worker thread while this one trains."""
    if share <= 0:
        return images
    rng = np.random.default_rng([seed, epoch, 0xC0])
    n = len(images)
    mixed = robust_odds(mix)
    names = list(ROBUST_MIX)  # a fixed order: family f's noise stream stays the same whatever the odds
    odds = np.array([mixed[k] for k in names])
    picked = rng.random(n) < share
    family = rng.choice(len(names), size=n, p=odds / odds.sum())
    u = rng.random(n)
    out = images.copy()
    for f, name in enumerate(names):
        idx = np.flatnonzero(picked & (family == f))
        if len(idx) == 0:
            continue
        lo, hi = ROBUST_RANGES[name]
        strength = lo + (hi - lo) * u[idx]
        out[idx] = FAMILIES[name](images[idx], strength, np.random.default_rng([seed, epoch, f]))
    return out
