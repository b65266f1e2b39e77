"""`cifar10 export --cascade`: the first net alone when it is sure, every net when it is not, in one file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from conftest import built_once, cli, has_torch, one_line_error

needs_torch = pytest.mark.skipif(not has_torch(), reason="needs the [train] extra (torch)")


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _run(path, pixels: np.ndarray) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"pixels": pixels})


# ----------------------------------------------------------------------------------------------
# The maths


def test_stage_log_probabilities_average_to_the_members_logits():
    pytest.importorskip("onnx")  # the exporter's extra; the maths itself is numpy
    from cifar10kit.export.cascade import cascade_probs, combined_scores

    rng = np.random.default_rng(0)
    l1, l2, l3 = (rng.normal(0, 3, (50, 10)) for _ in range(3))
    first, rest = _softmax(l1), _softmax((l2 + l3) / 2)  # the rest stage averages its two nets' logits
    want = _softmax((l1 + l2 + l3) / 3 / 0.7)
    np.testing.assert_allclose(_softmax(combined_scores(first, rest, 2) / 0.7), want, atol=1e-9)
    # Nothing unsure: the first net alone, at its own temperature; everything unsure: every net.
    alone, unsure = cascade_probs(first, rest, 2, 1e-9, 0.5, 0.7)
    assert not unsure.any()
    np.testing.assert_allclose(alone, _softmax(l1 / 0.5), atol=1e-6)
    together, unsure = cascade_probs(first, rest, 2, 1 - 1e-9, 0.5, 0.7)
    assert unsure.all()
    np.testing.assert_allclose(together, want, atol=1e-6)
    # In between, each image by its own confidence.
    top = _softmax(l1 / 0.5).max(1)
    mixed, unsure = cascade_probs(first, rest, 2, float(np.median(top)), 0.5, 0.7)
    assert 0 < unsure.sum() < len(unsure)
    np.testing.assert_allclose(mixed[unsure], want[unsure], atol=1e-6)
    np.testing.assert_allclose(mixed[~unsure], _softmax(l1 / 0.5)[~unsure], atol=1e-6)


def test_every_pass_through_a_net_counts_once():
    """A rest stage of two nets on six views each is twelve passes against the first net's one: an
    unsure picture gets the mean of all thirteen passes' logits, not a third of the first's single view."""
    pytest.importorskip("onnx")
    from cifar10kit.export.cascade import combined_scores, pass_weight

    assert pass_weight(1, 2) == 2 and pass_weight(1, 12) == 12 and pass_weight(2, 2) == 1
    rng = np.random.default_rng(1)
    first_view = rng.normal(0, 3, (50, 10))
    rest_passes = rng.normal(0, 3, (12, 50, 10))
    first, rest = _softmax(first_view), _softmax(rest_passes.mean(0))
    every_pass = (first_view + rest_passes.sum(0)) / 13
    np.testing.assert_allclose(
        _softmax(combined_scores(first, rest, pass_weight(1, 12))), _softmax(every_pass), atol=1e-9
    )
    assert np.abs(_softmax(combined_scores(first, rest, 2)) - _softmax(every_pass)).max() > 0.01  # the old weighting


def _graph(nodes: list, initializers: list):
    """A stand-in contract graph: uint8 NHWC pixels in, probabilities and (N, 10, 1, 1) class maps out."""
    from onnx import TensorProto, helper

    from cifar10kit.runtime import contract

    nodes = [
        *nodes,
        helper.make_node("Softmax", ["logits"], [contract.OUTPUT_PROBS], axis=1),
        helper.make_node("Unsqueeze", ["logits", "hw_axes"], [contract.OUTPUT_CAM]),
    ]
    graph = helper.make_graph(
        nodes,
        "stand-in",
        [helper.make_tensor_value_info(contract.INPUT_NAME, TensorProto.UINT8, ["N", 32, 32, 3])],
        [
            helper.make_tensor_value_info(contract.OUTPUT_PROBS, TensorProto.FLOAT, ["N", 10]),
            helper.make_tensor_value_info(contract.OUTPUT_CAM, TensorProto.FLOAT, ["N", 10, 1, 1]),
        ],
        initializer=[*initializers, helper.make_tensor("hw_axes", TensorProto.INT64, [2], [2, 3])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", contract.OPSET)], ir_version=10)


def test_the_rest_runs_on_the_unsure_images_only():
    """The second stage here answers with the size of the batch it was given (as logit 0): the cascade's
    unsure rows must show how many unsure images there were, and a batch with none must not run it."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from cifar10kit.export.cascade import cascade_probs, compose
    from cifar10kit.runtime import contract

    # The first stage: logits are the first ten red values of row 0, so each image sets its own confidence.
    first = _graph(
        [
            helper.make_node("Slice", [contract.INPUT_NAME, "at", "to", "axes"], ["row"]),
            helper.make_node("Reshape", ["row", "flat"], ["row_flat"]),
            helper.make_node("Cast", ["row_flat"], ["logits"], to=TensorProto.FLOAT),
        ],
        [
            helper.make_tensor("at", TensorProto.INT64, [3], [0, 0, 0]),
            helper.make_tensor("to", TensorProto.INT64, [3], [1, 10, 1]),
            helper.make_tensor("axes", TensorProto.INT64, [3], [1, 2, 3]),
            helper.make_tensor("flat", TensorProto.INT64, [2], [-1, 10]),
        ],
    )
    rest = _graph(
        [
            helper.make_node("Shape", [contract.INPUT_NAME], ["n_int"], end=1),
            helper.make_node("Cast", ["n_int"], ["n"], to=TensorProto.FLOAT),
            helper.make_node("Concat", ["n_int", "ten"], ["n_by_10"], axis=0),
            helper.make_node("Mul", ["n", "one_hot"], ["row_logits"]),
            helper.make_node("Expand", ["row_logits", "n_by_10"], ["logits"]),
        ],
        [
            helper.make_tensor("one_hot", TensorProto.FLOAT, [10], [1.0] + [0.0] * 9),
            helper.make_tensor("ten", TensorProto.INT64, [1], [10]),
        ],
    )
    onnx.checker.check_model(rest)
    model = compose(first, rest, 1, 0.9, 1.0, 1.0)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])

    pixels = np.zeros((7, 32, 32, 3), np.uint8)
    pixels[:, 0, 0, 0] = 9  # class 0 far ahead: sure ...
    pixels[[1, 4, 5], 0, 0, 0] = 1  # ... except three images, whose ten logits are all within one
    probs, cam = session.run(None, {contract.INPUT_NAME: pixels})
    first_probs = _softmax(pixels[:, 0, :10, 0].astype(np.float64))
    for m, batch in ((3, pixels), (1, pixels[[0, 4, 6]])):  # the rest saw m images, whatever the batch
        rest_probs = _softmax(np.tile(np.eye(10)[0] * m, (len(batch), 1)))
        want, unsure = cascade_probs(_softmax(batch[:, 0, :10, 0].astype(np.float64)), rest_probs, 1, 0.9, 1, 1)
        assert unsure.sum() == m
        got = probs if m == 3 else session.run(None, {contract.INPUT_NAME: batch})[0]
        np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(probs[[0, 2, 3, 6]], first_probs[[0, 2, 3, 6]], atol=1e-6)
    assert cam.shape == (7, 10, 1, 1)
    sure = session.run(None, {contract.INPUT_NAME: pixels[[0, 2]]})[0]  # nothing unsure: the rest never runs
    np.testing.assert_allclose(sure, first_probs[[0, 2]], atol=1e-6)


# ----------------------------------------------------------------------------------------------
# A cascade of two tiny nets, exported through the real pipeline


@pytest.fixture(scope="module")
def second_run(tmp_path_factory, tiny_cifar):
    if not has_torch():
        pytest.skip("needs the [train] extra (torch)")

    def build(out):
        from cifar10kit.train.trainer import make_config, train

        cfg = make_config(
            "smoke", data_dir=str(tiny_cifar), out=str(out), name="s1", epochs=2, subset=1000, batch_size=250, seed=1
        )
        return str(train(cfg))

    return Path(built_once(tmp_path_factory, "cascade-second-run", build))


@needs_torch
def test_a_cascade_file_answers_as_its_stages_say(trained_run, second_run, tiny_cifar, tmp_path):
    from cifar10kit.export.cascade import cascade_probs
    from cifar10kit.export.exporter import export
    from cifar10kit.runtime import contract
    from cifar10kit.runtime.dataset import load_cifar10
    from cifar10kit.runtime.session import Classifier

    quiet = dict(data_dir=str(tiny_cifar), tta="none", calibrate=False, log=lambda *_: None)
    export(trained_run, tmp_path / "a.onnx", **quiet)
    export(second_run, tmp_path / "b.onnx", **quiet)
    x, y, _ = load_cifar10(str(tiny_cifar), "test")
    (pa, cam_a), (pb, cam_b) = _run(tmp_path / "a.onnx", x), _run(tmp_path / "b.onnx", x)
    threshold = float(np.median(pa.max(1)))  # half the images sure, half not (200 test images: no temperatures)

    result = export([trained_run, second_run], tmp_path / "c.onnx", cascade=threshold, **quiet)
    probs, cam = _run(tmp_path / "c.onnx", x)
    want, unsure = cascade_probs(pa, pb, 1, threshold, 1.0, 1.0)
    assert 0.3 < unsure.mean() < 0.7
    np.testing.assert_allclose(probs, want, atol=1e-5)
    np.testing.assert_allclose(cam, np.where(unsure[:, None, None, None], (cam_a + cam_b) / 2, cam_a), atol=1e-5)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    # One image at a time (the If decides per call) gives each image the answer it got in the batch.
    one = np.concatenate([_run(tmp_path / "c.onnx", x[i : i + 1])[0] for i in range(24)])
    np.testing.assert_allclose(one, probs[:24], atol=1e-5)

    assert result["cascade"]["rest_share"] == pytest.approx(unsure.mean())
    assert result["conformance"]["agreement"] >= 0.99  # the file, unchanged, in a second ONNX runtime
    meta = result["metadata"]
    assert meta[contract.KEY_ARCHITECTURE] == "cascade of 2: airnet-16-32-32, then airnet-16-32-32 when unsure"
    info = Classifier(tmp_path / "c.onnx", provider="cpu").info
    assert info.cascade["threshold"] == threshold and info.cascade["rest"] == ["airnet-16-32-32"]
    assert info.cascade["gflop_first"] == pytest.approx(info.gflop_per_image / 2, rel=0.01)
    assert info.test_accuracy == pytest.approx((probs.argmax(1) == y).mean(), abs=1e-4)


@needs_torch
def test_cascade_calibrates_two_temperatures(trained_run, second_run, calibrated_export, tmp_path):
    from cifar10kit.export.cascade import fit_temperatures
    from cifar10kit.export.exporter import export
    from cifar10kit.runtime import contract
    from cifar10kit.runtime.dataset import load_cifar10

    data = calibrated_export[0]  # 1,000 labelled test images
    quiet = dict(data_dir=str(data), tta="flip", log=lambda *_: None)
    for run, name in ((trained_run, "a"), (second_run, "b")):
        export(run, tmp_path / f"{name}.onnx", calibrate=False, **quiet)
    x, y, _ = load_cifar10(str(data), "test")
    pa, pb = _run(tmp_path / "a.onnx", x)[0], _run(tmp_path / "b.onnx", x)[0]
    result = export([trained_run, second_run], tmp_path / "c.onnx", cascade=0.9, **quiet)
    t_first, t_all = fit_temperatures(pa, pb, 1, y)
    assert result["calibration"]["temperature"] == pytest.approx(t_first, rel=1e-4)
    # The thresholds one could have chosen, on the same images: a higher one asks the rest more often.
    options = result["cascade"]["tradeoff"]
    assert [o["threshold"] for o in options] == [0.8, 0.9, 0.95, 0.98, 0.99]
    shares = [o["rest_share"] for o in options]
    assert shares == sorted(shares) and all(0 <= o["accuracy"] <= 1 for o in options)
    at_09 = next(o for o in options if o["threshold"] == 0.9)
    assert at_09["rest_share"] == pytest.approx(result["cascade"]["rest_share"])  # same images, same threshold
    assert result["calibration"]["temperature_all"] == pytest.approx(t_all, rel=1e-4)
    cascade = json.loads(result["metadata"][contract.KEY_CASCADE])
    assert cascade["temperatures"] == [round(t_first, 4), round(t_all, 4)]
    assert result["metadata"][contract.KEY_TEMPERATURE] == f"{t_first:.4f}"
    assert "even-numbered" in result["metadata"][contract.KEY_CALIBRATION_SET]


@needs_torch
def test_the_rest_may_look_at_more_views(trained_run, second_run, tiny_cifar, tmp_path):
    """--tta-rest: the first net on the picture alone, the one that joins on the picture and its mirror;
    the file answers as those two stages would, and says what each stage looks at and costs."""
    from cifar10kit.export.cascade import cascade_probs
    from cifar10kit.export.exporter import export
    from cifar10kit.runtime.dataset import load_cifar10
    from cifar10kit.runtime.session import Classifier

    quiet = dict(data_dir=str(tiny_cifar), calibrate=False, log=lambda *_: None)
    export(trained_run, tmp_path / "a.onnx", tta="none", **quiet)
    export(second_run, tmp_path / "b.onnx", tta="flip", **quiet)
    x, _, _ = load_cifar10(str(tiny_cifar), "test")
    (pa, _), (pb, _) = _run(tmp_path / "a.onnx", x), _run(tmp_path / "b.onnx", x)
    threshold = float(np.median(pa.max(1)))
    export([trained_run, second_run], tmp_path / "c.onnx", cascade=threshold, tta="none", tta_rest="flip", **quiet)
    # Every pass counts once: the second net's two views twice as much as the first net's one.
    want, _ = cascade_probs(pa, pb, 2, threshold, 1.0, 1.0)
    np.testing.assert_allclose(_run(tmp_path / "c.onnx", x)[0], want, atol=1e-5)

    info = Classifier(tmp_path / "c.onnx", provider="cpu").info
    assert info.cascade["rest_weight"] == 2
    assert info.tta == "none" and info.cascade["tta"] == ["none", "flip"]
    assert info.tta_summary == "none; flip for the nets that join when the first is unsure"
    # Every stage running: one view of the first net, two of the second.
    assert info.cascade["gflop_first"] == pytest.approx(info.gflop_per_image / 3, rel=0.01)
    with pytest.raises(ValueError, match="needs --cascade"):
        export(trained_run, tmp_path / "d.onnx", tta_rest="flip", **quiet)
    alone = cli("export", str(trained_run), "-o", str(tmp_path / "d.onnx"), "--tta-rest", "flip")
    one_line_error(alone, "--tta-rest", "add --cascade")
    assert alone.returncode == 2 and not (tmp_path / "d.onnx").exists()


@needs_torch
def test_a_net_in_both_stages_is_stored_once(trained_run, second_run, tiny_cifar, tmp_path):
    """The first net listed again among the rest (so that its other views join): its int8 weights are
    identical in both stages, and the rest's branch reads the first stage's copy instead of its own."""
    import onnx
    from onnx import numpy_helper

    from cifar10kit.export.cascade import cascade_probs
    from cifar10kit.export.exporter import export
    from cifar10kit.runtime.dataset import load_cifar10

    quiet = dict(data_dir=str(tiny_cifar), calibrate=False, precision="int8", max_drop=0.2, log=lambda *_: None)
    export(trained_run, tmp_path / "a.onnx", tta="none", **quiet)
    export([trained_run, second_run], tmp_path / "b.onnx", tta="flip", **quiet)
    x, _, _ = load_cifar10(str(tiny_cifar), "test")
    (pa, _), (pb, _) = _run(tmp_path / "a.onnx", x), _run(tmp_path / "b.onnx", x)
    threshold = float(np.median(pa.max(1)))
    both = [trained_run, trained_run, second_run]
    result = export(both, tmp_path / "c.onnx", cascade=threshold, tta="none", tta_rest="flip", **quiet)

    want, _ = cascade_probs(pa, pb, 4, threshold, 1.0, 1.0)  # two nets on two views after one on one
    np.testing.assert_allclose(_run(tmp_path / "c.onnx", x)[0], want, atol=1e-5)  # the same answers
    assert result["conformance"]["agreement"] >= 0.99  # and the same in OpenVINO
    model = onnx.load(str(tmp_path / "c.onnx"))
    branch = next(a.g for n in model.graph.node if n.op_type == "If" for a in n.attribute if a.name == "then_branch")

    def large(graph):
        return {
            numpy_helper.to_array(t).tobytes() for t in graph.initializer if numpy_helper.to_array(t).nbytes >= 1024
        }

    first_weights = large(onnx.load(str(tmp_path / "a.onnx")).graph)
    assert len(first_weights) >= 4 and first_weights <= large(model.graph)  # the first stage's own copy
    assert not large(branch) & first_weights  # read from there, not held again
    stages = (tmp_path / "a.onnx").stat().st_size + (tmp_path / "b.onnx").stat().st_size
    assert result["bytes"] < stages - 0.8 * sum(len(w) for w in first_weights)


@needs_torch
def test_cascade_flag_errors(trained_run, second_run, tmp_path):
    one = cli("export", str(trained_run), "-o", str(tmp_path / "x.onnx"), "--cascade")
    assert one.returncode == 2
    one_line_error(one, "--cascade 0.95", "two or more checkpoints")
    high = cli("export", str(trained_run), str(second_run), "-o", str(tmp_path / "x.onnx"), "--cascade", "1.5")
    assert high.returncode == 2
    one_line_error(high, "--cascade 1.5", "between 0 and 1")
    assert not (tmp_path / "x.onnx").exists()


# ----------------------------------------------------------------------------------------------
# benchmarks/cascade_tradeoff.py


def test_tradeoff_script_on_a_cascade_of_one_net_with_itself(trained_model, tiny_cifar, tmp_path):
    """Two identical stages: asking the second changes nothing, so every threshold scores what the first
    net alone does, while the share asking it still grows with the threshold."""
    import subprocess
    import sys

    pytest.importorskip("onnx")
    from cifar10kit.runtime.examples import examples_dir

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "cascade_tradeoff.py"
    args = [str(trained_model), str(trained_model), "--data-dir", str(tiny_cifar), "--folder", str(examples_dir())]
    proc = subprocess.run(
        [sys.executable, str(script), *args, "--plot", str(tmp_path / "c.png"), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out["results"]) == {"test set", "examples"}
    for r in out["results"].values():
        assert r["every_net"] == pytest.approx(r["first_alone"])
        assert all(o["accuracy"] == pytest.approx(r["first_alone"]) for o in r["thresholds"])
        shares = [o["rest_share"] for o in r["thresholds"]]
        assert shares == sorted(shares) and shares[-1] > shares[0]
    assert (tmp_path / "c.png").stat().st_size > 10_000
