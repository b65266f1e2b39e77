"""Training configuration: one dataclass of plain values, the presets, and the device.

A run's Config is saved in its checkpoints and decides what `--resume` trains; the command line
overrides any field, presets override some.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Config:
    preset: str = "fast"
    data_dir: str | None = None  # folder holding cifar-10-batches-py/ ($CIFAR10_DATA)
    folder: str | None = None  # train on your own images: root/<class>/<image>
    download: bool = False
    out: str = "runs"
    name: str = ""  # run folder name; default: <preset>-<time>
    device: str = "auto"  # auto | cuda | cpu
    epochs: int = 8
    batch_size: int = 2000  # the global batch: split across processes in a distributed run
    widths: tuple[int, int, int] = (64, 256, 256)
    lr: float = 0.24  # Muon, conv filters
    momentum: float = 0.6  # Muon
    bias_lr: float = 0.053  # SGD, BatchNorm and whitening biases (loss is summed over the batch)
    head_lr: float = 0.67  # SGD, classifier
    sgd_momentum: float = 0.85
    weight_decay: float = 2e-6  # per example; scaled by batch size
    label_smoothing: float = 0.2
    whiten_bias_epochs: int = 3
    translate: int = 2  # random shifts of up to N pixels (reflection padding)
    cutout: int = 0  # blank an N x N square of each training image; 0 = off
    crop_epochs: int = 0  # the first N epochs train on random crop_size crops: same objects, fewer FLOPs
    crop_size: int = 24
    robust: float = 0.0  # share of each epoch's images given a random corruption (JPEG, noise, ...); 0 = off
    robust_mix: dict[str, float] = field(default_factory=dict)  # odds replacing augment.ROBUST_MIX's
    teacher: tuple[str, ...] = ()  # .onnx files whose mean probabilities the run also trains toward
    distill: float = 0.7  # with a teacher: its share of each image's target (the label has the rest)
    distill_temp: float = 0.0  # the teachers' softmax temperature; 0: as confident as the smoothed label
    tta: str = "translate"  # final evaluation: none | flip | translate
    seed: int = 0
    subset: int = 0  # use only the first N training images (smoke tests)
    holdout: int = 0  # training images set aside to decide on instead of the test set (data.holdout_split)
    eval_every: int = 1
    amp: str = "auto"  # auto (bf16 where the hardware computes it, else fp32) | bf16 | fp16 (CUDA) | fp32
    compile: bool = False
    deterministic: bool = False
    threads: int = 0  # CPU threads per process; 0 = all cores, shared among a machine's processes


PRESETS: dict[str, dict[str, Any]] = {
    # airbench94-shaped; the first 4 of 11 epochs on 24x24 crops (about half the FLOPs each).
    "fast": dict(epochs=11, batch_size=2000, widths=(64, 256, 256), tta="translate", crop_epochs=4),
    # Wider: the 95% recipe; robustness augmentation, since this is the model users see.
    "accurate": dict(epochs=14, batch_size=2000, widths=(128, 384, 384), tta="translate", robust=0.4),
    # For a GPU: wider and longer still. Without cutout it fitted 99% of its training images and
    # stopped at 94.3% on the test set; airbench96 adds 12-pixel cutout and 4-pixel translations.
    # With them: 95.3-95.6% (6-view TTA, 2 seeds) in about 50 s on an H200, short of airbench96's 96%.
    "best": dict(
        epochs=40, batch_size=1000, widths=(192, 512, 512), tta="translate", robust=0.4, cutout=12, translate=4
    ),
    # Seconds, not accuracy: for tests and trying the pipeline.
    "smoke": dict(epochs=1, batch_size=500, widths=(16, 32, 32), tta="none", subset=2000),
}


def make_config(preset: str = "fast", **overrides: Any) -> Config:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    values = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    return Config(preset=preset, **values)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU is visible to PyTorch; use --device cpu")
    return torch.device(name)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"CUDA ({torch.cuda.get_device_name(device)})"
    return f"CPU ({torch.get_num_threads()} threads)"


# ----------------------------------------------------------------------------------------------
# Precision

AMP_CHOICES = ("auto", "bf16", "fp16", "fp32")


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 in hardware (AVX512-BF16 or AMX on x86, bf16-capable GPUs).

    Elsewhere PyTorch emulates it: on a 2-core AVX2 EPYC (Zen 3) a training epoch under bf16
    autocast took 9x as long as in fp32, and a bf16 matmul ran 40x slower. Unknown CPUs (ARM,
    where PyTorch offers no such test) count as without, since fp32 is never wrong."""
    if device.type == "cuda":
        try:
            return torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # older PyTorch: no emulation to exclude
            return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        tests = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, name, lambda: False)() for name in tests)
    return False


def resolve_amp(amp: str, device: torch.device) -> tuple[str, str]:
    """The precision a run trains in, and why: `auto` becomes bf16 or fp32 for this device."""
    if amp not in AMP_CHOICES:
        raise ValueError(f"unknown precision {amp!r}; choose from {', '.join(AMP_CHOICES)}")
    where = f"this {device.type.upper()}"
    if amp == "bf16" and not native_bf16(device):
        return amp, f"as set, but {where} has no bf16 units: emulated, several times slower than --amp fp32"
    if amp != "auto":
        return amp, "as set"
    if native_bf16(device):
        return "bf16", f"auto: {where} computes bf16 in hardware"
    return "fp32", f"auto: {where} has no bf16 units, and emulated bf16 is several times slower"
