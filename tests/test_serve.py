"""`cifar10 serve`: a real Triton Inference Server (PyTriton) on 127.0.0.1, driven with tritonclient.

One server for the module, started the way a user starts it (`cifar10 serve` in a child process, on
free ports) and stopped with Ctrl+C (SIGINT) at the end. Everything it answers is compared with the
same model run in this process. Skips without the [serve] extra; CI installs it.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cifar10kit.runtime import contract as C
from cifar10kit.runtime.session import Classifier

if sys.platform != "linux" or platform.machine() != "x86_64":
    pytest.skip("PyTriton (the [serve] extra) runs on Linux x86-64 only", allow_module_level=True)
pytest.importorskip("pytriton", reason="needs the [serve] extra: pip install 'cifar10kit[serve]'")
httpclient = pytest.importorskip("tritonclient.http", reason="needs the [serve] extra (tritonclient)")
grpcclient = pytest.importorskip("tritonclient.grpc", reason="needs the [serve] extra (tritonclient)")
from tritonclient.utils import InferenceServerException  # noqa: E402

from conftest import BIN, real_data_dir, synthetic_images  # noqa: E402

NAME = "cifar10"
START_TIMEOUT = 330  # Triton starts in seconds; on a machine busy with other work it can take minutes
_start_failure: list[str] = []  # a server that failed to start fails every test at once, not once each
TOLERANCE = 1e-5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """Real CIFAR-10 test images when $CIFAR10_DATA has them, else learnable synthetic ones."""
    data = real_data_dir()
    if data is not None:
        from cifar10kit.runtime.dataset import load_cifar10

        return load_cifar10(data, "test")[0][:512]
    return synthetic_images(512, seed=5)[0]


@pytest.fixture(scope="module")
def local() -> Classifier:
    return Classifier(provider="cpu")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`cifar10 serve` on two free loopback ports; yields (process, http url, grpc url, log path)."""
    if _start_failure:
        pytest.fail(_start_failure[0], pytrace=False)
    http_port, grpc_port = free_port(), free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    cmd = [str(BIN / "cifar10"), "serve", "--provider", "cpu", "--port", str(http_port),
           "--grpc-port", str(grpc_port)]  # fmt: skip
    with open(log, "w") as out:
        # A session of its own, so the Ctrl+C test can signal the whole group as a terminal does.
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    http, grpc = f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}"
    client = httpclient.InferenceServerClient(http)
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while not _ready(client):
            if proc.poll() is not None or time.monotonic() > deadline:
                why = (
                    f"exited with {proc.returncode}"
                    if proc.poll() is not None
                    else f"not ready after {START_TIMEOUT} s"
                )
                _start_failure.append(f"cifar10 serve {why}:\n{log.read_text()}")
                pytest.fail(_start_failure[0], pytrace=False)
            time.sleep(0.3)
        client.close()
        yield proc, http, grpc, log
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def _ready(client) -> bool:
    try:
        return client.is_model_ready(NAME)
    except Exception:  # noqa: BLE001 - not listening yet
        return False


def http_infer(url: str, pixels: np.ndarray, **kw):
    client = httpclient.InferenceServerClient(url)
    try:
        inp = httpclient.InferInput(C.INPUT_NAME, list(pixels.shape), "UINT8")
        inp.set_data_from_numpy(pixels)
        return client.infer(NAME, [inp], **kw)
    finally:
        client.close()


# ----------------------------------------------------------------------------------------------
# Same answers as in process, over both protocols


def test_http_and_grpc_match_in_process(server, images, local):
    _, http, grpc, _ = server
    want = local.run(images[:256], with_cam=True)
    got = np.concatenate([http_infer(http, images[i : i + 64]).as_numpy(C.OUTPUT_PROBS) for i in range(0, 256, 64)])
    assert got.dtype == np.float32 and got.shape == want.probs.shape
    assert (got.argmax(1) == want.probs.argmax(1)).all()
    assert np.abs(got - want.probs).max() <= TOLERANCE
    cam = http_infer(http, images[:8]).as_numpy(C.OUTPUT_CAM)
    assert cam.shape == want.cam[:8].shape and np.abs(cam - want.cam[:8]).max() <= 1e-4

    client = grpcclient.InferenceServerClient(grpc)
    inp = grpcclient.InferInput(C.INPUT_NAME, [32, 32, 32, 3], "UINT8")
    inp.set_data_from_numpy(images[100:132])
    out = client.infer(NAME, [inp], outputs=[grpcclient.InferRequestedOutput(C.OUTPUT_PROBS)])
    client.close()
    got = out.as_numpy(C.OUTPUT_PROBS)
    assert (got.argmax(1) == want.probs[100:132].argmax(1)).all()
    assert np.abs(got - want.probs[100:132]).max() <= TOLERANCE
    assert out.as_numpy(C.OUTPUT_CAM) is None  # only what was asked for


def test_metadata_and_labels_follow_the_contract(server, images, local):
    _, http, _, _ = server
    client = httpclient.InferenceServerClient(http)
    meta = client.get_model_metadata(NAME)
    config = client.get_model_config(NAME)
    client.close()
    assert [(i["name"], i["datatype"], i["shape"]) for i in meta["inputs"]] == [
        (C.INPUT_NAME, "UINT8", [-1, 32, 32, 3])
    ]
    outputs = {o["name"]: (o["datatype"], o["shape"]) for o in meta["outputs"]}
    assert outputs == {C.OUTPUT_PROBS: ("FP32", [-1, 10]), C.OUTPUT_CAM: ("FP32", [-1, 10, 3, 3])}
    assert config["max_batch_size"] == 256 and "dynamic_batching" in config
    # Triton's classification extension answers with the model's class names.
    res = http_infer(http, images[:4], outputs=[httpclient.InferRequestedOutput(C.OUTPUT_PROBS, class_count=3)])
    probs = local.run(images[:4]).probs
    for row, p in zip(res.as_numpy(C.OUTPUT_PROBS), probs):
        score, index, label = row[0].decode().split(":")
        assert int(index) == int(p.argmax()) and label == local.class_names[int(index)]
        assert abs(float(score) - float(p.max())) < 1e-5


# ----------------------------------------------------------------------------------------------
# Load: bounded, concurrent, nothing lost, duplicated or mixed up


def test_concurrent_single_images_are_batched_and_all_answered(server, images, local):
    _, _, grpc, _ = server
    clients, per_client = 16, 64
    want = local.run(images).probs
    stats = grpcclient.InferenceServerClient(grpc)
    before = stats.get_inference_statistics(NAME, as_json=True)["model_stats"][0]
    answers: dict[tuple[int, int], np.ndarray] = {}
    failures: list[str] = []
    deadline = time.monotonic() + 120

    def worker(k: int) -> None:
        client = grpcclient.InferenceServerClient(grpc)
        try:
            for j in range(per_client):
                if time.monotonic() > deadline:
                    failures.append(f"client {k}: out of time after {j} requests")
                    return
                idx = (k * per_client + j) % len(want)
                inp = grpcclient.InferInput(C.INPUT_NAME, [1, 32, 32, 3], "UINT8")
                inp.set_data_from_numpy(images[idx : idx + 1])
                out = client.infer(NAME, [inp], outputs=[grpcclient.InferRequestedOutput(C.OUTPUT_PROBS)],
                                   client_timeout=60)  # fmt: skip
                answers[(k, j)] = out.as_numpy(C.OUTPUT_PROBS)
        except Exception as e:  # noqa: BLE001 - collected and reported
            failures.append(f"client {k}: {e}")
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)
    assert not failures, failures[:3]
    assert len(answers) == clients * per_client
    for (k, j), got in answers.items():
        idx = (k * per_client + j) % len(want)
        assert got.shape == (1, 10) and np.abs(got[0] - want[idx]).max() <= TOLERANCE, (k, j)
    # Triton's statistics can lag its answers: every answer was in while the count said 1,021 of
    # 1,024 on a busy machine. Wait for the count to settle; a request run twice still shows.
    settle = time.monotonic() + 10
    while True:
        after = stats.get_inference_statistics(NAME, as_json=True)["model_stats"][0]
        served = int(after["inference_count"]) - int(before.get("inference_count", 0))
        if served >= clients * per_client or time.monotonic() > settle:
            break
        time.sleep(0.1)
    stats.close()
    executions = int(after["execution_count"]) - int(before.get("execution_count", 0))
    assert served == clients * per_client  # each image run exactly once
    assert executions < served  # the dynamic batcher merged requests


# ----------------------------------------------------------------------------------------------
# Bad requests: a clear error each, and the server keeps serving


@pytest.mark.parametrize(
    ("pixels", "datatype", "name", "words"),
    [
        (np.zeros((2, 32, 32, 3), np.float32), "FP32", C.INPUT_NAME, ["data-type", "UINT8"]),
        (np.zeros((2, 16, 32, 3), np.uint8), "UINT8", C.INPUT_NAME, ["shape", "32,32,3"]),
        (np.zeros((0, 32, 32, 3), np.uint8), "UINT8", C.INPUT_NAME, ["pixels"]),
        (np.zeros((300, 32, 32, 3), np.uint8), "UINT8", C.INPUT_NAME, ["batch", "256"]),
        (np.zeros((1, 32, 32, 3), np.uint8), "UINT8", "image", ["image"]),
    ],
    ids=["wrong-dtype", "wrong-shape", "empty-batch", "batch-too-large", "unknown-input"],
)
def test_bad_requests_get_clear_errors_and_the_server_keeps_serving(server, images, local, pixels, datatype, name,
                                                                    words):  # fmt: skip
    _, http, _, _ = server
    client = httpclient.InferenceServerClient(http)
    inp = httpclient.InferInput(name, list(pixels.shape), datatype)
    inp.set_data_from_numpy(pixels)
    with pytest.raises(InferenceServerException) as err:
        client.infer(NAME, [inp])
    client.close()
    message = str(err.value).replace(" ", "")
    assert "400" in str(err.value) and all(w.replace(" ", "") in message for w in words), str(err.value)
    got = http_infer(http, images[:3]).as_numpy(C.OUTPUT_PROBS)
    assert np.abs(got - local.run(images[:3]).probs).max() <= TOLERANCE


# ----------------------------------------------------------------------------------------------
# Listening only on loopback, stopping on Ctrl+C


LOOPBACK = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}


def listening(port: int) -> set[str]:
    """Hex local addresses listening on `port`, IPv4 and IPv6, from /proc/net."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def test_listens_on_loopback_only(server):
    _, http, grpc, _ = server
    for url in (http, grpc):
        addresses = listening(int(url.rsplit(":", 1)[1]))
        assert addresses and addresses <= LOOPBACK, (url, addresses)


def test_ctrl_c_stops_the_server_cleanly(server):
    proc, http, _, log = server
    assert proc.poll() is None
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl+C in a terminal reaches tritonserver too
    assert proc.wait(30) == 0, log.read_text()
    text = log.read_text()
    assert "serving" in text and "stopped" in text and "Traceback" not in text, text
    assert not _ready(httpclient.InferenceServerClient(http))
    deadline = time.monotonic() + 20  # the backend's Python process may take a moment to exit
    while (leftovers := _group_members(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not leftovers, f"processes left in the server's group: {leftovers}"


def _group_members(pgid: int) -> list[str]:
    return [d.name for d in Path("/proc").iterdir() if d.name.isdigit() and _group(d) == pgid]


def _group(proc_dir: Path) -> int | None:
    try:
        stat = (proc_dir / "stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[2])  # fields after the name: state, ppid, pgrp


# ----------------------------------------------------------------------------------------------
# Failing early, in one line (no server needed)


def test_a_taken_port_or_a_bad_model_is_one_line_error(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = subprocess.run([str(BIN / "cifar10"), "serve", "--port", str(port), "--grpc-port", str(free_port())],
                               capture_output=True, text=True, timeout=60)  # fmt: skip
    assert taken.returncode != 0 and f"127.0.0.1:{port}" in taken.stderr and "--port" in taken.stderr
    missing = subprocess.run([str(BIN / "cifar10"), "serve", "--model", str(tmp_path / "none.onnx"),
                              "--port", str(free_port()), "--grpc-port", str(free_port())],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert missing.returncode != 0 and "none.onnx" in missing.stderr
    for r in (taken, missing):
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_the_backend_stub_gets_this_interpreters_libpython():
    """Triton's Python-backend stub must load the libpython of the interpreter running us; a different
    patch release fails at model start. serve puts this interpreter's LIBDIR first on LD_LIBRARY_PATH."""
    from cifar10kit.runtime import server

    env = server.backend_environment({"LD_LIBRARY_PATH": "/somewhere/else", "PATH": "/usr/bin:/bin"})
    assert env["LD_LIBRARY_PATH"].split(":") == [sysconfig.get_config_var("LIBDIR"), "/somewhere/else"]
    server.check_stub_links(env)  # resolves to our own library: no error
    # Without the fix the loader picks whatever libpython it finds first; where that is another copy
    # (here: the system's 3.11 beside a pyenv 3.11), serve must refuse and name both.
    bare = {"PATH": "/usr/bin:/bin"}
    stub = Path(importlib.util.find_spec("pytriton").origin).parent / "tritonserver" / "python_backend_stubs"
    stub = stub / f"{sys.version_info.major}.{sys.version_info.minor}" / "triton_python_backend_stub"
    ldd = subprocess.run(["ldd", str(stub)], env=bare, capture_output=True, text=True, timeout=30).stdout
    found = re.search(r"libpython\S+\s+=>\s+(/\S+)", ldd)
    lib = server.python_library()
    if found and Path(found.group(1)).resolve() == lib.resolve():
        server.check_stub_links(bare)
    else:
        with pytest.raises(server.ServeError, match="libpython"):
            server.check_stub_links(bare)
