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
            trained_run, out, data_dir=str(tiny_cifar), tta="none", precision="int8", max_drop=-1.0, log=lambda *_: None
        )
    message = str(e.value)
    assert message.startswith(f"refusing to write {out}: int8 loses ") and message.endswith("(limit -100.00%)")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no half-written file, no .export-* folder
