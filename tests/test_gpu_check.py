"""The GPU check script's dry run: every step runs end to end on this machine's CPU, on tiny data."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO, needs_torch


@needs_torch
def test_gpu_check_dry_run_reports_every_step(tiny_cifar, tmp_path):
    env = {
        **os.environ,
        "CIFAR10_DATA": str(tiny_cifar),
        "OUT": str(tmp_path / "out"),
        "PYTHON": sys.executable,
        "INSTALL": "copy",  # this tree, laid out as installed: what the GPU image runs
        "AIRBENCH_ANCHOR": "",
        "MEMBERS": "2",
        "MEMBER_EPOCHS": "1",
        "HOLDOUT": "100",  # `best` and the members set the same training images aside and report them
    }
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    report = (tmp_path / "out" / "gpu_check.txt").read_text()
    log = (tmp_path / "out" / "gpu_check.log").read_text()
    assert proc.returncode == 0, report + log[-3000:]
    assert "dry run" in report
    for name in ("gpu-tests", "fast", "best", "export", "evaluate", "bench", "members", "pack"):
        assert any(line.startswith(name) and " ok " in line for line in report.splitlines()), (name, report)
    assert "FAILED" not in report
    assert "best: airnet-192-512-512, 1 epochs" in report  # the `best` preset's own net, trained to the end
    assert "onnxruntime evaluate: accuracy" in report and "CPUExecutionProvider" in report
    assert "ours (fast): accuracy" in report
    # The default's members trained side by side, distilled from `best`, and came back in parts.
    assert "members: 2 x accurate, 1 epochs each, side by side, distilled from best" in report
    for name in ("mix-s0", "mix-s1"):
        assert f"  {name}: 1 epochs" in report, report
    held = [line for line in report.splitlines() if "held-out" in line]
    assert len(held) == 3 and "held-out" in held[0] and " on 100" in held[0], report
    assert "--holdout 100" in report and "learned from images this run sets aside" not in log
    parts = sorted((tmp_path / "out").glob("runs.part*"))
    assert parts
    back = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "pack_runs.py"),
            "unpack",
            *map(str, parts),
            "--dest",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
    )
    assert back.returncode == 0, back.stderr
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["best", "mix-s0", "mix-s1"]
