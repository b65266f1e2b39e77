"""What a cascade's threshold trades: the share of pictures that ask the later nets, against accuracy.

    python benchmarks/cascade_tradeoff.py FIRST.onnx REST.onnx [--rest-weight W] [--data-dir DIR] \
        [--folder JPEG_COPY] [--plot docs/cascade.png] [--json]

FIRST and REST are the two stages as single contract files exported at temperature 1
(`cifar10 export RUN1 -o first.onnx --no-calibrate ...` and the same for the other runs). The script
fits the cascade's two temperatures on the even-numbered test images, as `cifar10 export --cascade`
does without held-out images, and evaluates every threshold on the test set (and on a labelled folder,
e.g. the test set saved as JPEG) with the same maths the exported graph is verified against.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from cifar10kit.export.cascade import combined_scores, fit_temperatures, tradeoff
from cifar10kit.runtime.contract import CIFAR10_CLASSES
from cifar10kit.runtime.dataset import load_cifar10, scan_image_folder
from cifar10kit.runtime.preprocess import prepare
from cifar10kit.runtime.session import Classifier

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995)


def labelled_folder(root: str) -> tuple[np.ndarray, np.ndarray]:
    """Pixels and CIFAR-10 labels of FOLDER/<class name>/<images>."""
    items, classes = scan_image_folder(root)
    pixels = np.stack([prepare(path) for path, _ in items])
    return pixels, np.array([CIFAR10_CLASSES.index(classes[c]) for _, c in items])


def stage_probs(paths: list[str], pixels: np.ndarray) -> list[np.ndarray]:
    return [Classifier(p, provider="cpu").predict_probs(pixels) for p in paths]


def curves(first: np.ndarray, rest: np.ndarray, k: int, labels: np.ndarray, temps: tuple[float, float]) -> dict:
    every = float((combined_scores(first, rest, k).argmax(1) == labels).mean())
    return {
        "first_alone": float((first.argmax(1) == labels).mean()),
        "every_net": every,
        "thresholds": tradeoff(first, rest, k, labels, *temps, thresholds=THRESHOLDS),
    }


def plot(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4), squeeze=False)
    for ax, (name, r) in zip(axes[0], results.items()):
        share = [100 * o["rest_share"] for o in r["thresholds"]]
        acc = [o["accuracy"] for o in r["thresholds"]]
        ax.plot(share, acc, marker="o", label="cascade")
        for o, x, y in zip(r["thresholds"], share, acc):
            ax.annotate(f"{o['threshold']:g}", (x, y), textcoords="offset points", xytext=(3, -10), fontsize=7)
        ax.axhline(r["every_net"], color="tab:green", linestyle="--", label="every net on every picture")
        ax.axhline(r["first_alone"], color="tab:red", linestyle=":", label="the first net alone")
        ax.set(title=name, xlabel="pictures asking the rest (%)", ylabel="accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("cascade threshold: cost against accuracy (labels: threshold)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("first")
    p.add_argument("rest")
    p.add_argument(
        "--rest-weight",
        type=float,
        default=1.0,
        help="how much REST's answer counts against FIRST's: its passes per image over FIRST's, nets x views "
        "(default 1; 2 for two nets after one, 12 for two nets on six views after one net on one view)",
    )
    p.add_argument("--data-dir", help="folder holding cifar-10-batches-py/ (default $CIFAR10_DATA)")
    p.add_argument("--folder", help="also a labelled folder (FOLDER/<class>/<images>), e.g. a JPEG copy")
    p.add_argument("--limit", type=int, default=0, help="first N test images only")
    p.add_argument("--plot", help="write the trade-off as a PNG")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()

    x, y, _ = load_cifar10(a.data_dir, "test")
    if a.limit:
        x, y = x[: a.limit], y[: a.limit]
    first, rest = stage_probs([a.first, a.rest], x)
    temps = fit_temperatures(first, rest, a.rest_weight, y)
    results = {"test set": curves(first, rest, a.rest_weight, y, temps)}
    if a.folder:
        fx, fy = labelled_folder(a.folder)
        results[Path(a.folder).name] = curves(*stage_probs([a.first, a.rest], fx), a.rest_weight, fy, temps)
    if a.plot:
        plot(results, Path(a.plot))
    if a.json:
        print(json.dumps({"temperatures": temps, "results": results}))
        return 0
    print(f"temperatures: {temps[0]:.3f} (the first net alone), {temps[1]:.3f} (every net)")
    for name, r in results.items():
        print(f"{name}: the first net alone {r['first_alone']:.4f}, every net on every picture {r['every_net']:.4f}")
        for o in r["thresholds"]:
            print(f"  threshold {o['threshold']:<6g} rest for {o['rest_share']:6.1%}  accuracy {o['accuracy']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
