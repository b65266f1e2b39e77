"""Throughput and latency through `cifar10 serve` (Triton, gRPC) beside in-process onnxruntime.

One run measures both, one after the other on the same machine, so the ratio is fair:

    python benchmarks/serve_bench.py [--model FILE] [--batches 1,16,64,256] [--seconds 8]

For each request batch size it first times the model in this process (one caller, back to back), then
starts `cifar10 serve` in a child process and sends the same batches from several client threads over
gRPC. It prints images/s, p50/p99 latency per request, the batch sizes Triton's dynamic batcher
actually formed (from the server's statistics) and the ratio of server to in-process throughput. The
headline row is many clients sending single images, which only the batcher can make fast.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from cifar10kit.runtime.bench import machine
from cifar10kit.runtime.session import Classifier

MODEL_NAME = "cifar10"


# ----------------------------------------------------------------------------------------------
# In process


def in_process(model: Classifier, images: np.ndarray, batch: int, seconds: float) -> dict:
    model.run(images[:batch])
    lat, n, t0, cpu0 = [], 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds or len(lat) < 5:
        start = (n * batch) % (len(images) - batch + 1)
        t = time.perf_counter()
        model.run(images[start : start + batch])
        lat.append(time.perf_counter() - t)
        n += 1
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"images_per_s": n * batch / elapsed, "cpu_ms_per_image": cpu * 1e3 / (n * batch), **percentiles(lat)}


def med(values: list[float]) -> float:
    return float(np.median(values))


def percentiles(lat: list[float]) -> dict:
    return {"p50_ms": float(np.percentile(lat, 50) * 1e3), "p99_ms": float(np.percentile(lat, 99) * 1e3)}


# ----------------------------------------------------------------------------------------------
# Through the server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str | None, http: int, grpc: int, timeout: float = 300) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("cifar10")
    cmd = [str(exe), "serve", "--provider", "cpu", "--port", str(http), "--grpc-port", str(grpc)]
    cmd += ["--model", model] if model else []
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"cifar10 serve exited with {proc.returncode}:\n{proc.stdout.read()}")
        try:
            if client.is_model_ready(MODEL_NAME):
                client.close()
                return proc
        except Exception:  # noqa: BLE001 - not listening yet
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"cifar10 serve was not ready after {timeout:.0f} s")


def tree_cpu_seconds(root: int) -> float:
    """CPU time (user + system) of process `root` and all its descendants, from /proc."""
    parent, times = {}, {}
    tick = os.sysconf("SC_CLK_TCK")
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(d.name)] = int(fields[1])
        times[int(d.name)] = (int(fields[11]) + int(fields[12])) / tick
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, pp in parent.items() if pp in tree and pid not in tree}
        tree |= more
        grew = bool(more)
    return sum(times.get(pid, 0.0) for pid in tree)


def batch_stats(client) -> dict[int, int]:
    """Executions per batch size formed by the dynamic batcher, from Triton's statistics."""
    stats = client.get_inference_statistics(MODEL_NAME, as_json=True)["model_stats"][0]
    return {int(b["batch_size"]): int(b["compute_infer"].get("count", 0)) for b in stats.get("batch_stats", [])}


def through_server(grpc: int, images: np.ndarray, batch: int, clients: int, seconds: float, pid: int) -> dict:
    import tritonclient.grpc as grpcclient

    stats_client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc}")
    before = batch_stats(stats_client)
    lat: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    stop_at = time.perf_counter() + seconds

    def worker(k: int) -> None:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc}")
        try:
            i = k
            while time.perf_counter() < stop_at:
                start = (i * batch) % (len(images) - batch + 1)
                inp = grpcclient.InferInput("pixels", [batch, 32, 32, 3], "UINT8")
                inp.set_data_from_numpy(images[start : start + batch])
                t = time.perf_counter()
                client.infer(MODEL_NAME, [inp], outputs=[grpcclient.InferRequestedOutput("probabilities")])
                lat[k].append(time.perf_counter() - t)
                i += clients
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(str(e).splitlines()[0])
        finally:
            client.close()

    t0, cpu0, client0 = time.perf_counter(), tree_cpu_seconds(pid), time.process_time()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    server_cpu, client_cpu = tree_cpu_seconds(pid) - cpu0, time.process_time() - client0
    after = batch_stats(stats_client)
    stats_client.close()
    if errors:
        raise SystemExit(f"server errors: {errors[:3]}")
    formed = {b: after.get(b, 0) - before.get(b, 0) for b in after if after.get(b, 0) > before.get(b, 0)}
    executions = sum(formed.values())
    flat = [x for per in lat for x in per]
    return {
        "images_per_s": len(flat) * batch / elapsed,
        **percentiles(flat),
        "requests": len(flat),
        "cpu_ms_per_image": server_cpu * 1e3 / max(len(flat) * batch, 1),
        "client_cpu_ms_per_image": client_cpu * 1e3 / max(len(flat) * batch, 1),
        "mean_batch": sum(b * c for b, c in formed.items()) / max(executions, 1),
        "top_batches": sorted(formed.items(), key=lambda kv: -kv[1])[:3],
    }


# ----------------------------------------------------------------------------------------------
# Main


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="a .onnx model file (default: the shipped model)")
    p.add_argument("--batches", default="1,16,64,256", help="request batch sizes")
    p.add_argument("--clients", type=int, default=16, help="client threads for single images")
    p.add_argument("--seconds", type=float, default=8.0, help="time per measurement")
    p.add_argument("--rounds", type=int, default=2, help="measurements of each row (medians are printed)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    a = p.parse_args()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4096, 32, 32, 3), dtype=np.uint8)
    batches = [int(b) for b in a.batches.split(",")]
    # Enough requests in flight to keep the server busy, without queueing far past its largest batch.
    plan = [(b, a.clients if b == 1 else max(2, min(a.clients, 256 // b))) for b in batches]
    if (1, 1) not in plan:
        plan.insert(0, (1, 1))

    model = Classifier(a.model, provider="cpu")
    print(f"model {model.path} ({model.info.precision}), machine: {machine()}")
    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    http, grpc = free_port(), free_port()
    proc = start_server(a.model, http, grpc)
    # Other work on the machine comes and goes, so each server measurement sits between in-process
    # ones at the same moment, and every row is measured `--rounds` times (medians are printed).
    runs: dict[tuple[int, int], list[dict]] = {row: [] for row in plan}
    try:
        for r in range(a.rounds):
            for b, c in plan:
                local = in_process(model, images, b, a.seconds / 2)
                served = through_server(grpc, images, b, c, a.seconds, proc.pid)
                local256 = in_process(model, images, 256, a.seconds / 2)
                runs[(b, c)].append({"server": served, "in_process": local, "in_process_256": local256})
                print(f"round {r + 1}: batch {b} x {c} clients: {served['images_per_s']:.0f} images/s served, "
                      f"{local['images_per_s']:.0f} in process, {local256['images_per_s']:.0f} at batch 256",
                      flush=True)  # fmt: skip
    finally:
        proc.send_signal(2)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    print(f"load average after: {os.getloadavg()[0]:.2f}\n")

    head = "| request batch | clients | server images/s | p50 ms | p99 ms | batches formed: mean (most common) "
    head += "| in-process images/s (same batch) | p50 ms | ratio | in-process batch 256 | ratio to it "
    head += "| CPU ms/image: server (client) / in-process |"
    print(head + "\n|" + "---|" * 12)
    rows = []
    for (b, c), rs in runs.items():
        keys = ("images_per_s", "p50_ms", "p99_ms", "mean_batch", "cpu_ms_per_image", "client_cpu_ms_per_image")
        s = {k: med([r["server"][k] for r in rs]) for k in keys}
        ref = {k: med([r["in_process"][k] for r in rs]) for k in ("images_per_s", "p50_ms", "cpu_ms_per_image")}
        ref256 = med([r["in_process_256"]["images_per_s"] for r in rs])
        ratio = med([r["server"]["images_per_s"] / r["in_process"]["images_per_s"] for r in rs])
        ratio256 = med([r["server"]["images_per_s"] / r["in_process_256"]["images_per_s"] for r in rs])
        top = ", ".join(f"{size} ({n}x)" for size, n in rs[-1]["server"]["top_batches"])
        print(f"| {b} | {c} | {s['images_per_s']:.0f} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | "
              f"{s['mean_batch']:.1f} ({top}) | {ref['images_per_s']:.0f} | {ref['p50_ms']:.1f} | {ratio:.2f} | "
              f"{ref256:.0f} | {ratio256:.2f} | {s['cpu_ms_per_image']:.2f} ({s['client_cpu_ms_per_image']:.2f}) / "
              f"{ref['cpu_ms_per_image']:.2f} |")  # fmt: skip
        rows.append({"batch": b, "clients": c, "runs": rs, "ratio": ratio, "ratio_256": ratio256})
    if a.json:
        Path(a.json).write_text(json.dumps({"machine": machine(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
