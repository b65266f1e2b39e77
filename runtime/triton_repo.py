"""A Triton Inference Server model repository for a model file, served by Triton's onnxruntime backend.

    DIR/<name>/config.pbtxt     the model configuration (protobuf text format)
    DIR/<name>/labels.txt       class names, one a line: Triton's classification extension reads them
    DIR/<name>/1/model.onnx     the model file, unchanged

The configuration follows the model-file contract (uint8 `pixels` in, `probabilities` and `cam` out,
the batch dimension left to Triton) and turns on dynamic batching with the same values `cifar10
serve` uses. Written by hand as text, so the light runtime needs no protobuf package.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from . import contract
from .server import MAX_BATCH_SIZE, MODEL_NAME, PREFERRED_BATCH_SIZES, QUEUE_DELAY_US
from .session import Classifier

LABELS_FILE = "labels.txt"
KINDS = ("gpu", "cpu")


class RepositoryError(ValueError):
    """A repository that cannot be written as asked; the message says why in one line."""


# ----------------------------------------------------------------------------------------------
# config.pbtxt


def _dims(shape) -> str:
    return "[ " + ", ".join(str(int(d)) for d in shape) + " ]"


def _output(name: str, dims, labels: bool = False) -> str:
    label_line = f'    label_filename: "{LABELS_FILE}"\n' if labels else ""
    return f"""\
  {{
    name: "{name}"
    data_type: TYPE_FP32
    dims: {_dims(dims)}
{label_line}  }}"""


def config_text(model: Classifier, name: str = MODEL_NAME, kind: str = "gpu") -> str:
    """The model configuration for `model`, with the instance group on the GPU or the CPU."""
    if kind not in KINDS:
        raise RepositoryError(f"instance kind {kind!r}: use gpu or cpu")
    info = model.info
    n = len(info.class_names)
    outputs = [_output(contract.OUTPUT_PROBS, [n], labels=True)]
    if info.has_cam:
        cam_shape = next(o.shape for o in model.session.get_outputs() if o.name == contract.OUTPUT_CAM)[1:]
        if not all(isinstance(d, int) for d in cam_shape):
            raise RepositoryError(f"{model.path}: cam output shape {cam_shape} is not fixed")
        outputs.append(_output(contract.OUTPUT_CAM, cam_shape))
    outputs_text = ",\n".join(outputs)
    accuracy = f"{info.test_accuracy:.4f}" if info.test_accuracy is not None else "not recorded"
    other = "cpu" if kind == "gpu" else "gpu"
    switch = "Without a GPU, use `kind: KIND_CPU` above" if kind == "gpu" else "With a GPU, use `kind: KIND_GPU` above"
    return f"""\
# Triton Inference Server model configuration for {model.path.name}
# ({info.architecture}, {info.dataset}, test accuracy {accuracy}), written by `cifar10 triton-repo`.
# Clients send uint8 RGB images [N, 32, 32, 3]; normalisation is inside the graph.
name: "{name}"
backend: "onnxruntime"
max_batch_size: {MAX_BATCH_SIZE}
input [
  {{
    name: "{contract.INPUT_NAME}"
    data_type: TYPE_UINT8
    format: FORMAT_NHWC
    dims: {_dims([contract.IMAGE_SIZE, contract.IMAGE_SIZE, contract.CHANNELS])}
  }}
]
output [
{outputs_text}
]
# Requests wait up to {QUEUE_DELAY_US} us for others to share a batch; a preferred size that is
# ready goes at once.
dynamic_batching {{
  preferred_batch_size: {_dims(PREFERRED_BATCH_SIZES)}
  max_queue_delay_microseconds: {QUEUE_DELAY_US}
}}
instance_group [
  {{
    count: 1
    kind: KIND_{kind.upper()}
  }}
]
# {switch} (`cifar10 triton-repo MODEL DIR --kind {other}` writes that variant).
"""


# ----------------------------------------------------------------------------------------------
# The repository folder


def write_repository(
    model_path: str | os.PathLike,
    repo_dir: str | os.PathLike,
    name: str = MODEL_NAME,
    kind: str = "gpu",
) -> Path:
    """Write DIR/<name>/ for `model_path` and return that folder. An existing one is replaced whole,
    atomically: the new folder is assembled beside it and renamed into place."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name in (".", ".."):
        raise RepositoryError(f"model name {name!r}: use letters, digits, '.', '_' and '-'")
    model = Classifier(model_path, provider="cpu", notify=lambda _m: None)
    if any("\n" in c or "\r" in c for c in model.class_names):
        raise RepositoryError(f"{model.path}: a class name holds a line break; Triton's label file cannot")
    text = config_text(model, name, kind)
    root = Path(repo_dir)
    if root.exists() and not root.is_dir():
        raise RepositoryError(f"{root}: exists and is not a folder")
    root.mkdir(parents=True, exist_ok=True)
    target = root / name
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    try:
        (tmp / "1").mkdir()
        shutil.copyfile(model.path, tmp / "1" / "model.onnx")
        (tmp / "config.pbtxt").write_text(text, encoding="utf-8")
        (tmp / LABELS_FILE).write_text("".join(f"{c}\n" for c in model.class_names), encoding="utf-8")
        os.chmod(tmp, 0o755)
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{name}.old.", dir=root))
            os.replace(target, old / name)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
