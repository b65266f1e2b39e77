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
