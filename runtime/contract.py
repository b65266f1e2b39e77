"""The model-file contract: the one place that says what a cifar10kit `.onnx` file holds.

The exporter writes files that follow it and the runtime refuses files that do not, so both import
these names from here. Plain Python only: the runtime must not need `onnx` or `torch` to read it.

A model file is self-describing:

- input  `pixels`         uint8   [N, 32, 32, 3]  raw RGB, 0..255, N dynamic. Normalisation is
                                                  inside the graph, so no client can get it wrong.
- output `probabilities`  float32 [N, C]          softmax over the C classes (rows sum to 1).
- output `cam`            float32 [N, C, h, w]    class-activation maps: the last feature map
                                                  projected on the classifier weights, one h x w map
                                                  per class, in logit units before pooling (h = w = 3
                                                  for the 32x32 nets here). Optional: older or
                                                  third-party files may lack it.
- metadata (ONNX `metadata_props`, all values are strings): see `REQUIRED_KEYS` and `OPTIONAL_KEYS`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

CONTRACT_VERSION = "1"

INPUT_NAME = "pixels"
INPUT_DTYPE = "uint8"
IMAGE_SIZE = 32
CHANNELS = 3
INPUT_LAYOUT = "NHWC uint8 RGB 0-255"

OUTPUT_PROBS = "probabilities"
OUTPUT_CAM = "cam"

OPSET = 18

# Metadata keys. Every value is a string; JSON where the value is structured.
KEY_CONTRACT = "cifar10kit.contract"  # CONTRACT_VERSION
KEY_CLASS_NAMES = "class_names"  # JSON list of str, index = output column
KEY_INPUT_LAYOUT = "input_layout"  # INPUT_LAYOUT
KEY_ARCHITECTURE = "architecture"  # e.g. "airnet-128-384-384"
KEY_DATASET = "dataset"  # e.g. "CIFAR-10"
KEY_TEST_ACCURACY = "test_accuracy"  # measured through onnxruntime on this file, "0.9512"
KEY_VERSION = "version"  # cifar10kit version that wrote the file
KEY_CREATED = "created"  # ISO 8601 UTC
REQUIRED_KEYS = (
    KEY_CONTRACT,
    KEY_CLASS_NAMES,
    KEY_INPUT_LAYOUT,
    KEY_ARCHITECTURE,
    KEY_DATASET,
    KEY_TEST_ACCURACY,
    KEY_VERSION,
    KEY_CREATED,
)

KEY_TEST_SET = "test_set"  # what test_accuracy was measured on ("CIFAR-10 test batch, 10000 images")
KEY_CHECKPOINT_SHA256 = "checkpoint_sha256"
KEY_RECIPE = "recipe"  # JSON: preset name and the training config
KEY_SEED = "seed"
KEY_TTA = "tta"  # "none" or "flip": test-time augmentation baked into the graph
KEY_THRESHOLD = "uncertainty_threshold"  # top-1 probability below which a prediction is "uncertain"
KEY_EXPORTER = "exporter"  # exporter name and version, torch and onnx versions
KEY_PRECISION = "precision"  # "fp32", "fp16" or "int8"
KEY_GFLOPS = "gflop_per_image"  # forward-pass cost, for the achieved GFLOP/s that bench prints
KEY_TEMPERATURE = "temperature"  # softmax temperature inside the graph, fitted at export ("1.0000": none)
OPTIONAL_KEYS = (
    KEY_TEST_SET,
    KEY_CHECKPOINT_SHA256,
    KEY_RECIPE,
    KEY_SEED,
    KEY_TTA,
    KEY_THRESHOLD,
    KEY_EXPORTER,
    KEY_PRECISION,
    KEY_GFLOPS,
    KEY_TEMPERATURE,
)

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

# CIFAR-10 training-set channel statistics (0..255 scale); the graph normalises with them.
CIFAR10_MEAN = (125.307, 122.950, 113.865)
CIFAR10_STD = (62.993, 62.089, 66.705)


class ContractError(ValueError):
    """A model file that does not follow the contract; the message names the file and the breach."""


@dataclass(frozen=True)
class ModelInfo:
    """What a model file says about itself, parsed and checked."""

    class_names: tuple[str, ...]
    architecture: str
    dataset: str
    test_accuracy: float | None
    version: str
    created: str
    has_cam: bool
    threshold: float | None
    tta: str
    raw: dict[str, str] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def parse_metadata(meta: dict[str, str], source: str = "model") -> dict[str, Any]:
    """Check the required keys and decode the structured ones; raise ContractError naming `source`."""
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise ContractError(
            f"{source}: metadata is missing {', '.join(missing)}; "
            "it was not written by `cifar10 export` (re-export the checkpoint with it)"
        )
    if meta[KEY_CONTRACT] != CONTRACT_VERSION:
        raise ContractError(
            f"{source}: contract version {meta[KEY_CONTRACT]!r}, this runtime reads "
            f"{CONTRACT_VERSION!r}; upgrade cifar10kit or re-export the model"
        )
    try:
        names = json.loads(meta[KEY_CLASS_NAMES])
    except json.JSONDecodeError as e:
        raise ContractError(f"{source}: class_names is not JSON ({e})") from None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ContractError(f"{source}: class_names must be a non-empty JSON list of strings")
    out: dict[str, Any] = {"class_names": tuple(names)}
    for key in (KEY_TEST_ACCURACY, KEY_THRESHOLD):
        value = meta.get(key, "")
        try:
            out[key] = float(value) if value not in ("", "null", "None") else None
        except ValueError:
            raise ContractError(f"{source}: {key} is not a number: {value!r}") from None
    return out
