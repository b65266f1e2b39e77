"""`cifar10 export`: a checkpoint -> one self-describing, verified `.onnx` file.

Sections: load the checkpoint, wrap the net so the graph takes raw pixels, export, verify against
PyTorch through onnxruntime, write metadata, and only then move the file into place.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

from ..runtime import contract as C
from ..runtime.dataset import file_digest, load_cifar10
from ..train.checkpoint import CheckpointError, load_model, resolve_checkpoint  # noqa: F401 - re-exported
from ..train.model import AirNet, tta_views

MIN_AGREEMENT = 0.999  # top-1 agreement between PyTorch and onnxruntime, fp32
MAX_ACC_DIFF = 0.001  # accuracy difference, as a fraction (0.1 points)


class ExportError(RuntimeError):
    """Export refused; the message says which check failed and by how much."""


# ----------------------------------------------------------------------------------------------
# The deployable graph: uint8 NHWC pixels in, probabilities and class maps out


class Deployable(nn.Module):
    """The net behind the contract. tta: 'none'; 'flip' (2 views: the image and its mirror);
    'translate' (6 views: those two, each also shifted one pixel up-left and down-right, weighted
    1/2 unshifted, 1/4 per shift, as in training's final evaluation). Class maps come from the
    unshifted views only (a shifted 3x3 map would be misaligned)."""

    def __init__(self, net: AirNet, mean, std, tta: str = "none"):
        super().__init__()
        if tta not in ("none", "flip", "translate"):
            raise ValueError(f"--tta {tta!r}: use none, flip or translate")
        self.net, self.tta = net, tta
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("inv_std", 1 / torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        # Softmax temperature, fitted at export (see `calibrate`); 1 leaves the net's own confidences.
        self.register_buffer("temperature", torch.ones(()))

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, cam = self.scores(pixels)
        return self.probabilities(logits), cam

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return F.softmax(logits / self.temperature, dim=1)

    def scores(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """TTA-weighted logits (before the temperature) and class maps."""
        x = (pixels.permute(0, 3, 1, 2).float() - self.mean) * self.inv_std
        views, weights = tta_views(x, self.tta)
        # All views go through the net as one batch: one pass over the weights (faster at batch 1,
        # and a quantised graph holds each weight once instead of once per view).
        n = x.shape[0]
        feats = self.net.features(torch.cat(views) if len(views) > 1 else x)
        per_view = self.net.classify(feats).unflatten(0, (len(views), n))
        logits = torch.einsum("vnk,v->nk", per_view, per_view.new_tensor(weights))
        cam = self.net.class_maps(feats[:n])
        if len(views) > 1:
            cam = 0.5 * (cam + self.net.class_maps(feats[n : 2 * n]).flip(-1))
        return logits, cam


def _torch_export(module: nn.Module, path: Path) -> None:
    example = torch.zeros(2, C.IMAGE_SIZE, C.IMAGE_SIZE, C.CHANNELS, dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    torch.onnx.export(
        module,
        (example,),
        str(path),
        input_names=[C.INPUT_NAME],
        output_names=[C.OUTPUT_PROBS, C.OUTPUT_CAM],
        dynamic_shapes={"pixels": {0: batch}},
        opset_version=C.OPSET,
        dynamo=True,
        external_data=False,
        verbose=False,
    )


# ----------------------------------------------------------------------------------------------
# Verification: PyTorch and onnxruntime on the same images


@dataclass
class Verification:
    n: int
    max_abs_diff: float
    agreement: float
    torch_accuracy: float | None
    onnx_accuracy: float | None

    def problems(self) -> list[str]:
        out = []
        if self.agreement < MIN_AGREEMENT:
            out.append(f"top-1 agreement {self.agreement:.4%} < {MIN_AGREEMENT:.1%}")
        if self.torch_accuracy is not None and abs(self.torch_accuracy - self.onnx_accuracy) > MAX_ACC_DIFF:
            out.append(
                f"accuracy {self.onnx_accuracy:.4f} (onnxruntime) vs {self.torch_accuracy:.4f} (PyTorch)"
            )
        return out


def _ort_probs(path: Path, pixels: np.ndarray, batch: int = 500) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    starts = _progress(range(0, len(pixels), batch), f"checking {path.stem}: onnxruntime")
    return np.concatenate([sess.run([C.OUTPUT_PROBS], {C.INPUT_NAME: pixels[i : i + batch]})[0] for i in starts])


@torch.no_grad()
def _torch_logits(module: Deployable, pixels: np.ndarray, batch: int = 500) -> torch.Tensor:
    """PyTorch's logits before the temperature: one pass, shared by calibration and verification."""
    starts = _progress(range(0, len(pixels), batch), "PyTorch")
    return torch.cat([module.scores(torch.from_numpy(pixels[i : i + batch]))[0] for i in starts])


def _progress(batches: range, desc: str):
    """A bar on a terminal (a 6-view check of 10,000 images takes minutes on a small CPU); silent in logs."""
    from tqdm import tqdm

    return tqdm(batches, desc=desc, unit="batch", leave=False, disable=None)


def verify(
    p_torch: np.ndarray, path: Path, pixels: np.ndarray, labels: np.ndarray | None
) -> tuple[Verification, np.ndarray]:
    """PyTorch's probabilities against the file's, and onnxruntime's probabilities (reused for the
    metadata, not computed twice)."""
    p_ort = _ort_probs(path, pixels)
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


# ----------------------------------------------------------------------------------------------
# Metadata and the whole export


def _set_metadata(model: onnx.ModelProto, meta: dict[str, str]) -> None:
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)


def export(
    checkpoint: str | os.PathLike,
    output: str | os.PathLike,
    data_dir: str | None = None,
    tta: str | None = None,
    verify_n: int = 0,
    precision: str = "fp32",
    max_drop: float = 0.01,
    calibrate: bool = True,
    log=print,
) -> dict[str, Any]:
    """Export, verify and write `output`; returns the metadata and verification figures.

    verify_n: images of the CIFAR-10 test set to check (0 = all 10,000). For checkpoints trained
    on other data, or with no CIFAR-10 at hand, random pixels still check agreement.
    precision: 'fp32', or a smaller variant made from the verified fp32 graph: 'fp16' (weights and
    arithmetic in half precision, for GPUs) or 'int8' (static quantisation calibrated on training
    images). A variant is refused if its accuracy falls more than `max_drop` below fp32's.
    calibrate: fit a softmax temperature on half the labelled verification images (see
    `fit_temperature`) so that the probabilities in the file are honest confidences."""
    if precision not in ("fp32", "fp16", "int8"):
        raise ValueError(f"precision {precision!r}: use fp32, fp16 or int8")
    from .. import __version__

    ckpt_path = resolve_checkpoint(checkpoint)
    net, ckpt = load_model(ckpt_path)
    tta = tta or ("flip" if ckpt.get("tta") in ("flip", "translate") else "none")  # 2 views: speed/accuracy balance
    module = Deployable(net, ckpt["mean"], ckpt["std"], tta).eval()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)

    pixels, labels, test_set = _verification_set(ckpt, data_dir, verify_n, log)
    logits = _torch_logits(module, pixels)
    calibration = fit_calibration(module, logits.numpy(), labels, log) if calibrate else {}
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".export-") as tmp:
        raw = Path(tmp) / "raw.onnx"
        log(f"exporting {net.arch} ({ckpt_path}) with TTA {tta}, opset {C.OPSET}")
        _torch_export(module, raw)
        model = onnx.load(str(raw))
        meta = {
            C.KEY_CONTRACT: C.CONTRACT_VERSION,
            C.KEY_CLASS_NAMES: json.dumps(list(ckpt["class_names"])),
            C.KEY_INPUT_LAYOUT: C.INPUT_LAYOUT,
            C.KEY_ARCHITECTURE: net.arch,
            C.KEY_DATASET: ckpt.get("dataset", "CIFAR-10"),
            C.KEY_TEST_ACCURACY: "",
            C.KEY_TEST_SET: test_set,
            C.KEY_VERSION: __version__,
            C.KEY_CREATED: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            C.KEY_CHECKPOINT_SHA256: file_digest(ckpt_path, "sha256"),
            C.KEY_RECIPE: json.dumps({"preset": ckpt.get("config", {}).get("preset"), **ckpt.get("config", {})}),
            C.KEY_SEED: str(ckpt.get("config", {}).get("seed", "")),
            C.KEY_TTA: tta,
            C.KEY_PRECISION: "fp32",
            C.KEY_GFLOPS: f"{gflop_per_image(module):.4f}",
            C.KEY_TEMPERATURE: f"{float(module.temperature):.4f}",
            C.KEY_EXPORTER: f"cifar10kit {__version__}; torch {torch.__version__}; onnx {onnx.__version__}",
        }
        model.doc_string = f"cifar10kit {net.arch}: uint8 NHWC RGB pixels in, class probabilities out"
        _set_metadata(model, meta)
        onnx.checker.check_model(model, full_check=True)
        staged = Path(tmp) / "model.onnx"
        onnx.save(model, str(staged))

        with torch.no_grad():
            p_torch = module.probabilities(logits).numpy()  # with the fitted temperature, as in the graph
        check, probs = verify(p_torch, staged, pixels, labels)
        log(
            f"verified on {check.n} images: max |dp| {check.max_abs_diff:.2e}, "
            f"top-1 agreement {check.agreement:.4%}"
            + (f", accuracy {check.onnx_accuracy:.4f} (onnxruntime) / {check.torch_accuracy:.4f} (PyTorch)"
               if check.onnx_accuracy is not None else "")  # fmt: skip
        )
        if problems := check.problems():
            raise ExportError(f"refusing to write {output}: " + "; ".join(problems))
        if precision != "fp32":
            variant = Path(tmp) / f"{precision}.onnx"
            make_variant(staged, variant, precision, data_dir, pixels)
            vprobs = _ort_probs(variant, pixels)
            agreement = float((vprobs.argmax(1) == probs.argmax(1)).mean())
            log(f"{precision}: top-1 agreement with fp32 {agreement:.4%}, max |dp| {np.abs(vprobs - probs).max():.2e}")
            if labels is not None:
                drop = check.onnx_accuracy - float((vprobs.argmax(1) == labels).mean())
                log(f"{precision}: accuracy {check.onnx_accuracy - drop:.4f} ({-drop * 100:+.2f} points vs fp32)")
                if drop > max_drop:
                    raise ExportError(f"refusing to write {output}: {precision} loses {drop:.2%} accuracy "
                                      f"(limit {max_drop:.2%})")  # fmt: skip
            model, probs = onnx.load(str(variant)), vprobs
            meta[C.KEY_PRECISION] = precision
        if labels is not None:
            meta[C.KEY_TEST_ACCURACY] = f"{float((probs.argmax(1) == labels).mean()):.4f}"
            meta[C.KEY_THRESHOLD] = f"{uncertainty_threshold(probs, labels):.4f}"
        _set_metadata(model, meta)
        onnx.save(model, str(staged))
        os.replace(staged, output)
    size = output.stat().st_size
    log(f"wrote {output} ({size / 1e6:.1f} MB)")
    return {"metadata": meta, "verification": check.__dict__, "calibration": calibration, "bytes": size}


def make_variant(src: Path, dst: Path, precision: str, data_dir: str | None, pixels: np.ndarray) -> None:
    """fp16 or int8 copy of a verified fp32 file; input and outputs keep the contract's types."""
    if precision == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        half = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
        onnx.save(half, str(dst))
        return
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        calib, _, _ = load_cifar10(data_dir, "train")
        calib = calib[np.random.default_rng(0).choice(len(calib), min(1024, len(calib)), replace=False)]
    except Exception:  # noqa: BLE001 - no training data: calibrate on the verification images
        calib = pixels[:1024]
    # Equal batches: onnxruntime's percentile calibrator stacks them and fails on a short last one.
    batch = min(64, len(calib))
    calib = calib[: len(calib) // batch * batch]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{C.INPUT_NAME: calib[i : i + batch]} for i in range(0, len(calib), batch)])

        def get_next(self):
            return next(self.batches, None)

    prepped = dst.with_suffix(".pre.onnx")
    quant_pre_process(str(src), str(prepped), skip_symbolic_shape=True)
    # The softmax stays in float: quantised, probabilities would come in steps of 1/255 that no
    # longer sum to one, and ties would scramble the top-k.
    keep_float = [n.name for n in onnx.load(str(prepped)).graph.node if n.op_type == "Softmax"]
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # per-channel notes about BatchNorm vectors are noise to a user
    # Activation ranges from the 99.999th percentile rather than min/max: a few extreme activations no
    # longer stretch the int8 grid. On two 128-384-384 nets (flip TTA, 10,000 test images) it lost
    # 0.12 and 0.08 points less accuracy than min/max did.
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the percentile search prints progress notes
            quantize_static(str(prepped), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.Percentile,
                            nodes_to_exclude=keep_float)  # fmt: skip
    finally:
        root.setLevel(level)


# ----------------------------------------------------------------------------------------------
# Calibration: label smoothing trains a net to say "80%" when it is right 99% of the time


MIN_CALIBRATION_IMAGES = 500  # below this a fitted temperature is mostly noise


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The softmax temperature T that minimises the negative log-likelihood of softmax(logits / T).

    One number (Guo et al., 2017, "On calibration of modern neural networks"): it rescales every
    confidence and changes no prediction. The NLL is unimodal in log T, so a golden-section search
    over T in [0.05, 20] finds it."""
    z = np.asarray(logits, dtype=np.float64)
    rows = np.arange(len(z))

    def nll(log_t: float) -> float:
        s = z / np.exp(log_t)
        s = s - s.max(1, keepdims=True)
        return float((np.log(np.exp(s).sum(1)) - s[rows, labels]).mean())

    lo, hi = np.log(0.05), np.log(20.0)
    g = (np.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(a), nll(b)
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(b)
    return float(np.exp((lo + hi) / 2))


@torch.no_grad()
def fit_calibration(module: Deployable, logits: np.ndarray, labels: np.ndarray | None, log=print) -> dict[str, Any]:
    """Fit the temperature on the even-numbered labelled images and measure the expected calibration
    error on the odd-numbered ones, which the fit never saw. Sets `module.temperature`."""
    from ..runtime.evaluate import expected_calibration_error as ece

    if labels is None or len(labels) < MIN_CALIBRATION_IMAGES:
        have = 0 if labels is None else len(labels)
        log(f"not calibrated: needs {MIN_CALIBRATION_IMAGES}+ labelled images, have {have}")
        return {}
    t = fit_temperature(logits[0::2], labels[0::2])
    held, held_y = logits[1::2].astype(np.float64), labels[1::2]

    def probs(temp: float) -> np.ndarray:
        e = np.exp(held / temp - (held / temp).max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    before, after = ece(probs(1.0), held_y), ece(probs(t), held_y)
    module.temperature.fill_(t)
    log(f"calibrated: temperature {t:.3f} fitted on {len(labels[0::2])} images; expected calibration error "
        f"on the other {len(held_y)}: {before:.4f} -> {after:.4f}")  # fmt: skip
    return {"temperature": t, "fit_images": len(labels[0::2]), "held_out_images": len(held_y),
            "ece_before": before, "ece_after": after}  # fmt: skip


def uncertainty_threshold(probs: np.ndarray, labels: np.ndarray, window: int = 200) -> float:
    """Top-1 probability below which predictions are more often wrong than right.

    Sorted by confidence, a sliding window's accuracy rises with it; the threshold is the confidence
    where that accuracy first reaches 50%. Chosen on held-out (test) images, never training ones."""
    conf = probs.max(1)
    order = np.argsort(conf)
    correct = (probs.argmax(1) == labels)[order].astype(np.float64)
    if len(correct) < window * 2:
        return 0.0
    running = np.convolve(correct, np.ones(window) / window, mode="valid")
    reached = np.flatnonzero(running >= 0.5)
    return float(conf[order][reached[0] + window // 2]) if len(reached) else float(conf.max())


def gflop_per_image(module: nn.Module) -> float:
    """Forward FLOPs of one image (multiply-adds count 2), by PyTorch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(torch.zeros(1, C.IMAGE_SIZE, C.IMAGE_SIZE, C.CHANNELS, dtype=torch.uint8))
    return counter.get_total_flops() / 1e9


def torch_runner(checkpoint: str | os.PathLike, tta: str = "none", threads: int = 0):
    """A PyTorch eager callable on uint8 NHWC pixels, for side-by-side benchmarks."""
    net, ckpt = load_model(resolve_checkpoint(checkpoint))
    module = Deployable(net, ckpt["mean"], ckpt["std"], tta).eval().to(memory_format=torch.channels_last)
    torch.set_num_threads(threads or os.cpu_count() or 1)

    @torch.inference_mode()
    def run(pixels: np.ndarray):
        return module(torch.from_numpy(pixels))

    return run


def _verification_set(ckpt, data_dir, n, log) -> tuple[np.ndarray, np.ndarray | None, str]:
    if ckpt.get("dataset", "CIFAR-10") == "CIFAR-10":
        try:
            x, y, _ = load_cifar10(data_dir, "test")
            if n:
                x, y = x[:n], y[:n]
            return x, y, f"CIFAR-10 test batch, {len(x)} images"
        except Exception as e:  # noqa: BLE001 - no dataset here: still check agreement
            log(f"no CIFAR-10 test data ({e}); verifying agreement on random pixels only")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(n or 1000, C.IMAGE_SIZE, C.IMAGE_SIZE, C.CHANNELS), dtype=np.uint8)
    return x, None, ""
