"""Screenshots of the app on the shipped model, for the README (docs/screenshots/*.png).

    python benchmarks/screenshots.py --data-dir ../shared/data

Runs a private Xvfb, opens real CIFAR-10 test images (upscaled, as a user's file would be), and saves
each main view. Also prints the cold-start and first-prediction times it measured.
"""

from __future__ import annotations

import argparse
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
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--out", default=str(REPO / "docs" / "screenshots"))
    a = p.parse_args()
    import os

    from PIL import Image

    from cifar10kit.runtime.dataset import load_cifar10

    x, y, names = load_cifar10(a.data_dir, "test")
    tmp = Path(tempfile.mkdtemp())
    for i in (12, 25, 3, 7):
        Image.fromarray(x[i]).resize((256, 256), Image.Resampling.BICUBIC).save(tmp / f"{names[y[i]]}_{i}.png")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    with xvfb() as display:
        os.environ["DISPLAY"] = display
        t0 = time.perf_counter()
        from cifar10kit.gui.app import App

        app = App(data_dir=a.data_dir, modal_errors=False)
        pump_until(app, lambda: app.classifier is not None, 20)
        print(f"window + model ready in {time.perf_counter() - t0:.2f} s")
        first = sorted(tmp.glob("*.png"))[0]
        t1 = time.perf_counter()
        app.open_image(str(first))
        pump_until(app, lambda: app.shown is not None and app.shown.probs is not None, 20)
        print(f"first prediction shown {1000 * (time.perf_counter() - t1):.0f} ms after open")

        def save(name: str) -> None:
            shot = screenshot(app, name)
            if shot:
                shutil.copy(shot, out / f"{name}.png")

        save("classify")
        app.toggle_heatmap()
        pump_until(app, lambda: False, 0.5)
        save("classify-heatmap")
        app.toggle_heatmap()
        app.show_tab("gallery")
        app.gallery_load()
        pump_until(app, lambda: len(app.gallery_cells) > 0 and all(c[2] for c in app.gallery_cells), 120)
        pump_until(app, lambda: False, 1.0)
        save("gallery")
        app.show_tab("batch")
        app.batch_start(str(tmp))
        pump_until(app, lambda: not app.batch_running and len(app.batch_rows()) == 4, 60)
        save("batch")
        app.show_tab("model")
        save("model")
        app.close()
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"saved to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
