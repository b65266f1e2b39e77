"""Write the example images shipped inside the package: `runtime/examples/<class>/test_<index>.png`.

The first `--per-class` images of each class in the CIFAR-10 test batch, in test-batch order, read
with the project's own pickle-free reader and saved as lossless PNGs. The folder name is the true
label and the number in the file name is the image's index in the test batch, so every file can be
traced back (tests/test_examples.py does, when the real data is present). Rerunning it rewrites the
same bytes.

    python tools/make_examples.py --data-dir DIR      # DIR holds cifar-10-batches-py/ (or $CIFAR10_DATA)
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from cifar10kit.runtime.dataset import load_cifar10

OUT = Path(__file__).resolve().parents[1] / "runtime" / "examples"


def pick(labels: np.ndarray, num_classes: int, per_class: int) -> list[int]:
    """Test-batch indices: the first `per_class` of each class, class by class."""
    return [int(i) for c in range(num_classes) for i in np.flatnonzero(labels == c)[:per_class]]


def png_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, "PNG", optimize=True)  # no metadata: same bytes every run
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", help="folder holding cifar-10-batches-py/ (default $CIFAR10_DATA)")
    ap.add_argument("--per-class", type=int, default=10)
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    images, labels, names = load_cifar10(a.data_dir, "test")
    chosen = pick(labels, len(names), a.per_class)
    # Build the whole folder next to the target, then swap it in: never a half-written set.
    a.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".examples-", dir=a.out.parent))
    total = 0
    for i in chosen:
        folder = tmp / names[labels[i]]
        folder.mkdir(exist_ok=True)
        data = png_bytes(images[i])
        (folder / f"test_{i:04d}.png").write_bytes(data)
        total += len(data)
    old = a.out.with_name(a.out.name + ".old")
    if a.out.exists():
        os.replace(a.out, old)
    os.replace(tmp, a.out)
    shutil.rmtree(old, ignore_errors=True)
    print(f"{len(chosen)} images ({a.per_class} per class), {total / 1024:.0f} KiB, in {a.out}")


if __name__ == "__main__":
    main()
