"""`--provider` through the command line, checked against what onnxruntime itself can start here.

The CUDA fallback's causes (no driver, a missing library, a CPU-only build) are simulated in
test_session.py; this file runs the real thing on whatever machine it is on: where a plain
onnxruntime CUDA session starts, `--provider cuda` must run on CUDA and give the CPU's answers;
where it does not, `--provider cuda` must fail in one line and `auto` must run on the CPU.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import cli, make_contract_model


def cuda_really_starts(model) -> bool:
    """Ground truth, asked of onnxruntime directly (never of the code under test)."""
    import ctypes

    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False  # no driver: onnxruntime would only print loader errors
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    try:
        sess = ort.InferenceSession(str(model), sess_options=opts, providers=["CUDAExecutionProvider"])
    except Exception:  # noqa: BLE001
        return False
    return sess.get_providers()[0] == "CUDAExecutionProvider"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("providers")
    model = make_contract_model(d / "probe.onnx")
    rng = np.random.default_rng(0)
    images = []
    for i in range(3):
        path = d / f"{i}.png"
        Image.fromarray(rng.integers(0, 60 * (i + 1), (40, 40, 3), dtype=np.uint8)).save(path)
        images.append(str(path))
    return model, images, cuda_really_starts(model)


def _rows(proc) -> list[dict]:
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_cpu_is_always_the_cpu(setup):
    model, images, _ = setup
    proc = cli("predict", *images, "--model", str(model), "--provider", "cpu", "--json")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert {r["provider"] for r in _rows(proc)} == {"CPUExecutionProvider"}


def test_cuda_runs_on_cuda_or_fails_in_one_line(setup):
    model, images, works = setup
    proc = cli("predict", *images, "--model", str(model), "--provider", "cuda", "--json")
    if works:
        assert proc.returncode == 0, proc.stderr
        cuda = _rows(proc)
        assert {r["provider"] for r in cuda} == {"CUDAExecutionProvider"}
        cpu = _rows(cli("predict", *images, "--model", str(model), "--provider", "cpu", "--json"))
        for a, b in zip(cuda, cpu):
            assert a["label"] == b["label"] and a["probability"] == pytest.approx(b["probability"], abs=1e-4)
    else:
        assert proc.returncode == 1 and proc.stdout == "", (proc.returncode, proc.stdout)
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: --provider cuda: CUDA is not usable"), proc.stderr
        assert "--provider auto or cpu" in lines[0] and "Traceback" not in proc.stderr


def test_auto_takes_cuda_exactly_when_it_starts(setup):
    model, _, works = setup
    proc = cli("info", "--model", str(model), "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["provider"] == ("CUDAExecutionProvider" if works else "CPUExecutionProvider")
    assert info["requested_provider"] == "auto"
    if works:
        assert info["provider_note"] is None and proc.stderr == ""
    else:
        assert info["provider_note"]  # why CUDA was not used, for `cifar10 info` to show


@pytest.mark.gpu
def test_gpu_machine_runs_cuda(setup):
    """On a machine with an NVIDIA GPU and a working CUDA runtime, CUDA must really start."""
    model, _, works = setup
    try:
        import ctypes

        ctypes.CDLL("libcuda.so.1")
    except OSError:
        pytest.skip("no NVIDIA driver here")
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip(f"onnxruntime {ort.__version__} here is a CPU-only build (install onnxruntime-gpu)")
    assert works, "a driver is present but onnxruntime cannot start CUDA (see `cifar10 info`)"
