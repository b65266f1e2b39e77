"""The trainer on tiny data: run folder contents, safe checkpoints, resume after SIGKILL, folders."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from PIL import Image

from conftest import BIN, assert_same_run, cli, epochs_done, has_torch, smoke_train_args, synthetic_images

pytestmark = pytest.mark.skipif(not has_torch(), reason="needs the [train] extra (torch)")


def test_run_folder_holds_everything(trained_run):
    import torch

    names = {p.name for p in trained_run.iterdir()}
    assert {
        "config.json",
        "metrics.jsonl",
        "last.pt",
        "model.pt",
        "summary.json",
        "curves.png",
        "confusion.png",
    } <= names
    rows = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(r["images_per_s"] > 0 and 0 <= r["train_acc"] <= 1 for r in rows)
    ckpt = torch.load(trained_run / "model.pt", weights_only=True)
    assert ckpt["format"] == "cifar10kit-checkpoint" and len(ckpt["class_names"]) == 10
    summary = json.loads((trained_run / "summary.json").read_text())
    assert 0 <= summary["test_acc"] <= 1 and len(summary["confusion"]) == 10
    # The run records the precision it trained in, not "auto": resume keeps it on any machine.
    from cifar10kit.train.config import resolve_amp

    config = json.loads((trained_run / "config.json").read_text())
    assert config["amp"] == resolve_amp("auto", torch.device("cpu"))[0]


def test_training_learns_tiny_data(tiny_cifar, tmp_path):
    """Not a smoke test of shapes: a few epochs on learnable synthetic data must beat chance by far."""
    from cifar10kit.train.trainer import make_config, train

    cfg = make_config(
        "smoke",
        data_dir=str(tiny_cifar),
        out=str(tmp_path),
        name="learn",
        epochs=6,
        subset=1000,
        batch_size=100,
        tta="none",
    )
    run = train(cfg)
    assert json.loads((run / "summary.json").read_text())["test_acc"] > 0.5


def test_resume_after_sigkill_matches_uninterrupted(tiny_cifar, tmp_path):
    import torch

    # Crop epochs first, as in `fast`: kills land in them too, and resume must regenerate the same crops.
    # Robustness augmentation and cutout on: resume must also regenerate the same corrupted copies and squares.
    # Pinned to the CPU: CUDA kernels are not bit-exact, and a GPU would finish before three kills.
    args = smoke_train_args(
        tiny_cifar,
        tmp_path,
        "--epochs",
        "8",
        "--subset",
        "1000",
        "--batch-size",
        "100",
        "--threads",
        "1",
        "--crop-epochs",
        "3",
        "--crop-size",
        "24",
        "--device",
        "cpu",
        "--robust",
        "0.5",
        "--robust-mix",
        "jpeg=1,pixelate=0",
        "--cutout",
        "8",
        "--translate",
        "3",
    )
    reference = cli(*args, "--name", "reference")
    assert reference.returncode == 0, reference.stderr
    assert "robustness augmentation on 50% of images (odds jpeg=1, pixelate=0), cutout 8x8" in reference.stdout
    saved = json.loads((tmp_path / "reference" / "config.json").read_text())
    assert (saved["cutout"], saved["translate"]) == (8, 3)
    assert saved["robust_mix"] == {"jpeg": 1.0, "pixelate": 0.0}  # the flags reach the run, and resume reads them back
    # Kill somewhere inside an epoch on any machine: the delay scales with this machine's shortest epoch.
    rows = [json.loads(line) for line in (tmp_path / "reference" / "metrics.jsonl").read_text().splitlines()]
    epoch_s = min(row["epoch_seconds"] for row in rows)

    run_dir = tmp_path / "killed"
    exe = str(BIN / "cifar10")
    kills, command = 0, [exe, *args, "--name", "killed"]
    rng = random.Random(0)
    while kills < 3:
        before = epochs_done(run_dir)
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while epochs_done(run_dir) <= before and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0, 0.8 * epoch_s))  # inside the next epoch, or during its checkpoint write
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
        assert (run_dir / "last.pt").exists()
        torch.load(run_dir / "last.pt", weights_only=True)  # never half-written
        command = [exe, "train", "--resume", str(run_dir), "--threads", "1", "--device", "cpu"]
        if epochs_done(run_dir) >= 8:
            break
    final = cli("train", "--resume", str(run_dir), "--threads", "1", "--device", "cpu")
    assert final.returncode == 0, final.stderr
    assert kills >= 3, "the run finished before it could be killed three times"

    assert_same_run(tmp_path / "reference", run_dir)


def test_train_on_a_folder_of_images(tmp_path):
    from cifar10kit.export.exporter import export
    from cifar10kit.runtime.session import Classifier

    names = ("circle", "stripes", "zebra")
    images, labels = synthetic_images(90, 5)
    for i, (img, lab) in enumerate(zip(images, labels % 3)):
        (tmp_path / "imgs" / names[lab]).mkdir(parents=True, exist_ok=True)
        size = (32 + 7 * (i % 5), 32 + 3 * (i % 4))  # any size: preprocessing crops and resizes
        Image.fromarray(img).resize(size).save(tmp_path / "imgs" / names[lab] / f"{i}.png")
    (tmp_path / "imgs" / "zebra" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    result = cli(
        "train",
        "--preset",
        "smoke",
        "--folder",
        str(tmp_path / "imgs"),
        "--out",
        str(tmp_path),
        "--name",
        "own",
        "--epochs",
        "2",
        "--batch-size",
        "20",
    )
    assert result.returncode == 0, result.stderr
    assert "broken.jpg" in result.stdout  # skipped and said so
    onnx_path = tmp_path / "own.onnx"
    export(tmp_path / "own", onnx_path, log=lambda *_: None)
    model = Classifier(onnx_path)
    assert model.class_names == names
    assert model.info.dataset == "folder:imgs"


@pytest.mark.gpu
def test_cuda_training_smoke(tiny_cifar, tmp_path):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    result = cli(*smoke_train_args(tiny_cifar, tmp_path, "--device", "cuda", "--name", "gpu"))
    assert result.returncode == 0, result.stderr
    assert "CUDA" in result.stdout


# ----------------------------------------------------------------------------------------------
# Augmentation: each output image must be an exact window of its own source


def _coded_images(n: int = 64, size: int = 32):
    """Images whose every pixel value says which image, row and column it came from."""
    import torch

    i, y, x = torch.meshgrid(torch.arange(n), torch.arange(size), torch.arange(size), indexing="ij")
    plane = (i * 10_000 + y * 100 + x).float()
    return torch.stack([plane, plane + 0.25, plane + 0.5], dim=1).contiguous(memory_format=torch.channels_last)


def test_random_crop_takes_a_window_of_each_image():
    from cifar10kit.train.augment import epoch_generator, random_crop

    images = _coded_images()
    out = random_crop(images, 24, epoch_generator(0, 0))
    assert out.shape == (64, 3, 24, 24)
    offsets = set()
    for k in range(len(out)):
        top_left = int(out[k, 0, 0, 0].item())
        assert top_left // 10_000 == k  # its own image, no mixing across the batch
        y0, x0 = top_left % 10_000 // 100, top_left % 100
        assert 0 <= y0 <= 8 and 0 <= x0 <= 8
        assert (out[k] == images[k, :, y0 : y0 + 24, x0 : x0 + 24]).all()
        offsets.add((y0, x0))
    assert len(offsets) > 20  # per-image offsets, not one per batch
    again = random_crop(images, 24, epoch_generator(0, 0))
    assert (again == out).all()  # a pure function of (seed, epoch): resume sees the same crops
    assert (random_crop(images, 32, epoch_generator(0, 0)) == images).all()


@pytest.mark.parametrize("size", [12, 5])
def test_random_cutout_blanks_one_square_per_image(size):
    """Each image loses exactly one size x size square (clipped at the border), nothing else."""
    import torch

    from cifar10kit.train.augment import epoch_generator, random_cutout

    images = _coded_images() + 1  # no pixel is 0 before cutout
    out = random_cutout(images, size, epoch_generator(2, 5))
    assert out.shape == images.shape and images.min() > 0
    blanks, clipped = set(), 0
    for k in range(len(out)):
        zero = out[k] == 0
        assert torch.equal(zero[0], zero[1]) and torch.equal(zero[0], zero[2])  # all channels alike
        assert torch.equal(out[k][~zero], images[k][~zero])  # the rest untouched
        rows, cols = zero[0].any(1).nonzero().squeeze(1), zero[0].any(0).nonzero().squeeze(1)
        assert len(rows) and len(cols), "every image gets a square"
        assert zero[0].sum() == len(rows) * len(cols)  # one rectangle, filled
        assert rows.tolist() == list(range(rows[0], rows[-1] + 1)) and cols.tolist() == list(
            range(cols[0], cols[-1] + 1)
        )
        assert len(rows) <= size and len(cols) <= size
        clipped += len(rows) < size or len(cols) < size
        blanks.add((int(rows[0]), int(cols[0])))
    assert len(blanks) > 20 and 0 < clipped < len(out)  # per-image places; some over the edge, most not
    assert torch.equal(random_cutout(images, size, epoch_generator(2, 5)), out)  # (seed, epoch) decide it
    assert not torch.equal(random_cutout(images, size, epoch_generator(2, 6)), out)
    assert random_cutout(images, 0, epoch_generator(2, 5)) is images


def test_cutout_reaches_the_batches_scaled_to_crop_epochs(tiny_cifar):
    """--cutout is applied every epoch; on 24-pixel crop epochs the square shrinks to keep its share."""
    from cifar10kit.train.config import make_config
    from cifar10kit.train.data import epoch_batches, load_data

    cfg = make_config("smoke", data_dir=str(tiny_cifar), cutout=8, crop_epochs=1, crop_size=24, device="cpu")
    data = load_data(cfg, "cpu")

    def largest_blank(config, epoch: int) -> int:
        x, _, _ = next(epoch_batches(data, config, epoch))
        zero = (x == 0).all(1)  # [n, h, w]: blank in every channel
        return int(max(zero[k].any(1).sum() for k in range(len(x))))

    assert largest_blank(cfg, 0) == 6 and largest_blank(cfg, 1) == 8  # round(8 * 24 / 32) on the crop epoch
    plain = make_config("smoke", data_dir=str(tiny_cifar), crop_epochs=1, crop_size=24, device="cpu")
    assert largest_blank(plain, 1) < 8


def test_random_translate_shifts_within_a_reflection():
    import torch
    import torch.nn.functional as F

    from cifar10kit.train.augment import alternating_flip, epoch_generator, random_translate

    images = _coded_images()
    out = random_translate(images, 2, epoch_generator(1, 3))
    padded = F.pad(images, (2, 2, 2, 2), mode="reflect")
    for k in range(len(out)):
        assert any(torch.equal(out[k], padded[k, :, dy : dy + 32, dx : dx + 32]) for dy in range(5) for dx in range(5))
    even, odd = alternating_flip(images, 0, 0), alternating_flip(images, 0, 1)
    for k in range(len(images)):
        # Each image is mirrored in exactly one of two consecutive epochs.
        assert torch.equal(even[k], images[k]) != torch.equal(odd[k], images[k])
        assert torch.equal(even[k].flip(-1), odd[k])


# ----------------------------------------------------------------------------------------------
# Precision: bf16 only where the hardware computes it


def _fake_cpu(monkeypatch, avx512_bf16: bool, amx: bool) -> None:
    import torch

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)


@pytest.mark.parametrize(
    "avx512_bf16, amx, want",
    [(True, False, "bf16"), (False, True, "bf16"), (True, True, "bf16"), (False, False, "fp32")],
)
def test_auto_precision_is_bf16_only_on_cpus_with_bf16_units(monkeypatch, avx512_bf16, amx, want):
    import torch

    from cifar10kit.train.config import resolve_amp

    _fake_cpu(monkeypatch, avx512_bf16, amx)
    amp, why = resolve_amp("auto", torch.device("cpu"))
    assert amp == want and why.startswith("auto")
    # An explicit choice is kept whatever the hardware; bf16 without bf16 units comes with a warning.
    for asked in ("bf16", "fp32"):
        amp, why = resolve_amp(asked, torch.device("cpu"))
        assert amp == asked and ("emulated" in why) == (asked == "bf16" and want == "fp32")
    with pytest.raises(ValueError, match="unknown precision 'int4'"):
        resolve_amp("int4", torch.device("cpu"))


def test_bf16_detection_agrees_with_the_kernels_cpu_flags():
    """PyTorch's test and Linux's own list of CPU features must tell the same story here."""
    import torch

    from cifar10kit.train.config import native_bf16

    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo on this platform")
    flags = set()
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            flags |= set(line.split(":", 1)[1].split())
    assert native_bf16(torch.device("cpu")) == bool(flags & {"avx512_bf16", "amx_bf16", "amx_tile"})


@pytest.mark.parametrize("amp, dtype", [("fp32", "float32"), ("bf16", "bfloat16")])
def test_muon_orthogonalises_in_the_runs_precision(amp, dtype):
    import torch

    from cifar10kit.train.optim import orthogonalise
    from cifar10kit.train.trainer import build_model, build_optimisers, make_config

    cfg = make_config("smoke", amp=amp)
    _, muon = build_optimisers(build_model(cfg, 10, torch.device("cpu")), cfg)
    assert muon.dtype == getattr(torch, dtype)
    # Either way the result is near-orthogonal: singular values in the iteration's 0.5..1.5 band.
    g = torch.randn(64, 288, generator=torch.Generator().manual_seed(0))
    x = orthogonalise(g, dtype=muon.dtype)
    assert x.dtype == muon.dtype and x.shape == g.shape
    s = torch.linalg.svdvals(x.float())
    assert 0.5 < s.min() and s.max() < 1.5
