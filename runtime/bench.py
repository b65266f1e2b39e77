"""`cifar10 bench`: batch-1 latency (p50/p99) and large-batch throughput, with achieved GFLOP/s, on the
shipped example images."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable

import numpy as np

from . import contract
from .cpu import cpuinfo_fields, vector_tier
from .examples import load_examples


def bench_images() -> np.ndarray:
    """Real pictures: the 100 shipped example images (a cascade's cost depends on the image, and random
    pixels would leave every net unsure); random pixels where the package has no examples."""
    try:
        return load_examples()[0]
    except (FileNotFoundError, OSError):
        return np.random.default_rng(0).integers(0, 256, (100, *contract.IMAGE_SHAPE), dtype=np.uint8)


def time_model(
    run: Callable[[np.ndarray], object], batch_size: int = 256, repeats: int = 200, seconds: float = 3.0
) -> dict[str, float]:
    """Latency of single images (one after another, cycling through the bench images) and throughput
    at `batch_size` for run(pixels uint8 NHWC)."""
    images = bench_images()
    big = np.resize(images, (batch_size, *contract.IMAGE_SHAPE))  # the images repeated to fill the batch
    for i in range(10):
        run(images[i : i + 1])
    lat = []
    for i in range(repeats):
        one = images[i % len(images)][None]
        t0 = time.perf_counter()
        run(one)
        lat.append(time.perf_counter() - t0)
    run(big)
    n, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds or n < 3:
        run(big)
        n += 1
    return {
        "batch1_p50_ms": float(np.percentile(lat, 50) * 1e3),
        "batch1_p99_ms": float(np.percentile(lat, 99) * 1e3),
        "images_per_s": n * batch_size / elapsed,
        "batch_size": batch_size,
    }


def machine() -> str:
    """The CPU in words, with its vector tier: "AMD EPYC (AVX2, no VNNI or bf16), 2 cores"."""
    name, flags = cpuinfo_fields()
    cpu = name or platform.processor() or platform.machine()
    tier = vector_tier(flags)
    return f"{cpu}{f' ({tier})' if tier else ''}, {os.cpu_count()} cores"


def run_bench(model, args, torch_runner: Callable[[np.ndarray], object] | None = None) -> int:
    # A cascade's FLOPs per image depend on the image: no single GFLOP/s figure is honest for it.
    gflops = float("nan") if model.info.cascade else model.info.gflop_per_image or float("nan")
    rows = {"onnxruntime": time_model(lambda x: model.run(x), args.batch_size, args.repeats)}
    if torch_runner is not None:
        rows["pytorch eager"] = time_model(torch_runner, args.batch_size, args.repeats)
    for r in rows.values():
        r["gflop_per_s"] = r["images_per_s"] * gflops if gflops == gflops else None
    out = {
        **model.facts(),
        "machine": machine(),
        "gflop_per_image": gflops if gflops == gflops else None,
        "results": rows,
    }
    if "pytorch eager" in rows:
        ort_r, pt = rows["onnxruntime"], rows["pytorch eager"]
        out["speedup"] = {
            "batch1": pt["batch1_p50_ms"] / ort_r["batch1_p50_ms"],
            "throughput": ort_r["images_per_s"] / pt["images_per_s"],
        }
    if args.json:
        print(json.dumps(out))
        return 0
    spin = "" if model.spinning or model.threads == 1 else " (not spinning: the CPUs are busy)"
    print(f"{model.path.name} on {model.provider}, {model.threads} threads{spin}; {out['machine']}")
    print(f"{'':<15}{'batch-1 p50':>12}{'p99':>9}{'images/s':>11}{'GFLOP/s':>9}   (batch {args.batch_size})")
    for name, r in rows.items():
        gf = f"{r['gflop_per_s']:.0f}" if r["gflop_per_s"] else "-"
        print(f"{name:<15}{r['batch1_p50_ms']:>10.2f}ms{r['batch1_p99_ms']:>7.2f}ms{r['images_per_s']:>11.0f}{gf:>9}")
    if model.info.cascade:
        c = model.info.cascade
        print(
            f"a cascade: the first net ({c.get('gflop_first', '?')} GFLOP) answers alone when its top "
            f"probability is {c.get('threshold', '?')} or more, the rest join when not "
            f"({model.info.gflop_per_image} GFLOP in all); batch-1 times are over the example images, "
            "p50 the typical one, p99 near every net's"
        )
    if "speedup" in out:
        s = out["speedup"]
        print(f"onnxruntime vs PyTorch: {s['batch1']:.2f}x faster at batch 1, {s['throughput']:.2f}x the throughput")
    return 0
