"""Distillation (`cifar10 train --teacher MODEL.onnx`): targets, the teachers' cache, and a student that
learns from a teacher where the labels teach nothing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest

from conftest import (
    BIN,
    assert_same_run,
    cli,
    has_torch,
    make_contract_model,
    one_line_error,
    smoke_train_args,
    synthetic_images,
    write_batch,
)

pytestmark = pytest.mark.skipif(not has_torch(), reason="needs the [train] extra (torch)")

STUDENT = ("--epochs", "6", "--subset", "1000", "--batch-size", "100", "--tta", "none", "--threads", "1")


def scrambled_copy(tiny_cifar, root):
    """tiny_cifar with every training label shuffled among the images: labels that teach nothing.
    The test batch keeps its true labels."""
    folder = root / "cifar-10-batches-py"
    shutil.copytree(tiny_cifar / "cifar-10-batches-py", folder)
    rng = np.random.default_rng(7)
    for i in range(1, 6):
        images, labels = synthetic_images(200, i)  # what make_tiny_cifar wrote
        write_batch(folder / f"data_batch_{i}", images, rng.permutation(labels))
    return root


def train_images(tiny_cifar) -> np.ndarray:
    from cifar10kit.runtime.dataset import load_cifar10

    return load_cifar10(str(tiny_cifar), "train")[0][:1000]


def test_targets_mix_the_teacher_with_the_smoothed_label():
    import torch
    import torch.nn.functional as F

    from cifar10kit.train.distill import targets

    labels = torch.tensor([0, 3])
    teacher = torch.tensor([[0.5, 0.5, 0, 0], [0, 0, 0.1, 0.9]])
    t = targets(labels, teacher, weight=0.5, smoothing=0.2)
    assert torch.allclose(t.sum(1), torch.ones(2))
    assert torch.allclose(t[0], torch.tensor([0.675, 0.275, 0.025, 0.025]))
    assert torch.allclose(targets(labels, teacher, 1.0, 0.2), teacher)
    # Weight 0 is the loss of a run without a teacher, label smoothing included.
    logits = torch.randn(2, 4)
    plain = F.cross_entropy(logits, labels, label_smoothing=0.2)
    assert torch.allclose(F.cross_entropy(logits, targets(labels, teacher, 0.0, 0.2)), plain)


def test_temperature_softens_without_reordering_and_matches_the_label_confidence():
    from cifar10kit.train.distill import matching_temperature, soften

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 8, (2000, 10))  # confident, like a teacher on its own training images
    probs = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    assert np.allclose(soften(probs, 1.0), probs, atol=1e-6)
    warm = soften(probs, 3.0)
    assert np.allclose(warm.sum(1), 1, atol=1e-5)
    assert (warm.argsort(1)[:, -3:] == probs.argsort(1)[:, -3:]).all()  # the same leading classes
    assert warm.max(1).mean() < probs.max(1).mean()
    assert np.allclose(soften(probs, 1e4), 0.1, atol=1e-3)  # very hot: uniform
    t = matching_temperature(probs, 0.82)
    assert t > 1 and abs(soften(probs, t).max(1).mean() - 0.82) < 2e-3


def test_teachers_are_averaged_and_must_share_the_classes(trained_model, tiny_cifar, tmp_path):
    from cifar10kit.runtime.session import Classifier
    from cifar10kit.train.distill import TeacherError, teacher_probs

    images = train_images(tiny_cifar)[:300]
    probe = make_contract_model(tmp_path / "probe.onnx")
    names = Classifier(trained_model, provider="cpu").class_names
    mean = teacher_probs([str(trained_model), str(probe)], images, names)
    expected = (
        Classifier(trained_model, provider="cpu").predict_probs(images)
        + Classifier(probe, provider="cpu").predict_probs(images)
    ) / 2
    assert mean.shape == (300, 10) and mean.dtype == np.float32
    assert np.allclose(mean, expected, atol=1e-5)

    other = make_contract_model(tmp_path / "other.onnx", meta={"class_names": json.dumps([f"k{i}" for i in range(10)])})
    with pytest.raises(TeacherError, match="same classes in the same order"):
        teacher_probs([str(other)], images, names)

    # Every teacher is checked before any runs: a bad second one fails at once, not after the first's work.
    class Untouchable(np.ndarray):
        def __getitem__(self, index):
            raise AssertionError("a teacher ran before every teacher was checked")

    with pytest.raises(TeacherError, match="other.onnx predicts"):
        teacher_probs([str(trained_model), str(other)], images.view(Untouchable), names)
    with pytest.raises(TeacherError, match="no such model file"):
        teacher_probs([str(tmp_path / "missing.onnx")], images, names)


def test_a_finished_run_teaches_as_its_flip_export_does(trained_run, export_variant, tiny_cifar, tmp_path):
    """A run folder or its model.pt is a teacher too (PyTorch on the training device): the same
    probabilities as the run exported with flip TTA and run by onnxruntime."""
    from cifar10kit.runtime.session import Classifier
    from cifar10kit.train.distill import TeacherError, teacher_probs

    images = train_images(tiny_cifar)[:300]
    flip_onnx = export_variant("fp32", "flip")[0]
    names = Classifier(flip_onnx, provider="cpu").class_names
    expected = Classifier(flip_onnx, provider="cpu").predict_probs(images)
    for teacher in (trained_run, trained_run / "model.pt"):
        probs = teacher_probs([str(teacher)], images, names)
        assert probs.shape == (300, 10)
        assert np.abs(probs - expected).max() < 1e-4
    both = teacher_probs([str(trained_run), str(flip_onnx)], images, names)
    assert np.allclose(both, expected, atol=1e-4)

    (tmp_path / "empty").mkdir()
    with pytest.raises(TeacherError, match="no model.pt or last.pt"):
        teacher_probs([str(tmp_path / "empty")], images, names)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TeacherError, match="junk.pt: (refused|not a readable checkpoint)"):
        teacher_probs([str(tmp_path / "junk.pt")], images, names)


def test_an_unreadable_or_stale_cache_is_recomputed(tmp_path, tiny_cifar):
    from cifar10kit.runtime.session import Classifier
    from cifar10kit.train.distill import CACHE_NAME, load_or_compute

    images = train_images(tiny_cifar)[:64]
    probe = make_contract_model(tmp_path / "probe.onnx")
    expected = Classifier(probe, provider="cpu").predict_probs(images)
    names = Classifier(probe, provider="cpu").class_names
    for damage in (b"not an npy file", None):
        if damage is None:
            np.save(tmp_path / CACHE_NAME, np.zeros((5, 10), np.float32))  # another run's shape
        else:
            (tmp_path / CACHE_NAME).write_bytes(damage)
        assert np.allclose(load_or_compute(tmp_path, [str(probe)], images, names), expected, atol=1e-6)
    np.save(tmp_path / CACHE_NAME, expected * 0 + 0.1)  # a sound cache is read, not recomputed
    assert np.allclose(load_or_compute(tmp_path, [str(tmp_path / "gone.onnx")], images, names), 0.1)


def test_student_learns_from_the_teacher_where_labels_teach_nothing(trained_model, tiny_cifar, tmp_path):
    """Shuffled training labels: alone they leave the student at chance; with the teacher's probabilities
    as its targets (weight 1) it learns what the teacher knows, and is measured on the true test labels."""
    from cifar10kit.runtime.session import Classifier

    data = scrambled_copy(tiny_cifar, tmp_path / "data")
    teacher_acc = float(Classifier(trained_model, provider="cpu").info.raw["test_accuracy"])
    assert teacher_acc > 0.5, "the tiny teacher must know something for this test to mean anything"

    alone = cli(*smoke_train_args(data, tmp_path, *STUDENT, "--name", "alone"))
    assert alone.returncode == 0, alone.stderr
    taught = cli(
        *smoke_train_args(
            data, tmp_path, *STUDENT, "--name", "taught", "--teacher", str(trained_model), "--distill", "1"
        )
    )
    assert taught.returncode == 0, taught.stderr
    assert "distilling from 1 teacher(s) at weight 1.0" in taught.stdout
    assert "teacher temperature" in taught.stdout and "mean top-1 probability 0.820" in taught.stdout

    acc = {n: json.loads((tmp_path / n / "summary.json").read_text())["test_acc"] for n in ("alone", "taught")}
    assert acc["alone"] < 0.3, acc  # ten classes: chance is 0.1
    assert acc["taught"] > 0.8 * teacher_acc, (acc, teacher_acc)

    # The run keeps what the teacher said about each of its training images, and where the teacher is.
    cached = np.load(tmp_path / "taught" / "teacher_probs.npy", allow_pickle=False)
    direct = Classifier(trained_model, provider="cpu").predict_probs(train_images(data))
    assert np.allclose(cached, direct, atol=1e-5)
    config = json.loads((tmp_path / "taught" / "config.json").read_text())
    assert config["teacher"] == [str(trained_model.resolve())] and config["distill"] == 1.0
    assert f"teacher temperature {config['distill_temp']:g}:" in taught.stdout  # the one it chose, on record
    # The exported file's recipe says it was distilled and from which file, without the local path.
    from cifar10kit.export.exporter import export

    export(tmp_path / "taught", tmp_path / "student.onnx", data_dir=str(data), tta="none", log=lambda *_: None)
    recipe = Classifier(tmp_path / "student.onnx", provider="cpu").info.recipe
    assert recipe["teacher"] == [trained_model.name] and recipe["distill"] == 1.0


def test_two_processes_share_the_teachers_probabilities(trained_model, tiny_cifar, tmp_path):
    """With torchrun, process 0 runs the teacher and hands its probabilities to the other: both halves of
    every batch then learn from the teacher (the labels are shuffled), and the replicas stay identical."""
    from cifar10kit.runtime.session import Classifier

    data = scrambled_copy(tiny_cifar, tmp_path / "data")
    teacher_acc = float(Classifier(trained_model, provider="cpu").info.raw["test_accuracy"])
    args = smoke_train_args(
        data, tmp_path, *STUDENT, "--device", "cpu", "--teacher", str(trained_model), "--distill", "1"
    )
    two = cli("train", "--nproc", "2", *args[1:], "--name", "two", timeout=900)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    assert two.stdout.count("distilling from 1 teacher(s)") == 1
    assert "weights bit-identical in all 2 processes after every epoch" in two.stdout
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["test_acc"] > 0.8 * teacher_acc


def test_resume_after_sigkill_reads_the_cached_teacher(trained_model, tiny_cifar, tmp_path):
    """Killed after its first epoch, the run resumes with the teacher's file gone (the cache is enough)
    and ends with the weights of an uninterrupted run."""
    teacher = tmp_path / "teacher.onnx"
    shutil.copy(trained_model, teacher)
    args = smoke_train_args(
        tiny_cifar, tmp_path, *STUDENT, "--epochs", "3", "--device", "cpu", "--teacher", str(teacher)
    )
    reference = cli(*args, "--name", "reference")
    assert reference.returncode == 0, reference.stderr

    run_dir = tmp_path / "killed"
    proc = subprocess.Popen([str(BIN / "cifar10"), *args, "--name", "killed"], stdout=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (run_dir / "last.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    teacher.unlink()
    resumed = cli("train", "--resume", str(run_dir), "--threads", "1", "--device", "cpu")
    assert resumed.returncode == 0, resumed.stderr  # the teacher's file is gone: it read the cache
    assert_same_run(tmp_path / "reference", run_dir)


@pytest.mark.parametrize(
    "extra, needle",
    [
        (("--distill", "0.5"), "--teacher"),
        (("--distill-temp", "2"), "--teacher"),
        (("--teacher", "t.onnx", "--distill-temp", "-1"), "above 0"),
        (("--teacher", "t.onnx", "--distill", "1.5"), "from 0 to 1"),
        (("--teacher", "missing.onnx"), "no such model file"),
        (("--teacher", "."), "has no model.pt or last.pt"),
    ],
)
def test_bad_teacher_flags_fail_in_one_line_and_leave_no_run_folder(tiny_cifar, tmp_path, extra, needle):
    proc = cli(*smoke_train_args(tiny_cifar, tmp_path, "--name", "bad", *extra), cwd=tmp_path)
    assert needle in one_line_error(proc)
    assert not (tmp_path / "bad").exists()
