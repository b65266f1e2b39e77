"""Training speed on this machine: our preset beside the airbench94_muon anchor, in one run.

    python benchmarks/train_speed.py --preset fast [--data-dir DIR] [--epochs N] [--seeds 3]
                                     [--anchor PATH/airbench94_muon_port.py]

--data-dir defaults to $CIFAR10_DATA, else the per-user cache (`cifar10 download` fills it);
--anchor defaults to $AIRBENCH_ANCHOR (no anchor run when neither is given).

Prints, per seed: seconds per epoch, images/s, training seconds, the final (TTA) evaluation's
seconds, time to 94% and final accuracy; then the mean over seeds, the device, and the ratio to the
anchor when it ran. "Time to 94%" is training plus the final TTA evaluation, counted only when
that evaluation reaches 94% (the moment a 94% model exists); "to 94% plain" is the first epoch
whose plain (no TTA) test accuracy reached 94%, when one did. Timings on shared machines are
noisy: compare within one run, not across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cifar10kit.runtime.bench import machine
from cifar10kit.runtime.locations import resolve_data_dir
from cifar10kit.train.trainer import time_to_accuracy


def run_ours(preset: str, data_dir: str, epochs: int | None, seed: int, out: Path) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "cifar10kit",
        "train",
        "--preset",
        preset,
        "--data-dir",
        data_dir,
        "--out",
        str(out),
        "--name",
        f"seed{seed}",
        "--seed",
        str(seed),
    ] + (["--epochs", str(epochs)] if epochs else [])
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    run = out / f"seed{seed}"
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run / "summary.json").read_text())
    plain94 = time_to_accuracy(rows, 0.94)
    eval_s = summary.get("eval_seconds", 0.0)
    return {
        "seed": seed,
        "epochs": len(rows),
        "s_per_epoch": sum(r["epoch_seconds"] for r in rows) / len(rows),
        "images_per_s": sum(r["images_per_s"] for r in rows) / len(rows),
        "train_seconds": rows[-1]["train_seconds"],
        "wall_seconds": wall,
        "eval_seconds": eval_s,
        "time_to_94": rows[-1]["train_seconds"] + eval_s if summary["test_acc"] >= 0.94 else None,
        "plain_to_94": plain94,
        "final_acc": summary["test_acc"],
        "tta": summary["tta"],
        "amp": json.loads((run / "config.json").read_text())["amp"],
    }


def run_anchor(script: str, data_dir: str, epochs: int | None, amp: str) -> dict:
    """`amp`: the precision ours trained in; on the CPU the anchor autocasts to bf16 unless told
    otherwise, so it is told the same (on CUDA it keeps upstream's fp16 whatever it is told)."""
    env = {**os.environ, "CIFAR_ROOT": data_dir, "RUNS": "1", "AMP": "fp32" if amp == "fp32" else "bf16"}
    if epochs:
        env["EPOCHS"] = str(epochs)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, script], env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    # Its table rows end with "| time_seconds |"; the last row holds the TTA accuracy.
    rows = [r for r in proc.stdout.splitlines() if re.match(r"^\|\s+\S", r) and "epoch" not in r]
    cells = [c.strip() for c in rows[-1].strip("|").split("|")]
    nums = [float(c) for c in cells if re.fullmatch(r"[0-9.]+", c)]
    return {"wall_seconds": wall, "train_seconds": nums[-1], "final_acc": nums[-2], "amp": env["AMP"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="fast")
    p.add_argument(
        "--data-dir",
        default=None,
        help="folder holding cifar-10-batches-py/ (default $CIFAR10_DATA, else the per-user cache)",
    )
    p.add_argument("--epochs", type=int, help="override the preset's epochs (e.g. 1 for a quick speed check)")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--json", metavar="FILE", help="also write the figures to FILE as JSON")
    p.add_argument("--keep", metavar="DIR", help="keep the run folders under DIR (default: a temporary folder)")
    p.add_argument(
        "--anchor",
        default=os.environ.get("AIRBENCH_ANCHOR", ""),
        help="airbench94_muon port to run beside ours (default $AIRBENCH_ANCHOR; '' to skip)",
    )
    a = p.parse_args()
    a.data_dir = str(resolve_data_dir(a.data_dir))

    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else machine()
    print(f"device: {device}; torch {torch.__version__}; preset {a.preset}")
    out = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="train-speed-"))
    try:
        ours = [run_ours(a.preset, a.data_dir, a.epochs, s, out) for s in range(a.seeds)]
    finally:
        if not a.keep:
            shutil.rmtree(out, ignore_errors=True)
    print(
        f"{'seed':>4} {'epochs':>6} {'s/epoch':>8} {'img/s':>7} {'train s':>8} {'eval s':>7} {'to 94%':>7} "
        f"{'to 94% plain':>12} {'acc':>7}"
    )
    for r in ours:
        t94 = f"{r['time_to_94']:.0f}" if r["time_to_94"] else "-"
        p94 = f"{r['plain_to_94']:.0f}" if r["plain_to_94"] else "-"
        print(
            f"{r['seed']:>4} {r['epochs']:>6} {r['s_per_epoch']:>8.1f} {r['images_per_s']:>7.0f} "
            f"{r['train_seconds']:>8.0f} {r['eval_seconds']:>7.0f} {t94:>7} {p94:>12} "
            f"{r['final_acc']:>7.4f}"
        )
    accs = [r["final_acc"] for r in ours]
    mean_acc = sum(accs) / len(accs)
    spread = (sum((x - mean_acc) ** 2 for x in accs) / max(len(accs) - 1, 1)) ** 0.5
    mean_train = sum(r["train_seconds"] for r in ours) / len(ours)
    mean_total = mean_train + sum(r["eval_seconds"] for r in ours) / len(ours)
    print(
        f"ours: mean accuracy {mean_acc:.4f} ± {spread:.4f} over {len(ours)} seed(s) (TTA {ours[0]['tta']}); "
        f"mean training {mean_train:.0f} s, with the final evaluation {mean_total:.0f} s "
        f"({mean_total / 60:.1f} min)"
    )

    def write_json(anchor: dict | None) -> None:
        if a.json:
            figures = dict(
                preset=a.preset,
                device=device,
                torch=torch.__version__,
                seeds=ours,
                mean_acc=mean_acc,
                mean_train_seconds=mean_train,
                anchor=anchor,
            )
            Path(a.json).write_text(json.dumps(figures, indent=2))

    write_json(None)  # ours first: an anchor that fails or is stopped leaves our figures behind
    if a.anchor and Path(a.anchor).exists():
        anc = run_anchor(a.anchor, a.data_dir, a.epochs, ours[0]["amp"])
        print(
            f"anchor airbench94_muon: accuracy {anc['final_acc']:.4f}, training {anc['train_seconds']:.1f} s "
            f"(wall {anc['wall_seconds']:.0f} s); precision: ours {ours[0]['amp']}, anchor AMP={anc['amp']}"
        )
        print(f"ratio (anchor training time / ours): {anc['train_seconds'] / mean_train:.2f}x")
        write_json(anc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
