"""An onnxruntime session around one model file: providers, contract checks, batched prediction."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import contract
from .contract import ContractError, ModelInfo
from .cpu import default_threads, machine_busy
from .providers import cuda_driver_present, cuda_failure_reason, duplicate_ort_warning, ort_build

__all__ = [
    "Classifier",
    "Prediction",
    "ProviderError",
    "available_providers",
    "cuda_driver_present",
    "default_model_path",
    "resolve_model_path",
]

MODELS_DIR = Path(__file__).parent / "models"
DEFAULT_MODEL = MODELS_DIR / "default.onnx"
MODEL_ENV = "CIFAR10_MODEL"
CPU_BATCH, GPU_BATCH = 32, 512  # predict_probs' batches (see Classifier.batch_size)


def shipped_models() -> list[str]:
    """Names of the model files inside the package ("clean", "default")."""
    return sorted(p.stem for p in MODELS_DIR.glob("*.onnx"))


def resolve_model_path(value: str | os.PathLike | None) -> Path:
    """A path as given, or a shipped model by name (`--model clean`) when no such file exists here."""
    if not value:
        return default_model_path()
    path = Path(value)
    shipped = MODELS_DIR / f"{path.name}.onnx"
    if not path.exists() and path.name == str(value) and shipped.exists():
        return shipped
    return path


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


class ProviderError(RuntimeError):
    """`--provider cuda` where CUDA cannot run; the message says why and what to do."""


@dataclass
class Prediction:
    probs: np.ndarray  # float32 [N, C]
    cam: np.ndarray | None  # float32 [N, C, h, w] or None when the file has no cam output
    seconds: float


class Classifier:
    """A validated model file in an onnxruntime session.

    provider: 'auto' tries CUDA where an NVIDIA driver is present and otherwise, or when CUDA does
    not start, runs on the CPU (with a one-line note naming the cause when a driver was there);
    'cuda' raises ProviderError unless CUDA really runs; 'cpu' never tries CUDA.
    threads: onnxruntime's intra-op threads; 0 means what this process may really use
    (`cpu.default_threads`: affinity, cgroup quota, physical cores).
    spinning: let idle worker threads spin; None: yes, unless the load average says the CPUs are
    already busy (`cpu.machine_busy`).
    `provider` is the provider the live session runs on; `fallback_reason` says why it is not CUDA."""

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        provider: str = "auto",
        threads: int = 0,
        notify=print,
        driver_probe: Callable[[], bool] = cuda_driver_present,
        spinning: bool | None = None,
    ):
        self.path = resolve_model_path(path)
        if provider not in ("auto", "cuda", "cpu"):
            raise ValueError(f"provider {provider!r}: use auto, cuda or cpu")
        self.requested_provider = provider
        self.threads = threads if threads and threads > 0 else default_threads()
        # Idle workers spin for the next op (lower latency) unless the machine is already busy.
        self.spinning = spinning if spinning is not None else self.threads > 1 and not machine_busy(self.threads)
        self.fallback_reason: str | None = None  # why CUDA was not used, when it was asked for
        ort = _ort()
        self.session = self._open(ort, provider, notify, driver_probe)
        self.provider = self.session.get_providers()[0]  # what really runs, not what was asked
        self.info = self._check_contract()
        self.last_seconds = 0.0

    # -- opening ---------------------------------------------------------------------------------

    def _options(self, ort, quiet: bool = False):
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = self.threads
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.spinning else "0")
        opts.log_severity_level = 4 if quiet else 3
        return opts

    def _open(self, ort, provider: str, notify, driver_probe: Callable[[], bool]):
        if not self.path.exists():
            raise ContractError(f"{self.path}: no such model file")
        if self.path.is_dir():
            raise ContractError(f"{self.path}: is a folder; give the path of a .onnx file")
        if provider == "cpu":
            return self._session(ort, self._options(ort), ["CPUExecutionProvider"])
        has_cuda_provider = "CUDAExecutionProvider" in ort.get_available_providers()
        driver = driver_probe()
        reason, notable = None, driver  # a GPU-less machine falls back silently
        if not driver:
            reason = "no NVIDIA driver (libcuda) on this machine"
        elif not has_cuda_provider:
            build = ort_build(ort)
            reason = f"{build.distribution} {build.version} has no CUDA provider; pip install onnxruntime-gpu"
            if duplicate := duplicate_ort_warning():
                reason += f" ({duplicate})"
        else:
            session, reason = self._try_cuda(ort)
            if session is not None:
                return session
        self.fallback_reason = reason
        if provider == "cuda":
            raise ProviderError(f"--provider cuda: CUDA is not usable: {reason}; use --provider auto or cpu")
        if notable:
            notify(f"note: CUDA not used, running on the CPU: {reason}")
        return self._session(ort, self._options(ort), ["CPUExecutionProvider"])

    def _try_cuda(self, ort):
        """(a CUDA session, None), or (None, why CUDA did not start). The loader's own error log
        is silenced for the attempt: the reason is reported once, in our words."""
        _preload_cuda_libraries(ort)
        error = ""
        ort.set_default_logger_severity(4)
        try:
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
            session = self._session(ort, self._options(ort, quiet=True), providers)
            if session.get_providers()[0] == "CUDAExecutionProvider":
                return session, None
        except ContractError:
            raise
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types
            error = str(e)
        finally:
            ort.set_default_logger_severity(3)
        return None, cuda_failure_reason(ort, error)

    def _session(self, ort, opts, providers):
        try:
            return ort.InferenceSession(str(self.path), sess_options=opts, providers=providers)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            # An error about CUDA goes to _try_cuda's diagnosis; any other says the file is broken.
            # onnxruntime quotes the path, so a folder named "CUDA-models" must not count.
            if "CUDA" in providers[0] and "CUDA" in first.replace(str(self.path), ""):
                raise
            raise ContractError(f"{self.path}: not a loadable ONNX model ({first[:300]})") from None

    def _check_contract(self) -> ModelInfo:
        src = str(self.path)
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or inputs[0].name != contract.INPUT_NAME:
            names = [i.name for i in inputs]
            raise ContractError(f"{src}: expected one input named {contract.INPUT_NAME!r}, found {names}")
        inp = inputs[0]
        if inp.type != "tensor(uint8)":
            raise ContractError(f"{src}: input {inp.name!r} is {inp.type}, the contract says tensor(uint8)")
        shape = list(inp.shape)
        if len(shape) != 4 or tuple(shape[1:]) != contract.IMAGE_SHAPE:
            raise ContractError(f"{src}: input shape {shape}, the contract says [N, 32, 32, 3]")
        outputs = {o.name: o for o in self.session.get_outputs()}
        if contract.OUTPUT_PROBS not in outputs:
            raise ContractError(f"{src}: no {contract.OUTPUT_PROBS!r} output (found {list(outputs)})")
        if outputs[contract.OUTPUT_PROBS].type != "tensor(float)":
            kind = outputs[contract.OUTPUT_PROBS].type
            raise ContractError(f"{src}: {contract.OUTPUT_PROBS!r} is {kind}, not float32")
        probs_shape = list(outputs[contract.OUTPUT_PROBS].shape or [])
        if probs_shape and len(probs_shape) != 2:  # an undeclared shape shows itself when the model runs
            raise ContractError(
                f"{src}: {contract.OUTPUT_PROBS!r} has shape {probs_shape}, the contract says [N, classes]"
            )
        meta = dict(self.session.get_modelmeta().custom_metadata_map)
        has_cam = contract.OUTPUT_CAM in outputs
        info = ModelInfo.from_metadata(meta, src, has_cam=has_cam)
        n_out = outputs[contract.OUTPUT_PROBS].shape[-1]
        if isinstance(n_out, int) and n_out != info.num_classes:
            raise ContractError(f"{src}: {n_out} output columns but {info.num_classes} class names in metadata")
        self.output_names = [contract.OUTPUT_PROBS] + ([contract.OUTPUT_CAM] if has_cam else [])
        return info

    # -- running ---------------------------------------------------------------------------------

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.info.class_names

    def run(self, pixels: np.ndarray, with_cam: bool = False) -> Prediction:
        """pixels: uint8 [N, 32, 32, 3] (or one [32, 32, 3] image)."""
        pixels = np.asarray(pixels)
        if pixels.ndim == 3:
            pixels = pixels[None]
        if pixels.dtype != np.uint8 or pixels.shape[1:] != contract.IMAGE_SHAPE:
            raise ValueError(f"pixels must be uint8 [N, 32, 32, 3], got {pixels.dtype} {pixels.shape}")
        names = self.output_names if with_cam else [contract.OUTPUT_PROBS]
        t0 = time.perf_counter()
        outs = self.session.run(names, {contract.INPUT_NAME: np.ascontiguousarray(pixels)})
        self.last_seconds = time.perf_counter() - t0
        cam = outs[1] if with_cam and len(outs) > 1 else None
        return Prediction(outs[0], cam, self.last_seconds)

    @property
    def batch_size(self) -> int:
        """The batch `predict_probs` uses unless told: small on the CPU, where batches that stay in
        the caches run fastest (the default model on 2 Xeon cores: 639 images/s in batches of 32,
        491 in batches of 500), large on a GPU, which needs many images to fill it."""
        return CPU_BATCH if self.provider == "CPUExecutionProvider" else GPU_BATCH

    def predict_probs(self, pixels: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Probabilities for any number of images, run in batches (default `self.batch_size`)."""
        if len(pixels) == 0:
            return np.zeros((0, len(self.class_names)), np.float32)
        batch_size = batch_size or self.batch_size
        return np.concatenate([self.run(pixels[i : i + batch_size]).probs for i in range(0, len(pixels), batch_size)])

    def topk(self, probs: np.ndarray, k: int = 5) -> list[tuple[str, float]]:
        """[(class name, probability)] best first, for one row of probabilities."""
        k = max(1, min(k, len(self.class_names)))
        order = np.argsort(-probs, kind="stable")[:k]
        return [(self.class_names[i], float(probs[i])) for i in order]

    def facts(self) -> dict:
        """What every --json output says about the live session (the provider really in use)."""
        return {
            "model": str(self.path),
            "provider": self.provider,
            "requested_provider": self.requested_provider,
            "provider_note": self.fallback_reason,
            "threads": self.threads,
            "spinning": self.spinning,
        }

    def is_uncertain(self, probs: np.ndarray) -> bool:
        t = self.info.uncertainty_threshold
        return t is not None and float(probs.max()) < t
