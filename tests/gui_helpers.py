"""Helpers for the GUI tests: a private X server, real key presses, screenshots, a tiny model."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

SCREEN = "1400x900x24"
SCREENSHOTS = Path(__file__).resolve().parent / "artifacts" / "screenshots"
# The real CIFAR-10, from $CIFAR10_DATA; tests that need it skip without it.
DATA_DIR = Path(os.environ.get("CIFAR10_DATA", "") or "/nonexistent")


def have_cifar() -> bool:
    return (DATA_DIR / "cifar-10-batches-py" / "test_batch").is_file()


@contextmanager
def xvfb() -> Iterator[str]:
    """Start Xvfb on a free display (it picks one and tells us through -displayfd); yield ':N'."""
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", SCREEN, "-nolisten", "tcp", "-noreset"],
        pass_fds=(write_fd,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    try:
        ready, _, _ = select.select([read_fd], [], [], 15)
        number = os.read(read_fd, 64).decode().strip() if ready else ""
        if not number:
            raise RuntimeError("Xvfb did not report a display within 15 s")
        yield f":{number}"
    finally:
        os.close(read_fd)
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()


def pump_until(app, condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Process Tk events (and background results) until `condition()` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        app.tasks.drain()
        app.root.update()
        if condition():
            return True
        time.sleep(0.01)
    return False


def press(app, keys: str) -> None:
    """A real X key press (xdotool, to the focused window) when available, else a Tk event.

    keys: xdotool syntax, e.g. "ctrl+o", "Right", "h"."""
    if shutil.which("xdotool"):
        window = str(int(app.root.wm_frame(), 16))
        subprocess.run(["xdotool", "windowfocus", "--sync", window], check=True, timeout=10)
        # Several Tk windows in one process share one X connection, and after the first is destroyed
        # Tk can miss the FocusIn for the next: tell it explicitly (there is no window manager here).
        app.root.focus_force()
        app.root.update()
        subprocess.run(["xdotool", "key", "--clearmodifiers", keys], check=True, timeout=10)
        pump_until(app, lambda: False, timeout=0.15)  # let the X events arrive
        return
    mods = {"ctrl": "Control"}
    *mod, key = keys.split("+")
    sequence = "-".join([mods.get(m, m) for m in mod] + ["KeyPress", key])
    app.root.focus_force()
    app.root.event_generate(f"<{sequence}>", when="tail")
    app.root.update()


def screenshot(app, name: str) -> Path | None:
    """Save the app window as tests/artifacts/screenshots/<name>.png (None if no tool can)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    out = SCREENSHOTS / f"{name}.png"
    pump_until(app, lambda: False, timeout=0.3)  # let pending redraws land
    window = app.root.wm_frame()
    if shutil.which("import"):
        subprocess.run(["import", "-window", window, str(out)], check=True, timeout=30)
    elif shutil.which("xwd") and shutil.which("convert"):
        xwd = subprocess.run(["xwd", "-silent", "-id", window], check=True, capture_output=True, timeout=30)
        subprocess.run(["convert", "xwd:-", str(out)], input=xwd.stdout, check=True, timeout=30)
    else:
        return None
    return out


def build_tiny_model(out_dir: Path) -> Path:
    """Train the smoke preset for one epoch on 1,000 images and export it (about 10 s on a CPU).

    Only the tests import torch, through this function; the GUI itself never does."""
    from cifar10kit.export.exporter import export
    from cifar10kit.train.trainer import make_config, train

    cfg = make_config("smoke", data_dir=str(DATA_DIR), out=str(out_dir), name="m", subset=1000, threads=1)
    run_dir = train(cfg)
    onnx_path = out_dir / "m.onnx"
    export(run_dir, onnx_path, data_dir=str(DATA_DIR), verify_n=200, log=lambda *a, **k: None)
    return onnx_path
