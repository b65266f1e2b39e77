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

import numpy as np
import onnx
import torch

from ..runtime import contract
from ..runtime.dataset import file_digest
from ..runtime.evaluate import expected_calibration_error
from ..train.checkpoint import CheckpointError, load_model, resolve_checkpoint  # noqa: F401 - the export API
from . import conformance, verify
from .calibrate import MIN_CALIBRATION_IMAGES, fit_calibration, uncertainty_threshold
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
    cascade: float | None = None,
    tta_rest: str | None = None,
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
    else on half the labelled verification images. The uncertainty threshold comes from the same images.
    cascade: with several checkpoints, a threshold in (0, 1): the first net answers alone where its
    calibrated top probability reaches it, the others join where it does not (export/cascade.py);
    `tta_rest` is then the others' test-time augmentation (default `tta`)."""
    if precision not in ("fp32", "fp16", "int8"):
        raise ValueError(f"precision {precision!r}: use fp32, fp16 or int8")
    if cascade is not None:
        return export_cascade(
            checkpoint,
            output,
            cascade,
            data_dir=data_dir,
            tta=tta,
            verify_n=verify_n,
            precision=precision,
            max_drop=max_drop,
            calibrate=calibrate,
            calibration_n=calibration_n,
            log=log,
            tta_rest=tta_rest,
        )
    if tta_rest is not None:
        raise ValueError("a TTA for the rest of a cascade (--tta-rest) needs --cascade")
    output = Path(output)

    def refuse(problems: list[str]) -> None:
        if problems:
            raise ExportError(f"refusing to write {output}: " + "; ".join(problems))

    # 1. The checkpoint(s), wrapped to take raw pixels; PyTorch's answers on the verification images.
    paths = checkpoint_paths(checkpoint)
    nets, ckpts = zip(*(load_model(p) for p in paths))
    refuse(members_differ(paths, ckpts))
    ckpt = ckpts[0]
    tta = default_tta(tta, ckpt)
    module = Deployable(nets, ckpt["mean"], ckpt["std"], tta).eval()
    output.parent.mkdir(parents=True, exist_ok=True)
    pixels, labels, test_set = verify.verification_set(ckpt, data_dir, verify_n, log)
    logits = verify.torch_logits(module, pixels)

    # 2. Honest confidences: the temperature goes into the graph. Fitted on training images the members
    # set aside where they did (`train --holdout`), so the test set only measures; else on test images.
    held = verify.holdout_set(ckpts, data_dir, log)
    cal_pixels, cal_labels, cal_set = held if held is not None else (pixels, labels, test_set)
    calibration: dict[str, Any] = {}
    if calibrate:
        if held is not None:
            log(f"calibrating on {cal_set}")
        cal_logits = logits if held is None else verify.torch_logits(module, cal_pixels)
        calibration = fit_calibration(cal_logits.numpy(), cal_labels, log)
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
            make_variant(staged, variant, precision, data_dir, pixels, calibration_n, module.passes_per_image)
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


def default_tta(tta: str | None, ckpt: dict[str, Any]) -> str:
    """As asked; else flip for nets trained with TTA (2 views: the speed/accuracy balance), else none."""
    return tta or ("flip" if ckpt.get("tta") in ("flip", "translate") else "none")


def checkpoint_paths(checkpoint: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    many = [checkpoint] if isinstance(checkpoint, (str, os.PathLike)) else list(checkpoint)
    if not many:
        raise ValueError("no checkpoint to export")
    return [resolve_checkpoint(c) for c in many]


# ----------------------------------------------------------------------------------------------
# A cascade: two stages, each exported and verified as above, composed into one file


def export_cascade(
    checkpoint: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    threshold: float,
    data_dir: str | None = None,
    tta: str | None = None,
    verify_n: int = 0,
    precision: str = "fp32",
    max_drop: float = 0.01,
    calibrate: bool = True,
    calibration_n: int = CALIBRATION_IMAGES,
    log: Callable[[str], object] = print,
    tta_rest: str | None = None,
) -> dict[str, Any]:
    """`export` for a cascade: the first checkpoint is the first stage, the others the rest. Each stage is
    exported and checked by `export` (at temperature 1), then the composed graph is checked against the
    stages' own answers and in a second runtime.

    The rest may look at more views (`tta_rest`) than the first net: they only run for the few unsure
    images, where the extra views pay most. To have the first net's other views join too, list its
    checkpoint again among the rest."""
    from .cascade import cascade_probs, combined_scores, compose, pass_weight, tradeoff

    output = Path(output)
    paths = checkpoint_paths(checkpoint)
    if len(paths) < 2:
        raise ValueError("a cascade needs two or more checkpoints: the first answers alone when it is sure")
    if not 0 < threshold < 1:
        raise ValueError(f"cascade threshold {threshold}: a probability between 0 and 1 (e.g. 0.95)")
    nets, ckpts = zip(*(load_model(p) for p in paths))
    if problems := members_differ(paths, ckpts):
        raise ExportError(f"refusing to write {output}: " + "; ".join(problems))
    tta = default_tta(tta, ckpts[0])
    tta_rest = tta_rest or tta
    output.parent.mkdir(parents=True, exist_ok=True)
    pixels, labels, test_set = verify.verification_set(ckpts[0], data_dir, verify_n, log)
    held = verify.holdout_set(ckpts, data_dir, log)
    cal_pixels, cal_labels, cal_set = held if held is not None else (pixels, labels, test_set)
    k = len(paths) - 1
    weight = pass_weight(
        *(
            Deployable(n, ckpts[0]["mean"], ckpts[0]["std"], v).passes_per_image
            for n, v in ((nets[:1], tta), (nets[1:], tta_rest))
        )
    )
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".export-") as tmp:
        # 1. The stages, each a verified contract file of its own.
        stages = [Path(tmp) / "first.onnx", Path(tmp) / "rest.onnx"]
        for stage, members, views in zip(stages, (paths[:1], paths[1:]), (tta, tta_rest)):
            log(f"cascade, {stage.stem} stage: {', '.join(map(str, members))}")
            export(
                members,
                stage,
                data_dir=data_dir,
                tta=views,
                verify_n=verify_n,
                precision=precision,
                max_drop=max_drop,
                calibrate=False,  # the cascade fits its own two temperatures below
                calibration_n=calibration_n,
                log=log,
            )
        first, rest = (verify.ort_probs(stage, pixels) for stage in stages)

        # 2. Two temperatures, on the same images `export` would calibrate on; what other thresholds would do.
        answers = (first, rest) if held is None else tuple(verify.ort_probs(s, cal_pixels) for s in stages)
        calibration: dict[str, Any] = {}
        if calibrate:
            calibration = cascade_calibration(*answers, weight, threshold, cal_labels, log)
            if calibration and held is None:
                cal_set += " (the temperatures on its even-numbered images)"
        t_first, t_all = calibration.get("temperature", 1.0), calibration.get("temperature_all", 1.0)
        options = [] if cal_labels is None else tradeoff(*answers, weight, cal_labels, t_first, t_all)
        if options:
            log(
                f"thresholds on {len(cal_labels)} {'held-out training' if held is not None else 'test'} images "
                "(share asking the rest, accuracy): "
                + ", ".join(f"{o['threshold']:g}: {o['rest_share']:.1%} {o['accuracy']:.4f}" for o in options)
            )

        # 3. The composed graph, against the stages' answers.
        model = compose(*(onnx.load(str(s)) for s in stages), weight, threshold, t_first, t_all)
        staged = Path(tmp) / "cascade.onnx"
        onnx.save(model, str(staged))
        want, unsure = cascade_probs(first, rest, weight, threshold, t_first, t_all)
        probs = verify.ort_probs(staged, pixels)
        check = verify.Verification(
            n=len(pixels),
            max_abs_diff=float(np.abs(probs - want).max()),
            agreement=float((probs.argmax(1) == want.argmax(1)).mean()),
            torch_accuracy=None if labels is None else float((want.argmax(1) == labels).mean()),
            onnx_accuracy=None if labels is None else float((probs.argmax(1) == labels).mean()),
            reference="its stages",
        )
        log(check.summary())
        problems = check.problems() + ([f"max |dp| {check.max_abs_diff:.2e}"] if check.max_abs_diff > 1e-4 else [])
        if problems:
            raise ExportError(
                f"refusing to write {output}: the cascade disagrees with its stages: " + "; ".join(problems)
            )
        figures: dict[str, Any] = {
            "rest_share": float(unsure.mean()),
            "rest_weight": weight,
            "images": len(pixels),
            "tradeoff": options,
        }
        line = f"cascade: the other {k} net(s) ran for {figures['rest_share']:.1%} of {len(pixels)} images"
        if labels is not None:
            figures["first_accuracy"] = float((first.argmax(1) == labels).mean())
            figures["every_net_accuracy"] = float((combined_scores(first, rest, weight).argmax(1) == labels).mean())
            line += (
                f"; accuracy {check.onnx_accuracy:.4f} (every net on every image: "
                f"{figures['every_net_accuracy']:.4f}, the first alone: {figures['first_accuracy']:.4f})"
            )
        log(line)

        # 4. Metadata, then the same answers in a second runtime.
        meta = describe(ckpts, paths, Deployable(nets, ckpts[0]["mean"], ckpts[0]["std"], tta), test_set)
        meta.update(cascade_metadata(nets, ckpts[0], (tta, tta_rest), threshold, (t_first, t_all), figures))
        meta[contract.KEY_PRECISION] = precision
        if labels is not None:
            meta[contract.KEY_TEST_ACCURACY] = f"{check.onnx_accuracy:.4f}"
        if cal_labels is not None:
            cal_probs = probs if held is None else verify.ort_probs(staged, cal_pixels)
            meta[contract.KEY_THRESHOLD] = f"{uncertainty_threshold(cal_probs, cal_labels):.4f}"
            meta[contract.KEY_CALIBRATION_SET] = cal_set
        model.doc_string = (
            f"cifar10kit {meta[contract.KEY_ARCHITECTURE]}: uint8 NHWC RGB pixels in, class probabilities out"
        )
        set_metadata(model, meta)
        onnx.checker.check_model(model, full_check=True)
        onnx.save(model, str(staged))
        second = conformance.check(staged, pixels, probs, labels)
        log(second.summary())
        if second.problems():
            raise ExportError(f"refusing to write {output}: " + "; ".join(second.problems()))
        os.replace(staged, output)
    size = output.stat().st_size
    log(f"wrote {output} ({size / 1e6:.1f} MB)")
    return {
        "metadata": meta,
        "verification": check.__dict__,
        "calibration": calibration,
        "conformance": second.__dict__,
        "cascade": figures,
        "bytes": size,
    }


def cascade_calibration(
    first: np.ndarray,
    rest: np.ndarray,
    weight: float,
    threshold: float,
    labels: np.ndarray | None,
    log: Callable[[str], object],
) -> dict[str, Any]:
    """The cascade's two temperatures fitted on the even-numbered labelled images, its calibration error
    on the odd-numbered ones; {} when there are too few labels. `weight`: see cascade.pass_weight."""
    from .cascade import cascade_probs, fit_temperatures

    if labels is None or len(labels) < MIN_CALIBRATION_IMAGES:
        have = 0 if labels is None else len(labels)
        log(f"not calibrated: needs {MIN_CALIBRATION_IMAGES}+ labelled images, have {have}")
        return {}
    t_first, t_all = fit_temperatures(first, rest, weight, labels)
    odd = cascade_probs(first[1::2], rest[1::2], weight, threshold, t_first, t_all)[0]
    out = dict(temperature=t_first, temperature_all=t_all, fit_images=len(labels[0::2]), held_out_images=len(odd))
    out["ece_after"] = expected_calibration_error(odd, labels[1::2])
    log(
        f"calibrated: temperatures {t_first:.3f} (the first net alone) and {t_all:.3f} (every net) fitted on "
        f"{out['fit_images']} images; expected calibration error on the other {len(odd)}: {out['ece_after']:.4f}"
    )
    return out


def cascade_metadata(
    nets: Sequence[torch.nn.Module],
    ckpt: dict[str, Any],
    ttas: tuple[str, str],
    threshold: float,
    temperatures: tuple[float, float],
    figures: dict[str, Any],
) -> dict[str, str]:
    """What a cascade's file says of itself beyond an ensemble's: its shape, its temperature for most
    images, its cost when every stage runs, and the `cascade` key (threshold, both temperatures, stages,
    each stage's test-time augmentation, how much the rest's answer counts against the first's, the first
    stage's cost). `tta` stays the first stage's: what
    most images get."""
    first = nets[0].arch
    rest = nets[1].arch if len(nets) == 2 else f"{len(nets) - 1} nets: " + " + ".join(n.arch for n in nets[1:])
    first_cost, rest_cost = (
        gflop_per_image(Deployable(stage, ckpt["mean"], ckpt["std"], views))
        for stage, views in ((nets[:1], ttas[0]), (nets[1:], ttas[1]))
    )
    return {
        contract.KEY_ARCHITECTURE: f"cascade of {len(nets)}: {first}, then {rest} when unsure",
        contract.KEY_TEMPERATURE: f"{temperatures[0]:.4f}",
        contract.KEY_TTA: ttas[0],
        contract.KEY_GFLOP_PER_IMAGE: f"{first_cost + rest_cost:.4f}",
        contract.KEY_CASCADE: json.dumps(
            {
                "threshold": threshold,
                "temperatures": [round(t, 4) for t in temperatures],
                "first": first,
                "rest": [n.arch for n in nets[1:]],
                "tta": list(ttas),
                "rest_weight": round(figures["rest_weight"], 4),
                "gflop_first": round(first_cost, 4),
                "rest_share": round(figures["rest_share"], 4),
            }
        ),
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
