"""An onnxruntime session around one model file: providers, contract checks, batched prediction."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import contract as C
from .contract import ContractError, ModelInfo

DEFAULT_MODEL = Path(__file__).parent / "models" / "default.onnx"
MODEL_ENV = "CIFAR10_MODEL"


def default_model_path() -> Path:
    """$CIFAR10_MODEL if set, else the model shipped inside the package."""
    env = os.environ.get(MODEL_ENV)
    return Path(env) if env else DEFAULT_MODEL


def _ort():
    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # errors only: fallbacks are reported by us, in one line
    return ort


def available_providers() -> list[str]:
    return list(_ort().get_available_providers())


def _preload_cuda_libraries(ort) -> None:
    """Let onnxruntime find CUDA/cuDNN shipped as pip wheels (nvidia-*), so GPU users set no paths."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    try:
        preload()
    except Exception:  # noqa: BLE001 - missing libraries are reported when the session starts
        pass


@dataclass
class Prediction:
    probs: np.ndarray  # float32 [N, C]
    cam: np.ndarray | None  # float32 [N, C, h, w] or None when the file has no cam output
    seconds: float


class Classifier:
    """A validated model file in an onnxruntime session.

    provider: 'auto' tries CUDA then falls back to the CPU with a one-line notice; 'cuda' fails
    unless CUDA really runs; 'cpu' never tries CUDA."""

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        provider: str = "auto",
        threads: int = 0,
        notify=print,
    ):
        self.path = Path(path) if path else default_model_path()
        if provider not in ("auto", "cuda", "cpu"):
            raise ValueError(f"provider {provider!r}: use auto, cuda or cpu")
        ort = _ort()
        self.session = self._open(ort, provider, threads, notify)
        self.provider = self.session.get_providers()[0]
        self.info = self._check_contract()
        self.last_seconds = 0.0

    # -- opening ---------------------------------------------------------------------------------

    def _open(self, ort, provider: str, threads: int, notify):
        if not self.path.exists():
            raise ContractError(f"{self.path}: no such model file")
        if self.path.is_dir():
            raise ContractError(f"{self.path}: is a folder; give the path of a .onnx file")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads or os.cpu_count() or 1
        opts.log_severity_level = 3
        available = ort.get_available_providers()
        want_cuda = provider in ("auto", "cuda")
        if want_cuda and "CUDAExecutionProvider" in available and not cuda_driver_present():
            reason = "no NVIDIA driver (libcuda) on this machine"
            if provider == "cuda":
                raise RuntimeError(f"--provider cuda: CUDA is not usable ({reason}); use --provider auto or cpu")
            return self._session(ort, opts, ["CPUExecutionProvider"])
        if want_cuda and "CUDAExecutionProvider" in available:
            _preload_cuda_libraries(ort)
            try:
                sess = self._session(ort, opts, ["CUDAExecutionProvider", "CPUExecutionProvider"])
                if sess.get_providers()[0] == "CUDAExecutionProvider":
                    return sess
                reason = "CUDA/cuDNN libraries could not be loaded"
            except ContractError:
                raise
            except Exception as e:  # noqa: BLE001
                reason = str(e).splitlines()[0][:200]
        elif want_cuda:
            reason = "this onnxruntime build has no CUDA provider"
        else:
            reason = ""
        if provider == "cuda":
            raise RuntimeError(f"--provider cuda: CUDA is not usable ({reason}); use --provider auto or cpu")
        if reason and provider == "auto":
            notify(f"note: CUDA not used ({reason}); running on the CPU")
        return self._session(ort, opts, ["CPUExecutionProvider"])

    def _session(self, ort, opts, providers):
        try:
            return ort.InferenceSession(str(self.path), sess_options=opts, providers=providers)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types
            first = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
            if "CUDA" in providers[0] and "CUDA" in first:
                raise
            raise ContractError(f"{self.path}: not a loadable ONNX model ({first})") from None

    def _check_contract(self) -> ModelInfo:
        src = str(self.path)
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or inputs[0].name != C.INPUT_NAME:
            names = [i.name for i in inputs]
            raise ContractError(f"{src}: expected one input named {C.INPUT_NAME!r}, found {names}")
        inp = inputs[0]
        if inp.type != "tensor(uint8)":
            raise ContractError(f"{src}: input {inp.name!r} is {inp.type}, the contract says tensor(uint8)")
        shape = list(inp.shape)
        if len(shape) != 4 or shape[1:] != [C.IMAGE_SIZE, C.IMAGE_SIZE, C.CHANNELS]:
            raise ContractError(f"{src}: input shape {shape}, the contract says [N, 32, 32, 3]")
        outputs = {o.name: o for o in self.session.get_outputs()}
        if C.OUTPUT_PROBS not in outputs:
            raise ContractError(f"{src}: no {C.OUTPUT_PROBS!r} output (found {list(outputs)})")
        if outputs[C.OUTPUT_PROBS].type != "tensor(float)":
            raise ContractError(f"{src}: {C.OUTPUT_PROBS!r} is {outputs[C.OUTPUT_PROBS].type}, not float32")
        meta = dict(self.session.get_modelmeta().custom_metadata_map)
        parsed = C.parse_metadata(meta, src)
        n_out = outputs[C.OUTPUT_PROBS].shape[-1]
        if isinstance(n_out, int) and n_out != len(parsed["class_names"]):
            raise ContractError(
                f"{src}: {n_out} output columns but {len(parsed['class_names'])} class names in metadata"
            )
        self.output_names = [C.OUTPUT_PROBS] + ([C.OUTPUT_CAM] if C.OUTPUT_CAM in outputs else [])
        return ModelInfo(
            class_names=parsed["class_names"],
            architecture=meta[C.KEY_ARCHITECTURE],
            dataset=meta[C.KEY_DATASET],
            test_accuracy=parsed[C.KEY_TEST_ACCURACY],
            version=meta[C.KEY_VERSION],
            created=meta[C.KEY_CREATED],
            has_cam=C.OUTPUT_CAM in outputs,
            threshold=parsed[C.KEY_THRESHOLD],
            tta=meta.get(C.KEY_TTA, "none"),
            raw=meta,
        )

    # -- running ---------------------------------------------------------------------------------

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.info.class_names

    def run(self, pixels: np.ndarray, with_cam: bool = False) -> Prediction:
        """pixels: uint8 [N, 32, 32, 3] (or one [32, 32, 3] image)."""
        pixels = np.asarray(pixels)
        if pixels.ndim == 3:
            pixels = pixels[None]
        if pixels.dtype != np.uint8 or pixels.shape[1:] != (C.IMAGE_SIZE, C.IMAGE_SIZE, C.CHANNELS):
            raise ValueError(f"pixels must be uint8 [N, 32, 32, 3], got {pixels.dtype} {pixels.shape}")
        names = self.output_names if with_cam else [C.OUTPUT_PROBS]
        t0 = time.perf_counter()
        outs = self.session.run(names, {C.INPUT_NAME: np.ascontiguousarray(pixels)})
        self.last_seconds = time.perf_counter() - t0
        cam = outs[1] if with_cam and len(outs) > 1 else None
        return Prediction(outs[0], cam, self.last_seconds)

    def predict_probs(self, pixels: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Probabilities for any number of images, run in batches."""
        if len(pixels) == 0:
            return np.zeros((0, len(self.class_names)), np.float32)
        return np.concatenate(
            [self.run(pixels[i : i + batch_size]).probs for i in range(0, len(pixels), batch_size)]
        )

    def topk(self, probs: np.ndarray, k: int = 5) -> list[tuple[str, float]]:
        """[(class name, probability)] best first, for one row of probabilities."""
        k = max(1, min(k, len(self.class_names)))
        order = np.argsort(-probs, kind="stable")[:k]
        return [(self.class_names[i], float(probs[i])) for i in order]

    def is_uncertain(self, probs: np.ndarray) -> bool:
        t = self.info.threshold
        return t is not None and float(probs.max()) < t


def cuda_driver_present() -> bool:
    """Whether the NVIDIA driver library loads. Without it, asking onnxruntime for CUDA only
    produces a wall of loader errors, so machines with no GPU never try (and print nothing)."""
    import ctypes

    names = ["nvcuda.dll"] if os.name == "nt" else ["libcuda.so.1", "libcuda.so", "libcuda.dylib"]
    for name in names:
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False
