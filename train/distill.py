"""Distillation: train toward teacher models' probabilities as well as the labels.

A label says "cat"; a good teacher says "cat, a little dog, no truck", and a small net learns more from
that than from the label alone (Hinton et al., 2015). This is how a net that fits the app's latency
budget can take accuracy from one that does not, or from an ensemble of several.

The teachers are exported `.onnx` files (any file that follows the model contract, TTA in its graph
included), run by onnxruntime, or finished runs (a run folder or its `model.pt`), run by PyTorch on the
training device with flip TTA: on a GPU that takes seconds where onnxruntime on the CPU takes minutes.
They run once, before training, on the clean training images; every augmented or corrupted
copy of an image is then trained toward what the teachers saw in the original, so the student also
learns that a JPEG'd or noisy cat is the same cat. Their probabilities are cached in the run folder,
so `--resume` neither recomputes them nor needs the teacher files again.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..runtime.atomic import atomic_write
from .checkpoint import CheckpointError, load_model
from .data import normalise
from .model import tta_logits

CACHE_NAME = "teacher_probs.npy"


class TeacherError(ValueError):
    """A teacher that cannot teach this run: unreadable, or with other classes."""


# ----------------------------------------------------------------------------------------------
# The teachers' probabilities, once per run


def teacher_probs(
    paths: Sequence[str],
    images: np.ndarray,
    class_names: Sequence[str],
    device: torch.device | str = "cpu",
    holdout: int = 0,
) -> np.ndarray:
    """The mean of the teachers' probabilities for uint8 NHWC `images`, float32 [N, classes].
    Checkpoint teachers run on `device`; `.onnx` ones on onnxruntime's best provider. `holdout`: the
    student's `--holdout`, to say when a teacher was trained on the images the student sets aside."""
    # every one checked before minutes of work
    teachers = [_open_teacher(path, class_names, torch.device(device)) for path in paths]
    for path, teacher in zip(paths, teachers):
        if holdout and getattr(teacher, "holdout", holdout) != holdout:
            print(
                f"note: teacher {path} was trained with --holdout {teacher.holdout}, this run holds out "
                f"{holdout}: it learned from images this run sets aside, so the held-out figure reads high",
                flush=True,
            )
    total = np.zeros((len(images), len(class_names)), np.float64)
    chunk = 1024  # the progress bar's step; predict_probs batches within it
    for n, (path, teacher) in enumerate(zip(paths, teachers), 1):
        bar = tqdm(range(0, len(images), chunk), desc=f"teacher {n}/{len(paths)} {Path(path).name}", unit="chunk")
        for i in bar:
            total[i : i + chunk] += teacher.predict_probs(images[i : i + chunk])
    return (total / len(paths)).astype(np.float32)


def _open_teacher(path: str, class_names: Sequence[str], device: torch.device):
    from ..runtime.contract import ContractError
    from ..runtime.session import Classifier

    if Path(path).is_dir() or Path(path).suffix == ".pt":
        teacher = CheckpointTeacher(path, device)
        _check_classes(path, teacher.class_names, class_names)
        return teacher
    try:
        teacher = Classifier(path, provider="auto", notify=lambda m: print(m, flush=True))
    except ContractError as e:
        raise TeacherError(f"teacher {e}") from None
    _check_classes(path, teacher.class_names, class_names)
    return teacher


def _check_classes(path: str, theirs: Sequence[str], ours: Sequence[str]) -> None:
    if tuple(theirs) != tuple(ours):
        raise TeacherError(
            f"teacher {path} predicts {list(theirs)}, but the training data's classes are "
            f"{list(ours)}: a teacher needs the same classes in the same order"
        )


class CheckpointTeacher:
    """A finished run as a teacher: its network in PyTorch on `device`, the image and its mirror averaged
    (as `cifar10 export --tta flip` would), in fp32."""

    def __init__(self, path: str | Path, device: torch.device):
        try:
            model, ckpt = load_model(path)
        except CheckpointError as e:
            raise TeacherError(f"teacher {e}") from None
        self.model = model.to(device).to(memory_format=torch.channels_last)
        self.class_names = tuple(ckpt["class_names"])
        self.mean, self.std, self.device = ckpt["mean"], ckpt["std"], device
        self.holdout = int(ckpt.get("config", {}).get("holdout", 0))

    @torch.no_grad()
    def predict_probs(self, pixels: np.ndarray) -> np.ndarray:
        x = normalise(pixels, self.mean, self.std, self.device)
        return F.softmax(tta_logits(self.model, x, "flip").float(), dim=1).cpu().numpy()


def load_or_compute(
    run_dir: Path,
    paths: Sequence[str],
    images: np.ndarray,
    class_names: Sequence[str],
    device: torch.device | str = "cpu",
    holdout: int = 0,
) -> np.ndarray:
    """The run's cached teacher probabilities, or new ones (cached once `run_dir` exists)."""
    cache = run_dir / CACHE_NAME
    if cache.exists():
        try:
            probs = np.load(cache, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            print(f"{cache} is unreadable ({e}): recomputing it")
        else:
            if probs.shape == (len(images), len(class_names)):
                return probs
            print(f"{cache} holds {probs.shape}, not ({len(images)}, {len(class_names)}): recomputing it")
    return teacher_probs(paths, images, class_names, device, holdout)


def save_cache(run_dir: Path, probs: np.ndarray) -> None:
    """Atomically, like the checkpoints: a kill mid-write leaves no half file for `--resume` to read."""
    atomic_write(run_dir / CACHE_NAME, lambda f: np.save(f, probs, allow_pickle=False))


# ----------------------------------------------------------------------------------------------
# Temperature: teachers are nearly certain about the images they were trained on (the default's
# ensemble gives 0.993 to its top class on average), which leaves almost nothing to learn beyond the label.
# Softening them (p ** (1/T), renormalised; Hinton's temperature) brings out which wrong classes are close.


def _log_gaps(probs: np.ndarray) -> np.ndarray:
    """log p - log p_max per row (<= 0): softening divides these by the temperature."""
    logp = np.log(np.clip(probs.astype(np.float64), 1e-12, 1.0))
    return logp - logp.max(1, keepdims=True)


def soften(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities at `temperature` (1: unchanged; higher: flatter, the same ranking)."""
    q = np.exp(_log_gaps(probs) / temperature)
    return (q / q.sum(1, keepdims=True)).astype(np.float32)


def matching_temperature(probs: np.ndarray, top: float) -> float:
    """The temperature at which the teachers' mean top-1 probability is `top`: by default that of the
    label-smoothed target (0.82 for smoothing 0.2), so distilling changes which wrong classes get the
    remaining mass, not how confident the targets are."""
    gaps = _log_gaps(probs)  # once: the bisection only rescales them

    def mean_top(t: float) -> float:
        return float((1 / np.exp(gaps / t).sum(1)).mean())  # the top class's gap is 0, so exp(0) / sum

    lo, hi = 0.05, 50.0  # the mean top-1 probability falls as the temperature rises
    for _ in range(60):
        mid = (lo * hi) ** 0.5
        lo, hi = (mid, hi) if mean_top(mid) > top else (lo, mid)
    return round((lo * hi) ** 0.5, 3)


# ----------------------------------------------------------------------------------------------
# Targets


def targets(labels: torch.Tensor, teacher: torch.Tensor, weight: float, smoothing: float) -> torch.Tensor:
    """Per-image target distributions: `weight` of the teachers' probabilities, the rest the
    label-smoothed label the run would train on without a teacher (weight 0 is exactly that run's loss)."""
    k = teacher.shape[1]
    hard = F.one_hot(labels, k).float() * (1 - smoothing) + smoothing / k
    return (1 - weight) * hard + weight * teacher.float()
