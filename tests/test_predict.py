"""Classifying files and folders (runtime/predict.py and `cifar10 predict`): input collection, batches,
per-file errors, the `uncertain` flag in JSON and CSV, and the whole hostile corpus in one run.

The model here is a hand-made contract model (conftest.make_contract_model) whose probabilities are
known in closed form: a black image gets 10% for every class, brighter images lean to the last one.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cifar10kit.runtime.predict import ProgressLine, Result, classify_paths, collect
from cifar10kit.runtime.preprocess import prepare
from cifar10kit.runtime.session import Classifier

from conftest import BIN, CLASSES, cli, make_contract_model, probe_probabilities

PREDICT_TIMEOUT_S = 300
PREDICT_RSS_BOUND_MB = 1024  # measured ~340 MB with the 64 MP image in the corpus; 3x headroom


def _grey(path, value: int, size=(40, 30)):
    Image.new("RGB", size, (value, value, value)).save(path)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """black (uncertain under a 0.5 threshold), white (certain), mid (exactly at a threshold), broken."""
    d = tmp_path_factory.mktemp("predict-images")
    files = {name: _grey(d / f"{name}.png", v) for name, v in (("black", 0), ("white", 255), ("mid", 2))}
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    files["broken"] = d / "broken.png"
    return files


@pytest.fixture(scope="module")
def models(tmp_path_factory, images):
    """'half': uncertainty threshold 0.5. 'edge': threshold equal to the mid image's top probability.
    'none': no threshold in the file."""
    d = tmp_path_factory.mktemp("predict-models")
    none = make_contract_model(d / "none.onnx")
    from cifar10kit.runtime.preprocess import prepare

    edge_p = float(Classifier(none, provider="cpu").run(prepare(images["mid"])).probs[0].max())
    assert 0.1 < edge_p < 0.5
    return {
        "none": none,
        "half": make_contract_model(d / "half.onnx", meta={"uncertainty_threshold": "0.5"}),
        "edge": make_contract_model(d / "edge.onnx", meta={"uncertainty_threshold": repr(edge_p)}),
        "edge_p": edge_p,
    }


# ----------------------------------------------------------------------------------------------
# In this process


def test_classify_paths_results_in_order_with_errors_and_uncertainty(models, images):
    model = Classifier(models["half"], provider="cpu")
    paths = [images["black"], images["broken"], images["white"], images["mid"], images["black"]]
    seen = []
    results = list(classify_paths(model, paths, top_k=3, batch_size=2, progress=lambda d, t: seen.append((d, t))))
    assert seen == [(2, 5), (4, 5), (5, 5)]
    assert [r.path for r in results] == [str(p) for p in paths]
    black, broken, white, mid, black2 = results
    assert broken.label is None and broken.error.startswith(str(images["broken"])) and broken.top_k == []
    assert black.error is None and black.uncertain is True and black.probability == pytest.approx(0.1, abs=1e-6)
    assert [n for n, _ in black.top_k] == ["airplane", "automobile", "bird"]  # ties: class order
    assert white.label == "truck" and white.uncertain is False and white.probability > 0.99
    assert [n for n, _ in white.top_k][:2] == ["truck", "ship"]  # the rest underflow to 0 in float32
    want = probe_probabilities(np.full((1, 32, 32, 3), 2))[0]
    assert mid.label == "truck" and mid.probability == pytest.approx(want.max(), abs=1e-6)
    assert [p for _, p in mid.top_k] == pytest.approx(sorted(want)[::-1][:3], abs=1e-6)
    assert black2.as_json() == black.as_json() | {"path": str(images["black"])}


def test_uncertain_is_strictly_below_the_threshold(models, images):
    edge = Classifier(models["edge"], provider="cpu")
    assert edge.info.threshold == models["edge_p"]
    (mid,) = classify_paths(edge, [images["mid"]])
    assert mid.probability == models["edge_p"] and mid.uncertain is False  # at the threshold: not uncertain
    assert edge.is_uncertain(np.array([np.nextafter(models["edge_p"], 0), 0.0]))
    assert not edge.is_uncertain(np.array([models["edge_p"], 0.0]))
    plain = Classifier(models["none"], provider="cpu")
    assert plain.info.threshold is None and not plain.is_uncertain(np.full(10, 0.1))


def test_topk_clamps_k(models):
    model = Classifier(models["none"], provider="cpu")
    probs = np.linspace(0.01, 0.1, 10)[::-1].copy()
    assert [n for n, _ in model.topk(probs, 0)] == ["airplane"]
    assert len(model.topk(probs, 99)) == 10
    assert model.topk(probs, 2) == [("airplane", pytest.approx(0.1)), ("automobile", pytest.approx(0.09))]


def test_collect_files_folders_globs_and_misses(tmp_path):
    (tmp_path / "a" / "deep").mkdir(parents=True)
    for rel in ("a/2.png", "a/1.JPG", "a/deep/3.webp", "a/.hidden.png", "top.bmp"):
        _grey(tmp_path / rel, 9)
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "a" / "folder.png").mkdir()  # a folder named like an image is not an input
    (tmp_path / "empty").mkdir()
    os.symlink(tmp_path / "gone.png", tmp_path / "dangling.png")
    errors: list[Result] = []
    got = collect(
        [
            str(tmp_path / "a"),
            str(tmp_path / "top.bmp"),
            str(tmp_path / "dangling.png"),
            str(tmp_path / "*.bmp"),
            str(tmp_path / "empty"),
            str(tmp_path / "nothing*.png"),
            str(tmp_path / "missing.png"),
        ],
        errors,
    )
    a = tmp_path / "a"
    assert got == [
        a / "1.JPG",
        a / "2.png",
        a / "deep" / "3.webp",
        tmp_path / "top.bmp",
        tmp_path / "dangling.png",
        tmp_path / "top.bmp",
    ]
    assert [e.error for e in errors] == [
        f"{tmp_path / 'empty'}: folder holds no images",
        f"{tmp_path / 'nothing*.png'}: pattern matches no files",
        f"{tmp_path / 'missing.png'}: no such file or folder",
    ]
    assert all(e.label is None and e.path in e.error for e in errors)
    assert collect([str(tmp_path / "missing.png")]) == []  # without an error list: silently nothing


def test_progress_line(capsys):
    bar = ProgressLine("working", force=True, min_items=3)
    bar(1, 2)  # fewer items than min_items: silent
    bar(2, 4)
    bar(4, 4)
    err = capsys.readouterr().err
    lines = err.split("\r")[1:]
    assert len(lines) == 2
    assert re.fullmatch(r"working \[#{15} {15}\] 2/4 \d+/s ETA \d+s", lines[0]), lines[0]
    assert re.fullmatch(r"working \[#{30}\] 4/4 \d+/s ETA 0s\n", lines[1]), lines[1]
    assert not ProgressLine("quiet").enabled or sys.stderr.isatty()


def test_result_as_json_names_every_field():
    r = Result("x.png", "cat", 0.75, [("cat", 0.75), ("dog", 0.25)], uncertain=True)
    assert r.as_json() == {
        "path": "x.png",
        "label": "cat",
        "probability": 0.75,
        "top_k": [{"label": "cat", "probability": 0.75}, {"label": "dog", "probability": 0.25}],
        "uncertain": True,
        "error": None,
    }
    bad = Result("y.png", error="y.png: broken")
    assert bad.as_json() == {
        "path": "y.png",
        "label": None,
        "probability": None,
        "top_k": [],
        "uncertain": False,
        "error": "y.png: broken",
    }


def test_classify_paths_batches_of_errors_only_and_errors_first(models, images):
    """A batch with no readable image runs no model; an error early in a batch keeps the rest of it."""
    model = Classifier(models["none"], provider="cpu")
    paths = [images["broken"], images["broken"], images["broken"], images["white"], images["black"]]
    seen = []
    results = list(classify_paths(model, paths, batch_size=2, progress=lambda d, t: seen.append((d, t))))
    assert seen == [(2, 5), (4, 5), (5, 5)]
    assert [r.path for r in results] == [str(p) for p in paths]
    assert [r.label for r in results] == [None, None, None, "truck", "airplane"]
    assert all(r.error for r in results[:3]) and results[3].error is None and results[4].error is None


def test_classify_paths_defaults_five_labels_and_batches_of_64(models, images):
    model = Classifier(models["none"], provider="cpu")
    seen = []
    results = list(classify_paths(model, [images["mid"]] * 65, progress=lambda d, t: seen.append((d, t))))
    assert seen == [(64, 65), (65, 65)]
    assert len(results) == 65 and all(len(r.top_k) == 5 for r in results)


def test_classify_paths_unexpected_error_names_the_exception(models):
    """Anything prepare() did not foresee (here a NUL byte in the name) is one error row, not a crash."""
    model = Classifier(models["none"], provider="cpu")
    (r,) = classify_paths(model, [Path("bad\x00name.png")])
    assert r.label is None and r.error == "bad\x00name.png: unexpected error (ValueError: embedded null byte)"


@pytest.mark.parametrize(("cpus", "threads"), [(8, 4), (2, 2), (None, 1)])
def test_classify_paths_decodes_on_at_most_four_threads(models, images, monkeypatch, cpus, threads):
    """min(4, CPU count) decoding threads, 1 when the count is unknown. Each decode waits until the
    expected number of threads exists (so the pool must start them all), then lingers a little so that
    a pool allowed more threads would start more."""
    import cifar10kit.runtime.predict as predict

    used = set()
    gave_up = []  # the expected threads never came: wait no more (and fail below)
    started = threading.Condition()

    def slow_prepare(path):
        with started:
            used.add(threading.get_ident())
            started.notify_all()
            if not started.wait_for(lambda: len(used) >= threads or gave_up, timeout=2):
                gave_up.append(path)
        time.sleep(0.02)
        return prepare(path)

    model = Classifier(models["none"], provider="cpu")
    monkeypatch.setattr(predict, "prepare", slow_prepare)
    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    assert len(list(classify_paths(model, [images["mid"]] * 8))) == 8
    assert len(used) == threads and not gave_up


def test_collect_double_star_globs_recurse(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for rel in ("top.png", "a/one.png", "a/b/two.png"):
        _grey(tmp_path / rel, 9)
    got = collect([str(tmp_path / "**" / "*.png")])
    assert got == [tmp_path / "a" / "b" / "two.png", tmp_path / "a" / "one.png", tmp_path / "top.png"]


def test_progress_line_default_minimum_is_50_items(capsys):
    bar = ProgressLine("x", force=True)
    bar(1, 49)
    assert capsys.readouterr().err == ""
    bar(1, 50)  # exactly the minimum: shown
    assert capsys.readouterr().err.startswith("\rx [")


def test_progress_line_rate_and_eta(capsys):
    bar = ProgressLine("w", force=True, min_items=1)
    bar.t0 = time.perf_counter() - 0.5  # half a second ago: 100 done is ~200/s, 200 left is ~1 s
    bar(100, 300)
    bar(0, 300)  # nothing done yet: no rate, and no ETA rather than a division by zero
    first, second = capsys.readouterr().err.split("\r")[1:]
    m = re.fullmatch(r"w \[#{10} {20}\] 100/300 (\d+)/s ETA (\d+)s", first)
    assert m, first
    assert 140 <= int(m.group(1)) <= 200 and m.group(2) == "1", first
    assert re.fullmatch(r"w \[ {30}\] 0/300 0/s ETA 0s", second), second


# ----------------------------------------------------------------------------------------------
# `cifar10 predict`


def test_predict_json_and_csv_carry_uncertain(models, images, tmp_path):
    order = ["black", "white", "mid", "broken"]
    for model, want in ((models["half"], [True, False, True, False]), (models["edge"], [True, False, False, False])):
        out = tmp_path / "r.csv"
        proc = cli(
            "predict",
            *(str(images[n]) for n in order),
            "--model",
            str(model),
            "--provider",
            "cpu",
            "--json",
            "--csv",
            str(out),
            "-k",
            "2",
        )
        assert proc.returncode == 1, proc.stderr  # one input failed
        rows = [json.loads(line) for line in proc.stdout.splitlines()]
        assert [r["path"] for r in rows] == [str(images[n]) for n in order]
        assert [r["uncertain"] for r in rows] == want
        assert rows[3]["error"] and rows[3]["label"] is None and rows[0]["error"] is None
        table = list(csv.DictReader(out.open(encoding="utf-8")))
        assert [r["uncertain"] for r in table] == ["true" if u else "false" for u in want]
        assert [r["path"] for r in table] == [str(images[n]) for n in order]
    text = cli(
        "predict", str(images["black"]), str(images["white"]), "--model", str(models["half"]), "--provider", "cpu"
    )
    black, white = text.stdout.splitlines()
    assert "(uncertain: none of these?)" in black and "uncertain" not in white


def test_predict_corpus_folder(hostile_corpus, models):
    """Every scanned file of the hostile corpus gets exactly one JSON line; bad ones an error naming
    the file, good ones a label. Peak memory stays bounded (the 64 MP image is in there)."""
    root, cases = hostile_corpus
    wrapper = (
        "import resource, subprocess, sys\np = subprocess.run(sys.argv[1:])\n"
        "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
        "sys.exit(p.returncode)\n"
    )
    exe = shutil.which("cifar10", path=str(BIN)) or str(BIN / "cifar10")
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            wrapper,
            exe,
            "predict",
            str(root),
            "--json",
            "--model",
            str(models["half"]),
            "--provider",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=PREDICT_TIMEOUT_S,
        errors="surrogateescape",
    )
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-3000:])
    rss_mb = int(re.search(r"MAXRSS_KB (\d+)", proc.stderr).group(1)) / 1024
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    by_path = {}
    for row in rows:
        assert row["path"] not in by_path, f"two lines for {row['path']!r}"
        by_path[row["path"]] = row
    scanned = {str(c.path): c for c in cases if c.scanned}
    assert set(by_path) == set(scanned), set(by_path) ^ set(scanned)
    for path, case in scanned.items():
        row = by_path[path]
        if case.expected == "ok":
            assert row["error"] is None and row["label"] in CLASSES, row
            assert len(row["top_k"]) == 3 and 0.0 <= row["probability"] <= 1.0, row
            assert isinstance(row["uncertain"], bool)
        else:
            assert row["label"] is None and path in row["error"], row
    print(f"\npredict over the hostile corpus: {len(rows)} rows, peak RSS {rss_mb:.0f} MB")
    assert rss_mb < PREDICT_RSS_BOUND_MB, f"peak RSS {rss_mb:.0f} MB"


def test_predict_text_output_with_undecodable_names(hostile_corpus, models, tmp_path):
    """Human-readable output to a strict UTF-8 stdout (the usual desktop locale) and --csv must
    survive file names that are not valid UTF-8."""
    root, _ = hostile_corpus
    folder = tmp_path / "names"
    folder.mkdir()
    for name in (b"caf\xe9.png", b"ok.png"):
        shutil.copyfile(root / "reference.png", folder / os.fsdecode(name))
    proc = cli(
        "predict",
        str(folder),
        "--model",
        str(models["half"]),
        "--provider",
        "cpu",
        "--csv",
        str(tmp_path / "out.csv"),
        env={"PYTHONIOENCODING": "utf-8"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stdout.splitlines()) == 2
    assert len(list(csv.reader((tmp_path / "out.csv").open(encoding="utf-8", errors="surrogateescape")))) == 3
