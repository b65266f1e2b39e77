"""Rewrite an int8 model file with 7-bit weights, so that x86 CPUs without VNNI compute it right.

int8 files exported before `cifar10 export --int8` wrote 7-bit weights are computed wrongly by
onnxruntime on CPUs with AVX2 only (export/quantize.py, `narrow_weights`, says why): the shipped
default scored 0.61 on such a CPU instead of 0.95. This narrows the weights (one bit of precision),
re-measures the test accuracy through onnxruntime on as many test images as the file's metadata
names, checks the file in a second ONNX runtime, and writes it with the rest of its metadata kept.

    python tools/narrow_int8.py OLD.onnx NEW.onnx [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

import onnx

from cifar10kit.export import conformance
from cifar10kit.export.graph import set_metadata
from cifar10kit.export.quantize import narrow_weights, widest_weight
from cifar10kit.export.verify import ort_probs
from cifar10kit.runtime import contract
from cifar10kit.runtime.atomic import atomic_write
from cifar10kit.runtime.dataset import load_cifar10


def test_images(model: onnx.ModelProto) -> int:
    """How many test images the file's accuracy was measured on ("CIFAR-10 test batch, 5000 images")."""
    meta = {p.key: p.value for p in model.metadata_props}
    found = re.search(r"(\d+) images", meta.get(contract.KEY_TEST_SET, ""))
    return int(found.group(1)) if found else 10_000


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    p.add_argument("--data-dir", help="folder holding cifar-10-batches-py/ (default $CIFAR10_DATA)")
    a = p.parse_args()

    model = onnx.load(str(a.src))
    before = widest_weight(model)
    changed = narrow_weights(model)
    if not changed:
        print(f"{a.src}: nothing to do (widest int8 weight code {before}, within ±64)")
        return 0
    pixels, labels, _ = load_cifar10(a.data_dir, "test")
    n = test_images(model)
    pixels, labels = pixels[:n], labels[:n]
    with tempfile.TemporaryDirectory() as tmp:
        candidate = Path(tmp) / a.dst.name
        onnx.save(model, str(candidate))
        probs = ort_probs(candidate, pixels)
        accuracy = float((probs.argmax(1) == labels).mean())
        second = conformance.check(candidate, pixels, probs, labels)
    print(f"{changed} weights narrowed (widest code {before} -> {widest_weight(model)})")
    print(f"onnxruntime accuracy on {n} test images: {accuracy:.4f}")
    print(second.summary())
    if second.problems():
        print("; ".join(second.problems()), file=sys.stderr)
        return 1
    meta = {q.key: q.value for q in model.metadata_props}
    meta[contract.KEY_TEST_ACCURACY] = f"{accuracy:.4f}"
    meta[contract.KEY_EXPORTER] = f"{meta.get(contract.KEY_EXPORTER, '')}; int8 weights narrowed to 7 bits".lstrip("; ")
    set_metadata(model, meta)
    data = model.SerializeToString()
    atomic_write(a.dst, lambda f: f.write(data))
    print(f"wrote {a.dst} ({len(data) / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
