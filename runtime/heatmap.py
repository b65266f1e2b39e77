"""Heatmaps: where in the image the model found its evidence, computed through onnxruntime only.

- "occlusion" (the default; works on any contract model file): cover one square patch of the 32x32
  input at a time with a blurred copy of itself and see how much the class's probability falls.
  All patches go through the model as ONE batch, together with the untouched image: with 4x4
  patches every 4 pixels, 64 + 1 images and an 8x8 grid of evidence. It measures what the
  prediction depends on.
- "cam": the model's own class-activation map (the optional `cam` output, 3x3 for these nets),
  upsampled. Free (same run as the prediction), but 3x3 cells cannot say much more than "bottom".

On 50 test images with hand-drawn object boxes (benchmarks/heatmap_agreement.py) the occlusion
map's peak fell inside the object on 45 (shipped default), 48 and 46 (the two before it), the CAM's on
25, 25 and 17; 75-76% of the occlusion map's heat lay inside the boxes against 55-58% for the CAM (51%
for a flat map, 70% for a blob in the middle, whose peak lands in 48 boxes: CIFAR objects sit in the
centre, so the share is the telling figure). 8x8 patches were the default until nets trained on blurred
pictures (and with cutout) came: they shrug off a blurred 8x8 square, and their maps drifted off the
object (38 and 40 of 50). The blurred occluder beat a flat mean-colour one, and the probability beat its
log-odds, which keep moving when a confident model sits at 0.999 but spread the heat over the
background. The smoothing (sigma 2 px) costs a little of that (49/50 and 80% unsmoothed) and turns
4-pixel blocks into a map a person can read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from .atomic import atomic_write
from .contract import CIFAR10_MEAN
from .preprocess import ImageError, fit, load_image, to_input

SIDE = 32  # the contract's input side
METHODS = ("occlusion", "cam")
PATCH = 4  # occluder side in pixels: one patch per cell of the 8x8 grid
STRIDE = 4  # step between patches: the grid of evidence is SIDE / STRIDE on a side
BLUR_RADIUS = 4.0  # the occluder: a Gaussian-blurred copy (keeps colour, removes shape)
SMOOTH_SIGMA = 2.0  # pixels; softens the 4-pixel steps of the averaged patches
LAYOUT = "full"  # which patch positions: "full" grid or "quincunx" (half of them; see patch_positions)

# -- colour ramp and overlay ---------------------------------------------------------------------

# A perceptually ordered colour ramp (dark blue -> cyan -> yellow -> red), 5 stops interpolated.
_STOPS = np.array([[0, 0, 128], [0, 160, 255], [120, 255, 120], [255, 220, 0], [220, 0, 0]], dtype=np.float64)


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
    """Blend the colour-mapped, smoothly upsampled map over `image` (any size). `cam` is a raw class
    map [h, w] (the `cam` output) or the `values` of a Heatmap; both are normalised the same way."""
    rgb = image.convert("RGB")
    heat = Image.fromarray(colormap(normalise_map(cam)), "RGB").resize(rgb.size, Image.Resampling.BICUBIC)
    return Image.blend(rgb, heat, alpha)


# -- the heatmap ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Heatmap:
    values: np.ndarray  # float32 [32, 32] in [0, 1], aligned with the model input
    method: str  # "occlusion" or "cam"
    grid: str  # how fine the evidence is, e.g. "8×8"
    class_index: int  # the class the map is for
    probability: float  # the model's probability of that class on the untouched image


def default_patch(layout: str = LAYOUT) -> int:
    """The quincunx leaves every other grid position out, so its patches are twice the stride to still
    cover every pixel; the full grid uses one patch per cell."""
    return PATCH if layout == "full" else 2 * STRIDE


def _side(patch: int | None, layout: str) -> int:
    """None means the layout's default; any other value, 0 included, is checked by patch_origins."""
    return default_patch(layout) if patch is None else patch


def patch_origins(patch: int = PATCH, stride: int = STRIDE) -> list[int]:
    """Top/left coordinates of the patches along one side; the last one always reaches the edge."""
    if not 1 <= patch <= SIDE or stride < 1:
        raise ValueError(f"patch {patch} / stride {stride}: need 1 <= patch <= {SIDE} and stride >= 1")
    starts = list(range(0, SIDE - patch + 1, stride))
    if starts[-1] != SIDE - patch:
        starts.append(SIDE - patch)
    return starts


def patch_positions(patch: int | None = None, stride: int = STRIDE, layout: str = LAYOUT) -> list[tuple[int, int]]:
    """(top, left) of every patch. "full": every grid position (8 x 8 = 64 for 4/4). "quincunx": every
    other one, like the fives on dice (25 for 8/4): each 4-pixel cell is still covered, by 1 or 2
    patches, for about 40% of the model runs."""
    starts = patch_origins(_side(patch, layout), stride)
    if layout == "full":
        return [(y, x) for y in starts for x in starts]
    if layout == "quincunx":
        return [(y, x) for i, y in enumerate(starts) for j, x in enumerate(starts) if (i + j) % 2 == 0]
    raise ValueError(f"layout {layout!r}: use full or quincunx")


def occluded_batch(
    pixels: np.ndarray, patch: int | None = None, stride: int = STRIDE, fill: str = "blur", layout: str = LAYOUT
) -> np.ndarray:
    """uint8 [1 + K, 32, 32, 3]: the image itself, then one copy per patch with that patch replaced by
    the occluder. fill: "blur" (a blurred copy of the image) or "mean" (the dataset's mean colour)."""
    pixels = np.asarray(pixels, dtype=np.uint8)
    if fill == "blur":
        filler = np.asarray(Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(BLUR_RADIUS)))
    elif fill == "mean":
        filler = np.broadcast_to(np.round(CIFAR10_MEAN).astype(np.uint8), pixels.shape)
    else:
        raise ValueError(f"fill {fill!r}: use blur or mean")
    patch = _side(patch, layout)
    positions = patch_positions(patch, stride, layout)
    batch = np.repeat(pixels[None], 1 + len(positions), axis=0)
    for k, (y, x) in enumerate(positions, start=1):
        batch[k, y : y + patch, x : x + patch] = filler[y : y + patch, x : x + patch]
    return batch


def log_odds(probs: np.ndarray, class_index: int) -> np.ndarray:
    p = np.clip(probs[:, class_index].astype(np.float64), 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def spread(drops: np.ndarray, patch: int | None = None, stride: int = STRIDE, layout: str = LAYOUT) -> np.ndarray:
    """Per-patch score drops -> [32, 32]: each pixel gets the mean drop of the patches covering it."""
    patch = _side(patch, layout)
    total = np.zeros((SIDE, SIDE))
    count = np.zeros((SIDE, SIDE))
    for drop, (y, x) in zip(drops, patch_positions(patch, stride, layout), strict=True):
        total[y : y + patch, x : x + patch] += drop
        count[y : y + patch, x : x + patch] += 1
    return total / np.maximum(count, 1)


def smooth(values: np.ndarray, sigma: float = SMOOTH_SIGMA) -> np.ndarray:
    """Separable Gaussian blur with mirrored edges (numpy only)."""
    if sigma <= 0:
        return values
    r = int(3 * sigma)
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    out = np.pad(values, r, mode="reflect")
    out = np.apply_along_axis(np.convolve, 0, out, k, mode="valid")
    return np.apply_along_axis(np.convolve, 1, out, k, mode="valid")


def occlusion(
    model,
    pixels: np.ndarray,
    class_index: int | None = None,
    patch: int | None = None,
    stride: int = STRIDE,
    fill: str = "blur",
    score: str = "probability",
    sigma: float = SMOOTH_SIGMA,
    layout: str = LAYOUT,
) -> Heatmap:
    """Occlusion sensitivity through one model run. `model` is a session.Classifier; class_index
    None means the class the model predicts for the image. score: "probability" or "log_odds"."""
    if score not in ("probability", "log_odds"):
        raise ValueError(f"score {score!r}: use probability or log_odds")
    probs = model.run(occluded_batch(pixels, patch, stride, fill, layout)).probs
    c = int(np.argmax(probs[0])) if class_index is None else int(class_index)
    return _occlusion_map(probs, c, patch, stride, score, sigma, layout)


def _occlusion_map(
    probs: np.ndarray,
    c: int,
    patch: int | None = None,
    stride: int = STRIDE,
    score: str = "probability",
    sigma: float = SMOOTH_SIGMA,
    layout: str = LAYOUT,
) -> Heatmap:
    """The map of class c from the probabilities of an occluded batch (row 0: the untouched image)."""
    s = log_odds(probs, c) if score == "log_odds" else probs[:, c].astype(np.float64)
    heat = normalise_map(smooth(np.maximum(spread(s[0] - s[1:], patch, stride, layout), 0.0), sigma))
    cells = -(-SIDE // stride)  # patches overlap, so their 4-pixel steps make the grid, not their count
    return Heatmap(heat.astype(np.float32), "occlusion", f"{cells}×{cells}", c, float(probs[0, c]))


def upsample(cam: np.ndarray, side: int = SIDE) -> np.ndarray:
    """A small map [h, w] -> [side, side], bicubic, as the overlay draws it."""
    img = Image.fromarray(np.asarray(cam, dtype=np.float32), "F")
    return np.asarray(img.resize((side, side), Image.Resampling.BICUBIC), dtype=np.float64)


def _cam_map(probs: np.ndarray, cam: np.ndarray, c: int) -> Heatmap:
    heat = normalise_map(upsample(normalise_map(cam[c])))
    return Heatmap(heat.astype(np.float32), "cam", f"{cam.shape[1]}×{cam.shape[2]}", c, float(probs[c]))


def class_activation(model, pixels: np.ndarray, class_index: int | None = None) -> Heatmap:
    """The model's own `cam` output for one class, upsampled to 32x32 (needs a file with that output)."""
    probs, cam = _cam_run(model, pixels)
    return _cam_map(probs, cam, int(np.argmax(probs)) if class_index is None else int(class_index))


def _cam_run(model, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if not model.info.has_cam:
        raise ValueError(f"{model.path}: this model has no 'cam' output; use method='occlusion'")
    pred = model.run(np.asarray(pixels, dtype=np.uint8)[None], with_cam=True)
    return pred.probs[0], pred.cam[0]


def _check(model, pixels: np.ndarray, method: str, class_index: int | None = None) -> np.ndarray:
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.shape != (SIDE, SIDE, 3):
        raise ValueError(f"pixels must be uint8 [32, 32, 3], got {pixels.dtype} {pixels.shape}")
    if class_index is not None and not 0 <= class_index < len(model.class_names):
        raise ValueError(f"class_index {class_index}: the model has classes 0..{len(model.class_names) - 1}")
    if method not in METHODS:
        raise ValueError(f"method {method!r}: use one of {', '.join(METHODS)}")
    return pixels


def heatmap(
    model, pixels: np.ndarray, class_index: int | None = None, method: str = "occlusion", layout: str = LAYOUT
) -> Heatmap:
    """The heatmap the app and `cifar10 predict --heatmap` show: one image uint8 [32, 32, 3], the class
    to explain (None: the predicted one), and the method ("occlusion" or "cam"). One model run.
    layout="quincunx" halves the occlusion's cost for a slightly coarser map (see patch_positions)."""
    pixels = _check(model, pixels, method, class_index)
    if method == "cam":
        return class_activation(model, pixels, class_index)
    return occlusion(model, pixels, class_index, layout=layout)


def heatmaps(model, pixels: np.ndarray, method: str = "occlusion", layout: str = LAYOUT) -> list[Heatmap]:
    """Every class's heatmap (list index = class index) from the same single model run, so an app that
    keeps them can switch classes without running the model again."""
    pixels = _check(model, pixels, method)
    if method == "cam":
        probs, cam = _cam_run(model, pixels)
        return [_cam_map(probs, cam, c) for c in range(len(probs))]
    probs = model.run(occluded_batch(pixels, layout=layout)).probs
    return [_occlusion_map(probs, c, layout=layout) for c in range(probs.shape[1])]


# -- overlay files -------------------------------------------------------------------------------

VIEW_SIDE = 256
CAPTION_HEIGHT = 22


def overlay_image(view: Image.Image, heat: Heatmap, caption: str, side: int = VIEW_SIDE) -> Image.Image:
    """The picture `predict --heatmap` writes: the model's view of the image (its centre square) and
    the same with the heatmap over it, side by side at `side` pixels, with a caption underneath."""
    view = fit(view.convert("RGB"), side) if view.size != (side, side) else view.convert("RGB")
    out = Image.new("RGB", (2 * side, side + CAPTION_HEIGHT), "white")
    out.paste(view, (0, 0))
    out.paste(overlay(view, heat.values), (side, 0))
    try:
        font = ImageFont.load_default(size=14)
    except (TypeError, OSError):  # Pillow without FreeType: the small bitmap font
        font = ImageFont.load_default()
    ImageDraw.Draw(out).text((6, side + 3), caption, fill="black", font=font)
    return out


def save_png(img: Image.Image, path: str | os.PathLike) -> Path:
    """Write a PNG atomically (runtime/atomic.py)."""
    return atomic_write(path, lambda f: img.save(f, "PNG"))


class OverlayWriter:
    """`cifar10 predict --heatmap DIR`: one `<stem>_heatmap.png` per classified file, for the class the
    model predicted. Files whose classification failed are skipped (predict reports them); a file
    that cannot be written is reported through `notify` and counted in `failed`."""

    def __init__(self, model, folder: str | os.PathLike, method: str = "occlusion", notify=print):
        self.model, self.folder, self.method, self.notify = model, Path(folder), method, notify
        if method not in METHODS:
            raise ValueError(f"heatmap method {method!r}: use one of {', '.join(METHODS)}")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"{self.folder}: cannot create the heatmap folder ({e.strerror or e})") from None
        self.used: set[str] = set()
        self.written = 0
        self.failed = 0

    def _name(self, stem: str) -> str:
        """`<stem>_heatmap.png`, numbered when two inputs share a stem (a/x.png and b/x.jpg)."""
        name, n = f"{stem}_heatmap.png", 1
        while name in self.used:
            n += 1
            name = f"{stem}_{n}_heatmap.png"
        self.used.add(name)
        return name

    def write(self, result) -> Path | None:
        """result: a predict.Result. Returns the file written, or None."""
        if result.error is not None or result.label is None:
            return None
        source = Path(result.path)
        try:
            img = load_image(source)
            heat = heatmap(self.model, to_input(img), self.model.class_names.index(result.label), self.method)
            grid = heat.grid.replace("×", "x")  # the fallback font has no multiplication sign
            caption = f"{result.label} {heat.probability:.1%}   heatmap: {heat.method}, {grid}"
            out = save_png(overlay_image(img, heat, caption), self.folder / self._name(source.stem))
        except (ImageError, OSError) as e:
            self.failed += 1
            self.notify(f"{source}: heatmap not written ({getattr(e, 'strerror', None) or e})")
            return None
        self.written += 1
        return out
