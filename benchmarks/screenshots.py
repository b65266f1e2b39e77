"""Screenshots of the app on the shipped model, for the README (docs/screenshots/*.png).

    python benchmarks/screenshots.py [--data-dir DIR]     # default $CIFAR10_DATA

Runs a private Xvfb, opens real CIFAR-10 test images (upscaled, as a user's file would be), and saves
each main view. Also prints the cold-start and first-prediction times it measured. Without a data
folder the gallery shows the examples shipped with the package, and the pictures come from them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from gui_helpers import pump_until, screenshot, xvfb  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", default=os.environ.get("CIFAR10_DATA"), help="folder holding cifar-10-batches-py/")
    p.add_argument("--out", default=str(REPO / "docs" / "screenshots"))
    a = p.parse_args()
    from PIL import Image

    from cifar10kit.gui.gallery_pages import find_data_dir
    from cifar10kit.runtime.dataset import load_cifar10
    from cifar10kit.runtime.examples import example_images
    from cifar10kit.runtime.preprocess import prepare

    data_dir = find_data_dir(a.data_dir)
    if data_dir is not None:
        x, y, names = load_cifar10(data_dir, "test")
        picks = [(x[i], f"{names[y[i]]}_{i}") for i in (12, 25, 3, 7)]
    else:
        print("no CIFAR-10 data folder: the gallery shows the shipped examples, the pictures come from them")
        examples = [example_images()[k] for k in (30, 50, 0, 70)]
        picks = [(prepare(e.path), f"{e.label}_{e.test_index}") for e in examples]
    tmp = Path(tempfile.mkdtemp())
    for pixels, name in picks:
        Image.fromarray(pixels).resize((256, 256), Image.Resampling.BICUBIC).save(tmp / f"{name}.png")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    with xvfb() as display:
        os.environ["DISPLAY"] = display
        t0 = time.perf_counter()
        from cifar10kit.gui.app import App

        app = App(data_dir=data_dir, modal_errors=False)
        pump_until(app, lambda: app.model is not None, 20)
        print(f"window + model ready in {time.perf_counter() - t0:.2f} s")
        first = sorted(tmp.glob("*.png"))[0]
        t1 = time.perf_counter()
        app.classify.open_image(str(first))
        pump_until(app, lambda: app.classify.shown is not None and app.classify.shown.probs is not None, 20)
        print(f"first prediction shown {1000 * (time.perf_counter() - t1):.0f} ms after open")

        def save(name: str) -> None:
            shot = screenshot(app, name)
            if shot:
                shutil.copy(shot, out / f"{name}.png")

        save("classify")
        app.classify.toggle_heatmap()
        app.tasks.wait_idle(20)
        pump_until(app, lambda: False, 0.5)
        save("classify-heatmap")
        app.classify.toggle_heatmap()
        app.show_tab("gallery")
        cells = app.gallery.view.cells
        pump_until(app, lambda: len(cells()) > 0 and all(c[2] for c in cells()), 120)
        pump_until(app, lambda: False, 1.0)
        save("gallery")
        app.show_tab("batch")
        app.batch.start(str(tmp))
        pump_until(app, lambda: not app.batch.running and len(app.batch.view.rows()) == 4, 60)
        save("batch")
        app.show_tab("model")
        save("model")
        app.close()
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"saved to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
