"""Which heatmap agrees with where the object is? Occlusion settings against the model's 3x3 CAM.

How it was judged. `benchmarks/data/object_boxes.json` holds a box around the object on 50 CIFAR-10
test images, in two sets: "first3", the first 3 images of each class in the test batch (30, no
picking), and "offcentre", 20 images from test indices 100-219 picked from thumbnails because the
object is small or off-centre (CIFAR objects mostly sit in the middle and fill the frame, where
any blob in the centre scores well). Each box was drawn by eye on the image upscaled 8x and 12x with
a 4-pixel grid and holds the whole object of the labelled class; the off-centre images were picked
and boxed before any heatmap was computed on them.

Every method explains the labelled class (not the predicted one) and is scored two ways:

- pointing game: is the map's peak inside the box (the peak is the centre of the pixels within
  0.1% of the maximum, so a flat top counts once);
- heat inside: the share of the map's total heat that falls inside the box, and that share minus the
  box's share of the image (what a flat map would score), so large boxes earn no credit.

Two reference maps show what the numbers are worth on CIFAR, where objects sit in the middle and
often fill the frame: "flat" (all ones; its share equals the box's area) and "centre" (a Gaussian
in the middle of the frame, sigma 8 px, knowing nothing about the image).

Each image's heatmap is timed as the app computes it: one call, one onnxruntime run; "wall" is the
median wall-clock time (it grows with whatever else runs on the machine), "cpu" the median CPU time
the process spent on it (all threads), which other work does not inflate.

    python benchmarks/heatmap_agreement.py --data-dir DIR [--model FILE] [--plot heatmaps.png]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cifar10kit.runtime import heatmap as H
from cifar10kit.runtime.bench import machine
from cifar10kit.runtime.dataset import load_cifar10
from cifar10kit.runtime.session import Classifier

BOXES = Path(__file__).parent / "data" / "object_boxes.json"

# (name, kind, settings): occlusion patch/stride (pixels), occluder, score and smoothing; the CAM; two references.
METHODS = [
    ("cam 3×3 (upsampled)", "cam", {}),
    ("occlusion 4/4 blur prob (default)", "occ", dict(patch=4, stride=4, fill="blur", score="probability")),
    ("occlusion 4/4 blur prob, unsmoothed", "occ", dict(patch=4, stride=4, fill="blur", score="probability", sigma=0)),
    ("occlusion 4/4 blur log-odds", "occ", dict(patch=4, stride=4, fill="blur", score="log_odds")),
    ("occlusion 4/4 mean-colour prob", "occ", dict(patch=4, stride=4, fill="mean", score="probability")),
    ("occlusion 8/4 blur prob, quincunx", "occ", dict(patch=8, stride=4, fill="blur", layout="quincunx")),
    ("occlusion 8/4 blur prob", "occ", dict(patch=8, stride=4, fill="blur", score="probability")),
    ("occlusion 12/4 blur prob", "occ", dict(patch=12, stride=4, fill="blur", score="probability")),
    ("occlusion 8/8 blur prob (4×4 grid)", "occ", dict(patch=8, stride=8, fill="blur", score="probability")),
    ("reference: centre Gaussian", "centre", {}),
    ("reference: flat", "flat", {}),
]


def peak(values: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(values >= values.max() * 0.999)
    return float(ys.mean()), float(xs.mean())


def score(values: np.ndarray, box: list[int]) -> tuple[bool, float, float]:
    x0, y0, x1, y1 = box
    py, px = peak(values)
    hit = y0 <= py + 0.5 <= y1 and x0 <= px + 0.5 <= x1  # pixel centres
    inside = values[y0:y1, x0:x1].sum() / max(values.sum(), 1e-12)
    area = (y1 - y0) * (x1 - x0) / values.size
    return hit, float(inside), float(inside - area)


def centre_prior(sigma: float = 8.0) -> np.ndarray:
    yy, xx = np.mgrid[0 : H.SIDE, 0 : H.SIDE] + 0.5
    return np.exp(-((yy - H.SIDE / 2) ** 2 + (xx - H.SIDE / 2) ** 2) / (2 * sigma**2))


def compute(model: Classifier, kind: str, settings: dict, pixels: np.ndarray, label: int) -> np.ndarray:
    if kind == "cam":
        return H.class_activation(model, pixels, label).values
    if kind == "occ":
        return H.occlusion(model, pixels, label, **settings).values
    return centre_prior() if kind == "centre" else np.ones((H.SIDE, H.SIDE))


def plot(path: Path, images, boxes, maps: dict[str, list[np.ndarray]], names: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    n = min(10, len(images))
    fig, axes = plt.subplots(len(names) + 1, n, figsize=(1.6 * n, 1.7 * (len(names) + 1)))
    for j in range(n):
        for i, row in enumerate([None, *names]):
            ax = axes[i, j]
            ax.imshow(images[j], interpolation="bicubic", extent=(0, 32, 32, 0))
            if row is not None:
                ax.imshow(maps[row][j], cmap="jet", alpha=0.5, extent=(0, 32, 32, 0), vmin=0, vmax=1)
            x0, y0, x1, y1 = boxes[j]
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="white", lw=1.2))
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel("image" if row is None else row.split(" (")[0].replace("occlusion", "occl."), fontsize=7)
    fig.suptitle("Heatmaps of the labelled class; white: the hand-drawn object box", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description="heatmap agreement with hand-drawn object boxes")
    ap.add_argument("--data-dir", help="folder holding cifar-10-batches-py/ (default $CIFAR10_DATA)")
    ap.add_argument("--model", help="a .onnx model file (default: the shipped model)")
    ap.add_argument("--boxes", type=Path, default=BOXES)
    ap.add_argument("--threads", type=int, default=0, help="onnxruntime threads (default: all cores)")
    ap.add_argument("--plot", type=Path, help="write a PNG of the first 10 images' heatmaps")
    a = ap.parse_args()

    images, labels, names = load_cifar10(a.data_dir, "test")
    entries = json.loads(a.boxes.read_text())["images"]
    for e in entries:
        if names[labels[e["index"]]] != e["label"]:
            raise SystemExit(f"{a.boxes}: image {e['index']} is a {names[labels[e['index']]]}, not {e['label']}")
    model = Classifier(a.model, provider="cpu", threads=a.threads)
    correct = sum(int(np.argmax(model.run(images[e["index"]]).probs[0]) == labels[e["index"]]) for e in entries)
    print(f"{len(entries)} hand-boxed test images ({correct} classified correctly); model {model.path.name}")
    print(f"{machine()}, onnxruntime on {model.provider}\n")

    sets = ["all", *dict.fromkeys(e.get("set", "all") for e in entries)]
    results: dict[str, list[tuple[bool, float, float]]] = {}
    timing: dict[str, tuple[float, float]] = {}
    maps: dict[str, list[np.ndarray]] = {}
    for name, kind, settings in tqdm(METHODS, desc="methods", leave=False):
        rows, wall, cpu = [], [], []
        for e in entries:
            pixels, label = images[e["index"]], int(labels[e["index"]])
            t0, c0 = time.perf_counter(), time.process_time()
            values = compute(model, kind, settings, pixels, label)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            rows.append(values)
        maps[name] = rows
        results[name] = [score(v, e["box"]) for v, e in zip(rows, entries)]
        timing[name] = (1000 * float(np.median(wall)), 1000 * float(np.median(cpu)))

    # For scale: a plain prediction (batch 1) under the same conditions as the heatmaps.
    wall, cpu = [], []
    for e in entries:
        t0, c0 = time.perf_counter(), time.process_time()
        model.run(images[e["index"]])
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    print(f"one prediction (batch 1), p50: {1000 * np.median(wall):.1f} ms wall, {1000 * np.median(cpu):.1f} ms cpu")

    for which in sets:
        chosen = [i for i, e in enumerate(entries) if which == "all" or e.get("set") == which]
        print(f"\n{which}: {len(chosen)} images")
        print(f"{'method':<40} {'pointing':>9} {'heat in box':>12} {'minus area':>11} {'ms wall':>8} {'ms cpu':>7}")
        for name, kind, _ in METHODS:
            hits, shares, gains = zip(*[results[name][i] for i in chosen])
            wall, cpu = (f"{t:.0f}" for t in timing[name]) if kind in ("cam", "occ") else ("-", "-")
            print(
                f"{name:<40} {sum(hits):>4}/{len(hits):<4} {np.mean(shares):>12.3f} {np.mean(gains):>+11.3f}"
                f" {wall:>8} {cpu:>7}"
            )
    if a.plot:
        shown = [n for n, k, _ in METHODS if k in ("cam", "occ")][:3]
        idx = [e["index"] for e in entries]
        plot(a.plot, images[idx], [e["box"] for e in entries], maps, shown)
        print(f"\nwrote {a.plot}")


if __name__ == "__main__":
    main()
