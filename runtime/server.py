"""`cifar10 serve`: a model file behind a real Triton Inference Server, over HTTP and gRPC (KServe v2).

PyTriton (the `[serve]` extra) ships the `tritonserver` binary and its Python backend. We bind one
inference function to it: Triton's dynamic batcher gathers requests into one batch, the function runs
that batch through our onnxruntime `Classifier` and hands each request its rows back. The tensors keep
the model file's names and types (uint8 `pixels` in, float32 `probabilities` and `cam` out) and the
class names become Triton's labels, so `class_count` requests (the classification extension) answer
with names.

Nothing here is imported by the rest of the runtime: the light app never needs PyTriton.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from . import contract
from .session import Classifier

# ----------------------------------------------------------------------------------------------
# Configuration: plain values, the same ones the model repository writes (runtime/triton_repo.py)

MODEL_NAME = "cifar10"
HOST = "127.0.0.1"  # loopback unless the user asks for more
HTTP_PORT = 8000  # Triton's usual ports
GRPC_PORT = 8001
MAX_BATCH_SIZE = 256  # the batch size at which onnxruntime reaches full speed on a CPU
# The batcher sends a batch as soon as one of these sizes is waiting, and otherwise waits at most
# QUEUE_DELAY_US for more requests. Under load the queue fills while a batch runs, so the delay only
# matters for light traffic, where a short one costs little latency.
PREFERRED_BATCH_SIZES = (32, 64, 256)
QUEUE_DELAY_US = 1000
# Endpoints that need PyTriton's access token: everything that changes the server. Statistics stay
# readable, so a benchmark can report the batch sizes the batcher achieved.
PROTECTED_ENDPOINTS = ["shared-memory", "model-repository", "trace", "logging"]
LOAD_TIMEOUT_S = 300.0  # loading the model (see start)

SERVE_EXTRA_HINT = (
    "cifar10 serve: needs the serve extra (NVIDIA PyTriton, Linux x86-64). "
    "Install it with: pip install 'cifar10kit[serve]'  (or `make dev` in a checkout)"
)


class ServeError(RuntimeError):
    """A problem the user can fix; the message is one line that says what to do."""


# ----------------------------------------------------------------------------------------------
# The environment Triton's Python backend needs


def check_platform() -> None:
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise ServeError(f"cifar10 serve: PyTriton runs on Linux x86-64 only (this is {sys.platform} "
                         f"{platform.machine()}); deploy the model repository on a Triton server instead "
                         "(cifar10 triton-repo)")  # fmt: skip
    if importlib.util.find_spec("pytriton") is None:
        raise ServeError(SERVE_EXTRA_HINT)


def python_library() -> Path:
    """This interpreter's own libpython3.X.so, which the backend stub must load.

    The stub (a C++ program that embeds Python) links `libpython3.X.so.1.0` and takes the first one the
    loader finds. When that is another patch release than the interpreter running us (a system 3.11.2
    beside a pyenv 3.11.7, say), the model dies at start with errors such as
    `'_thread.RLock' object has no attribute '_recursion_count'`."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        raise ServeError(
            f"cifar10 serve: this Python {platform.python_version()} ({sys.executable}) is a static build without "
            f"libpython{version}.so, and Triton's Python backend must load the interpreter's own library; use a "
            "Python built with --enable-shared (python.org, Debian/Ubuntu, conda, or pyenv with "
            "PYTHON_CONFIGURE_OPTS=--enable-shared)"
        )
    lib = Path(libdir) / f"libpython{version}.so.1.0"
    if not lib.exists():
        raise ServeError(
            f"cifar10 serve: {lib} is missing although this Python {platform.python_version()} is a shared build; "
            "reinstall the interpreter"
        )
    return lib


def backend_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """`env` with the interpreter's library folder first on LD_LIBRARY_PATH.

    PyTriton starts `tritonserver` (and it the stub) with a copy of os.environ, so setting this in our
    own process before the server starts is enough: no re-exec needed."""
    env = dict(os.environ if env is None else env)
    libdir = str(python_library().parent)
    rest = [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p and p != libdir]
    env["LD_LIBRARY_PATH"] = os.pathsep.join([libdir, *rest])
    return env


def check_stub_links(env: dict[str, str]) -> None:
    """Ask the dynamic loader which libpython the stub will get under `env`; fail clearly if not ours."""
    ldd = shutil.which("ldd")
    spec = importlib.util.find_spec("pytriton")
    if ldd is None or spec is None or spec.origin is None:
        return  # nothing to ask; the server's own start-up error will have to do
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = Path(spec.origin).parent / "tritonserver" / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise ServeError(f"cifar10 serve: PyTriton has no backend stub for Python {version}; "
                         "use Python 3.8-3.13 or upgrade nvidia-pytriton")  # fmt: skip
    out = subprocess.run([ldd, str(stub)], env=env, capture_output=True, text=True, timeout=30).stdout
    found = re.search(rf"libpython{re.escape(version)}\.so\S*\s+=>\s+(\S+)", out)
    want = python_library()
    if found is None or found.group(1) == "not":
        raise ServeError(f"cifar10 serve: the Triton backend stub cannot find libpython{version}.so "
                         f"(expected {want}); check LD_LIBRARY_PATH")  # fmt: skip
    if Path(found.group(1)).resolve() != want.resolve():
        raise ServeError(
            f"cifar10 serve: the Triton backend stub would load {found.group(1)}, not this interpreter's {want} "
            f"(Python {platform.python_version()}), and a model fails to start on a mismatched libpython; run "
            "cifar10 serve with the Python that library belongs to"
        )


def check_ports(host: str, ports: dict[str, int]) -> None:
    """Fail at once, in one line, when a port is taken (Triton itself would wait for a minute first)."""
    if len(set(ports.values())) < len(ports):
        raise ServeError(f"cifar10 serve: the HTTP and gRPC ports must differ ({ports})")
    for what, port in ports.items():
        if not 0 < port < 65536:
            raise ServeError(f"cifar10 serve: {what} port {port} is not a port number (1-65535)")
        try:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.bind((host, port))
        except OSError as e:
            flag = "--port" if what == "HTTP" else "--grpc-port"
            raise ServeError(f"cifar10 serve: cannot listen on {host}:{port} for {what} ({e.strerror}); "
                             f"pick another port with {flag}") from None  # fmt: skip


# ----------------------------------------------------------------------------------------------
# The inference function Triton calls with each batch


def make_infer(model: Classifier) -> Callable[[list], list[dict[str, np.ndarray]]]:
    """One call per batch the dynamic batcher formed: requests in, one dict of outputs per request out."""
    with_cam = model.info.has_cam

    def infer(requests: list) -> list[dict[str, np.ndarray]]:
        parts = [np.asarray(r[contract.INPUT_NAME]) for r in requests]
        sizes = [len(p) for p in parts]
        pixels = np.concatenate(parts) if len(parts) > 1 else parts[0]
        if len(pixels) == 0:
            raise ValueError("empty batch: send at least one image, uint8 [N, 32, 32, 3] with N >= 1")
        pred = model.run(pixels, with_cam=with_cam)
        out, start = [], 0
        for n in sizes:
            rows = {contract.OUTPUT_PROBS: pred.probs[start : start + n]}
            if with_cam:
                rows[contract.OUTPUT_CAM] = pred.cam[start : start + n]
            out.append(rows)
            start += n
        return out

    return infer


def tensors(model: Classifier):
    """PyTriton's view of the contract: per-image shapes (Triton adds the batch dimension)."""
    from pytriton.model_config import Tensor

    n = len(model.class_names)
    inputs = [
        Tensor(
            name=contract.INPUT_NAME,
            dtype=np.uint8,
            shape=(contract.IMAGE_SIZE, contract.IMAGE_SIZE, contract.CHANNELS),
        )
    ]
    outputs = [Tensor(name=contract.OUTPUT_PROBS, dtype=np.float32, shape=(n,))]
    if model.info.has_cam:
        cam_shape = next(o.shape for o in model.session.get_outputs() if o.name == contract.OUTPUT_CAM)
        outputs.append(Tensor(name=contract.OUTPUT_CAM, dtype=np.float32, shape=tuple(cam_shape[1:])))
    return inputs, outputs


def labels_text(class_names: tuple[str, ...]) -> str:
    """Triton's label file: one class name a line, line i = output column i."""
    return "".join(f"{name}\n" for name in class_names)


def _attach_labels(triton, name: str, class_names: tuple[str, ...]) -> None:
    """Give the bound model a label file, which PyTriton's own config has no field for.

    PyTriton loads a bound model by sending Triton its config and files; we add `labels.txt` to the
    files and `label_filename` to the probabilities output. Only the model bound here is touched."""
    model = next(m for m in triton._model_manager.models if m.model_name == name)
    get_config, get_files = model.get_model_config, model.get_proxy_model_files

    def config_with_labels() -> dict:
        config = get_config()
        for out in config.get("output", []):
            if out.get("name") == contract.OUTPUT_PROBS:
                out["label_filename"] = "labels.txt"
        return config

    def files_with_labels() -> dict[str, bytes]:
        return {**get_files(), "file:labels.txt": labels_text(class_names).encode()}

    model.get_model_config, model.get_proxy_model_files = config_with_labels, files_with_labels


# ----------------------------------------------------------------------------------------------
# The server


def preflight(host: str = HOST, http_port: int = HTTP_PORT, grpc_port: int = GRPC_PORT) -> None:
    """Everything that can be checked before a model is opened: platform, extra, ports, libpython.
    Leaves LD_LIBRARY_PATH set for the server that `start` launches."""
    check_platform()
    check_ports(host, {"HTTP": http_port, "gRPC": grpc_port})
    env = backend_environment()
    check_stub_links(env)
    os.environ["LD_LIBRARY_PATH"] = env["LD_LIBRARY_PATH"]


def start(
    model: Classifier,
    host: str = HOST,
    http_port: int = HTTP_PORT,
    grpc_port: int = GRPC_PORT,
    name: str = MODEL_NAME,
):
    """A running PyTriton `Triton` with `model` bound and loaded; the caller stops it."""
    preflight(host, http_port, grpc_port)
    logging.getLogger("pytriton").setLevel(logging.CRITICAL)  # failures are reported by us, in one line

    import pytriton.client.client as pytriton_client
    from pytriton.model_config import DynamicBatcher, ModelConfig
    from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

    # PyTriton loads the model with a request that may take this long (its default: 60 s). The backend
    # starts a Python process for the model, which can take minutes on a machine busy with other work.
    pytriton_client.DEFAULT_INFERENCE_TIMEOUT_S = max(LOAD_TIMEOUT_S, pytriton_client.DEFAULT_INFERENCE_TIMEOUT_S)

    # Triton's own log (tables, CUDA probes on machines without a GPU) goes to a file, not the console.
    log_file = Path(tempfile.gettempdir()) / f"cifar10-triton-{os.getpid()}.log"
    config = TritonConfig(
        http_address=host, http_port=http_port, grpc_address=host, grpc_port=grpc_port,
        allow_metrics=False, exit_timeout_secs=5, log_verbose=0, log_file=log_file,
    )  # fmt: skip
    triton = Triton(config=config, security_config=TritonSecurityConfig(restricted_endpoints=PROTECTED_ENDPOINTS))
    inputs, outputs = tensors(model)
    batcher = DynamicBatcher(max_queue_delay_microseconds=QUEUE_DELAY_US,
                             preferred_batch_size=list(PREFERRED_BATCH_SIZES))  # fmt: skip
    try:
        triton.bind(model_name=name, infer_func=make_infer(model), inputs=inputs, outputs=outputs,
                    config=ModelConfig(max_batch_size=MAX_BATCH_SIZE, batcher=batcher), strict=False)  # fmt: skip
        _attach_labels(triton, name, model.class_names)
        triton.run()
    except Exception as e:
        triton.stop()
        reason = _log_error(log_file) or (str(e).splitlines()[0][:300] if str(e) else type(e).__name__)
        raise ServeError(f"cifar10 serve: Triton did not start: {reason} (its log: {log_file})") from None
    triton.classifier, triton.log_file = model, log_file
    return triton


def _log_error(log_file: Path) -> str | None:
    """The first error line of Triton's log, without its timestamp prefix."""
    try:
        lines = log_file.read_text(errors="replace").splitlines()
    except OSError:
        return None
    errors = [ln for ln in lines if ln.startswith("E") and "CudaDriverHelper" not in ln and "modification" not in ln]
    return errors[0].split("] ", 1)[-1].strip('"')[:300] if errors else None


def serve_forever(triton, notify: Callable[[str], None] = print, poll_s: float = 1.0) -> int:
    """Block until Ctrl+C (SIGINT) or SIGTERM, then stop the server cleanly; 1 if it died by itself."""
    import signal
    import threading

    stop = threading.Event()

    def on_signal(signum, _frame) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(poll_s):
            if not triton.is_alive():
                notify("error: the Triton server stopped by itself; see its log above")
                return 1
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        notify("stopping: finishing in-flight requests")
        triton.stop()
    if getattr(triton, "log_file", None):
        Path(triton.log_file).unlink(missing_ok=True)
    notify("stopped")
    return 0
