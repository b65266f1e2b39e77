"""Deploy anywhere: every file the exporter writes, and the shipped model, runs unchanged in a second
ONNX runtime (OpenVINO where installed, onnx's reference implementation always) with onnxruntime's
top-1 answers on real CIFAR-10 images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from cifar10kit.runtime import contract

from conftest import has_torch

REPO = Path(__file__).resolve().parents[1]
# Every precision with the plainest graph and with the 6-view one, whose views include the flipped image
# (so it holds every operator the 2-view flip graph has).
VARIANTS = [(precision, tta) for precision in ("fp32", "fp16", "int8") for tta in ("none", "translate")]
# onnx's reference evaluator is plain numpy, a second per image for the wider graphs: a slice will do.
REFERENCE_IMAGES = 16
# Largest |dp| allowed between two runtimes: float rounding for fp32; fp16 and int8 graphs are computed
# at different precisions (an fp16 graph may run in fp32) and with different int8 kernels.
MAX_DIFF = {"fp32": 1e-4, "fp16": 5e-3, "int8": 5e-2}


def _ort(path: Path, pixels: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run([contract.OUTPUT_PROBS], {contract.INPUT_NAME: pixels})[0]


def _same_answers(probs: np.ndarray, reference: np.ndarray, tol: float) -> None:
    """Same top-1 everywhere, except where onnxruntime itself had a near-tie (within the tolerance)."""
    assert probs.shape == reference.shape and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-4)
    assert np.abs(probs - reference).max() <= tol
    rows = np.flatnonzero(probs.argmax(1) != reference.argmax(1))
    margins = reference[rows, reference.argmax(1)[rows]] - reference[rows, probs.argmax(1)[rows]]
    assert (margins <= 2 * tol).all(), f"top-1 differs on images {rows[margins > 2 * tol]}"


@pytest.fixture(scope="module")
def real_images() -> tuple[np.ndarray, np.ndarray]:
    from cifar10kit.runtime.examples import load_examples

    x, y, _ = load_examples()  # 100 CIFAR-10 test images shipped with the package
    return x, y


def test_second_runtimes_are_there():
    from cifar10kit.export import conformance

    names = conformance.available()
    assert names[-1] == "reference"  # onnx's own, installed with the export extra
    assert all(conformance.runtime_version(n) for n in names)


@pytest.mark.skipif(not has_torch(), reason="needs the [train] extra (torch)")
@pytest.mark.parametrize("precision,tta", VARIANTS)
def test_every_variant_gives_the_same_answers_in_other_runtimes(export_variant, real_images, precision, tta):
    from cifar10kit.export import conformance

    path, result = export_variant(precision, tta)
    checked = result["conformance"]  # the exporter's own check, on the verification images
    assert checked["error"] is None and checked["agreement"] >= conformance.MIN_AGREEMENT
    assert any(o.domain in ("", "ai.onnx") and o.version == contract.OPSET for o in onnx.load(str(path)).opset_import)
    x, _ = real_images
    reference = _ort(path, x)
    for runtime in conformance.available():
        n = REFERENCE_IMAGES if runtime == "reference" else len(x)
        _same_answers(conformance.runtime_probs(runtime, path, x[:n]), reference[:n], MAX_DIFF[precision])


@pytest.mark.skipif(not has_torch(), reason="needs the [train] extra (torch)")
def test_export_refuses_a_file_another_runtime_reads_differently(trained_run, tiny_cifar, tmp_path, monkeypatch):
    from cifar10kit.export import conformance, exporter

    def scrambled(name, path, pixels, batch=250):  # a runtime that answers a different class each time
        return np.roll(real(name, path, pixels, batch), 1, axis=1)

    real = conformance.runtime_probs
    monkeypatch.setattr(conformance, "runtime_probs", scrambled)
    out = tmp_path / "refused.onnx"
    with pytest.raises(exporter.ExportError, match="does not run the same everywhere"):
        exporter.export(trained_run, out, data_dir=str(tiny_cifar), log=lambda *_: None)
    assert not out.exists() and not list(tmp_path.glob(".export-*"))


def test_shipped_model_in_a_second_runtime(real_images):
    """The shipped file, unchanged: ~200 real test images with $CIFAR10_DATA, else the 100 examples."""
    from cifar10kit.export import conformance

    shipped = REPO / "runtime" / "models" / "default.onnx"
    x, y = real_images
    if os.environ.get("CIFAR10_DATA"):
        from cifar10kit.runtime.dataset import load_cifar10

        x, y, _ = load_cifar10(os.environ["CIFAR10_DATA"], "test")
        x, y = x[:200], y[:200]
    reference = _ort(shipped, x)
    meta = {p.key: p.value for p in onnx.load(str(shipped), load_external_data=False).metadata_props}
    runtime = conformance.available()[0]
    if runtime == "reference":
        opset = max(o.version for o in onnx.load(str(shipped)).opset_import if o.domain in ("", "ai.onnx"))
        if opset < 19:
            pytest.skip(f"the shipped file is opset {opset}: the reference evaluator needs 19 (re-export it)")
        x, reference, y = x[:16], reference[:16], y[:16]  # a second per image in plain numpy
    probs = conformance.runtime_probs(runtime, shipped, x)
    _same_answers(probs, reference, MAX_DIFF.get(meta.get(contract.KEY_PRECISION, "fp32"), 5e-2))
    assert abs(float((probs.argmax(1) == y).mean()) - float((reference.argmax(1) == y).mean())) <= 1 / len(y)
