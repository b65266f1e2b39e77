"""Corruption families (runtime/corruptions.py) and the trainer's robustness augmentation built on them."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cifar10kit.runtime.corruptions import (
    FAMILIES,
    SEVERITIES,
    brightness,
    contrast,
    corrupt,
    gaussian_blur,
    gaussian_noise,
    jpeg,
    odds_text,
    pixelate,
    saturation,
)

from conftest import needs_torch, synthetic_images


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    """Smooth, photo-like pictures (upsampled noise): JPEG and blur behave on them as on real ones."""
    rng = np.random.default_rng(3)
    small = rng.integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
    return np.stack([np.asarray(Image.fromarray(s).resize((32, 32), Image.Resampling.BICUBIC)) for s in small])


def _change(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


# ----------------------------------------------------------------------------------------------
# Each family does what its name says


def test_identity_strengths_leave_images_unchanged(photos):
    ones = np.ones(len(photos))
    for fn, strength in [
        (brightness, ones),
        (contrast, ones),
        (saturation, ones),
        (gaussian_noise, 0 * ones),
        (gaussian_blur, 0 * ones),
        (pixelate, ones),
    ]:
        out = fn(photos, strength, np.random.default_rng(0))
        assert out.dtype == np.uint8 and out.shape == photos.shape
        np.testing.assert_array_equal(out, photos, err_msg=fn.__name__)


def test_jpeg_is_a_pillow_round_trip_at_that_quality(photos):
    out = jpeg(photos[:3], np.array([75, 30, 90]))
    for img, q, got in zip(photos[:3], [75, 30, 90], out):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=q)
        np.testing.assert_array_equal(got, np.asarray(Image.open(buf).convert("RGB")))


def test_brightness_contrast_saturation_values(photos):
    half = brightness(photos, np.full(len(photos), 0.5))
    assert np.abs(half.astype(int) - np.round(photos * 0.5).astype(int)).max() <= 1
    flat = contrast(photos, np.zeros(len(photos)))
    for img, out in zip(photos, flat):
        assert np.abs(out.astype(int) - round(float(img.mean()))).max() <= 1  # every pixel at the image's mean
    grey = saturation(photos, np.zeros(len(photos)))
    assert np.abs(grey.astype(int) - grey[..., :1].astype(int)).max() == 0  # R = G = B
    expected = np.asarray(Image.fromarray(photos[0]).convert("L"))
    assert np.abs(grey[0, ..., 0].astype(int) - expected.astype(int)).max() <= 1  # Pillow's own luma


def test_pixelate_makes_blocks(photos):
    out = pixelate(photos, np.full(len(photos), 0.5))  # 16x16 blown up: every 2x2 block is one colour
    blocks = out.reshape(len(photos), 16, 2, 16, 2, 3)
    assert (blocks == blocks[:, :, :1, :, :1, :]).all()
    assert _change(out, photos) > 1


def test_noise_has_the_asked_sigma_and_follows_the_seed():
    grey = np.full((4, 32, 32, 3), 128, np.uint8)
    out = gaussian_noise(grey, np.full(4, 0.08), np.random.default_rng(1))
    assert abs((out.astype(float) - 128).std() - 0.08 * 255) < 0.5
    again = gaussian_noise(grey, np.full(4, 0.08), np.random.default_rng(1))
    other = gaussian_noise(grey, np.full(4, 0.08), np.random.default_rng(2))
    np.testing.assert_array_equal(out, again)
    assert (out != other).any()


def test_severities_get_worse_in_order(photos):
    for family in FAMILIES:
        changes = [_change(corrupt(photos, family, s, seed=0), photos) for s in range(1, 6)]
        assert all(a < b for a, b in zip(changes, changes[1:])), (family, changes)
        assert changes[0] > 0.2, family  # even the mildest severity changes the picture


def test_corrupt_refuses_unknown_families_and_severities(photos):
    with pytest.raises(ValueError, match="unknown corruption 'fog'"):
        corrupt(photos, "fog", 1)
    with pytest.raises(ValueError, match="severity must be 1-5"):
        corrupt(photos, "jpeg", 6)
    assert set(SEVERITIES) == set(FAMILIES)


# ----------------------------------------------------------------------------------------------
# The trainer's robustness augmentation


@needs_torch
def test_robust_share_is_a_pure_function_of_seed_and_epoch():
    from cifar10kit.train.augment import robust_corrupt

    images, _ = synthetic_images(2000, 5)
    assert robust_corrupt(images, 0.0, 0, 0) is images
    a, b = robust_corrupt(images, 0.4, 0, 3), robust_corrupt(images, 0.4, 0, 3)
    np.testing.assert_array_equal(a, b)
    changed = (a != images).any(axis=(1, 2, 3))
    assert 0.34 < changed.mean() <= 0.43  # 40% picked; a few mild corruptions leave an image as it was
    assert (robust_corrupt(images, 0.4, 0, 4) != a).any()  # a new draw every epoch
    assert (robust_corrupt(images, 0.4, 1, 3) != a).any()  # and every seed


@needs_torch
def test_robust_mix_changes_the_odds_and_nothing_else():
    from cifar10kit.train.augment import ROBUST_MIX, robust_corrupt, robust_odds

    images, _ = synthetic_images(1000, 5)
    default = robust_corrupt(images, 0.5, 0, 2)
    # Naming no family, or every family at its default odds, is the default draw to the bit: old runs resume.
    np.testing.assert_array_equal(robust_corrupt(images, 0.5, 0, 2, {}), default)
    np.testing.assert_array_equal(robust_corrupt(images, 0.5, 0, 2, dict(ROBUST_MIX)), default)

    only_brightness = {name: 0.0 for name in ROBUST_MIX} | {"brightness": 1.0}
    out = robust_corrupt(images, 0.5, 0, 2, only_brightness)
    changed = np.flatnonzero((out != images).any(axis=(1, 2, 3)))
    assert 400 < len(changed) <= 500
    for i in changed:  # each is its original times one factor, clipped: brightness, and only brightness
        src, got = images[i].astype(np.float64), out[i].astype(np.float64)
        lit = (src > 20) & (got < 250)
        factor = (got[lit] * src[lit]).sum() / (src[lit] ** 2).sum()
        np.testing.assert_allclose(got[lit], src[lit] * factor, atol=1.5)

    from cifar10kit.main import build_parser

    train_parser = build_parser()._subparsers._group_actions[0].choices["train"]
    (flag,) = [a for a in train_parser._actions if "--robust-mix" in a.option_strings]
    assert odds_text(ROBUST_MIX) in " ".join(flag.help.split())  # the help states the true defaults
    from cifar10kit.main import _robust_mix

    mix = {"jpeg": 1.0, "pixelate": 0.25, "brightness": 0.0}
    assert odds_text(mix) == "jpeg=1, pixelate=0.25, brightness=0"  # as logs and cards state it...
    assert _robust_mix(odds_text(mix)) == mix  # ...and the flag reads it back

    assert (
        robust_odds({"jpeg": 1.0})["jpeg"] == 1.0 and robust_odds({"jpeg": 1.0})["pixelate"] == ROBUST_MIX["pixelate"]
    )
    for bad, says in (
        ({"blur": 1.0}, "unknown corruption family blur"),
        ({"jpeg": -1.0}, "0 or more"),
        ({"jpeg": float("nan")}, "0 or more"),
        ({name: 0.0 for name in ROBUST_MIX}, "at least one above 0"),
    ):
        with pytest.raises(ValueError, match=says):
            robust_odds(bad)


@needs_torch
@pytest.mark.parametrize("workers", [1, 3])
def test_prefetched_epochs_equal_direct_ones(tiny_cifar, workers):
    """One worker thread, or several worker processes each preparing an epoch ahead: the same images."""
    import torch

    from cifar10kit.train.augment import robust_corrupt
    from cifar10kit.train.trainer import RobustImages, load_data, make_config

    cfg = make_config("smoke", data_dir=str(tiny_cifar), robust=0.5, epochs=5, subset=400)
    data = load_data(cfg, torch.device("cpu"))
    assert data.train_u8 is not None
    robust = RobustImages(data, cfg, workers=workers)
    try:
        assert robust.ahead == workers
        for epoch in range(5):  # all but epoch 0 were computed ahead, while the one before "trained"
            expected = robust_corrupt(data.train_u8, 0.5, cfg.seed, epoch)
            mean = torch.tensor(data.mean).view(1, 3, 1, 1)
            std = torch.tensor(data.std).view(1, 3, 1, 1)
            direct = (torch.from_numpy(expected).permute(0, 3, 1, 2).float() - mean) / std
            torch.testing.assert_close(robust(epoch), direct)
    finally:
        robust.close()
