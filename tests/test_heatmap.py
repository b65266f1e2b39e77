"""Heatmaps through onnxruntime: occlusion finds a real object where it was put, in one model run;
the CAM and the old overlay names still work; `cifar10 predict --heatmap DIR` writes the overlays."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from cifar10kit.runtime import heatmap as H
from cifar10kit.runtime.examples import example_images
from cifar10kit.runtime.session import Classifier

from conftest import cli


@pytest.fixture(scope="module")
def model() -> Classifier:
    return Classifier(provider="cpu")


class CountingSession:
    """The real onnxruntime session, with its run() calls counted."""

    def __init__(self, session):
        self.session, self.calls, self.batch_sizes = session, 0, []

    def run(self, names, feeds):
        self.calls += 1
        self.batch_sizes.append(len(next(iter(feeds.values()))))
        return self.session.run(names, feeds)

    def __getattr__(self, name):
        return getattr(self.session, name)


@pytest.fixture()
def counted(model):
    real = model.session
    model.session = CountingSession(real)
    yield model.session
    model.session = real


def example(test_index: int) -> np.ndarray:
    e = next(e for e in example_images() if e.test_index == test_index)
    return np.asarray(Image.open(e.path).convert("RGB"))


def airplane_on_blank(top: int, left: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The dark airplane of test image 21 (a shipped example), cut out (19x20 pixels) and pasted on
    a blank canvas of its own background colour at (top, left). Returns the image and its box."""
    src = example(21)
    plane = src[6:26, 6:25]
    canvas = np.empty_like(src)
    canvas[:] = np.median(src[:4].reshape(-1, 3), axis=0).astype(np.uint8)
    canvas[top : top + 20, left : left + 19] = plane
    return canvas, (top, left, top + 20, left + 19)


# ----------------------------------------------------------------------------------------------
# occlusion


@pytest.mark.parametrize("top,left", [(0, 0), (0, 13), (12, 0), (12, 13)])
def test_occlusion_peaks_on_a_real_object_pasted_on_a_blank_background(model, top, left):
    pixels, (y0, x0, y1, x1) = airplane_on_blank(top, left)
    heat = H.heatmap(model, pixels)
    assert model.class_names[heat.class_index] == "airplane"
    py, px = np.unravel_index(np.argmax(heat.values), heat.values.shape)
    assert y0 <= py < y1 and x0 <= px < x1, f"peak at {(py, px)}, object at {(y0, x0, y1, x1)}"
    inside = heat.values[y0:y1, x0:x1].sum() / heat.values.sum()
    area = (y1 - y0) * (x1 - x0) / heat.values.size
    assert inside > area + 0.2  # most of the heat is on the object, far more than a flat map's share


def test_heatmap_is_one_onnxruntime_run_and_deterministic(model, counted):
    pixels = example(3)
    first = H.heatmap(model, pixels)
    assert counted.calls == 1
    origins = len(H.patch_origins())
    assert counted.batch_sizes == [1 + origins * origins]  # the image and all its occluded copies
    second = H.heatmap(model, pixels)
    assert counted.calls == 2
    np.testing.assert_array_equal(first.values, second.values)
    assert (first.method, first.grid) == ("occlusion", "8×8")
    assert first.values.shape == (32, 32) and first.values.dtype == np.float32
    assert first.values.min() >= 0 and first.values.max() == pytest.approx(1.0)
    probs = model.run(pixels).probs[0]
    assert first.class_index == int(np.argmax(probs))
    assert first.probability == pytest.approx(float(probs.max()), abs=1e-6)
    quick = H.heatmap(model, pixels, layout="quincunx")
    assert counted.batch_sizes[-1] == 1 + len(H.patch_positions(layout="quincunx"))
    assert quick.grid == "8×8" and quick.class_index == first.class_index


def test_heatmap_for_another_class_is_a_different_map(model):
    pixels = example(3)
    top = H.heatmap(model, pixels)
    other = H.heatmap(model, pixels, class_index=(top.class_index + 1) % 10)
    assert other.class_index != top.class_index
    assert not np.array_equal(other.values, top.values)


@pytest.mark.parametrize("method", ["occlusion", "cam"])
def test_every_class_from_one_run_equals_one_class_at_a_time(model, counted, method):
    pixels = example(3)
    every = H.heatmaps(model, pixels, method=method)
    assert counted.calls == 1 and len(every) == len(model.class_names)
    for c in (0, 7, every[0].class_index):
        one = H.heatmap(model, pixels, class_index=c, method=method)
        assert every[c].class_index == c and every[c].grid == one.grid
        np.testing.assert_allclose(every[c].values, one.values, atol=1e-6)
        assert every[c].probability == pytest.approx(one.probability, abs=1e-6)


def test_occluded_batch_covers_the_image_patch_by_patch():
    pixels = example(0)
    batch = H.occluded_batch(pixels)
    np.testing.assert_array_equal(batch[0], pixels)
    starts = H.patch_origins()
    assert starts[0] == 0 and starts[-1] == 32 - H.PATCH
    covered = np.zeros((32, 32), bool)
    for k, (y, x) in enumerate((y, x) for y in starts for x in starts):
        changed = np.any(batch[1 + k] != pixels, axis=-1)
        outside = np.ones((32, 32), bool)
        outside[y : y + H.PATCH, x : x + H.PATCH] = False
        assert not changed[outside].any()
        covered |= ~outside
    assert covered.all()
    assert H.patch_origins(12, 8) == [0, 8, 16, 20]  # the last patch reaches the edge
    half, side = H.patch_positions(layout="quincunx"), H.default_patch("quincunx")
    assert len(half) == (len(H.patch_origins(side)) ** 2 + 1) // 2 and set(half) < set(H.patch_positions(layout="full"))
    cover = np.zeros((32, 32), int)
    for y, x in half:
        cover[y : y + side, x : x + side] += 1
    assert cover.min() >= 1  # every pixel is still tested
    assert len(H.occluded_batch(pixels, layout="quincunx")) == 1 + len(half)


@pytest.mark.parametrize("patch", [0, -4, 33])
def test_an_impossible_patch_size_is_refused_not_replaced(patch):
    with pytest.raises(ValueError, match=f"patch {patch} "):
        H.occluded_batch(example(0), patch=patch)


# ----------------------------------------------------------------------------------------------
# the CAM, bad arguments, the names the app uses


def test_cam_method_is_the_models_own_map_upsampled(model, counted):
    pixels = example(3)
    heat = H.heatmap(model, pixels, method="cam")
    assert counted.calls == 1 and counted.batch_sizes == [1]
    assert (heat.method, heat.grid) == ("cam", "3×3")
    assert heat.values.shape == (32, 32) and heat.values.max() == pytest.approx(1.0)
    raw = model.run(pixels, with_cam=True).cam[0, heat.class_index]
    # Bicubic upsampling may move the overall peak next to a near-tie; at the 9 cells' centres it keeps their order.
    centres = np.round((np.arange(3) + 0.5) * 32 / 3 - 0.5).astype(int)
    sampled = heat.values[np.ix_(centres, centres)]
    assert np.unravel_index(np.argmax(sampled), (3, 3)) == np.unravel_index(np.argmax(raw), raw.shape)


def test_bad_arguments_are_clear_errors(model):
    with pytest.raises(ValueError, match="method"):
        H.heatmap(model, example(3), method="gradcam")
    with pytest.raises(ValueError, match="uint8"):
        H.heatmap(model, example(3).astype(np.float32))
    with pytest.raises(ValueError, match="class_index 10"):
        H.heatmap(model, example(3), class_index=10)
    with pytest.raises(ValueError, match="score"):
        H.occlusion(model, example(3), score="logit")


def test_overlay_takes_the_cam_output_and_heatmap_values_alike(model):
    pixels = example(3)
    img = Image.fromarray(pixels).resize((200, 150))
    cam = model.run(pixels, with_cam=True).cam[0, 0]
    heat = H.heatmap(model, pixels)
    for values in (cam, heat.values):
        out = H.overlay(img, values)
        assert out.size == img.size and out.mode == "RGB"
        assert np.asarray(out).std() > 0
    assert H.colormap(np.array([0.0, 1.0])).shape == (2, 3)
    assert H.normalise_map(np.array([[-1.0, 2.0]])).tolist() == [[0.0, 1.0]]


# ----------------------------------------------------------------------------------------------
# cifar10 predict --heatmap DIR


def test_predict_writes_one_overlay_per_good_file_and_skips_bad_ones(tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    examples = {e.test_index: e.path for e in example_images()}
    shutil.copy(examples[3], src / "plane.png")
    shutil.copy(examples[0], src / "sub" / "plane.png")  # same stem, other folder
    Image.open(examples[6]).convert("RGB").resize((300, 200), Image.Resampling.BICUBIC).save(src / "wide.jpg")
    (src / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "out" / "heat"  # created on demand

    r = cli("predict", str(src), "--heatmap", str(out), "--provider", "cpu")
    assert r.returncode == 1  # one input failed
    assert "broken.png" in r.stderr and "3 heatmaps written" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["plane_2_heatmap.png", "plane_heatmap.png", "wide_heatmap.png"]
    for p in out.iterdir():
        img = Image.open(p)
        assert img.size == (2 * H.VIEW_SIDE, H.VIEW_SIDE + H.CAPTION_HEIGHT) and img.mode == "RGB"
        left, right = np.asarray(img)[: H.VIEW_SIDE, : H.VIEW_SIDE], np.asarray(img)[: H.VIEW_SIDE, H.VIEW_SIDE :]
        assert np.abs(left.astype(int) - right).mean() > 10  # the right half carries the heatmap

    r = cli("predict", str(src / "plane.png"), "--heatmap", str(src / "plane.png"), "--provider", "cpu")
    assert r.returncode == 2 and "cannot create the heatmap folder" in r.stderr
    assert "Traceback" not in r.stderr
