"""Verification: PyTorch and onnxruntime on the same images, before any file is moved into place.

The images are the CIFAR-10 test set where the checkpoint was trained on CIFAR-10 and the data is
at hand (accuracy is then measured too), random pixels otherwise (agreement only).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..runtime import contract
from ..runtime.dataset import load_cifar10
from .graph import Deployable

MIN_AGREEMENT = 0.999  # top-1 agreement between PyTorch and onnxruntime, fp32
MAX_ACC_DIFF = 0.001  # accuracy difference, as a fraction (0.1 points)


def progress(batches: range, desc: str):
    """A bar on a terminal (a 6-view check of 10,000 images takes minutes on a small CPU); silent in logs."""
    from tqdm import tqdm

    return tqdm(batches, desc=desc, unit="batch", leave=False, disable=None)


def verification_set(
    ckpt: dict[str, Any], data_dir: str | None, n: int, log: Callable[[str], object]
) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Pixels, labels (None for random pixels) and a description for the `test_set` metadata key."""
    if ckpt.get("dataset", "CIFAR-10") == "CIFAR-10":
        try:
            x, y, _ = load_cifar10(data_dir, "test")
            if n:
                x, y = x[:n], y[:n]
            return x, y, f"CIFAR-10 test batch, {len(x)} images"
        except Exception as e:  # noqa: BLE001 - no dataset here: still check agreement
            log(f"no CIFAR-10 test data ({e}); verifying agreement on random pixels only")
    rng = np.random.default_rng(0)
    x = rng.integers(
        0, 256, size=(n or 1000, contract.IMAGE_SIZE, contract.IMAGE_SIZE, contract.CHANNELS), dtype=np.uint8
    )
    return x, None, ""


def holdout_set(
    ckpts: Sequence[dict[str, Any]], data_dir: str | None, log: Callable[[str], object]
) -> tuple[np.ndarray, np.ndarray, str] | None:
    """The CIFAR-10 training images every member set aside (`cifar10 train --holdout N`): pixels, labels
    and a description; None (saying why, where it matters) when there are none to use."""
    from ..train.data import holdout_split

    configs = [c.get("config", {}) for c in ckpts]
    splits = {(int(c.get("holdout", 0)), int(c.get("subset", 0))) for c in configs}
    if all(n == 0 for n, _ in splits):
        return None
    if len(splits) > 1:
        log("note: the members held out different training images; calibrating on test images instead")
        return None
    if any(c.get("dataset", "CIFAR-10") != "CIFAR-10" for c in ckpts):
        log("note: held-out images are used from CIFAR-10 runs only; calibrating on test images instead")
        return None
    ((n, subset),) = splits
    try:
        x, y, _ = load_cifar10(data_dir, "train")
    except Exception as e:  # noqa: BLE001 - no training data here: the test images still calibrate
        log(f"note: no CIFAR-10 training data ({e}); calibrating on test images instead")
        return None
    if subset:
        x, y = x[:subset], y[:subset]
    _, held = holdout_split(y, n)
    return x[held], y[held], f"{len(held)} CIFAR-10 training images held out of training (--holdout {n})"


@torch.no_grad()
def torch_logits(module: Deployable, pixels: np.ndarray, batch: int = 500) -> torch.Tensor:
    """PyTorch's logits before the temperature: one pass, shared by calibration and verification."""
    starts = progress(range(0, len(pixels), batch), "PyTorch")
    return torch.cat([module.scores(torch.from_numpy(pixels[i : i + batch]))[0] for i in starts])


def ort_probs(path: Path, pixels: np.ndarray, batch: int = 500) -> np.ndarray:
    """onnxruntime's probabilities for `pixels` from the file at `path`, on the CPU."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    starts = progress(range(0, len(pixels), batch), f"checking {path.stem}: onnxruntime")
    return np.concatenate(
        [sess.run([contract.OUTPUT_PROBS], {contract.INPUT_NAME: pixels[i : i + batch]})[0] for i in starts]
    )


@dataclass
class Verification:
    n: int
    max_abs_diff: float
    agreement: float
    torch_accuracy: float | None  # the reference's accuracy: PyTorch's, or a cascade's stages'
    onnx_accuracy: float | None
    reference: str = "PyTorch"  # what the file was compared with

    def problems(self) -> list[str]:
        out = []
        if self.agreement < MIN_AGREEMENT:
            out.append(f"top-1 agreement {self.agreement:.4%} < {MIN_AGREEMENT:.1%}")
        if self.torch_accuracy is not None and abs(self.torch_accuracy - self.onnx_accuracy) > MAX_ACC_DIFF:
            out.append(
                f"accuracy {self.onnx_accuracy:.4f} (onnxruntime) vs {self.torch_accuracy:.4f} ({self.reference})"
            )
        return out

    def summary(self) -> str:
        line = f"verified on {self.n} images: max |dp| {self.max_abs_diff:.2e}, top-1 agreement {self.agreement:.4%}"
        if self.onnx_accuracy is not None:
            line += f", accuracy {self.onnx_accuracy:.4f} (onnxruntime) / {self.torch_accuracy:.4f} ({self.reference})"
        return line


def verify(
    p_torch: np.ndarray, path: Path, pixels: np.ndarray, labels: np.ndarray | None
) -> tuple[Verification, np.ndarray]:
    """PyTorch's probabilities against the file's, and onnxruntime's probabilities (reused for the
    metadata, not computed twice)."""
    p_ort = ort_probs(path, pixels)
    top_t, top_o = p_torch.argmax(1), p_ort.argmax(1)
    acc = (lambda top: float((top == labels).mean())) if labels is not None else (lambda top: None)
    check = Verification(
        n=len(pixels),
        max_abs_diff=float(np.abs(p_torch - p_ort).max()),
        agreement=float((top_t == top_o).mean()),
        torch_accuracy=acc(top_t),
        onnx_accuracy=acc(top_o),
    )
    return check, p_ort


def compare_variant(
    precision: str, probs: np.ndarray, fp32: np.ndarray, labels: np.ndarray | None, log: Callable[[str], object]
) -> float | None:
    """Log a smaller variant's agreement with the fp32 file; return its accuracy drop (None without labels)."""
    agreement = float((probs.argmax(1) == fp32.argmax(1)).mean())
    log(f"{precision}: top-1 agreement with fp32 {agreement:.4%}, max |dp| {np.abs(probs - fp32).max():.2e}")
    if labels is None:
        return None
    acc, acc32 = float((probs.argmax(1) == labels).mean()), float((fp32.argmax(1) == labels).mean())
    log(f"{precision}: accuracy {acc:.4f} ({(acc - acc32) * 100:+.2f} points vs fp32)")
    return acc32 - acc
