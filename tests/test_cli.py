"""The command line as a user meets it: providers named in every --json output, the CSV file,
--threads, exit codes (0 success, 1 an input failed, 2 usage) and one-line errors."""

from __future__ import annotations

import json
import subprocess

import pytest
from PIL import Image

from cifar10kit.runtime.results_csv import columns, read_results

from conftest import REPO, cli, make_tiny_cifar, needs_torch


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    d = tmp_path_factory.mktemp("pictures")
    for i, colour in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        Image.new("RGB", (40 + i, 30), colour).save(d / f"{i}.png")
    (d / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return d


def _one_line_error(r: subprocess.CompletedProcess, code: int) -> str:
    assert r.returncode == code, (r.returncode, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


# ----------------------------------------------------------------------------------------------
# Providers and threads in every --json output


def test_predict_json_and_csv_agree_and_name_the_provider(pictures, tmp_path):
    out = tmp_path / "results.csv"
    r = cli("predict", str(pictures), "--json", "--csv", str(out), "-k", "2", "--threads", "1")
    assert r.returncode == 1  # the broken file
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == 4 and {row["provider"] for row in rows} == {"CPUExecutionProvider"}
    table = read_results(out)
    assert list(table[0]) == columns(2)
    for row, line in zip(rows, table):
        assert line["path"] == row["path"] and line["provider"] == row["provider"]
        assert line["uncertain"] == ("true" if row["uncertain"] else "false")
        if row["error"]:
            assert line["error"] == row["error"] and line["label"] == "" and line["top1_label"] == ""
            continue
        assert line["label"] == row["label"] == line["top1_label"]
        assert [line["top1_label"], line["top2_label"]] == [t["label"] for t in row["top_k"]]
        assert float(line["top2_probability"]) == pytest.approx(row["top_k"][1]["probability"], abs=1e-6)


def test_evaluate_info_and_bench_report_the_live_session(tmp_path):
    data = make_tiny_cifar(tmp_path, per_batch=2, test=20)
    ev = json.loads(cli("evaluate", "--data-dir", str(data), "--json", "--threads", "1").stdout)
    info = json.loads(cli("info", "--json", "--threads", "1").stdout)
    bench = json.loads(cli("bench", "--json", "--threads", "1", "--repeats", "5", "--batch-size", "8").stdout)
    for out in (ev, info, bench):
        assert out["provider"] == "CPUExecutionProvider" and out["threads"] == 1
        assert out["requested_provider"] == "auto"
    assert ev["n"] == 20 and info["info"]["class_names"][3] == "cat"
    assert info["onnxruntime"]["version"] and info["cpus"]["logical"] >= 1


def test_default_threads_follow_the_affinity_mask():
    """A process pinned to one CPU (taskset, cpusets) gets one onnxruntime thread by default."""
    import os
    import sys

    if not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs a process allowed on at least two CPUs")
    code = (
        "import os, sys; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
        "from cifar10kit.main import main; sys.exit(main(['info', '--json']))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["threads"] == 1 and out["cpus"]["affinity"] == 1


# ----------------------------------------------------------------------------------------------
# Exit codes and one-line errors


def test_usage_errors_exit_2(pictures, tmp_path):
    assert cli("predict", str(pictures), "--threads", "0").returncode == 2  # argparse
    assert cli("predict", str(pictures), "--top-k", "0").returncode == 2
    line = _one_line_error(cli("predict", str(pictures), "--model", str(tmp_path / "none.onnx")), 2)
    assert "no such model file" in line
    line = _one_line_error(cli("predict", str(pictures), "--csv", str(tmp_path / "no" / "dir" / "x.csv")), 2)
    assert "x.csv" in line
    line = _one_line_error(cli("evaluate", "--data-dir", str(tmp_path / "nothing")), 2)
    assert "cifar10 download" in line


def test_input_failures_exit_1(pictures, tmp_path):
    bad_model = tmp_path / "bad.onnx"
    bad_model.write_bytes(b"not a model")
    line = _one_line_error(cli("info", "--model", str(bad_model)), 1)
    assert "bad.onnx" in line
    only_broken = cli("predict", str(pictures / "broken.jpg"))
    assert only_broken.returncode == 1 and "broken.jpg" in only_broken.stderr
    assert cli("predict", str(pictures / "0.png")).returncode == 0


@needs_torch
def test_train_and_export_errors_are_one_line(tmp_path):
    def cli_slow(*args: str):  # importing torch can take minutes on a loaded machine
        return cli(*args, timeout=1200)

    out = ["--out", str(tmp_path / "runs")]
    line = _one_line_error(cli_slow("train", "--preset", "smoke", "--data-dir", str(tmp_path / "missing"), *out), 2)
    assert "missing" in line and "cifar10 download" in line
    (tmp_path / "classless").mkdir()
    (tmp_path / "classless" / "loose.png").write_bytes(b"")
    line = _one_line_error(cli_slow("train", "--preset", "smoke", "--folder", str(tmp_path / "classless"), *out), 2)
    assert "classless" in line and "class" in line
    run = tmp_path / "runs" / "broken"
    run.mkdir(parents=True)
    (run / "last.pt").write_bytes(b"PK\x03\x04 definitely not a checkpoint")
    (run / "config.json").write_text(json.dumps({"preset": "smoke"}))
    line = _one_line_error(cli_slow("train", "--resume", str(run), "--data-dir", str(tmp_path)), 1)
    assert "last.pt" in line
    line = _one_line_error(cli_slow("export", str(run / "last.pt"), "-o", str(tmp_path / "m.onnx")), 1)
    assert "last.pt" in line and not (tmp_path / "m.onnx").exists()
    for flag, value, says in (
        ("--cutout", "-4", "0 or more"),
        ("--translate", "-1", "0 or more"),
        ("--robust", "1.5", "0 to 1"),
        ("--robust-mix", "jpeg", "FAMILY=ODDS"),
        ("--robust-mix", "jpeg=lots", "FAMILY=ODDS"),
        ("--robust-mix", "blur=1", "unknown corruption family blur; choose from jpeg"),
        ("--robust-mix", "jpeg=-1", "0 or more"),
    ):
        line = _one_line_error(cli_slow("train", "--preset", "smoke", flag, value, *out), 2)
        assert f"{flag} {value}" in line and says in line
    line = _one_line_error(cli_slow("train", "--preset", "accurate", "--no-robust", "--robust-mix", "jpeg=1", *out), 2)
    assert "--robust-mix" in line and "--robust SHARE" in line
    line = _one_line_error(cli_slow("train", "--preset", "smoke", "--name", "broken", *out), 1)
    assert "broken" in line and "--resume" in line and (run / "last.pt").read_bytes().startswith(b"PK")  # untouched
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["broken"]  # the failed runs left no empty folders


# ----------------------------------------------------------------------------------------------
# Shipped code names no developer paths


def test_no_shipped_file_points_at_a_developer_data_folder():
    tracked = subprocess.run(["git", "ls-files"], capture_output=True, text=True, cwd=REPO).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    offenders = []
    for name in tracked:
        if name.startswith(("tests/", "docs/")) or not name.endswith((".py", ".toml", ".cfg", "Makefile")):
            continue
        path = REPO / name
        if path.exists() and ("../shared" in (text := path.read_text(errors="replace")) or "/work/shared" in text):
            offenders.append(name)
    assert offenders == []


@needs_torch
def test_export_flags_reach_the_exporter(monkeypatch, tmp_path, capsys):
    from cifar10kit.export import exporter
    from cifar10kit.export.quantize import CALIBRATION_IMAGES
    from cifar10kit.main import main

    calls: list[dict] = []
    monkeypatch.setattr(exporter, "export", lambda *args, **kw: calls.append(kw) or {"written": True})
    out = str(tmp_path / "m.onnx")
    assert main(["export", "run", "-o", out, "--int8", "--calibration-images", "64", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"written": True}
    assert main(["export", "run", "-o", out, "--fp16", "--no-calibrate", "--tta", "none", "--verify-n", "9"]) == 0
    assert main(["export", "a", "b", "-o", out, "--cascade"]) == 0
    assert main(["export", "a", "b", "-o", out, "--cascade", "0.8", "--tta-rest", "translate"]) == 0
    assert calls[0]["precision"] == "int8" and calls[0]["calibration_n"] == 64 and calls[0]["calibrate"]
    assert calls[1] | {"data_dir": None} == {
        "data_dir": None,
        "tta": "none",
        "verify_n": 9,
        "precision": "fp16",
        "calibrate": False,
        "calibration_n": CALIBRATION_IMAGES,
        "cascade": None,
        "tta_rest": None,
    }
    assert (calls[2]["cascade"], calls[3]["cascade"]) == (0.95, 0.8)
    assert (calls[2]["tta_rest"], calls[3]["tta_rest"]) == (None, "translate")
