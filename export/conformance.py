"""Deploy anywhere: the written file, unchanged, in a second ONNX runtime, compared with onnxruntime.

Two runtimes besides onnxruntime can run every file the exporter writes (fp32, fp16 and int8 QDQ,
with any TTA):

- OpenVINO (`pip install openvino`), a production runtime whose CPU plugin reads `.onnx` directly.
  It is asked for f32 inference precision: on CPUs with bf16 units it would otherwise compute in
  bf16, which tests the CPU rather than the file.
- onnx's own reference implementation (`onnx.reference.ReferenceEvaluator`), plain numpy and slow
  (about a second per image for the shipped net), but it is what the ONNX standard means. It has no
  DequantizeLinear before opset 19, which is why the contract's opset is 19.

A quantised graph may flip a near-tie between two classes from one runtime to the next (their int8
kernels round differently); anything beyond `MIN_AGREEMENT` is a broken file, not rounding.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..runtime import contract

MIN_AGREEMENT = 0.99  # top-1 agreement with onnxruntime below which the file is refused
REFERENCE_IMAGES = 32  # the reference evaluator is slow: it checks this many images when it is the only one


def available() -> list[str]:
    """The second runtimes installed here, fastest first."""
    names = ["openvino"] if importlib.util.find_spec("openvino") is not None else []
    return names + ["reference"]


def runtime_version(name: str) -> str:
    if name == "openvino":
        import openvino

        return f"OpenVINO {openvino.get_version().split('-')[0]}"
    import onnx

    return f"onnx {onnx.__version__} reference evaluator"


def runtime_probs(name: str, path: Path, pixels: np.ndarray, batch: int = 250) -> np.ndarray:
    """Probabilities for `pixels` from the file at `path`, computed by the runtime `name`."""
    if name == "openvino":
        import openvino as ov

        compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        out = compiled.output(contract.OUTPUT_PROBS)
        run = lambda x: compiled({contract.INPUT_NAME: x})[out]  # noqa: E731
    elif name == "reference":
        import onnx
        from onnx.reference import ReferenceEvaluator

        evaluator = ReferenceEvaluator(onnx.load(str(path)))
        run = lambda x: evaluator.run([contract.OUTPUT_PROBS], {contract.INPUT_NAME: x})[0]  # noqa: E731
    else:
        raise ValueError(f"runtime {name!r}: use openvino or reference")
    return np.concatenate(
        [np.asarray(run(pixels[i : i + batch]), dtype=np.float32) for i in range(0, len(pixels), batch)]
    )


@dataclass
class Conformance:
    runtime: str  # name and version
    n: int
    agreement: float  # top-1 agreement with onnxruntime
    max_abs_diff: float
    accuracy: float | None  # the second runtime's, on labelled images
    error: str | None = None  # why the runtime could not run the file at all

    def summary(self) -> str:
        if self.error:
            return f"{self.runtime}: cannot run the file ({self.error})"
        acc = f", accuracy {self.accuracy:.4f}" if self.accuracy is not None else ""
        return (
            f"{self.runtime}: top-1 agreement with onnxruntime {self.agreement:.4%} on {self.n} images, "
            f"max |dp| {self.max_abs_diff:.2e}{acc}"
        )

    def problems(self) -> list[str]:
        if self.error:
            return [f"{self.runtime} cannot run it ({self.error}): the file does not run everywhere"]
        if self.agreement < MIN_AGREEMENT:
            return [
                f"{self.runtime} agrees with onnxruntime on {self.agreement:.2%} of top-1 answers "
                f"(< {MIN_AGREEMENT:.0%}): the file does not run the same everywhere"
            ]
        return []


def check(
    path: Path, pixels: np.ndarray, ort_probs: np.ndarray, labels: np.ndarray | None = None, runtime: str | None = None
) -> Conformance:
    """Run `path` in `runtime` (default: the fastest installed) and compare with onnxruntime's
    probabilities for the same pixels. The reference evaluator checks only the first images."""
    name = runtime or available()[0]
    n = min(len(pixels), REFERENCE_IMAGES) if name == "reference" and runtime is None else len(pixels)
    try:
        probs = runtime_probs(name, path, pixels[:n])
    except Exception as e:  # noqa: BLE001 - a runtime that refuses the file is the finding
        first = next(iter(str(e).strip().splitlines()), "") or type(e).__name__
        return Conformance(runtime_version(name), n, 0.0, float("inf"), None, error=first[:300])
    top = probs.argmax(1)
    return Conformance(
        runtime=runtime_version(name),
        n=n,
        agreement=float((top == ort_probs[:n].argmax(1)).mean()),
        max_abs_diff=float(np.abs(probs - ort_probs[:n]).max()),
        accuracy=float((top == labels[:n]).mean()) if labels is not None else None,
    )
