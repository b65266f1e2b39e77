"""Smaller variants of a verified fp32 file: fp16 (for GPUs) and int8 (static quantisation).

Both keep the contract's input and output types (uint8 in, float32 out). int8 is written in the QDQ
format (QuantizeLinear / DequantizeLinear pairs around plain float operators): standard ONNX that
any conformant runtime executes, and that runtimes with int8 kernels fuse into them.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import numpy as np
import onnx

from ..runtime import contract
from ..runtime.dataset import load_cifar10

CALIBRATION_IMAGES = 1024
# onnxruntime's percentile calibrator keeps every activation of the images it is given until it has
# seen them all: measured 4.2 MB per image, per view, per 128-384-384 net (more than 24 GB for 1,024
# images through two such nets with 6-view TTA). It is given them in chunks of at most this many image
# passes (about 9 GB) and merges each chunk's histograms into the last: every export calibrates on all
# its images, whatever its nets and views.
CALIBRATION_PASSES = 2048


def make_variant(
    src: Path,
    dst: Path,
    precision: str,
    data_dir: str | None,
    pixels: np.ndarray,
    calibration_n: int = CALIBRATION_IMAGES,
    passes_per_image: int = 1,
) -> None:
    """Write the fp16 or int8 copy of the fp32 file `src` to `dst` (int8: ranges from `calibration_n`
    images, each going through the graph's nets and views `passes_per_image` times)."""
    if precision == "fp16":
        make_fp16(src, dst)
    elif precision == "int8":
        batches = calibration_images(data_dir, pixels, calibration_n)
        make_int8(src, dst, batches, chunk=calibration_chunk(batches.shape[:2], passes_per_image))
    else:
        raise ValueError(f"precision {precision!r}: use fp16 or int8")


def make_fp16(src: Path, dst: Path) -> None:
    """Weights and arithmetic in half precision; casts at the edges keep the contract's types."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    # The softmax stays in float32: in half precision its rows sum to 1 only within ~5e-4, which a
    # runtime that computes fp16 as written (onnx's reference evaluator, a GPU) shows and the contract
    # does not allow. It is one small op at the end; the convolutions are where half precision pays.
    blocked = [*DEFAULT_OP_BLOCK_LIST, "Softmax"]
    half = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True, op_block_list=blocked)
    onnx.save(_topologically_sorted(_softmax_straight_out(half)), str(dst))


def _topologically_sorted(model: onnx.ModelProto) -> onnx.ModelProto:
    """The converter appends the casts it adds at the end of the node list. ONNX requires every node
    to come after the nodes that produce its inputs; onnxruntime and OpenVINO sort for themselves,
    the reference evaluator (and other strict runtimes) run the list as written."""
    g = model.graph
    known = {""} | {v.name for v in g.input} | {t.name for t in g.initializer}
    pending, ordered = [onnx.NodeProto() for _ in g.node], []
    for copy, node in zip(pending, g.node):
        copy.CopyFrom(node)
    while pending:
        ready = [n for n in pending if all(i in known for i in n.input)]
        if not ready:
            raise ValueError("fp16 graph has a node whose inputs are never produced")
        for n in ready:
            known.update(n.output)
        ordered += ready
        pending = [n for n in pending if all(n is not r for r in ready)]
    del g.node[:]
    g.node.extend(ordered)
    return model


def _softmax_straight_out(model: onnx.ModelProto) -> onnx.ModelProto:
    """The converter casts a blocked op's float32 result to fp16 and the graph output back to float32,
    which rounds the probabilities to fp16 after all; the softmax writes the graph output itself instead."""
    g = model.graph
    outputs = {o.name for o in g.output}

    def only_cast(name: str, to: int) -> onnx.NodeProto | None:
        users = [n for n in g.node if name in n.input]
        ok = (
            len(users) == 1
            and users[0].op_type == "Cast"
            and any(a.name == "to" and a.i == to for a in users[0].attribute)
        )
        return users[0] if ok else None

    for softmax in [n for n in g.node if n.op_type == "Softmax"]:
        down = only_cast(softmax.output[0], onnx.TensorProto.FLOAT16)
        up = down and only_cast(down.output[0], onnx.TensorProto.FLOAT)
        if up is None or up.output[0] not in outputs:
            continue
        dropped = {softmax.output[0], down.output[0]}
        softmax.output[0] = up.output[0]
        g.node.remove(down)
        g.node.remove(up)
        kept = [v for v in g.value_info if v.name not in dropped]
        del g.value_info[:]
        g.value_info.extend(kept)
    return model


def calibration_chunk(batches: tuple[int, int], passes_per_image: int) -> int:
    """How many of the (count, size) calibration batches the calibrator is given at once: the most that
    keep images x passes within CALIBRATION_PASSES and divide the batches evenly (at least one)."""
    count, size = batches
    fits = max(1, CALIBRATION_PASSES // (size * passes_per_image))
    return max(k for k in range(1, min(fits, count) + 1) if count % k == 0)


def calibration_images(data_dir: str | None, fallback: np.ndarray, n: int = CALIBRATION_IMAGES) -> np.ndarray:
    """Up to n training images (a fixed random choice), else the verification images, in equal batches."""
    if n < 1:
        raise ValueError(f"calibration images: {n}; give at least 1 (default {CALIBRATION_IMAGES})")
    try:
        calib, _, _ = load_cifar10(data_dir, "train")
        calib = calib[np.random.default_rng(0).choice(len(calib), min(n, len(calib)), replace=False)]
    except Exception:  # noqa: BLE001 - no training data: calibrate on the verification images
        calib = fallback[:n]
    # Equal batches: onnxruntime's percentile calibrator stacks them and fails on a short last one.
    batch = min(64, len(calib))
    return calib[: len(calib) // batch * batch].reshape(-1, batch, *calib.shape[1:])


def make_int8(src: Path, dst: Path, batches: np.ndarray, narrow: bool = True, chunk: int | None = None) -> None:
    """Static QDQ quantisation: int8 per-channel weights, uint8 activations, ranges from `batches`,
    given to the calibrator `chunk` batches at a time (None: all at once; see calibration_chunk).
    `narrow`: weights within [-64, 64] (see narrow_weights); False only to make the files of old."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.set_range(0, len(batches))

        def __len__(self) -> int:
            return len(batches)

        def set_range(self, start_index: int, end_index: int) -> None:  # the calibrator's chunking asks for it
            self.batches = iter([{contract.INPUT_NAME: b} for b in batches[start_index:end_index]])

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
            quantize_static(
                str(prepped),
                str(dst),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.Percentile,
                nodes_to_exclude=keep_float,
                # 7-bit weights: see narrow_weights. Free on CPUs with VNNI or AMX, and without it a
                # CPU with AVX2 only (most laptops) computes the file wrongly.
                reduce_range=narrow,
                # Chunks: the calibrator empties its activations into histograms after each (named for
                # min/max, but every histogram calibrator merges its chunks the same way).
                extra_options={"CalibStridedMinMax": chunk} if chunk and chunk < len(batches) else {},
            )
    finally:
        root.setLevel(level)
    onnx.save(_one_consumer_per_dequantized_weight(onnx.load(str(dst))), str(dst))


def _one_consumer_per_dequantized_weight(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give every consumer of a shared, dequantised initializer its own DequantizeLinear node.

    Members trained on the same images have the same whitening filters (computed from those images, not
    learned), so an ensemble's graph holds them once and one DequantizeLinear feeds both members' first
    convolutions. OpenVINO 2026.4 computes such a graph wrongly (top-1 agreement with onnxruntime near
    chance) and the untied graph right; onnxruntime makes the same copies for itself before fusing.
    """
    g = model.graph
    weights = {t.name: t for t in g.initializer}
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in g.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    copies = []
    for dq in [n for n in g.node if n.op_type == "DequantizeLinear" and n.input[0] in weights]:
        for k, user in enumerate(users.get(dq.output[0], [])[1:], 1):
            copy = onnx.NodeProto()
            copy.CopyFrom(dq)
            copy.name = f"{dq.name}_{k}"
            for j, name in enumerate(dq.input):  # a copy of the tensors too: OpenVINO merges nodes that share them
                if name in weights:
                    tensor = onnx.TensorProto()
                    tensor.CopyFrom(weights[name])
                    tensor.name = copy.input[j] = f"{name}_{k}"
                    g.initializer.append(tensor)
            copy.output[0] = f"{dq.output[0]}_{k}"
            for j, name in enumerate(user.input):
                if name == dq.output[0]:
                    user.input[j] = copy.output[0]
            copies.append(copy)
    if copies:
        nodes = copies + list(g.node)  # they read initializers only, so first is a valid order
        del g.node[:]
        g.node.extend(nodes)
    return model


# ----------------------------------------------------------------------------------------------
# 7-bit weights: the same file on every x86 CPU
#
# On x86 CPUs without VNNI (AVX2 only: Zen 3 and older, Intel before Ice Lake), onnxruntime multiplies
# uint8 activations by int8 weights with an instruction that adds each two neighbouring products into
# a 16-bit integer, saturating at 32,767: 2 x 255 x 127 overflows it. The default exported with 8-bit
# weights scored 0.61 instead of 0.95 on a 2-core AMD EPYC Zen 3 (AVX2 only). Weights within
# [-64, 64] keep every pair below 2 x 255 x 64 = 32,640: exact on every CPU, at the same speed.

NARROW_LIMIT = 64
_INTEGER_OPS = ("Conv", "Gemm", "MatMul")  # the ops onnxruntime fuses into integer kernels


def _graphs(graph: onnx.GraphProto):
    """The graph and every graph nested in its nodes (an `If`'s branches: a cascade's later stages)."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                yield from _graphs(sub)


def _weights_and_producers(model: onnx.ModelProto) -> tuple[dict, dict]:
    """Initializers and each value's producing node, over all nested graphs (names are unique file-wide)."""
    graphs = list(_graphs(model.graph))
    weights = {t.name: t for g in graphs for t in g.initializer}
    producers = {out: n for g in graphs for n in g.node for out in n.output}
    return weights, producers


def _dequantized_initializer(node_input: str, producers: dict, weights: dict) -> onnx.NodeProto | None:
    dq = producers.get(node_input)
    if dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in weights:
        return dq
    return None


def _integer_weights(model: onnx.ModelProto):
    """(node, its weight's DequantizeLinear, the int8 codes) for each op onnxruntime computes in integers."""
    from onnx import numpy_helper

    weights, producers = _weights_and_producers(model)
    for node in (n for g in _graphs(model.graph) for n in g.node if n.op_type in _INTEGER_OPS):
        dq = _dequantized_initializer(node.input[1], producers, weights)
        if dq is not None and (codes := numpy_helper.to_array(weights[dq.input[0]])).dtype == np.int8:
            yield node, dq, codes


def narrow_weights(model: onnx.ModelProto) -> int:
    """Move the int8 weights of integer-computed ops to [-64, 64] in place, each code q becoming round(q/2)
    at twice the scale (one bit of precision, nothing else), and rescale their int32 biases to match (a
    bias's scale is the input's times the weight's). Returns how many weights changed."""
    from onnx import numpy_helper

    weights, producers = _weights_and_producers(model)

    def value(name: str) -> np.ndarray:
        return numpy_helper.to_array(weights[name])

    def put(name: str, array: np.ndarray) -> None:
        weights[name].CopyFrom(numpy_helper.from_array(array, name))

    pairs: dict[tuple[str, str], np.ndarray] = {}  # (weight, its scale) -> codes; then biases
    biases: set[tuple[str, str]] = set()
    for node, dq, codes in list(_integer_weights(model)):
        if np.abs(codes.astype(np.int32)).max() <= NARROW_LIMIT:
            continue  # narrow already (exported with 7-bit weights, or narrowed before)
        pairs[(dq.input[0], dq.input[1])] = codes
        if node.op_type == "Conv" and len(node.input) > 2 and node.input[2]:
            bias = _dequantized_initializer(node.input[2], producers, weights)
            if bias is not None:
                biases.add((bias.input[0], bias.input[1]))
    for (name, _), codes in pairs.items():
        put(name, np.round(codes.astype(np.float32) / 2).astype(np.int8))
    for name in {name for name, _ in biases}:
        put(name, np.round(value(name).astype(np.float64) / 2).astype(np.int32))
    for scale in {scale for _, scale in pairs} | {scale for _, scale in biases}:  # once each, even if shared
        put(scale, (value(scale) * 2).astype(np.float32))
    return len(pairs)


def widest_weight(model: onnx.ModelProto) -> int:
    """The largest |code| among int8 weights of integer-computed ops (0 if none): <= 64 is safe on AVX2."""
    return max((int(np.abs(codes.astype(np.int32)).max()) for _, _, codes in _integer_weights(model)), default=0)
