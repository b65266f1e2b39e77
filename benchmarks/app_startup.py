"""How fast does the app start? Cold processes, each timed from launch to its first prediction.

    python benchmarks/app_startup.py [--runs 5] [--model FILE] [--json]

Each run is a new Python process on a private Xvfb, so every import is paid again (the disk cache
stays warm: a second launch is what users notice most). Four moments, each measured from the
moment the parent started the process:

- imported: `cifar10kit.gui.app` imported (Tk, numpy, Pillow, onnxruntime);
- window: the main window built and drawn once;
- model: the model loaded in the background and in use;
- prediction: a shipped example image opened and its ranked classes shown.

The child also checks that torch, torchvision and matplotlib were never imported: the app must
start without them. Medians are the headline; min and max show the spread on a busy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from cifar10kit.runtime.bench import machine  # noqa: E402

from gui_helpers import xvfb  # noqa: E402

MOMENTS = ("imported", "window", "model", "prediction")

# Runs in the child. `T0` is the parent's time.time() just before launch, so process start-up counts.
CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    T0 = float(os.environ["APP_STARTUP_T0"])
    marks = {}
    import cifar10kit.gui.app as gui
    from cifar10kit.runtime.examples import example_images
    marks["imported"] = time.time() - T0
    app = gui.App(model=os.environ.get("APP_STARTUP_MODEL") or None, modal_errors=False)
    app.root.update()
    marks["window"] = time.time() - T0
    sys.path.insert(0, os.environ["APP_STARTUP_HELPERS"])  # after the marks above: not part of the app's start
    from gui_helpers import pump_until

    assert pump_until(app, lambda: app.model is not None, 60), app.status.message()
    marks["model"] = time.time() - T0
    app.classify.open_image(str(example_images()[0].path))
    shown = lambda: app.classify.shown is not None and app.classify.shown.probs is not None
    assert pump_until(app, shown, 60), app.status.message()
    marks["prediction"] = time.time() - T0
    app.close()
    marks["banned"] = [m for m in ("torch", "torchvision", "matplotlib") if m in sys.modules]
    print("MARKS " + json.dumps(marks))
    """
)


def one_run(display: str, model: str | None) -> dict:
    env = {
        **os.environ,
        "DISPLAY": display,
        "APP_STARTUP_MODEL": model or "",
        "APP_STARTUP_HELPERS": str(REPO / "tests"),
    }
    env["APP_STARTUP_T0"] = repr(time.time())
    proc = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0 or "MARKS " not in proc.stdout:
        raise RuntimeError(f"the app did not start:\n{proc.stderr[-2000:]}{proc.stdout[-500:]}")
    return json.loads(proc.stdout.split("MARKS ", 1)[1])


def summarise(runs: list[dict]) -> dict:
    return {
        m: {k: f([r[m] for r in runs]) for k, f in (("median", statistics.median), ("min", min), ("max", max))}
        for m in MOMENTS
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=5, help="cold starts to time (default 5)")
    p.add_argument("--model", default=None, help="an .onnx file (default: the shipped default model)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    a = p.parse_args()
    runs = []
    with xvfb() as display:
        for i in range(a.runs):
            runs.append(one_run(display, a.model))
            if not a.json:
                print(f"run {i + 1}/{a.runs}: " + ", ".join(f"{m} {runs[-1][m]:.2f} s" for m in MOMENTS))
    banned = sorted({m for r in runs for m in r["banned"]})
    summary = {"machine": machine(), "runs": a.runs, "seconds": summarise(runs)}
    summary["imports_torch"] = bool(banned)
    if a.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"\n{summary['machine']}, {a.runs} cold starts")
        print(f"{'seconds from launch':<22}{'median':>8}{'min':>8}{'max':>8}")
        for m, s in summary["seconds"].items():
            print(f"{m:<22}{s['median']:>8.2f}{s['min']:>8.2f}{s['max']:>8.2f}")
    if banned:
        print(
            f"the app imported {', '.join(banned)}; it must start without torch, torchvision and matplotlib",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
