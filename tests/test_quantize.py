"""Smaller export variants (export/quantize.py): a variant that loses more accuracy than allowed is
refused, and nothing is written."""

from __future__ import annotations

import pytest

from conftest import has_torch

pytestmark = pytest.mark.skipif(not has_torch(), reason="needs the [train] extra (torch)")


def test_int8_variant_that_loses_too_much_is_refused(trained_run, tmp_path, tiny_cifar):
    """A limit no variant can meet (it would have to gain 100 points) forces the refusal path: the
    error names the file, the variant, its loss and the limit, and no file or temporary is left."""
    from cifar10kit.export.exporter import ExportError, export

    out = tmp_path / "int8.onnx"
    with pytest.raises(ExportError) as e:
        export(
            trained_run,
            out,
            data_dir=str(tiny_cifar),
            tta="none",
            precision="int8",
            max_drop=-1.0,
            calibration_n=64,
            log=lambda *_: None,
        )
    message = str(e.value)
    assert message.startswith(f"refusing to write {out}: int8 loses ") and message.endswith("(limit -100.00%)")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no half-written file, no .export-* folder


def test_calibration_takes_n_training_images_in_equal_batches(tiny_cifar, tmp_path):
    import numpy as np

    from cifar10kit.export.quantize import calibration_images
    from cifar10kit.runtime.dataset import load_cifar10

    train, _, _ = load_cifar10(tiny_cifar, "train")
    fallback = np.zeros((300, 32, 32, 3), np.uint8)
    batches = calibration_images(str(tiny_cifar), fallback, 200)
    assert batches.shape == (3, 64, 32, 32, 3)  # 200 drawn, cut to whole batches of 64
    rows = {row.tobytes() for row in train.reshape(len(train), -1)}
    assert all(img.tobytes() in rows for img in batches.reshape(-1, 32 * 32 * 3))  # training images
    assert len({img.tobytes() for img in batches.reshape(-1, 32 * 32 * 3)}) == 192  # drawn without replacement
    assert (calibration_images(str(tiny_cifar), fallback, 200) == batches).all()  # a fixed choice
    assert calibration_images(str(tmp_path), fallback, 10).shape == (1, 10, 32, 32, 3)  # no data: the fallback images
    assert calibration_images(str(tmp_path), fallback, 1).shape == (1, 1, 32, 32, 3)
    assert calibration_images(str(tmp_path), fallback, 5000).shape == (4, 64, 32, 32, 3)
    with pytest.raises(ValueError, match="at least 1"):
        calibration_images(str(tiny_cifar), fallback, 0)


def test_calibration_chunks_keep_images_times_passes_within_the_budget():
    """onnxruntime's percentile calibrator holds every activation it is given: 1,024 images through two
    nets with 6-view TTA (12 passes each) needed more than 24 GB at once. It is given chunks instead."""
    from cifar10kit.export.quantize import CALIBRATION_PASSES, calibration_chunk

    assert calibration_chunk((16, 64), 1) == 16 and calibration_chunk((16, 64), 2) == 16  # one net, a pair: at once
    assert calibration_chunk((16, 64), 12) == 2  # a pair with translate TTA: 128 images x 12 passes a chunk
    assert 2 * 64 * 12 <= CALIBRATION_PASSES < 3 * 64 * 12
    assert calibration_chunk((15, 64), 12) == 1  # chunks divide the batches evenly (the calibrator insists)
    assert calibration_chunk((16, 64), 1000) == 1  # never less than one batch
    assert calibration_chunk((3, 64), 1) == 3


def test_int8_calibrated_in_chunks_sees_every_image_and_sets_the_same_ranges(trained_model, tiny_cifar, tmp_path):
    """Fed one batch at a time, the calibrator still sees all the batches (its histograms merge), never
    holds more than one, and sets activation scales within a few percent of calibrating all at once."""
    import onnx
    from onnx import numpy_helper
    from onnxruntime.quantization import calibrate

    from cifar10kit.export.quantize import calibration_images, make_int8
    from cifar10kit.export.verify import ort_probs
    from cifar10kit.runtime.dataset import load_cifar10

    x, _, _ = load_cifar10(str(tiny_cifar), "test")
    batches = calibration_images(str(tiny_cifar), x, 256)
    seen: list[int] = []
    collect = calibrate.HistogramCalibrater.collect_data

    def counting(self, reader):
        before = len(seen)
        while (item := reader.get_next()) is not None:
            seen.append(len(item["pixels"]))
        reader.set_range(before, len(seen))  # hand the same batches on to the real calibrator
        return collect(self, reader)

    at_once, chunked = tmp_path / "once.onnx", tmp_path / "chunked.onnx"
    make_int8(trained_model, at_once, batches)
    assert seen == []  # the percentile calibrator is a histogram calibrator: the spy below reaches it
    calibrate.HistogramCalibrater.collect_data = counting
    try:
        make_int8(trained_model, chunked, batches, chunk=1)
    finally:
        calibrate.HistogramCalibrater.collect_data = collect
    assert seen == [64] * 4

    def activation_scales(path):
        model = onnx.load(str(path))
        inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        return {
            n.input[0]: float(inits[n.input[1]])
            for n in model.graph.node
            if n.op_type == "QuantizeLinear" and n.input[0] not in inits and inits[n.input[1]].ndim == 0
        }

    once, chunks = activation_scales(at_once), activation_scales(chunked)
    assert len(once) > 5 and once.keys() == chunks.keys()
    assert max(abs(chunks[k] / once[k] - 1) for k in once) < 0.02
    assert (ort_probs(chunked, x).argmax(1) == ort_probs(at_once, x).argmax(1)).mean() >= 0.97


# ----------------------------------------------------------------------------------------------
# 7-bit weights: without VNNI, onnxruntime's int8 kernels add pairs of products in 16 bits


def test_int8_export_writes_weights_every_x86_cpu_computes_exactly(export_variant):
    import onnx

    from cifar10kit.export.quantize import NARROW_LIMIT, widest_weight

    path, _ = export_variant("int8", "none")
    # 2 x 255 x 64 = 32,640 fits a 16-bit sum; 2 x 255 x 127 does not (AVX2 CPUs saturated it).
    assert 32 < widest_weight(onnx.load(str(path))) <= NARROW_LIMIT


def test_narrowing_an_8bit_file_keeps_what_it_computes(trained_model, tiny_cifar, tmp_path):
    """A file quantised with 8-bit weights, as the exporter wrote them before, narrowed in place:
    its weights fit the bound, its biases follow their weights' scales, and it still computes
    what the fp32 model does."""
    import numpy as np
    import onnx

    from cifar10kit.export.quantize import calibration_images, make_int8, narrow_weights, widest_weight
    from cifar10kit.export.verify import ort_probs
    from cifar10kit.runtime.dataset import load_cifar10

    x, _, _ = load_cifar10(str(tiny_cifar), "test")
    wide = tmp_path / "wide.onnx"
    make_int8(trained_model, wide, calibration_images(str(tiny_cifar), x, 256), narrow=False)
    model = onnx.load(str(wide))
    assert widest_weight(model) > 100
    assert narrow_weights(model) > 0
    assert widest_weight(model) <= 64
    assert narrow_weights(model) == 0  # narrow files are left alone
    narrowed = tmp_path / "narrow.onnx"
    onnx.save(model, str(narrowed))
    reference = ort_probs(trained_model, x)
    probs = ort_probs(narrowed, x)
    assert (probs.argmax(1) == reference.argmax(1)).mean() >= 0.95
    assert np.abs(probs - reference).max() < 0.15
