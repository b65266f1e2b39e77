"""Where does JPEG's loss come from? Splits one JPEG quality's damage into its parts, per model.

A JPEG file at quality 75, as Pillow and most cameras and web tools write it, does two things to a
32x32 picture: it stores colour (Cb, Cr) at half resolution (4:2:0 subsampling), and it quantises the
DCT coefficients of every 8x8 block of luma (Y) and of colour. At half resolution a colour block covers
16x16 pixels, a quarter of a CIFAR image, so quantising it shifts the colour of a whole quarter.

Each row is the test set (or its first --limit images) through one change, everything else as it was:

- clean; a YCbCr round trip (the colour conversion's own rounding);
- 4:2:0 without quantisation (colour at half resolution, bilinear, nothing else);
- quality Q with 4:4:4 (quantisation only) and quality 100 with 4:2:0 (subsampling nearly alone);
- quality Q with 4:2:0 (the real thing);
- the real thing's luma with the original colour, and the original luma with the real thing's colour.

    python benchmarks/jpeg_damage.py --data-dir DIR [--model FILE ...] [--quality 75] [--limit 5000] [--json]
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Callable

import numpy as np
from PIL import Image
from tqdm import tqdm

from cifar10kit.runtime.bench import machine
from cifar10kit.runtime.dataset import load_cifar10
from cifar10kit.runtime.session import Classifier

# ----------------------------------------------------------------------------------------------
# The changes, one picture at a time (uint8 HWC in, uint8 HWC out)


def jpeg_ycc(img: np.ndarray, quality: int, subsampling: int = 2) -> Image.Image:
    """The JPEG file's decoded YCbCr planes; subsampling 2 is 4:2:0 (Pillow's default), 0 is 4:4:4."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality, subsampling=subsampling)
    buf.seek(0)
    return Image.open(buf).convert("YCbCr")


def rgb(ycc: Image.Image) -> np.ndarray:
    return np.asarray(ycc.convert("RGB"))


def halve_colour(img: np.ndarray) -> np.ndarray:
    y, cb, cr = Image.fromarray(img).convert("YCbCr").split()
    h, w = img.shape[:2]
    cb, cr = (c.resize((w // 2, h // 2), Image.BOX).resize((w, h), Image.BILINEAR) for c in (cb, cr))
    return rgb(Image.merge("YCbCr", (y, cb, cr)))


def swap_planes(img: np.ndarray, quality: int, jpeg_planes: tuple[int, ...]) -> np.ndarray:
    """The original picture with the JPEG file's planes `jpeg_planes` (0 = Y, 1 = Cb, 2 = Cr) put in."""
    original = Image.fromarray(img).convert("YCbCr").split()
    compressed = jpeg_ycc(img, quality).split()
    return rgb(Image.merge("YCbCr", [compressed[k] if k in jpeg_planes else original[k] for k in range(3)]))


def changes(q: int) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    return {
        "clean": lambda i: i,
        "YCbCr round trip": lambda i: rgb(Image.fromarray(i).convert("YCbCr")),
        "4:2:0 colour, no quantisation": halve_colour,
        "quality 100, 4:2:0": lambda i: rgb(jpeg_ycc(i, 100)),
        f"quality {q}, 4:4:4": lambda i: rgb(jpeg_ycc(i, q, subsampling=0)),
        f"quality {q}, 4:2:0 (the file)": lambda i: rgb(jpeg_ycc(i, q)),
        "  its luma, original colour": lambda i: swap_planes(i, q, (0,)),
        "  original luma, its colour": lambda i: swap_planes(i, q, (1, 2)),
    }


# ----------------------------------------------------------------------------------------------
# Measuring


def measure(models: list[str], images: np.ndarray, labels: np.ndarray, quality: int) -> dict[str, dict[str, float]]:
    """{change: {model: accuracy}}; every model sees the very same pictures."""
    sessions = {m: Classifier(m, provider="cpu", notify=lambda *_: None) for m in models}
    table: dict[str, dict[str, float]] = {}
    for name, change in tqdm(changes(quality).items(), desc="changes", unit="change"):
        pictures = np.stack([change(img) for img in images])
        table[name] = {m: float(np.mean(s.predict_probs(pictures).argmax(1) == labels)) for m, s in sessions.items()}
    return table


def print_table(table: dict[str, dict[str, float]], models: list[str]) -> None:
    clean = table["clean"]
    print(f"{'change':34s}" + "".join(f"{m[-20:]:>12s}" + " " * 14 for m in models))
    for name, row in table.items():
        cells = "".join(f"{row[m]:>12.4f} ({(row[m] - clean[m]) * 100:+6.2f})     " for m in models)
        print(f"{name:34s}{cells}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", help="folder holding cifar-10-batches-py/ (default $CIFAR10_DATA)")
    p.add_argument("--model", nargs="+", default=["default", "clean"], help=".onnx files or shipped model names")
    p.add_argument("--quality", type=int, default=75)
    p.add_argument("--limit", type=int, default=5000, help="first N test images")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    images, labels, _ = load_cifar10(a.data_dir, "test")
    images, labels = images[: a.limit], labels[: a.limit]
    table = measure(a.model, images, labels, a.quality)
    if a.json:
        print(json.dumps(dict(machine=machine(), n=len(labels), quality=a.quality, accuracy=table), indent=2))
    else:
        print(f"{len(labels)} test images, JPEG quality {a.quality}; accuracy (points against clean)")
        print_table(table, a.model)


if __name__ == "__main__":
    main()
