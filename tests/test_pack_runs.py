"""tools/pack_runs.py: finished runs carried in capped parts, fp16 on the way, fp32 again after."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO, has_torch

pytestmark = pytest.mark.skipif(not has_torch(), reason="needs the [train] extra (torch)")
TOOL = REPO / "tools" / "pack_runs.py"


def run_tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=300)


def test_runs_come_back_exportable_with_weights_within_fp16_rounding(trained_run, tmp_path):
    import torch

    from cifar10kit.train.checkpoint import load_model, read_checkpoint

    packed = run_tool("pack", str(trained_run), "-o", str(tmp_path / "out" / "runs"), "--part-mb", "0.05")
    assert packed.returncode == 0, packed.stderr
    parts = sorted((tmp_path / "out").glob("runs.part*"))
    assert len(parts) > 1 and all(p.stat().st_size <= 0.05 * 2**20 for p in parts)
    original = read_checkpoint(trained_run / "model.pt")
    half_bytes = sum(p.stat().st_size for p in parts)
    assert half_bytes < 0.7 * (trained_run / "model.pt").stat().st_size

    back = run_tool("unpack", *map(str, parts), "--dest", str(tmp_path / "runs"))
    assert back.returncode == 0, back.stderr
    rebuilt = tmp_path / "runs" / trained_run.name
    restored = read_checkpoint(rebuilt / "model.pt")
    for key, value in original["model"].items():
        got = restored["model"][key]
        assert got.dtype == value.dtype and got.shape == value.shape, key
        if value.is_floating_point():
            assert torch.allclose(got, value, rtol=2**-10, atol=1e-7), key
            if value.ndim < 2:  # BatchNorm statistics and biases travel as they are
                assert torch.equal(got, value), key
        else:
            assert torch.equal(got, value), key
    assert {k: v for k, v in restored.items() if k != "model"} == {k: v for k, v in original.items() if k != "model"}
    for name in ("config.json", "summary.json", "metrics.jsonl"):
        assert (rebuilt / name).read_bytes() == (trained_run / name).read_bytes()
    model, _ = load_model(rebuilt)  # the exporter's loader takes it

    # A missing part is noticed, not unpacked into a broken run.
    broken = run_tool("unpack", *map(str, parts[:-1]), "--dest", str(tmp_path / "broken"))
    assert broken.returncode != 0 and "a part is missing or damaged" in broken.stderr
    assert not (tmp_path / "broken").exists()
