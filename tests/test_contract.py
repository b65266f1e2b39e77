"""The model-file contract (runtime/contract.py, checked by runtime/session.py): metadata decoded key by
key, and every way a file can break the contract refused with the file and the breach named, in the
API and as a one-line CLI error."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cifar10kit.runtime import contract as C
from cifar10kit.runtime.contract import ContractError, ModelInfo
from cifar10kit.runtime.session import Classifier

from conftest import CLASSES, cli, make_contract_model, probe_probabilities

# ----------------------------------------------------------------------------------------------
# Metadata, key by key

GOOD = {
    C.KEY_CONTRACT: C.CONTRACT_VERSION,
    C.KEY_CLASS_NAMES: json.dumps(["cat", "dog"]),
    C.KEY_INPUT_LAYOUT: C.INPUT_LAYOUT,
    C.KEY_ARCHITECTURE: "airnet-8-16-16",
    C.KEY_DATASET: "CIFAR-10",
    C.KEY_TEST_ACCURACY: "0.9501",
    C.KEY_VERSION: "0.1.0",
    C.KEY_CREATED: "2026-01-01T00:00:00Z",
}


def test_metadata_round_trip_every_key():
    meta = {
        **GOOD,
        C.KEY_TEST_SET: "CIFAR-10 test batch, 10000 images",
        C.KEY_CHECKPOINT_SHA256: "ab" * 32,
        C.KEY_RECIPE: json.dumps({"preset": "fast", "epochs": 11}),
        C.KEY_SEED: "7",
        C.KEY_TTA: "flip",
        C.KEY_THRESHOLD: "0.4321",
        C.KEY_EXPORTER: "cifar10kit 0.1.0",
        C.KEY_PRECISION: "int8",
        C.KEY_GFLOP_PER_IMAGE: "1.2340",
        C.KEY_TEMPERATURE: "0.4960",
    }
    info = ModelInfo.from_metadata(meta, "m.onnx", has_cam=True)
    assert info.class_names == ("cat", "dog") and info.num_classes == 2
    assert (info.architecture, info.dataset, info.version, info.created) == (
        "airnet-8-16-16",
        "CIFAR-10",
        "0.1.0",
        "2026-01-01T00:00:00Z",
    )
    assert info.test_accuracy == 0.9501 and info.input_layout == C.INPUT_LAYOUT and info.contract_version == "1"
    assert info.test_set == "CIFAR-10 test batch, 10000 images" and info.checkpoint_sha256 == "ab" * 32
    assert info.recipe == {"preset": "fast", "epochs": 11} and info.seed == 7 and info.tta == "flip"
    assert info.uncertainty_threshold == info.threshold == 0.4321
    assert info.exporter == "cifar10kit 0.1.0" and info.precision == "int8"
    assert info.gflop_per_image == 1.234 and info.temperature == 0.496 and info.has_cam is True
    assert info.raw == meta and info.raw is not meta


def test_optional_keys_default_when_absent_or_empty():
    for meta in (GOOD, {**GOOD, **{k: "" for k in C.OPTIONAL_KEYS}}, {**GOOD, C.KEY_THRESHOLD: "null"}):
        info = ModelInfo.from_metadata(meta)
        assert info.test_set is None and info.checkpoint_sha256 is None and info.recipe == {}
        assert info.seed is None and info.tta == "none" and info.threshold is None
        assert info.exporter is None and info.precision == "fp32" and info.gflop_per_image is None
        assert info.temperature is None and info.has_cam is False
    assert ModelInfo.from_metadata({**GOOD, C.KEY_TEST_ACCURACY: ""}).test_accuracy is None
    assert ModelInfo.from_metadata({**GOOD, C.KEY_TEST_ACCURACY: "None"}).test_accuracy is None
    assert ModelInfo.from_metadata({**GOOD, C.KEY_RECIPE: "None"}).recipe == {}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({C.KEY_CLASS_NAMES: "cat,dog"}, "f.onnx: class_names is not JSON"),
        ({C.KEY_CLASS_NAMES: "[]"}, "f.onnx: class_names must be a non-empty JSON list of strings"),
        ({C.KEY_CLASS_NAMES: '{"a": 1}'}, "f.onnx: class_names must be a non-empty"),
        ({C.KEY_CLASS_NAMES: '["cat", 3]'}, "f.onnx: class_names must be a non-empty"),
        ({C.KEY_TEST_ACCURACY: "high"}, "f.onnx: test_accuracy is not a number: 'high'"),
        ({C.KEY_THRESHOLD: "low"}, "f.onnx: uncertainty_threshold is not a number: 'low'"),
        ({C.KEY_SEED: "1.5"}, "f.onnx: seed is not an integer: '1.5'"),
        ({C.KEY_RECIPE: "{"}, "f.onnx: recipe is not JSON"),
        ({C.KEY_RECIPE: "[1]"}, "f.onnx: recipe must be a JSON object"),
        ({C.KEY_CONTRACT: "2"}, "f.onnx: contract version '2', this runtime reads '1'"),
    ],
)
def test_bad_metadata_values_name_the_file_and_the_key(change, message):
    with pytest.raises(ContractError) as e:
        ModelInfo.from_metadata({**GOOD, **change}, "f.onnx")
    assert str(e.value).startswith(message), str(e.value)


def test_missing_required_keys_are_listed_in_order():
    meta = {k: v for k, v in GOOD.items() if k not in (C.KEY_DATASET, C.KEY_CONTRACT)}
    with pytest.raises(ContractError) as e:
        ModelInfo.from_metadata(meta, "f.onnx")
    assert str(e.value).startswith("f.onnx: metadata is missing cifar10kit.contract, dataset; ")
    assert "cifar10 export" in str(e.value)
    for key in C.REQUIRED_KEYS:
        with pytest.raises(ContractError, match=f"missing {key}"):
            ModelInfo.from_metadata({k: v for k, v in GOOD.items() if k != key})


def test_missing_keys_message_in_full_and_the_default_source():
    meta = {k: v for k, v in GOOD.items() if k != C.KEY_CREATED}
    with pytest.raises(ContractError) as e:
        ModelInfo.from_metadata(meta)
    assert str(e.value) == (
        "model: metadata is missing created; it was not written by `cifar10 export` (re-export the checkpoint with it)"
    )
    with pytest.raises(ContractError, match=r"^model: class_names is not JSON"):
        ModelInfo.from_metadata({**GOOD, C.KEY_CLASS_NAMES: "cat"})


def test_input_layout_is_read_from_the_file():
    """The field holds what the file says (for display), not the runtime's own constant."""
    info = ModelInfo.from_metadata({**GOOD, C.KEY_INPUT_LAYOUT: "NHWC uint8 RGB 0-255 (v2 exporter)"})
    assert info.input_layout == "NHWC uint8 RGB 0-255 (v2 exporter)"


# ----------------------------------------------------------------------------------------------
# Whole files: a good one, and one for each breach

BREACHES = {
    "nchw-shape": ({"shape": ("N", 3, 32, 32)}, "input shape ['N', 3, 32, 32], the contract says [N, 32, 32, 3]"),
    "five-dims": ({"shape": ("N", 32, 32, 3, 1)}, "the contract says [N, 32, 32, 3]"),
    "float-input": ({"dtype": "float"}, "is tensor(float), the contract says tensor(uint8)"),
    "input-name": ({"input_name": "image"}, "expected one input named 'pixels', found ['image']"),
    "two-inputs": ({"extra_input": True}, "expected one input named 'pixels', found ['pixels', 'extra']"),
    "no-probabilities": ({"output_name": "logits"}, "no 'probabilities' output (found ['logits'])"),
    "double-output": ({"output_dtype": "double"}, "not float32"),
    "probabilities-rank-3": (
        {"probs_rank3": True},
        "'probabilities' has shape ['N', 1, 10], the contract says [N, classes]",
    ),
    "no-metadata": ({"drop": C.REQUIRED_KEYS}, "metadata is missing"),
    "no-contract-key": ({"drop": (C.KEY_CONTRACT,)}, "metadata is missing cifar10kit.contract"),
    "contract-v2": ({"meta": {C.KEY_CONTRACT: "2"}}, "contract version '2'"),
    "class-count": (
        {"meta": {C.KEY_CLASS_NAMES: json.dumps(list(CLASSES[:5]))}},
        "10 output columns but 5 class names in metadata",
    ),
    "class-names-not-json": ({"meta": {C.KEY_CLASS_NAMES: "cat,dog"}}, "class_names is not JSON"),
    "class-names-empty": ({"meta": {C.KEY_CLASS_NAMES: "[]"}}, "class_names must be a non-empty"),
    "accuracy-not-number": ({"meta": {C.KEY_TEST_ACCURACY: "high"}}, "test_accuracy is not a number"),
}


@pytest.fixture(scope="module")
def bad_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad-models")
    data = make_contract_model(d / "good.onnx").read_bytes()
    files = {
        "truncated": (data[: len(data) // 2], "not a loadable ONNX model"),
        "random": (np.random.default_rng(5).bytes(4096), "not a loadable ONNX model"),
        "empty": (b"", "not a loadable ONNX model"),
        "text": (b"this is not a model\n", "not a loadable ONNX model"),
    }
    out = {}
    for key, (content, needle) in files.items():
        (d / f"{key}.onnx").write_bytes(content)
        out[key] = (d / f"{key}.onnx", needle)
    for key, (kw, needle) in BREACHES.items():
        out[key] = (make_contract_model(d / f"{key}.onnx", **kw), needle)
    (d / "folder.onnx").mkdir()
    out["folder"] = (d / "folder.onnx", "is a folder; give the path of a .onnx file")
    out["missing"] = (d / "missing.onnx", "no such model file")
    return out


def test_the_contract_model_follows_the_contract(tmp_path):
    model = Classifier(make_contract_model(tmp_path / "good.onnx"), provider="cpu")
    assert model.provider == "CPUExecutionProvider" and model.class_names == CLASSES
    assert model.info.has_cam is False and model.output_names == [C.OUTPUT_PROBS]
    pred = model.run(np.zeros((2, 32, 32, 3), np.uint8), with_cam=True)
    assert pred.probs.shape == (2, 10) and pred.cam is None
    np.testing.assert_allclose(pred.probs, 0.1, atol=1e-6)
    one = model.run(np.zeros((32, 32, 3), np.uint8))  # a single image is a batch of one
    assert one.probs.shape == (1, 10)
    for bad in (np.zeros((1, 32, 32, 3), np.float32), np.zeros((1, 3, 32, 32), np.uint8)):
        with pytest.raises(ValueError, match=r"pixels must be uint8 \[N, 32, 32, 3\]"):
            model.run(bad)
    assert model.predict_probs(np.zeros((0, 32, 32, 3), np.uint8)).shape == (0, 10)
    many = np.random.default_rng(0).integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_allclose(model.predict_probs(many, batch_size=3), model.run(many).probs, atol=1e-7)


def test_predict_probs_batches_for_the_provider(tmp_path, monkeypatch):
    model = Classifier(make_contract_model(tmp_path / "good.onnx"), provider="cpu")
    sizes, run = [], model.run
    monkeypatch.setattr(model, "run", lambda pixels: sizes.append(len(pixels)) or run(pixels))
    pixels = np.random.default_rng(1).integers(0, 256, (70, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_allclose(model.predict_probs(pixels), probe_probabilities(pixels), atol=1e-5)
    assert sizes == [32, 32, 6] and model.batch_size == 32  # cache-sized batches on the CPU
    model.provider = "CUDAExecutionProvider"
    assert model.batch_size == 512  # a GPU needs many images at once


@pytest.mark.parametrize("kind", ["truncated", "random", "empty", "text", *BREACHES, "folder", "missing"])
def test_bad_model_raises_contract_error(bad_models, kind):
    path, needle = bad_models[kind]
    with pytest.raises(ContractError) as e:
        Classifier(path, provider="cpu")
    assert str(e.value).startswith(str(path)) and needle in str(e.value), str(e.value)


@pytest.mark.parametrize(
    "kind", ["truncated", "nchw-shape", "float-input", "no-metadata", "contract-v2", "class-count", "missing"]
)
def test_predict_with_bad_model_is_a_one_line_error(bad_models, hostile_corpus, kind):
    root, _ = hostile_corpus
    path, needle = bad_models[kind]
    proc = cli("predict", "--model", str(path), "--provider", "cpu", str(root / "reference.png"), timeout=120)
    assert proc.returncode > 0 and "Traceback" not in proc.stderr, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and str(path) in errors[0] and needle in errors[0], proc.stderr


def test_an_ensemble_recipe_reads_back_member_by_member():
    from cifar10kit.runtime.contract import ensemble_recipe, member_recipes

    one, two = {"epochs": 30, "seed": 0}, {"epochs": 30, "cutout": 12}
    assert ensemble_recipe([one]) == one and member_recipes(one) == [one]
    pair = ensemble_recipe([one, two])
    assert list(pair) == ["member 1", "member 2"]
    assert member_recipes(json.loads(json.dumps(pair))) == [one, two]  # as the file stores it
    assert member_recipes({}) == [{}]
    odd = {"member 1": {"epochs": 30}, "note": "hand-written"}  # not the exporter's form: one recipe, as it is
    assert member_recipes(odd) == [odd]
