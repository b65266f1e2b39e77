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
IMAGE_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, CHANNELS)  # one image, HWC
INPUT_LAYOUT = "NHWC uint8 RGB 0-255"

OUTPUT_PROBS = "probabilities"
OUTPUT_CAM = "cam"

# 19: the lowest opset at which onnx's reference implementation runs int8 (QDQ) graphs too; files the
# exporter writes run unchanged in onnxruntime, OpenVINO and it (export/conformance.py). Older files still load.
OPSET = 19

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
KEY_CHECKPOINT_SHA256 = "checkpoint_sha256"  # an ensemble's file: each member's, comma-separated
KEY_RECIPE = "recipe"  # JSON: preset name and the training config; an ensemble's: {"member 1": {...}, ...}
KEY_SEED = "seed"
KEY_TTA = "tta"  # "none" or "flip": test-time augmentation baked into the graph
KEY_THRESHOLD = "uncertainty_threshold"  # top-1 probability below which a prediction is "uncertain"
KEY_EXPORTER = "exporter"  # exporter name and version, torch and onnx versions
KEY_PRECISION = "precision"  # "fp32", "fp16" or "int8"
KEY_GFLOP_PER_IMAGE = "gflop_per_image"  # forward-pass cost, for the achieved GFLOP/s that bench prints
KEY_TEMPERATURE = "temperature"  # softmax temperature inside the graph, fitted at export ("1.0000": none)
KEY_CALIBRATION_SET = "calibration_set"  # what the temperature and uncertainty threshold were fitted on
KEY_CASCADE = "cascade"  # JSON, cascades only: threshold, temperatures, stages, gflop_first, rest_share
OPTIONAL_KEYS = (
    KEY_TEST_SET,
    KEY_CHECKPOINT_SHA256,
    KEY_RECIPE,
    KEY_SEED,
    KEY_TTA,
    KEY_THRESHOLD,
    KEY_EXPORTER,
    KEY_PRECISION,
    KEY_GFLOP_PER_IMAGE,
    KEY_TEMPERATURE,
    KEY_CALIBRATION_SET,
    KEY_CASCADE,
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
    """What a model file says about itself, parsed and checked: one typed field per metadata key.

    Optional keys a file lacks become None (or the documented default: tta "none", precision
    "fp32"). `raw` keeps the strings as written, for display."""

    # required keys
    class_names: tuple[str, ...]
    architecture: str
    dataset: str
    test_accuracy: float | None
    version: str
    created: str
    input_layout: str = INPUT_LAYOUT
    contract_version: str = CONTRACT_VERSION
    # optional keys
    test_set: str | None = None
    checkpoint_sha256: str | None = None
    recipe: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    tta: str = "none"
    uncertainty_threshold: float | None = None
    exporter: str | None = None
    precision: str = "fp32"
    gflop_per_image: float | None = None
    temperature: float | None = None
    calibration_set: str | None = None
    cascade: dict[str, Any] = field(default_factory=dict)  # empty: not a cascade
    # from the graph, not the metadata
    has_cam: bool = False
    raw: dict[str, str] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def tta_summary(self) -> str:
        """The views a picture gets, e.g. 'none' or, for a cascade whose later nets look at more,
        'none; translate for the nets that join when the first is unsure'."""
        stages = self.cascade.get("tta") or []
        if len(stages) == 2 and stages[1] != stages[0]:
            return f"{stages[0]}; {stages[1]} for the nets that join when the first is unsure"
        return self.tta

    @property
    def threshold(self) -> float | None:
        """Short name of `uncertainty_threshold` (the app reads it)."""
        return self.uncertainty_threshold

    @classmethod
    def from_metadata(cls, meta: dict[str, str], source: str = "model", has_cam: bool = False) -> ModelInfo:
        """Check the required keys and decode every known one; raise ContractError naming `source`."""
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
        return cls(
            class_names=_class_names(meta[KEY_CLASS_NAMES], source),
            architecture=meta[KEY_ARCHITECTURE],
            dataset=meta[KEY_DATASET],
            test_accuracy=_number(meta, KEY_TEST_ACCURACY, source),
            version=meta[KEY_VERSION],
            created=meta[KEY_CREATED],
            input_layout=meta[KEY_INPUT_LAYOUT],
            contract_version=meta[KEY_CONTRACT],
            test_set=meta.get(KEY_TEST_SET) or None,
            checkpoint_sha256=meta.get(KEY_CHECKPOINT_SHA256) or None,
            recipe=_json_object(meta, KEY_RECIPE, source),
            seed=_integer(meta, KEY_SEED, source),
            tta=meta.get(KEY_TTA) or "none",
            uncertainty_threshold=_number(meta, KEY_THRESHOLD, source),
            exporter=meta.get(KEY_EXPORTER) or None,
            precision=meta.get(KEY_PRECISION) or "fp32",
            gflop_per_image=_number(meta, KEY_GFLOP_PER_IMAGE, source),
            temperature=_number(meta, KEY_TEMPERATURE, source),
            calibration_set=meta.get(KEY_CALIBRATION_SET) or None,
            cascade=_json_object(meta, KEY_CASCADE, source),
            has_cam=has_cam,
            raw=dict(meta),
        )


# ----------------------------------------------------------------------------------------------
# Decoding single values: every failure names the file and the key

_EMPTY = ("", "null", "None")


def _class_names(value: str, source: str) -> tuple[str, ...]:
    try:
        names = json.loads(value)
    except json.JSONDecodeError as e:
        raise ContractError(f"{source}: class_names is not JSON ({e})") from None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ContractError(f"{source}: class_names must be a non-empty JSON list of strings")
    return tuple(names)


def _number(meta: dict[str, str], key: str, source: str) -> float | None:
    value = meta.get(key, "")
    try:
        return float(value) if value not in _EMPTY else None
    except ValueError:
        raise ContractError(f"{source}: {key} is not a number: {value!r}") from None


def _integer(meta: dict[str, str], key: str, source: str) -> int | None:
    value = meta.get(key, "")
    try:
        return int(value) if value not in _EMPTY else None
    except ValueError:
        raise ContractError(f"{source}: {key} is not an integer: {value!r}") from None


def ensemble_recipe(recipes: list[dict[str, Any]]) -> dict[str, Any]:
    """The recipe a file states: one net's config, or an ensemble's as {"member 1": {...}, ...}."""
    return recipes[0] if len(recipes) == 1 else {f"member {i}": r for i, r in enumerate(recipes, 1)}


def member_recipes(recipe: dict[str, Any]) -> list[dict[str, Any]]:
    """The inverse of `ensemble_recipe`: each net's config (one for a single net)."""
    members = [v for k, v in recipe.items() if k.startswith("member ") and isinstance(v, dict)]
    return members if recipe and len(members) == len(recipe) else [recipe]


def _json_object(meta: dict[str, str], key: str, source: str) -> dict[str, Any]:
    value = meta.get(key, "")
    if value in _EMPTY:
        return {}
    try:
        obj = json.loads(value)
    except json.JSONDecodeError as e:
        raise ContractError(f"{source}: {key} is not JSON ({e})") from None
    if not isinstance(obj, dict):
        raise ContractError(f"{source}: {key} must be a JSON object")
    return obj
