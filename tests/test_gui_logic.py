"""The app's plain-Python parts, without a window: gallery filtering and paging, where the gallery's
images come from, paths from pasted or dropped text, the texts the tabs show, batch sorting."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cifar10kit.gui import gallery_pages as pages
from cifar10kit.gui import inputs, text
from cifar10kit.gui.gallery_pages import GalleryImages
from cifar10kit.runtime.predict import Result

NAMES = ("cat", "dog", "frog")


def gallery(labels: list[int], preds: list[int]) -> GalleryImages:
    n = len(labels)
    g = GalleryImages(np.zeros((n, 32, 32, 3), np.uint8), np.array(labels), NAMES, np.arange(100, 100 + n), "t", False)
    g.preds[:] = preds
    g.done = int((g.preds >= 0).sum())
    return g


# ----------------------------------------------------------------------------------------------
# Gallery: filtering and paging


def test_mistakes_match_classes_by_name_not_column():
    g = gallery([0, 1, 2, 0, 1], [0, 2, 2, -1, 1])
    assert pages.mistakes(g, NAMES).tolist() == [False, True, False, False, False]
    # A model whose columns are in another order: column 0 is "dog", so predicting 0 for a dog is right.
    assert pages.mistakes(g, ("dog", "cat", "frog")).tolist() == [True, True, False, False, True]
    # Classes the gallery does not know are always mistakes.
    assert pages.mistakes(g, ("plane", "ship", "frog")).tolist() == [True, True, False, False, True]


def test_visible_and_paging():
    g = gallery([0, 1, 2, 0, 1, 2, 0], [1, 1, 2, 2, 1, 0, -1])
    assert pages.visible(g, NAMES, False).tolist() == list(range(7))
    assert pages.visible(g, NAMES, True).tolist() == [0, 3, 5]
    assert pages.visible(g, None, True).tolist() == list(range(7))  # no model: nothing to filter by
    assert pages.visible(None, NAMES, False).tolist() == []
    everything = pages.visible(g, NAMES, False)
    assert [p.tolist() for p in pages.paginate(everything, 0, 3)[2:]] == [[0, 1, 2]]
    page, count, on_page = pages.paginate(everything, 2, 3)
    assert (page, count, on_page.tolist()) == (2, 3, [6])
    page, count, on_page = pages.paginate(everything, 9, 3)  # past the end: the last page
    assert (page, count, on_page.tolist()) == (2, 3, [6])
    page, count, on_page = pages.paginate(everything, -4, 3)
    assert (page, count, on_page.tolist()) == (0, 3, [0, 1, 2])
    assert pages.paginate(np.zeros(0, np.int64), 0, 3)[:2] == (0, 1)


def test_step_within_wraps_and_recovers_after_a_filter_change():
    shown = np.array([2, 5, 9])
    assert pages.step_within(shown, 5, 1) == 9
    assert pages.step_within(shown, 9, 1) == 2  # wraps
    assert pages.step_within(shown, 2, -1) == 9
    assert pages.step_within(shown, 6, 1) == 9  # 6 is no longer shown: the next one after it
    assert pages.step_within(shown, 6, -1) == 5
    assert pages.step_within(shown, 10, 1) == 2
    assert pages.step_within(np.zeros(0, np.int64), 3, 1) is None


def test_page_changes_only_when_its_images_are_classified():
    assert pages.page_changes([], 0, 10, False, 40)
    assert pages.page_changes([10, 11, 12], 0, 11, False, 40)
    assert not pages.page_changes([10, 11, 12], 13, 256, False, 40)
    assert pages.page_changes([3, 7], 100, 200, True, 40)  # a mistakes page with room
    assert not pages.page_changes(list(range(40)), 100, 200, True, 40)


def test_summary_counts_progress_accuracy_and_mistakes():
    g = gallery([0, 1, 2, 0], [0, 2, -1, -1])
    assert pages.summary(g, NAMES) == "classified 2 / 4 · accuracy 50.0% · 1 mistakes"
    assert pages.summary(g, None) == "4 test images · no model loaded"
    g.preds[:] = [0, 1, 2, 1]
    g.done = 4
    assert pages.summary(g, NAMES) == "4 images · accuracy 75.0% · 1 mistakes"
    assert g.name(2) == "CIFAR-10 test image #102"


# ----------------------------------------------------------------------------------------------
# Gallery: where the images come from


def fake_data_dir(root: Path) -> Path:
    (root / "cifar-10-batches-py").mkdir(parents=True)
    (root / "cifar-10-batches-py" / "test_batch").write_bytes(b"x")
    return root


def test_data_folder_order_flag_then_environment_then_cache(tmp_path, monkeypatch):
    flag, env = fake_data_dir(tmp_path / "flag"), fake_data_dir(tmp_path / "env")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CIFAR10_DATA", raising=False)
    assert pages.find_data_dir(None) is None
    cache = fake_data_dir(tmp_path / "xdg" / "cifar10kit")
    assert pages.find_data_dir(None) == cache
    monkeypatch.setenv("CIFAR10_DATA", str(env))
    assert pages.find_data_dir(None) == env
    assert pages.find_data_dir(flag) == flag
    assert pages.find_data_dir(flag / "cifar-10-batches-py") == flag  # the inner folder works too
    assert pages.find_data_dir(tmp_path / "nothing-here") == env  # a flag without data falls through


def test_shipped_examples_load_with_their_test_numbers():
    from cifar10kit.runtime.examples import example_images

    g = pages.load_shipped_examples()
    examples = example_images()
    assert g.examples and g.images.shape == (len(examples), 32, 32, 3) and g.images.dtype == np.uint8
    assert [g.class_names[i] for i in g.labels] == [e.label for e in examples]
    assert g.name(0) == f"CIFAR-10 test image #{examples[0].test_index}"
    assert (g.preds == -1).all() and g.done == 0
    assert str(len(examples)) in pages.examples_note()
    assert pages.summary(g, None) == f"{len(examples)} examples · no model loaded"


# ----------------------------------------------------------------------------------------------
# Paths from pasted and dropped text


def test_as_path_reads_plain_quoted_and_uri_forms():
    assert inputs.as_path("  /a/b.png \n") == Path("/a/b.png")
    assert inputs.as_path('"/a/with space.png"') == Path("/a/with space.png")
    assert inputs.as_path("'/a/b.png'") == Path("/a/b.png")
    assert inputs.as_path("file:///a/with%20space.png") == Path("/a/with space.png")
    assert inputs.as_path("~/x.png") == Path.home() / "x.png"
    assert inputs.as_path("   ") is None


def test_paste_candidates_prefer_clipboard_files_then_the_first_text_line():
    got = inputs.paste_candidates(["/c/one.png", Path("/c/two.png")], "/t/first.png\n/t/second.png")
    assert got == [Path("/c/one.png"), Path("/c/two.png"), Path("/t/first.png")]
    assert inputs.paste_candidates(None, None) == []
    assert inputs.paste_candidates(Image.new("RGB", (2, 2)), "file:///x/y.jpg") == [Path("/x/y.jpg")]


def test_folder_images_sorted_without_hidden_or_other_files(tmp_path):
    for name in ("b.PNG", "a.jpg", "C.webp", ".hidden.png", "notes.txt", "._a.jpg"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "folder.png").mkdir()
    assert [p.name for p in inputs.folder_images(tmp_path)] == ["a.jpg", "b.PNG", "C.webp"]
    assert inputs.folder_images(tmp_path / "missing") == []


# ----------------------------------------------------------------------------------------------
# Texts


def test_small_texts():
    assert text.plural(1, "error") == "1 error" and text.plural(1200, "image") == "1,200 images"
    assert text.short_provider("CUDAExecutionProvider") == "CUDA"
    assert text.relative("/d/sub/x.png", Path("/d")) == "sub/x.png"
    assert text.relative("/e/x.png", Path("/d")) == "/e/x.png"
    assert text.without_prefix("/d/x.png: corrupt", "/d/x.png") == "corrupt"
    assert text.without_prefix("other: corrupt", "/d/x.png") == "other: corrupt"
    assert text.prediction_detail(0.875, None, "cat") == "87.5% confident"
    assert text.prediction_detail(0.5, "dog", "cat").endswith("true label: dog ✗")
    assert "50%" in text.uncertain_warning(0.5) and "none of these" in text.uncertain_warning(0.5)
    assert "not the path" in text.paste_failure("hello") and "no image" in text.paste_failure("  ")
    assert text.latency(None) == "no prediction yet"
    assert text.latency(0.0021) == "2.1 ms (one image)"
    assert "0.496" in text.calibration_text(0.496) and text.calibration_text(None).startswith("none")
    both = text.calibration_text(0.514, {"threshold": 0.95, "temperatures": [0.514, 0.493]})
    assert "0.514 (first net alone) and 0.493 (every net)" in both
    assert text.threshold_text(0.4).startswith("40.0%") and text.threshold_text(0.0).startswith("none")


def test_heat_caption_names_class_method_and_grid():
    assert text.heat_caption(None, None, None).startswith("Heatmap off")
    assert "computing" in text.heat_caption("cat", None, None)
    caption = text.heat_caption("cat", "occlusion", "8×8")
    assert "“cat”" in caption and "heatmap: occlusion, 8×8" in caption


def test_batch_cells():
    ok = Result("/d/x.png", "cat", 0.91234, [("cat", 0.91234)], uncertain=True)
    bad = Result("/d/y.png", error="/d/y.png: corrupt or truncated image")
    assert text.batch_cells(ok) == ("cat", "91.2%", "yes", "")
    assert text.batch_cells(bad) == ("", "", "", "corrupt or truncated image")
    assert text.batch_progress(3, 10, 1) == "3 / 10 images · 1 error"


def test_batch_sorting():
    from cifar10kit.gui.batch import sorted_ids

    results = {
        "0": Result("/d/B.png", "dog", 0.5),
        "1": Result("/d/a.png", error="bad"),
        "2": Result("/d/c.png", "cat", 0.9, uncertain=True),
    }
    assert sorted_ids(results, "#0", False) == ["1", "0", "2"]
    assert sorted_ids(results, "probability", True) == ["2", "0", "1"]
    assert sorted_ids(results, "label", False) == ["2", "0", "1"]  # failed files last
    assert sorted_ids(results, "error", False) == ["1", "0", "2"]


def test_model_files_are_named_by_where_they_are(tmp_path, monkeypatch):
    from cifar10kit.runtime.session import DEFAULT_MODEL

    home, elsewhere = tmp_path / "home", tmp_path / "srv"
    (home / "models").mkdir(parents=True)
    elsewhere.mkdir()
    monkeypatch.setenv("HOME", str(home))
    mine, theirs = home / "models" / "mine.onnx", elsewhere / "theirs.onnx"
    mine.write_bytes(b"x" * 1_260_000)
    theirs.write_bytes(b"")
    assert text.file_text(mine) == f"{Path('~', 'models', 'mine.onnx')}  (1.3 MB)"  # decimal MB, as the docs say
    assert text.file_text(theirs) == f"{theirs.resolve()}  (0.0 MB)"
    assert text.file_text(DEFAULT_MODEL).startswith("default.onnx, shipped with the app")


def test_model_fields_are_labelled_once_and_read_the_model():
    from cifar10kit.runtime.session import Classifier

    empty = text.model_fields(None, "no prediction yet")
    assert tuple(empty) == text.MODEL_FIELDS and empty["File"] == text.NO_MODEL
    assert all(v == "—" for k, v in empty.items() if k != "File")
    model = Classifier(provider="cpu")  # the shipped model
    fields = text.model_fields(model, "2.0 ms")
    assert tuple(fields) == text.MODEL_FIELDS and fields[text.LATENCY_FIELD] == "2.0 ms"
    info = model.info
    assert fields["Architecture"] == info.architecture and fields["Precision"] == info.precision
    assert fields["Test accuracy"] == f"{info.test_accuracy * 100:.2f}%"
    assert fields["Provider"] == "CPUExecutionProvider"
    assert fields["Test-time augmentation"] == info.tta_summary
    staged = dataclasses.replace(info, tta="none", cascade={**info.cascade, "tta": ["none", "translate"]})
    assert staged.tta_summary == "none; translate for the nets that join when the first is unsure"
    assert dataclasses.replace(info, tta="flip", cascade={}).tta_summary == "flip"
    assert fields["File"].startswith("default.onnx, shipped with the app  (") and fields["File"].endswith(" MB)")
    recipe = text.recipe_text(model)
    assert all(key in recipe for key in info.recipe)
    model.info = dataclasses.replace(info, recipe={}, seed=None, checkpoint_sha256=None)
    assert text.recipe_text(model) == "(not recorded in this file)"
    # An ensemble's members each under a heading, their settings indented, one a line.
    pair = {"member 1": {"epochs": 30, "cutout": 12}, "member 2": {"epochs": 30, "robust_mix": {"jpeg": 0.6}}}
    model.info = dataclasses.replace(info, recipe=pair, seed=None, checkpoint_sha256=None)
    assert text.recipe_text(model).splitlines() == [
        "member 1",
        "  epochs  30",
        "  cutout  12",
        "member 2",
        "  epochs      30",
        '  robust_mix  {"jpeg": 0.6}',
    ]


@pytest.mark.parametrize("size", [(640, 400), (400, 640), (32, 32), (33, 32)])
def test_the_app_outlines_the_square_the_model_sees(size):
    from cifar10kit.runtime.preprocess import center_square, fit

    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    box = center_square(size)
    assert box[2] - box[0] == box[3] - box[1] == min(size)
    # fit() crops exactly that square before resizing.
    assert np.array_equal(np.asarray(fit(img)), np.asarray(fit(img.crop(box))))


def test_heatmaps_of_every_class_come_from_the_runtime_in_one_job():
    from cifar10kit.gui.classify_jobs import HEATMAP_METHOD, compute_heatmaps, open_file, predict
    from cifar10kit.runtime.examples import example_images
    from cifar10kit.runtime.session import Classifier

    model = Classifier(provider="cpu")
    opened = open_file(example_images()[0].path, model)
    assert opened.error is None and opened.shown is not None and opened.shown.probs is not None
    maps = compute_heatmaps(model, opened.shown)
    assert list(maps) == list(model.class_names)
    for heat in maps.values():
        assert heat.method == HEATMAP_METHOD and heat.values.shape == (32, 32) and "×" in heat.grid
    # A new prediction (another model) starts with no heatmaps: they belong to the model that drew them.
    opened.shown.heatmaps.update(maps)
    assert predict(model, opened.shown).heatmaps == {}
