"""A cascade: the first net answers alone when it is sure, the others join only when it is not.

An ensemble's nets agree on most images; on CIFAR-10 the default's first net gives 83% of the test
images a calibrated top probability of 95% or more, and on those the second net almost never changes
the answer. So the graph runs the first stage on every image, and an ONNX `If` runs the rest, on the
unsure images only (gathered out of the batch, their answers scattered back), when there are any;
each image gets the whole ensemble's answer if it was unsure, the first net's if not. A single image
(the app, an interactive client) costs one net most of the time, a batch one net per image plus the
rest for its unsure share, and either gets the same per-image answers.

The two stages are complete contract files (each exported, verified and quantised on its own), composed
here without touching their insides, so any runtime that runs them and `If` runs the cascade. Averaging
the stages' log-probabilities is averaging their logits: the two differ by one number per image, which
the softmax ignores.

numpy and onnx only: the maths is checked without PyTorch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..runtime import contract
from .calibrate import fit_temperature

_FLOOR = 1e-30  # log(0) guard: a class a softmax rounded to zero stays far below the others


# ----------------------------------------------------------------------------------------------
# The maths, in numpy: the reference the composed graph is verified against


def log_probs(probs: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(probs.astype(np.float64), _FLOOR))


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def combined_scores(first: np.ndarray, rest: np.ndarray, rest_weight: float) -> np.ndarray:
    """Every pass's mean logits (up to a constant per image), from the two stages' probabilities at
    temperature 1. `rest_weight`: the rest's passes per image over the first's (see pass_weight)."""
    return (log_probs(first) + rest_weight * log_probs(rest)) / (1 + rest_weight)


def pass_weight(first_passes: int, rest_passes: int) -> float:
    """How much the rest's answer counts against the first net's: one net on one view after one net on
    one view counts once, two nets on six views each twelve times. Every pass through a net counts
    once, so an unsure picture gets the mean of all its passes, as an ensemble over the same views
    would give it. (Counting the rest as its two nets only, the first net's single unshifted view
    weighed a third and dragged the answer towards it: on the JPEG q75 test copy the cascade scored
    below its own rest stage.)"""
    return rest_passes / first_passes


def cascade_probs(
    first: np.ndarray, rest: np.ndarray, rest_weight: float, threshold: float, t_first: float, t_all: float
) -> tuple[np.ndarray, np.ndarray]:
    """(the cascade's probabilities, which images asked the rest) from the stages' raw probabilities."""
    alone = log_probs(first) / t_first
    unsure = _softmax(alone).max(1) < threshold
    scores = np.where(unsure[:, None], combined_scores(first, rest, rest_weight) / t_all, alone)
    return _softmax(scores).astype(np.float32), unsure


def tradeoff(
    first: np.ndarray,
    rest: np.ndarray,
    rest_weight: float,
    labels: np.ndarray,
    t_first: float,
    t_all: float,
    thresholds: tuple[float, ...] = (0.8, 0.9, 0.95, 0.98, 0.99),
) -> list[dict[str, float]]:
    """For each threshold: the share of images that would ask the rest, and the cascade's accuracy.
    What to weigh when choosing `--cascade T` (on held-out images where the run has them)."""
    rows = []
    for t in thresholds:
        probs, unsure = cascade_probs(first, rest, rest_weight, t, t_first, t_all)
        rows.append(
            {"threshold": t, "rest_share": float(unsure.mean()), "accuracy": float((probs.argmax(1) == labels).mean())}
        )
    return rows


def fit_temperatures(
    first: np.ndarray, rest: np.ndarray, rest_weight: float, labels: np.ndarray
) -> tuple[float, float]:
    """The first net's temperature and the whole ensemble's, each fitted on the even-numbered images
    (as `calibrate.fit_calibration` does): one net alone and the ensemble are differently confident."""
    return (
        fit_temperature(log_probs(first)[0::2], labels[0::2]),
        fit_temperature(combined_scores(first, rest, rest_weight)[0::2], labels[0::2]),
    )


# ----------------------------------------------------------------------------------------------
# The graph


def _prefixed(graph: onnx.GraphProto, prefix: str, keep: set[str]) -> onnx.GraphProto:
    """A copy of `graph` whose node, value and initializer names carry `prefix` (except `keep`), so that
    two exported graphs can live in one file."""
    g = onnx.GraphProto()
    g.CopyFrom(graph)

    def rename(name: str) -> str:
        return name if not name or name in keep else prefix + name

    for i, node in enumerate(g.node):
        node.name = prefix + (node.name or f"node{i}")  # unnamed nodes would collide once prefixed
        node.input[:] = [rename(n) for n in node.input]
        node.output[:] = [rename(n) for n in node.output]
    for tensor in g.initializer:
        tensor.name = rename(tensor.name)
    for value in [*g.value_info, *g.output]:
        value.name = rename(value.name)
    return g


def _read_shared_weights(outer: onnx.GraphProto, inner: onnx.GraphProto, min_bytes: int = 1024) -> int:
    """Drop `inner`'s large initializers that equal one of `outer`'s and have its nodes read `outer`'s
    (an `If` branch sees its graph's values): a net listed in both stages is stored once. Each of
    `outer`'s tensors stands in for one of `inner`'s at most, so no two inner nodes come to share one.
    Returns the bytes saved."""
    by_content: dict[tuple, str] = {}
    for t in outer.initializer:
        array = numpy_helper.to_array(t)
        if array.nbytes >= min_bytes:
            by_content.setdefault((array.dtype.str, array.shape, array.tobytes()), t.name)
    renamed, kept, saved = {}, [], 0
    for t in inner.initializer:
        array = numpy_helper.to_array(t)
        name = (
            by_content.pop((array.dtype.str, array.shape, array.tobytes()), None) if array.nbytes >= min_bytes else None
        )
        if name is None:
            kept.append(t)
        else:
            renamed[t.name], saved = name, saved + array.nbytes
    for node in inner.node:
        node.input[:] = [renamed.get(n, n) for n in node.input]
    del inner.initializer[:]
    inner.initializer.extend(kept)
    return saved


def _floats(name: str) -> onnx.ValueInfoProto:
    """A branch output: float32, its shape left to the runtime (it follows the batch)."""
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, None)


def _const(name: str, value: Any, dtype=np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(value, dtype=dtype), name)


def compose(
    first: onnx.ModelProto,
    rest: onnx.ModelProto,
    rest_weight: float,
    threshold: float,
    t_first: float,
    t_all: float,
) -> onnx.ModelProto:
    """One contract graph from two contract files exported at temperature 1: `first` always runs, `rest`
    inside an `If`, on the images whose calibrated top probability from `first` is under `threshold`
    (when there are any). Outputs as the contract says; metadata is the caller's."""
    # The rest reads "rest/images": the unsure rows of the input, gathered in its branch.
    a, b = _prefixed(first.graph, "first/", {contract.INPUT_NAME}), _prefixed(rest.graph, "rest/", set())
    _read_shared_weights(a, b)
    probs_a, cam_a = f"first/{contract.OUTPUT_PROBS}", f"first/{contract.OUTPUT_CAM}"
    probs_b, cam_b = f"rest/{contract.OUTPUT_PROBS}", f"rest/{contract.OUTPUT_CAM}"
    node = helper.make_node
    k = float(rest_weight)
    constants = [
        _const("cascade/floor", _FLOOR),
        _const("cascade/threshold", threshold),
        _const("cascade/t_first", t_first),
        _const("cascade/t_all", t_all),
        _const("cascade/rest_weight", k / (1 + k)),
        _const("cascade/first_weight", 1 / (1 + k)),
        _const("cascade/zero", 0.0),
        _const("cascade/axis0", [0], np.int64),
        _const("cascade/axis1", [1], np.int64),
        _const("cascade/axes123", [1, 2, 3], np.int64),
    ]
    first_stage = [
        node("Max", [probs_a, "cascade/floor"], ["cascade/pa"]),
        node("Log", ["cascade/pa"], ["cascade/log_a"]),
        node("Div", ["cascade/log_a", "cascade/t_first"], ["cascade/alone"]),
        node("Softmax", ["cascade/alone"], ["cascade/p_alone"], axis=1),
        node("ReduceMax", ["cascade/p_alone", "cascade/axis1"], ["cascade/top"], keepdims=0),
        node("Less", ["cascade/top", "cascade/threshold"], ["cascade/unsure"]),
        node("Cast", ["cascade/unsure"], ["cascade/unsure_f"], to=TensorProto.FLOAT),
        node("ReduceMax", ["cascade/unsure_f"], ["cascade/any_f"], keepdims=0),  # a scalar, over the batch
        node("Greater", ["cascade/any_f", "cascade/zero"], ["cascade/any"]),
    ]
    # The rest on the unsure images only; every member's mean log-probabilities (logits up to a constant)
    # and class maps for those rows, written over the first net's (which the sure rows keep).
    rest_stage = [
        node("NonZero", ["cascade/unsure"], ["cascade/unsure_at"]),  # (1, M)
        node("Squeeze", ["cascade/unsure_at", "cascade/axis0"], ["cascade/rows"]),  # (M,) for Gather
        node("Transpose", ["cascade/unsure_at"], ["cascade/row_index"], perm=[1, 0]),  # (M, 1) for ScatterND
        node("Gather", [contract.INPUT_NAME, "cascade/rows"], [f"rest/{contract.INPUT_NAME}"], axis=0),
        *b.node,
        node("Max", [probs_b, "cascade/floor"], ["cascade/pb"]),
        node("Log", ["cascade/pb"], ["cascade/log_b"]),
        node("Gather", ["cascade/log_a", "cascade/rows"], ["cascade/log_a_unsure"], axis=0),
        node("Mul", ["cascade/log_a_unsure", "cascade/first_weight"], ["cascade/wa"]),
        node("Mul", ["cascade/log_b", "cascade/rest_weight"], ["cascade/wb"]),
        node("Add", ["cascade/wa", "cascade/wb"], ["cascade/all_unsure"]),
        node("ScatterND", ["cascade/log_a", "cascade/row_index", "cascade/all_unsure"], ["cascade/all"]),
        node("Gather", [cam_a, "cascade/rows"], ["cascade/cam_a_unsure"], axis=0),
        node("Mul", ["cascade/cam_a_unsure", "cascade/first_weight"], ["cascade/cam_wa"]),
        node("Mul", [cam_b, "cascade/rest_weight"], ["cascade/cam_wb"]),
        node("Add", ["cascade/cam_wa", "cascade/cam_wb"], ["cascade/cam_all_unsure"]),
        node("ScatterND", [cam_a, "cascade/row_index", "cascade/cam_all_unsure"], ["cascade/cam_all"]),
    ]
    then_branch = helper.make_graph(
        rest_stage, "rest", [], [_floats("cascade/all"), _floats("cascade/cam_all")], initializer=list(b.initializer)
    )
    else_branch = helper.make_graph(
        [
            node("Identity", ["cascade/log_a"], ["cascade/all_first"]),
            node("Identity", [cam_a], ["cascade/cam_first"]),
        ],
        "first_only",
        [],
        [_floats("cascade/all_first"), _floats("cascade/cam_first")],
    )
    finish = [
        node(
            "If",
            ["cascade/any"],
            ["cascade/mixed", "cascade/cam_mixed"],
            then_branch=then_branch,
            else_branch=else_branch,
        ),
        node("Div", ["cascade/mixed", "cascade/t_all"], ["cascade/together"]),
        node("Unsqueeze", ["cascade/unsure", "cascade/axis1"], ["cascade/unsure_2d"]),
        node("Where", ["cascade/unsure_2d", "cascade/together", "cascade/alone"], ["cascade/scores"]),
        node("Softmax", ["cascade/scores"], [contract.OUTPUT_PROBS], axis=1),
        node("Unsqueeze", ["cascade/unsure", "cascade/axes123"], ["cascade/unsure_4d"]),
        node("Where", ["cascade/unsure_4d", "cascade/cam_mixed", cam_a], [contract.OUTPUT_CAM]),
    ]
    graph = helper.make_graph(
        [*a.node, *first_stage, *finish],
        "cascade",
        list(first.graph.input),
        list(first.graph.output),
        initializer=[*a.initializer, *constants],
    )
    opsets = {o.domain: o for o in [*rest.opset_import, *first.opset_import]}  # the same in files we export
    model = helper.make_model(graph, opset_imports=list(opsets.values()), ir_version=first.ir_version)
    model.doc_string = first.doc_string
    return model
