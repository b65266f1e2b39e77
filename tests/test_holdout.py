"""`train --holdout N`: training images set aside for decisions, and the exporter calibrating on them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import cli, has_torch, one_line_error, smoke_train_args

pytestmark = pytest.mark.skipif(not has_torch(), reason="needs the [train] extra (torch)")


def test_holdout_split_is_balanced_fixed_nested_and_disjoint():
    from cifar10kit.train.data import HoldoutError, holdout_split

    rng = np.random.default_rng(5)
    labels = rng.choice(10, 3000, p=[0.3, 0.2, 0.1, 0.1, 0.1, 0.05, 0.05, 0.04, 0.03, 0.03])
    kept, held = holdout_split(labels, 200)
    assert len(held) == 200 and len(kept) == 2800
    assert np.array_equal(np.sort(np.concatenate([kept, held])), np.arange(3000))
    assert (np.diff(held) > 0).all() and (np.diff(kept) > 0).all()
    counts = np.bincount(labels[held], minlength=10)
    assert counts.max() - counts.min() <= 1, counts  # 20 of each class, though the classes are not equal
    np.random.seed(123)  # the global generator plays no part
    assert np.array_equal(holdout_split(labels, 200)[1], held)
    # Not simply the first or last images, and a larger holdout only adds images to a smaller one.
    assert not np.array_equal(held, np.arange(200)) and not np.array_equal(held, np.arange(2800, 3000))
    assert np.isin(holdout_split(labels, 120)[1], held).all()
    # A class with fewer images than its share gives what it has; the other classes make up the rest.
    few = np.array([0] * 3 + [1] * 97)
    _, held_few = holdout_split(few, 40)
    assert np.bincount(few[held_few], minlength=2).tolist() == [3, 37]
    for n in (0, -1, 3000, 5000):
        with pytest.raises(HoldoutError, match="hold out fewer"):
            holdout_split(labels, n)


def test_held_out_images_never_reach_training(tiny_cifar):
    import torch

    from cifar10kit.runtime.dataset import load_cifar10
    from cifar10kit.train.config import make_config
    from cifar10kit.train.data import epoch_batches, holdout_split, load_data

    cfg = make_config("smoke", data_dir=str(tiny_cifar), subset=600, holdout=150, translate=0, batch_size=50)
    data = load_data(cfg, torch.device("cpu"))
    assert len(data.train_x) == 450 and len(data.holdout_x) == 150
    x, y, _ = load_cifar10(str(tiny_cifar), "train")
    _, held = holdout_split(y[:600], 150)
    assert np.array_equal(data.holdout_y.numpy(), y[held])

    def keys(images: torch.Tensor) -> set[bytes]:  # each image and its mirror, as training may flip it
        return {im.numpy().tobytes() for im in images} | {im.flip(-1).numpy().tobytes() for im in images}

    held_keys = keys(data.holdout_x)
    seen = [im.numpy().tobytes() for epoch in range(2) for b, _, _ in epoch_batches(data, cfg, epoch) for im in b]
    assert len(seen) == 2 * 450 and not held_keys & set(seen)


def test_a_run_reports_its_holdout_and_export_calibrates_on_it(tiny_cifar, tmp_path):
    """tiny_cifar has 200 test images, too few to calibrate on (500): a calibrated file proves the
    exporter used the 500 held-out training images, and says so in the file."""
    from cifar10kit.export.exporter import export
    from cifar10kit.runtime import contract
    from cifar10kit.runtime.session import Classifier

    proc = cli(*smoke_train_args(tiny_cifar, tmp_path, "--subset", "0", "--holdout", "500", "--name", "h"))
    assert proc.returncode == 0, proc.stderr
    assert "500 training images held out" in proc.stdout and "held-out training images:" in proc.stdout
    run = tmp_path / "h"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["holdout_images"] == 500 and 0 <= summary["holdout_acc"] <= 1
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(r["holdout_acc"] is not None for r in rows)
    assert json.loads((run / "config.json").read_text())["holdout"] == 500

    result = export(run, tmp_path / "h.onnx", data_dir=str(tiny_cifar), log=lambda *_: None)
    fit = result["calibration"]
    assert fit["fit_images"] == fit["held_out_images"] == 250
    meta = result["metadata"]
    assert meta[contract.KEY_CALIBRATION_SET].startswith("500 CIFAR-10 training images held out")
    assert float(meta[contract.KEY_TEMPERATURE]) == pytest.approx(fit["temperature"], abs=1e-4)
    assert meta[contract.KEY_THRESHOLD] != ""
    info = Classifier(tmp_path / "h.onnx", provider="cpu").info
    assert info.calibration_set == meta[contract.KEY_CALIBRATION_SET]

    # A run without a holdout, on the same data: 200 test images are too few for a temperature, and the
    # uncertainty threshold comes from them.
    assert cli(*smoke_train_args(tiny_cifar, tmp_path, "--subset", "0", "--name", "all")).returncode == 0
    plain = export(tmp_path / "all", tmp_path / "all.onnx", data_dir=str(tiny_cifar), log=lambda *_: None)
    assert plain["calibration"] == {}
    assert plain["metadata"][contract.KEY_CALIBRATION_SET] == "CIFAR-10 test batch, 200 images"


def test_holdout_flag_errors_are_one_line(tiny_cifar, tmp_path):
    bad = cli(*smoke_train_args(tiny_cifar, tmp_path, "--holdout", "-3"))
    assert bad.returncode == 2
    one_line_error(bad, "--holdout -3", "0 or more")
    too_many = cli(*smoke_train_args(tiny_cifar, tmp_path, "--subset", "400", "--holdout", "400"))
    assert too_many.returncode == 2
    one_line_error(too_many, "--holdout 400", "400 training images", "hold out fewer")
    assert not list(tmp_path.iterdir())  # no run folder left behind


def test_a_teacher_that_saw_the_held_out_images_is_named(trained_run, capsys):
    from cifar10kit.train.checkpoint import load_model
    from cifar10kit.train.distill import teacher_probs

    images = np.zeros((4, 32, 32, 3), np.uint8)
    _, ckpt = load_model(trained_run)
    teacher_probs([str(trained_run)], images, ckpt["class_names"], holdout=300)
    assert "trained with --holdout 0, this run holds out 300" in capsys.readouterr().out
    teacher_probs([str(trained_run)], images, ckpt["class_names"], holdout=0)
    assert "holds out" not in capsys.readouterr().out
