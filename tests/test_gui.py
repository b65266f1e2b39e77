"""The desktop app in real Tk windows on a private Xvfb display.

Each test drives the app the way a person does (the tabs' public actions, which the buttons, dialogs
and keys call, and real key presses through xdotool), waits for the background work, and checks what
the window shows (the views' read-back methods) against the runtime's own answer. Screenshots of each
tab go to tests/artifacts/screenshots/. The tabs' plain-Python logic is tested without a window in
test_gui_logic.py.
"""

from __future__ import annotations

import csv
import dataclasses
import gc
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gui_helpers import DATA_DIR, build_tiny_model, have_cifar, press, pump_until, screenshot, xvfb

pytestmark = pytest.mark.gui


# ----------------------------------------------------------------------------------------------
# Fixtures: a display, a model, some image files, a window


@pytest.fixture(scope="session")
def display():
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed")
    pytest.importorskip("tkinter")
    old = os.environ.get("DISPLAY")
    with xvfb() as name:
        os.environ["DISPLAY"] = name
        yield name
    if old is None:
        os.environ.pop("DISPLAY", None)
    else:
        os.environ["DISPLAY"] = old


@pytest.fixture(scope="session")
def gui_model(request, tmp_path_factory) -> Path:
    """The shared `trained_model` fixture when conftest.py provides one, else a tiny model of our own."""
    try:
        return Path(request.getfixturevalue("trained_model"))
    except pytest.FixtureLookupError:
        pass
    if not have_cifar():
        pytest.skip("no CIFAR-10 data to train a test model: set CIFAR10_DATA")
    pytest.importorskip("torch")
    return build_tiny_model(tmp_path_factory.mktemp("gui-model"))


@pytest.fixture(scope="session")
def classifier(gui_model):
    from cifar10kit.runtime.session import Classifier

    return Classifier(gui_model, provider="cpu")


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory) -> Path:
    """A folder of images a user might have: CIFAR-sized PNGs, a wide JPEG, an RGBA PNG, and one
    corrupt file."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    if have_cifar():
        from cifar10kit.runtime.dataset import load_cifar10

        images, labels, names = load_cifar10(DATA_DIR, "test")
        picks = [(images[i], f"{i:02d}_{names[labels[i]]}") for i in range(4)]
    else:
        picks = [(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), f"{i:02d}_noise") for i in range(4)]
    for pixels, name in picks:
        Image.fromarray(pixels).save(folder / f"{name}.png")
    wide = Image.fromarray(picks[0][0]).resize((640, 400), Image.Resampling.BICUBIC)
    wide.save(folder / "10_wide.jpg", quality=90)
    rgba = Image.fromarray(np.dstack([picks[1][0], np.full((32, 32), 200, np.uint8)]), "RGBA")
    rgba.save(folder / "11_alpha.png")
    whole = (folder / f"{picks[0][1]}.png").read_bytes()
    (folder / "05_broken.png").write_bytes(whole[: len(whole) // 2])  # a download cut off halfway
    return folder


def good_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if "broken" not in p.name)


@pytest.fixture
def app(display, gui_model):
    from cifar10kit.gui.app import App

    a = App(model=gui_model, modal_errors=False, gallery_limit=600, data_dir=DATA_DIR, provider="cpu")
    a.root.geometry("1240x800+0+0")
    assert a.tasks.wait_idle(30), "the model did not load"
    assert a.model is not None, a.status.message()
    yield a
    a.close()
    # Background jobs end soon after close (a batch checks its cancel flag per image); wait for them
    # so none is left running into later tests.
    lanes = [t for t in threading.enumerate() if t.name.startswith("gui-")]
    for t in lanes:
        t.join(timeout=30)
    assert not [t.name for t in lanes if t.is_alive()], "a background job did not stop after close()"
    # Collect the closed window's Tk objects now, on this thread: if a worker thread's garbage
    # collection met them later, Tcl would abort the whole test process.
    gc.collect()


def expected_top(classifier, path: Path) -> set[str]:
    """The runtime's top class for one image, alone. The app classifies in batches, whose kernels
    round differently in the last bits, so classes tied within that noise all count (the tiny test
    model, trained anew each run, sometimes has near-ties)."""
    from cifar10kit.runtime.preprocess import prepare

    probs = classifier.run(prepare(path)).probs[0]
    return {classifier.class_names[i] for i in np.flatnonzero(probs >= probs.max() - 1e-4)}


# ----------------------------------------------------------------------------------------------
# Classify tab


def test_open_image_shows_what_the_runtime_predicts(app, classifier, image_dir):
    for path in good_images(image_dir):
        app.classify.open_image(path)
        assert app.tasks.wait_idle(10)
        assert app.classify.view.top_class() in expected_top(classifier, path), path.name
        assert not app.status.is_error(), app.status.message()
        assert path.name in app.status.message()
    # The model's view is the 32x32 input, enlarged with whole-number nearest-neighbour steps.
    view = app.classify.view.model_picture
    assert view is not None and view.width == view.height and view.width % 32 == 0
    # Small images are enlarged crisply: every shown pixel block is one source pixel.
    app.classify.open_image(good_images(image_dir)[0])
    app.tasks.wait_idle(10)
    shown = np.asarray(app.classify.view.picture)
    f = shown.shape[0] // 32
    assert f >= 2 and np.array_equal(shown[::f, ::f], np.asarray(app.classify.shown.display))


def test_ctrl_o_opens_the_file_chosen_in_the_dialog(app, classifier, image_dir, monkeypatch):
    from tkinter import filedialog

    target = good_images(image_dir)[2]
    asked = []

    def fake_dialog(**kwargs):
        asked.append(kwargs)
        return str(target)

    monkeypatch.setattr(filedialog, "askopenfilename", fake_dialog)
    press(app, "ctrl+o")
    assert pump_until(app, lambda: app.classify.shown is not None and app.classify.shown.source == str(target))
    app.tasks.wait_idle(10)
    assert asked, "Ctrl+O did not open the file dialog"
    assert app.classify.view.top_class() in expected_top(classifier, target)


def test_corrupt_file_is_reported_and_the_app_keeps_working(app, classifier, image_dir):
    app.classify.open_image(image_dir / "05_broken.png")
    app.tasks.wait_idle(10)
    assert app.status.is_error()
    assert "05_broken.png" in app.status.message() and "corrupt" in app.status.message()
    assert app.classify.shown is None and app.classify.view.picture is None
    # Next moves on past the bad file to its neighbour in the folder.
    press(app, "Right")
    app.tasks.wait_idle(10)
    neighbour = sorted(image_dir.iterdir())[sorted(image_dir.iterdir()).index(image_dir / "05_broken.png") + 1]
    assert app.classify.shown is not None and Path(app.classify.shown.source) == neighbour
    assert app.classify.view.top_class() in expected_top(classifier, neighbour)
    assert not app.status.is_error()
    # A missing file and a folder are errors too, never exceptions.
    for bad in (image_dir / "missing.png", image_dir):
        app.classify.open_image(bad)
        app.tasks.wait_idle(10)
        assert app.status.is_error(), bad


def test_window_stays_responsive_and_stale_results_are_dropped(app, image_dir, monkeypatch):
    from cifar10kit.gui import classify_jobs

    # The slow image decodes only when the test says so: no wall-clock bound, however busy the machine.
    real_load = classify_jobs.load_image
    release, slow_done = threading.Event(), threading.Event()

    def slow_load(path):
        if "00_" not in Path(path).name:
            return real_load(path)
        release.wait(60)
        try:
            return real_load(path)
        finally:
            slow_done.set()

    monkeypatch.setattr(classify_jobs, "load_image", slow_load)
    slow, fast = good_images(image_dir)[0], good_images(image_dir)[1]
    app.classify.open_image(slow)
    assert not slow_done.is_set(), "opening waited for the decoding on the Tk thread"
    ticks = []
    app.root.after(100, lambda: ticks.append(slow_done.is_set()))
    app.classify.open_image(fast)  # opened while the slow one is still decoding: the fast one must win
    assert pump_until(app, lambda: bool(ticks)), "the event loop stalled during decoding"
    assert ticks == [False]  # Tk ran its timers while the slow image was still being decoded
    release.set()
    assert app.tasks.wait_idle(10)
    assert app.classify.shown.source == str(fast)
    # Resizing the window re-renders the image to the new size.
    big = app.classify.view.picture.size
    app.root.geometry("1000x640")
    assert pump_until(app, lambda: app.classify.view.picture.size != big, timeout=3)
    assert app.classify.view.picture.width < big[0]


def test_left_right_walk_the_folder(app, image_dir):
    files = sorted(image_dir.iterdir())
    app.classify.open_image(files[0])
    app.tasks.wait_idle(10)
    press(app, "Right")
    app.tasks.wait_idle(10)
    assert Path(app.classify.shown.source) == files[1]
    press(app, "Left")
    press(app, "Left")  # wraps around to the last file
    app.tasks.wait_idle(10)
    assert Path(app.classify.shown.source) == files[-1]


def test_heatmap_toggle_and_class_choice_change_the_picture(app, image_dir):
    from cifar10kit.gui.classify_jobs import HEATMAP_METHOD

    path = image_dir / "10_wide.jpg"
    app.classify.open_image(path)
    app.tasks.wait_idle(10)
    assert app.model.info.has_cam
    plain = np.asarray(app.classify.view.picture).copy()
    screenshot(app, "classify")
    press(app, "h")
    assert app.classify.view.heatmap_on()
    assert app.tasks.wait_idle(10)  # the heatmap is computed in the background
    heat = np.asarray(app.classify.view.picture).copy()
    assert heat.shape == plain.shape and not np.array_equal(heat, plain)
    # The caption says which class and which method drew the map, and how fine it is.
    top = app.classify.view.top_class()
    caption = app.classify.view.caption()
    assert f"“{top}”" in caption and f"heatmap: {HEATMAP_METHOD}, " in caption, caption
    screenshot(app, "classify-heatmap")
    # A click on another class's bar shows that class's map.
    other = [n for n in app.model.class_names if n != top][0]
    app.classify.set_heat_class(other)
    assert app.tasks.wait_idle(10)
    assert app.classify.heat_class == other and f"“{other}”" in app.classify.view.caption()
    assert not np.array_equal(np.asarray(app.classify.view.picture), heat)
    press(app, "h")
    assert not app.classify.view.heatmap_on()
    assert np.array_equal(np.asarray(app.classify.view.picture), plain)


def test_paste_a_path_and_drop_a_file(app, classifier, image_dir):
    target = good_images(image_dir)[1]
    app.root.clipboard_clear()
    app.root.clipboard_append(str(target))
    press(app, "ctrl+v")
    assert pump_until(app, lambda: app.classify.shown is not None and app.classify.shown.source == str(target))
    app.tasks.wait_idle(10)
    assert app.classify.view.top_class() in expected_top(classifier, target)
    app.root.clipboard_clear()
    app.root.clipboard_append("not a path at all")
    app.classify.paste()
    app.tasks.wait_idle(10)
    assert app.status.is_error() and "not the path of an image" in app.status.message()

    # Drag and drop: the handler gets Tcl's list syntax (braces around paths with spaces).
    spaced = image_dir / "with space.png"
    shutil.copy(target, spaced)
    try:
        app.drop("{" + str(spaced) + "}")
        app.tasks.wait_idle(10)
        assert app.classify.shown.source == str(spaced)
    finally:
        spaced.unlink()
    # A dropped folder is classified in the Batch tab.
    app.drop(str(image_dir))
    assert app.tasks.wait_idle(20)
    assert app.current_tab() == "batch" and len(app.batch.view.rows()) == len(list(image_dir.iterdir()))
    try:
        import tkinterdnd2  # noqa: F401
    except ImportError:
        assert app.dnd_error is not None
    else:
        assert app.dnd_error is None, app.dnd_error


def test_uncertain_predictions_are_flagged(app, image_dir):
    model = app.model
    model.info = dataclasses.replace(model.info, uncertainty_threshold=None)  # never flagged
    app.classify.open_image(good_images(image_dir)[0])
    app.tasks.wait_idle(10)
    assert not app.classify.shown.uncertain and app.classify.view.warning() == ""
    model.info = dataclasses.replace(model.info, uncertainty_threshold=0.999)  # no prediction is that sure
    app.classify.open_image(good_images(image_dir)[0])
    app.tasks.wait_idle(10)
    assert app.classify.shown.uncertain
    assert "Uncertain" in app.classify.view.warning() and "none of these" in app.classify.view.warning()


# ----------------------------------------------------------------------------------------------
# Gallery tab


@pytest.mark.skipif(not have_cifar(), reason="no CIFAR-10 data: set CIFAR10_DATA")
def test_gallery_shows_test_images_and_filters_mistakes(app):
    from cifar10kit.runtime.dataset import load_cifar10

    images, labels, names = load_cifar10(DATA_DIR, "test")
    app.show_tab("gallery")
    assert app.tasks.wait_idle(30)
    g = app.gallery.images
    assert g is not None and len(g.labels) == 600 and g.done == 600
    cells = app.gallery.view.cells()
    assert len(cells) > 10
    for index, true, pred in cells:
        assert true == names[labels[index]]
        assert pred == app.model.class_names[int(np.argmax(app.model.run(images[index]).probs))]
    screenshot(app, "gallery")

    app.gallery.set_mistakes_only(True)
    mistakes = app.gallery.view.cells()
    assert mistakes and all(pred is not None and pred != true for _, true, pred in mistakes)
    screenshot(app, "gallery-mistakes")

    # A click on a cell inspects that image in the Classify tab; Right moves within the filter.
    first, true, pred = mistakes[0]
    app.gallery.inspect(first)
    app.tasks.wait_idle(10)
    assert app.current_tab() == "classify"
    assert app.classify.shown.gallery_index == first and app.classify.shown.true_label == true
    assert app.classify.view.top_class() == pred
    press(app, "Right")
    app.tasks.wait_idle(10)
    assert app.classify.shown.gallery_index == mistakes[1][0]


def test_gallery_shows_the_shipped_examples_without_a_data_folder(display, gui_model, tmp_path, monkeypatch):
    from cifar10kit.gui.app import App
    from cifar10kit.runtime.examples import example_images

    # No --data-dir, no $CIFAR10_DATA, an empty per-user cache: the gallery falls back to the examples.
    monkeypatch.delenv("CIFAR10_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path))
    app = App(model=gui_model, modal_errors=False, provider="cpu")
    try:
        app.root.geometry("1240x800+0+0")
        assert app.tasks.wait_idle(30)
        app.show_tab("gallery")
        assert app.tasks.wait_idle(30)
        examples = example_images()
        g = app.gallery.images
        assert g is not None and g.examples and len(g.labels) == len(examples) == 100
        first = app.gallery.view.cells()
        assert 0 < len(first) < len(examples)  # more than one page
        for index, true, pred in first:
            assert true == examples[index].label and pred is not None
        # Next page (the ▶ button's action, then the Right key), and back.
        app.gallery.turn(1)
        second = app.gallery.view.cells()
        assert second and second[0][0] == len(first)
        press(app, "Right")
        third = app.gallery.view.cells()
        assert third and third[0][0] > second[0][0]
        press(app, "Left")
        app.gallery.turn(-1)
        assert app.gallery.view.cells() == first
        # A cell opens in the Classify tab under its test-batch number.
        app.gallery.inspect(3)
        assert app.tasks.wait_idle(10)
        assert app.classify.shown.source == f"CIFAR-10 test image #{examples[3].test_index}"
        assert app.classify.shown.true_label == examples[3].label
    finally:
        app.close()


# ----------------------------------------------------------------------------------------------
# Batch tab


def test_batch_folder_table_sorting_and_csv(app, classifier, image_dir, tmp_path, monkeypatch):
    from tkinter import filedialog

    monkeypatch.setattr(filedialog, "askdirectory", lambda **kw: str(image_dir))
    press(app, "ctrl+b")
    assert app.current_tab() == "batch"
    assert pump_until(app, lambda: app.batch.running or bool(app.batch.view.rows()), timeout=5)
    assert app.tasks.wait_idle(30)
    rows = app.batch.view.rows()
    assert sorted(r["file"] for r in rows) == sorted(p.name for p in image_dir.iterdir())
    by_file = {r["file"]: r for r in rows}
    broken = by_file.pop("05_broken.png")
    assert broken["label"] == "" and "corrupt" in broken["error"]
    for name, row in by_file.items():
        assert row["label"] in expected_top(classifier, image_dir / name), name
        assert row["error"] == "" and row["probability"].endswith("%")
    assert "1 error" in app.status.message()
    screenshot(app, "batch")

    app.batch.sort("probability")
    app.batch.sort("probability")  # a second click reverses: most confident first
    probs = [r.probability for r in app.batch.results()]
    assert probs[-1] is None and probs[:-1] == sorted(probs[:-1], reverse=True)

    out = tmp_path / "predictions.csv"
    monkeypatch.setattr(filedialog, "asksaveasfilename", lambda **kw: str(out))
    app.batch.export_dialog()
    with open(out, newline="", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert [Path(r["path"]).name for r in table] == [r["file"] for r in app.batch.view.rows()]
    for r in table:
        if Path(r["path"]).name == "05_broken.png":
            assert r["label"] == "" and "corrupt" in r["error"]
        else:
            assert r["label"] in expected_top(classifier, Path(r["path"]))
            assert 0 < float(r["probability"]) <= 1 and r["top1_label"] == r["label"]
            assert r["provider"] == "CPUExecutionProvider"
    # A folder with no images says so instead of showing an empty table silently.
    empty = tmp_path / "empty"
    empty.mkdir()
    app.batch.start(empty)
    app.tasks.wait_idle(10)
    assert app.status.is_error() and "no images" in app.status.message()


# ----------------------------------------------------------------------------------------------
# Model tab


def test_bad_model_keeps_the_old_one(app, image_dir, tmp_path, monkeypatch):
    from tkinter import filedialog

    from cifar10kit.gui import text

    app.classify.open_image(good_images(image_dir)[0])
    app.tasks.wait_idle(10)
    good, before = app.model, app.model_tab.view.fields()
    assert before["Architecture"] == good.info.architecture
    assert "%" in before["Test accuracy"] and "ms" in before["Last prediction"]
    assert before["Provider"] == "CPUExecutionProvider"
    # The tiny test model was verified on 200 images, too few to calibrate; the tab says so.
    assert good.info.temperature == 1.0 and before["Calibration"].startswith("none")
    assert "0.496" in text.calibration_text(0.496)
    app.show_tab("model")
    screenshot(app, "model")

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"definitely not protobuf")
    not_ours = tmp_path / "image-as-model.onnx"
    shutil.copy(good_images(image_dir)[0], not_ours)
    for path in (bad, not_ours, tmp_path / "missing.onnx"):
        monkeypatch.setattr(filedialog, "askopenfilename", lambda p=path, **kw: str(p))
        app.model_tab.open_dialog()  # what the "Open model…" button does
        app.tasks.wait_idle(10)
        assert app.model is good
        assert app.status.is_error() and "Could not open the model" in app.status.message()
        assert good.path.name in app.status.message()  # says which model is still in use
        assert app.model_tab.view.fields() == before
    # The app still classifies with the old model.
    app.classify.open_image(good_images(image_dir)[1])
    app.tasks.wait_idle(10)
    assert app.classify.view.top_class() is not None and app.classify.shown.model is good


def test_starts_without_a_model_and_loads_one_later(display, gui_model, image_dir, tmp_path):
    from cifar10kit.gui.app import App

    app = App(model=tmp_path / "none.onnx", modal_errors=False)
    try:
        app.tasks.wait_idle(10)
        assert app.model is None and app.status.is_error()
        app.classify.open_image(good_images(image_dir)[0])  # shown without a prediction
        app.tasks.wait_idle(10)
        assert app.classify.shown is not None and app.classify.view.top_class() is None
        app.model_tab.load(gui_model)
        app.tasks.wait_idle(10)
        assert app.classify.view.top_class() is not None  # the shown image was classified once a model arrived
    finally:
        app.close()


def test_thread_count_reaches_the_session(display, gui_model):
    from cifar10kit.gui.app import App
    from cifar10kit.main import build_parser

    args = build_parser().parse_args(["gui", "--threads", "1"])
    assert args.threads == 1
    app = App(model=gui_model, modal_errors=False, provider="cpu", threads=args.threads)
    try:
        assert app.tasks.wait_idle(30) and app.model is not None
        assert app.model.session.get_session_options().intra_op_num_threads == 1
    finally:
        app.close()


def test_closing_waits_briefly_for_running_jobs(display):
    import tkinter as tk

    from cifar10kit.gui.tasks import Tasks

    root = tk.Tk()
    try:
        started, finished, release = threading.Event(), threading.Event(), threading.Event()

        def short_job() -> None:
            started.set()
            time.sleep(0.3)
            finished.set()

        tasks = Tasks(root, on_error=lambda e: None)
        tasks.submit("work", short_job)
        assert started.wait(5)
        tasks.close()
        assert finished.is_set()  # close let the running job end (no teardown under a live inference)

        stuck = Tasks(root, on_error=lambda e: None)
        stuck.submit("work", lambda: release.wait(30))
        t0 = time.monotonic()
        stuck.close(grace=0.2)
        assert time.monotonic() - t0 < 5  # but never hangs on a job that does not end
    finally:
        release.set()
        root.destroy()


# ----------------------------------------------------------------------------------------------
# Process-level: no PyTorch, fast start, clean failure without a display


def test_app_starts_without_torch_through_its_startup_benchmark(display, gui_model):  # display: skips without Xvfb
    """benchmarks/app_startup.py: a cold process shows a prediction and never imports torch.

    How fast is for the benchmark to print (docs/BENCHMARKS.md); this checks what it measures."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "app_startup.py"
    cmd = [sys.executable, str(script), "--runs", "1", "--model", str(gui_model), "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["imports_torch"] is False and out["runs"] == 1
    moments = [out["seconds"][m]["median"] for m in ("imported", "window", "model", "prediction")]
    assert 0 < moments[0] and moments == sorted(moments), moments  # in the order the app reaches them


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X11 only")
def test_main_without_a_display_fails_cleanly(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    proc = subprocess.run(
        [sys.executable, "-c", "import sys, cifar10kit.gui.app as g; sys.exit(g.main())"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 1
    assert "cannot open a window" in proc.stderr and "Traceback" not in proc.stderr
