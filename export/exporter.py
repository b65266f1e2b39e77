"""`cifar10 export`: a checkpoint -> one self-describing, verified `.onnx` file.

The recipe (`export` below): load the checkpoint (train/checkpoint.py); wrap the net so the graph
takes raw pixels (graph.py); one PyTorch pass over the verification images (verify.py); fit the
softmax temperature on the training images the run held out, else on half the test images
(calibrate.py); export and check the ONNX graph; compare onnxruntime with PyTorch; make the fp16 or
int8 variant (quantize.py) and compare it with fp32; run the final file in a second ONNX runtime
(conformance.py); write the metadata, and only then move the file into place. Any failed check
refuses the export and leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import onnx
import torch

from ..runtime import contract
from ..runtime.dataset import file_digest
from ..train.checkpoint import CheckpointError, load_model, resolve_checkpoint  # noqa: F401 - the export API
from . import conformance, verify
from .calibrate import fit_calibration, uncertainty_threshold
from .flops import gflop_per_image
from .graph import Deployable, export_onnx, set_metadata
from .quantize import CALIBRATION_IMAGES, make_variant
from .torch_runner import torch_runner  # noqa: F401 - `cifar10 bench --checkpoint` imports it from here


class ExportError(RuntimeError):
    """Export refused; the message says which check failed and by how much."""


def export(
    checkpoint: str | os.PathLike | Sequence[str | os.PathLike],
    output: str | os.PathLike,
    data_dir: str | None = None,
    tta: str | None = None,
    verify_n: int = 0,
    precision: str = "fp32",
    max_drop: float = 0.01,
    calibrate: bool = True,
    calibration_n: int = CALIBRATION_IMAGES,
    log: Callable[[str], object] = print,
) -> dict[str, Any]:
    """Export, verify and write `output`; returns the metadata and the figures of every check.

    checkpoint: one run folder or .pt file, or several: one ensemble file that averages their logits
    (they must have been trained on the same classes and pixel statistics).
    verify_n: images of the CIFAR-10 test set to check (0 = all 10,000). For checkpoints trained
    on other data, or with no CIFAR-10 at hand, random pixels still check agreement.
    precision: 'fp32', or a smaller variant made from the verified fp32 graph: 'fp16' (weights and
    arithmetic in half precision, for GPUs) or 'int8' (static quantisation calibrated on training
    images; `calibration_n` of them set the int8 ranges). A variant is refused if its accuracy falls
    more than `max_drop` below fp32's.
    calibrate: fit a softmax temperature (see `calibrate.fit_temperature`) so that the probabilities in
    the file are honest confidences: on the training images the members held out (`train --holdout`),
    else on half the labelled verification images. The uncertainty threshold comes from the same images."""
    if precision not in ("fp32", "fp16", "int8"):
        raise ValueError(f"precision {precision!r}: use fp32, fp16 or int8")
    output = Path(output)

    def refuse(problems: list[str]) -> None:
        if problems:
            raise ExportError(f"refusing to write {output}: " + "; ".join(problems))

    # 1. The checkpoint(s), wrapped to take raw pixels; PyTorch's answers on the verification images.
    paths = [
        resolve_checkpoint(c) for c in ([checkpoint] if isinstance(checkpoint, (str, os.PathLike)) else checkpoint)
    ]
    if not paths:
        raise ValueError("no checkpoint to export")
    nets, ckpts = zip(*(load_model(p) for p in paths))
    refuse(members_differ(paths, ckpts))
    ckpt = ckpts[0]
    tta = tta or ("flip" if ckpt.get("tta") in ("flip", "translate") else "none")  # 2 views: speed/accuracy balance
    module = Deployable(nets, ckpt["mean"], ckpt["std"], tta).eval()
    output.parent.mkdir(parents=True, exist_ok=True)
    pixels, labels, test_set = verify.verification_set(ckpt, data_dir, verify_n, log)
    logits = verify.torch_logits(module, pixels)

    # 2. Honest confidences: the temperature goes into the graph. Fitted on training images the members
    # set aside where they did (`train --holdout`), so the test set only measures; else on test images.
    held = verify.holdout_set(ckpts, data_dir, log)
    if held is not None:
        cal_pixels, cal_labels, cal_set = held
        log(f"calibrating on {cal_set}")
        cal_logits = verify.torch_logits(module, cal_pixels).numpy()
    else:
        cal_pixels, cal_labels, cal_logits = pixels, labels, logits.numpy()
        cal_set = test_set
    calibration = fit_calibration(cal_logits, cal_labels, log) if calibrate else {}
    if calibration and held is None:
        cal_set += " (the temperature on its even-numbered images)"
    if calibration:
        module.temperature.fill_(calibration["temperature"])
    with torch.no_grad():
        p_torch = module.probabilities(logits).numpy()  # with the fitted temperature, as in the graph

    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".export-") as tmp:
        # 3. The fp32 graph, checked by onnx and against PyTorch.
        log(f"exporting {module.arch} ({', '.join(map(str, paths))}) with TTA {tta}, opset {contract.OPSET}")
        model = export_onnx(module, Path(tmp) / "raw.onnx")
        meta = describe(ckpts, paths, module, test_set)
        model.doc_string = f"cifar10kit {module.arch}: uint8 NHWC RGB pixels in, class probabilities out"
        set_metadata(model, meta)
        onnx.checker.check_model(model, full_check=True)
        staged = Path(tmp) / "model.onnx"
        onnx.save(model, str(staged))
        check, probs = verify.verify(p_torch, staged, pixels, labels)
        log(check.summary())
        refuse(check.problems())

        # 4. The smaller variant, made from the verified fp32 file and compared with it.
        final = staged
        if precision != "fp32":
            variant = Path(tmp) / f"{precision}.onnx"
            make_variant(staged, variant, precision, data_dir, pixels, calibration_n)
            vprobs = verify.ort_probs(variant, pixels)
            drop = verify.compare_variant(precision, vprobs, probs, labels, log)
            if drop is not None and drop > max_drop:
                refuse([f"{precision} loses {drop:.2%} accuracy (limit {max_drop:.2%})"])
            model, probs, final = onnx.load(str(variant)), vprobs, variant
            meta[contract.KEY_PRECISION] = precision

        # 5. The final file: its measured accuracy in the metadata, then the same answers elsewhere.
        if labels is not None:
            meta[contract.KEY_TEST_ACCURACY] = f"{float((probs.argmax(1) == labels).mean()):.4f}"
        if cal_labels is not None:
            cal_probs = probs if held is None else verify.ort_probs(final, cal_pixels)
            meta[contract.KEY_THRESHOLD] = f"{uncertainty_threshold(cal_probs, cal_labels):.4f}"
            meta[contract.KEY_CALIBRATION_SET] = cal_set
        set_metadata(model, meta)
        onnx.save(model, str(staged))
        second = conformance.check(staged, pixels, probs, labels)
        log(second.summary())
        refuse(second.problems())
        os.replace(staged, output)
    size = output.stat().st_size
    log(f"wrote {output} ({size / 1e6:.1f} MB)")
    return {
        "metadata": meta,
        "verification": check.__dict__,
        "calibration": calibration,
        "conformance": second.__dict__,
        "bytes": size,
    }


RUN_LOCAL_KEYS = ("data_dir", "folder", "out", "name", "device", "threads", "download")


def members_differ(paths: Sequence[Path], ckpts: Sequence[dict[str, Any]]) -> list[str]:
    """Why these checkpoints cannot share one graph (one input, one set of classes), if they cannot."""
    problems = []
    for path, ckpt in zip(paths[1:], ckpts[1:]):
        for key, what in (("class_names", "classes"), ("mean", "pixel means"), ("std", "pixel spreads")):
            if list(ckpt[key]) != list(ckpts[0][key]):
                problems.append(
                    f"{path} was trained with other {what} than {paths[0]}; an ensemble's members share them"
                )
    return problems


def describe(
    ckpts: Sequence[dict[str, Any]], paths: Sequence[Path], module: Deployable, test_set: str
) -> dict[str, str]:
    """The contract's metadata for the fp32 file; accuracy and threshold are filled in once measured.
    An ensemble's file lists every member's checkpoint hash (comma-separated) and recipe."""
    from .. import __version__

    recipes = [recipe(ckpt) for ckpt in ckpts]
    seeds = {str(r.get("seed", "")) for r in recipes}
    return {
        contract.KEY_CONTRACT: contract.CONTRACT_VERSION,
        contract.KEY_CLASS_NAMES: json.dumps(list(ckpts[0]["class_names"])),
        contract.KEY_INPUT_LAYOUT: contract.INPUT_LAYOUT,
        contract.KEY_ARCHITECTURE: module.arch,
        contract.KEY_DATASET: ckpts[0].get("dataset", "CIFAR-10"),
        contract.KEY_TEST_ACCURACY: "",
        contract.KEY_TEST_SET: test_set,
        contract.KEY_VERSION: __version__,
        contract.KEY_CREATED: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        contract.KEY_CHECKPOINT_SHA256: ",".join(file_digest(p, "sha256") for p in paths),
        contract.KEY_RECIPE: json.dumps(contract.ensemble_recipe(recipes)),
        contract.KEY_SEED: seeds.pop() if len(seeds) == 1 else "",  # a seed only where all members share it
        contract.KEY_TTA: module.tta,
        contract.KEY_PRECISION: "fp32",
        contract.KEY_GFLOP_PER_IMAGE: f"{gflop_per_image(module):.4f}",
        contract.KEY_TEMPERATURE: f"{float(module.temperature):.4f}",
        contract.KEY_EXPORTER: f"cifar10kit {__version__}; torch {torch.__version__}; onnx {onnx.__version__}",
    }


def recipe(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The run's training config as the file states it: its preset first, nothing local."""
    # Where a run happened (folders, device, threads) is not part of its recipe, and would leak local paths.
    config = {k: v for k, v in ckpt.get("config", {}).items() if k not in RUN_LOCAL_KEYS}
    if config.get("teacher"):  # which files taught it, not where they were
        config["teacher"] = [Path(t).name for t in config["teacher"]]
    return {"preset": config.get("preset"), **config}
