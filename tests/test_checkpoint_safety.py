"""Checkpoints under attack and under SIGKILL: foreign, damaged and malicious `.pt` files are refused by
`cifar10 export` with the file named (and a malicious pickle never runs), and checkpoint writes killed
at random moments always leave a file that loads with `torch.load(weights_only=True)`.

A killed write can leave its own `.NAME.*.tmp` behind (harmless: never read, and the name never
matches a checkpoint); the SIGKILL test counts them and `pytest -s` prints the count.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import CLASSES, cli, has_torch, one_line_error

pytestmark = pytest.mark.skipif(not has_torch(), reason="needs the [train] extra (torch)")


# ----------------------------------------------------------------------------------------------
# Bad checkpoints


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def bad_checkpoints(tmp_path_factory, trained_run):
    import torch

    d = tmp_path_factory.mktemp("bad-ckpt")
    good = torch.load(trained_run / "model.pt", map_location="cpu", weights_only=True)
    marker = d / "MARKER"
    raw = (trained_run / "model.pt").read_bytes()
    made = {
        "foreign-dict": {"conv.weight": torch.randn(8, 3, 3, 3), "fc.weight": torch.randn(10, 8)},
        "other-widths": {**good, "widths": [w * 2 for w in good["widths"]]},
        "other-classes": {**good, "class_names": list(CLASSES[:5])},
        "tensor-top-level": torch.randn(3, 3),
        "missing-widths": {k: v for k, v in good.items() if k != "widths"},
        "two-widths": {**good, "widths": list(good["widths"][:2])},
    }
    out = {}
    for key, obj in made.items():
        torch.save(obj, d / f"{key}.pt")
        out[key] = d / f"{key}.pt"
    (d / "truncated.pt").write_bytes(raw[: len(raw) // 2])
    (d / "random.pt").write_bytes(np.random.default_rng(9).bytes(8192))
    (d / "empty.pt").write_bytes(b"")
    torch.save({"format": "cifar10kit-checkpoint", "model": _Evil(marker)}, d / "evil.pt")
    torch.save({"model": _Evil(marker)}, d / "evil-legacy.pt", _use_new_zipfile_serialization=False)
    for key in ("truncated", "random", "empty", "evil", "evil-legacy"):
        out[key] = d / f"{key}.pt"
    return out, marker


CKPT_OK_ERRORS = [
    "foreign-dict",
    "other-widths",
    "other-classes",
    "tensor-top-level",
    "truncated",
    "random",
    "evil",
    "evil-legacy",
    "missing-widths",
    "two-widths",
    "empty",
]


@pytest.mark.parametrize(
    "kind",
    CKPT_OK_ERRORS,
)
def test_bad_checkpoint_is_refused_by_export(bad_checkpoints, tmp_path, kind):
    from cifar10kit.export.exporter import export
    from cifar10kit.train.checkpoint import CheckpointError

    files, marker = bad_checkpoints
    out = tmp_path / "out.onnx"
    with pytest.raises(CheckpointError) as e:
        export(files[kind], out, verify_n=10, log=lambda *_: None)
    assert str(files[kind]) in str(e.value)
    assert not out.exists()
    assert not marker.exists(), "the malicious checkpoint ran code"


@pytest.mark.parametrize("kind", ["other-widths", "evil"])  # the rest of the list is refused in-process above
def test_export_cli_with_bad_checkpoint(bad_checkpoints, tmp_path, kind):
    files, marker = bad_checkpoints
    proc = cli("export", str(files[kind]), "-o", str(tmp_path / "m.onnx"), "--verify-n", "10", timeout=300)
    line = one_line_error(proc, str(files[kind]))
    assert "checkpoint" in line or "weights do not fit" in line, line
    assert not (tmp_path / "m.onnx").exists()
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------
# Atomic checkpoint writes under SIGKILL

SAVER = r"""
import signal, sys, torch
from cifar10kit.train.checkpoint import atomic_save
# Ctrl+C must raise KeyboardInterrupt here even when the test runner was started in the background,
# where the shell sets SIGINT to "ignore" and children inherit that.
signal.signal(signal.SIGINT, signal.default_int_handler)
target, start = sys.argv[1], int(sys.argv[2])
big = torch.empty(8_000_000)  # 32 MB of float32
i = start
while True:
    i += 1
    big.fill_(float(i))
    atomic_save({"n": i, "w": big}, target)
    print(i, flush=True)
"""


def test_atomic_save_survives_sigkill(tmp_path):
    import torch

    target = tmp_path / "last.pt"
    rng = random.Random(1234)
    kills, last_n, leftovers = 4, 0, []
    for _ in range(kills):
        proc = subprocess.Popen(
            [sys.executable, "-c", SAVER, str(target), str(last_n)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        first = proc.stdout.readline()  # one complete save, then a random moment
        assert first.strip(), "saver did not start"
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done = [int(x) for x in [first, *proc.stdout.read().split()] if str(x).strip()]
        proc.stdout.close()
        obj = torch.load(target, map_location="cpu", weights_only=True)
        n = int(obj["n"])
        assert done[-1] <= n <= done[-1] + 1, (done[-1], n)  # the last reported save, or one just renamed
        w = obj["w"]
        assert w.numel() == 8_000_000 and float(w[0]) == float(w[-1]) == float(w.min()) == float(w.max()) == n
        last_n = n
        others = sorted(p.name for p in tmp_path.iterdir() if p != target)
        assert all(re.fullmatch(r"\.last\.pt\..+\.tmp", name) for name in others), others
        leftovers.append(len(others))
    stale_mb = sum(p.stat().st_size for p in tmp_path.glob(".last.pt.*.tmp")) / 2**20
    print(f"\natomic_save: {kills} kills, {leftovers[-1]} stale temporary files ({stale_mb:.0f} MB)")
    assert leftovers[-1] <= kills


def test_atomic_save_cleans_up_on_interrupt(tmp_path):
    """SIGINT (Ctrl+C) is an exception in Python: the temporary file is removed."""
    target = tmp_path / "last.pt"
    proc = subprocess.Popen(
        [sys.executable, "-c", SAVER, str(target), "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert proc.stdout.readline().strip()
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    proc.stdout.close()
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
