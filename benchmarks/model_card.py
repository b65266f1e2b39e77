"""Write docs/MODEL_CARD.md (+ figures) for a model file, from measurements made here and now.

    python benchmarks/model_card.py --model runtime/models/default.onnx [--data-dir DIR] \
        --run runs/accurate-s0 --command "cifar10 train --preset accurate ..." --out docs
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cifar10kit.runtime.bench import machine, time_model  # noqa: E402
from cifar10kit.runtime.corruptions import odds_text  # noqa: E402
from cifar10kit.runtime.dataset import load_cifar10  # noqa: E402
from cifar10kit.runtime.evaluate import expected_calibration_error, report  # noqa: E402
from cifar10kit.runtime.plots import plot_confusion, plot_robustness  # noqa: E402
from cifar10kit.runtime.robustness import RobustnessReport  # noqa: E402
from cifar10kit.runtime.session import Classifier  # noqa: E402


def augmentation_text(config: dict) -> str:
    """The training augmentation as the run's config.json states it (older runs lack the newer keys)."""
    parts = [f"flip + {config.get('translate', 2)}-pixel translate"]
    if config.get("crop_epochs"):
        parts.append(f"the first {config['crop_epochs']} epochs on {config.get('crop_size', 24)}-pixel crops")
    if config.get("cutout"):
        parts.append(f"{config['cutout']}-pixel cutout")
    if config.get("robust"):
        parts.append(f"corruptions on {config['robust']:.0%} of images")
        if mix := config.get("robust_mix"):
            parts[-1] += f" (odds {odds_text(mix)})"
    text = "augmentation " + ", ".join(parts)
    if teachers := config.get("teacher"):
        names = ", ".join(Path(t).name for t in teachers)
        temperature = config.get("distill_temp", 1.0)
        text += (
            f"; distilled from {names} (their probabilities at temperature {temperature:g}, "
            f"{config.get('distill', 0.7):.0%} of each target)"
        )
    return text


def precision_text(config: dict) -> str:
    """How the run computed: runs from before `auto` have no other value than bf16."""
    amp = config.get("amp", "bf16")
    return "fp32 throughout" if amp == "fp32" else f"{amp} autocast"


def recipe_text(config: dict) -> str:
    return (
        f"Seed {config.get('seed', '?')}. Recipe: {config.get('epochs')} epochs, batch {config.get('batch_size')}, "
        f"widths {config.get('widths')}, Muon lr {config.get('lr')} for conv filters, SGD for biases and head, "
        f"label smoothing {config.get('label_smoothing')}, {augmentation_text(config)}, {precision_text(config)}."
    )


def read_run(run: Path) -> tuple[dict, dict, list[dict]]:
    """A run folder's config, summary and per-epoch metrics."""
    metrics = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    return json.loads((run / "config.json").read_text()), json.loads((run / "summary.json").read_text()), metrics


def training_text(summary: dict, metrics: list[dict]) -> str:
    per_epoch = np.mean([m["epoch_seconds"] for m in metrics]) if metrics else 0.0
    return (
        f"Training time {summary['train_seconds']:.0f} s ({summary['train_seconds'] / 60:.1f} min) "
        f"for {len(metrics)} epochs, {per_epoch:.0f} s per epoch."
    )


def in_training_text(summary: dict) -> str:
    return f"{summary['test_acc']:.4f} with {summary['tta']} TTA, {summary['test_acc_no_tta']:.4f} without"


def reproduce_lines(
    members: list[tuple[str, tuple[dict, dict, list[dict]]]], hardware: str, recipe: dict, cascade: dict | None = None
) -> list[str]:
    """How each member was trained ((run name, read_run) pairs): its command, recipe and time, for one
    net or each of an ensemble's (`cascade`: the file's cascade metadata, when it is one)."""
    if len(members) <= 1:
        config, summary, metrics = members[0][1] if members else (recipe, {}, [])
        return [
            recipe_text(config),
            "",
            f"Hardware: {hardware}. " + (training_text(summary, metrics) if summary else ""),
        ]
    how = f"An ensemble of {len(members)} nets, their logits averaged in the graph."
    if cascade:
        how = (
            f"A cascade of {len(members)} nets: member 1 answers alone where its calibrated top probability is "
            f"{cascade['threshold']:g} or more, and the others join it where it is less (the logits of every pass "
            f"through a net averaged: the rest's answer weighs {cascade.get('rest_weight', len(members) - 1):g} times "
            "the first net's)."
        )
        stages = cascade.get("tta") or []
        if len(stages) == 2 and stages[0] != stages[1]:
            how += f" Test-time augmentation: {stages[0]} for member 1 alone, {stages[1]} for the members that join."
    lines = [f"{how} Hardware: {hardware}.", ""]
    for k, (name, (config, summary, metrics)) in enumerate(members, 1):
        lines.append(
            f"- Member {k} (`{name}`): {recipe_text(config)} {training_text(summary, metrics)} "
            f"In training: {in_training_text(summary)}."
        )
    return lines


def calibration_text(info, probs: np.ndarray, labels: np.ndarray, ece: float) -> str:
    t = float(info.raw.get("temperature", "1"))
    if t == 1.0:
        return (
            f"Expected calibration error (15 bins): {ece:.4f}. Label smoothing makes the model under-confident "
            "at the top end: read probabilities as ranks more than as frequencies."
        )
    held = expected_calibration_error(probs[1::2], labels[1::2])
    if info.cascade:
        t_first, t_all = info.cascade["temperatures"]
        return (
            f"Expected calibration error (15 bins): {ece:.4f} on all 10,000 test images, {held:.4f} on the "
            f"5,000 odd-numbered ones. Label smoothing trains the nets to be under-confident; the exporter fitted "
            f"two softmax temperatures, {t_first:.3f} for the first net's answers alone and {t_all:.3f} for every "
            "net's together, each chosen to minimise the negative log-likelihood, so a 90% in this file is right "
            "about 90% of the time whichever stage answered. No prediction changes. Fitted on: "
            f"{info.calibration_set or 'the even-numbered test images'}."
        )
    return (
        f"Expected calibration error (15 bins): {ece:.4f} on all 10,000 test images, {held:.4f} on the "
        f"5,000 odd-numbered ones that the calibration never saw. Label smoothing trains the net to be "
        f"under-confident; the exporter fitted a softmax temperature of {t:.3f} on the even-numbered test "
        "images (one number, chosen to minimise the negative log-likelihood) and the graph divides its logits "
        "by it, so a 90% in this file is right about 90% of the time. No prediction changes."
    )


def reliability_plot(probs: np.ndarray, labels: np.ndarray, path: Path, ece: float) -> None:
    conf, correct = probs.max(1), probs.argmax(1) == labels
    edges = np.linspace(0, 1, 16)
    mids, accs, counts = [], [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf > lo) & (conf <= hi)
        if inside.sum() >= 10:
            mids.append(conf[inside].mean())
            accs.append(correct[inside].mean())
            counts.append(inside.sum())
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.plot(mids, accs, "o-", label="this model")
    for m, a, c in zip(mids, accs, counts):
        ax.annotate(str(c), (m, a), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set(xlabel="confidence (top-1 probability)", ylabel="accuracy", title=f"reliability (ECE {ece:.4f})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def robustness_section(paths: list[str], jpeg_folder: list[float], out: Path) -> list[str]:
    """The corruption table (this model beside others, e.g. the previous defaults) and its plot, from the JSON
    that `cifar10 robustness --json` printed for each."""
    new, *old = [RobustnessReport.from_json(json.loads(Path(p).read_text())["reports"][0]) for p in paths]
    plot_robustness([new, *old], out / "robustness.png")
    names = [f"`{Path(b.model).name}`" for b in old]
    lines = [
        "## Robustness: common corruptions",
        "",
        f"`cifar10 robustness` on {'all' if new.n == 10_000 else 'the first'} {new.n:,} test images (seed {new.seed}): "
        "every family at five "
        "severities, generated with numpy and Pillow (`runtime/corruptions.py`)"
        + (f", beside {' and '.join(names)} on the same pictures." if old else "."),
        "",
    ]
    if jpeg_folder:
        others = ", ".join(f"{n} {a:.4f}" for n, a in zip(names, jpeg_folder[1:]))
        lines += [
            f"The test set saved as JPEG files at quality 75 and read back through `cifar10 evaluate --folder`: "
            f"**{jpeg_folder[0]:.4f}**" + (f" ({others})." if others else "."),
            "",
        ]
    head = "| corruption | severity | strength | accuracy | ECE |" + "".join(f" {n} | difference |" for n in names)
    lines += [head, "|---" * (5 + 2 * len(old)) + "|"]

    def row(name, sev, strength, acc, ece, others):
        return f"| {name} | {sev} | {strength} | {acc:.4f} | {ece:.4f} |" + "".join(
            f" {b:.4f} | {100 * (acc - b):+.2f} |" for b in others
        )

    lines.append(row("clean", "-", "-", new.clean_accuracy, new.clean_ece, [b.clean_accuracy for b in old]))
    for c in new.cells:
        others = [b.cell(c.family, c.severity).accuracy for b in old]
        lines.append(row(c.family.replace("_", " "), c.severity, f"{c.strength:g}", c.accuracy, c.ece, others))
    lines += [
        "",
        f"Mean corruption accuracy **{new.mean_corruption_accuracy:.4f}**"
        + (" (" + ", ".join(f"{n} {b.mean_corruption_accuracy:.4f}" for n, b in zip(names, old)) + ")" if old else "")
        + f"; worst cell ECE {max(c.ece for c in new.cells):.4f}.",
    ]
    for name, base in zip(names, old):
        worse = [c for c in new.cells if c.accuracy <= base.cell(c.family, c.severity).accuracy]
        lines.append(
            f"Better than {name} in every cell."
            if not worse
            else f"Not better than {name} in: " + ", ".join(f"{c.family} {c.severity}" for c in worse) + "."
        )
    lines += ["", "![accuracy under corruptions](robustness.png)", ""]
    return lines


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default=None)
    p.add_argument(
        "--data-dir",
        default=None,
        help="folder holding cifar-10-batches-py/ (default $CIFAR10_DATA, else the per-user cache)",
    )
    p.add_argument(
        "--run", nargs="+", default=[], help="the run folder(s) the model came from (config, metrics, summary)"
    )
    p.add_argument("--command", action="append", default=[], help="the exact training command (one per run)")
    p.add_argument("--export-command", default="")
    p.add_argument("--hardware", default="")
    p.add_argument("--out", default="docs")
    p.add_argument("--title", default="the shipped default model")
    p.add_argument(
        "--robustness",
        nargs="+",
        default=[],
        metavar="JSON",
        help="`cifar10 robustness --json` outputs: this model's, then those to compare with",
    )
    p.add_argument(
        "--jpeg-folder",
        nargs="+",
        type=float,
        default=[],
        metavar="ACC",
        help="accuracy on the test set saved as JPEG q75 (evaluate --folder): this model, then the others",
    )
    p.add_argument("--notes", help="a markdown file appended as 'Choices and caveats'")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)

    model = Classifier(a.model, provider="cpu")
    info = model.info
    x, y, _ = load_cifar10(a.data_dir, "test")
    probs = model.predict_probs(x)
    rep = report(probs, y, info.class_names)
    title = f"{model.path.stem} model: accuracy {rep.accuracy:.4f}"
    plot_confusion(rep.confusion, info.class_names, out / "confusion.png", title)
    reliability_plot(probs, y, out / "reliability.png", rep.ece)
    # Spinning workers, as on an idle machine: the evaluation just above leaves a load average that would
    # otherwise make the session think the CPUs are busy.
    timer = Classifier(a.model, provider="cpu", spinning=True)
    timing = time_model(lambda v: timer.run(v), batch_size=256, repeats=300)

    conf = probs.max(1)
    correct = probs.argmax(1) == y
    thr = info.threshold or 0.0
    flagged = conf < thr
    k = len(info.class_names)
    pairs = sorted(
        ((rep.confusion[i, j] + rep.confusion[j, i], i, j) for i in range(k) for j in range(i + 1, k)), reverse=True
    )[:5]
    members = [(Path(r).name, read_run(Path(r))) for r in a.run]
    summary = members[0][1][1] if len(members) == 1 else {}

    lines = [
        f"# Model card: {a.title}",
        "",
        f"`{model.path.name}`, {model.path.stat().st_size / 1e6:.1f} MB, architecture `{info.architecture}`, "
        f"precision {info.raw.get('precision', 'fp32')}, test-time augmentation in the graph: {info.tta_summary}. "
        f"Trained on {info.dataset} (50,000 training images); created {info.created} by cifar10kit {info.version}.",
        "",
        "## How to reproduce",
        "",
        "```",
        *(a.command or ["(see recipe below)"]),
        a.export_command,
        "```",
        "",
        *reproduce_lines(members, a.hardware or machine(), json.loads(info.raw.get("recipe", "{}")), info.cascade),
        "",
        "## Accuracy (CIFAR-10 test set, 10,000 images, measured through onnxruntime on this file)",
        "",
        f"**{rep.accuracy:.4f}** top-1" + (f" (in training: {in_training_text(summary)})" if summary else "") + ".",
        "",
        "| class | accuracy |",
        "|---|---|",
        *[f"| {n} | {v:.3f} |" for n, v in rep.per_class.items()],
        "",
        "![confusion matrix and per-class accuracy](confusion.png)",
        "",
        "## Calibration and the 'uncertain' flag",
        "",
        calibration_text(info, probs, y, rep.ece),
        "",
        "![reliability diagram](reliability.png)",
        "",
        f"Uncertainty threshold in the metadata: {thr:.3f} (top-1 probability below which predictions are more "
        f"often wrong than right on held-out images). It flags {flagged.mean():.1%} of the test set; accuracy on "
        f"flagged images {correct[flagged].mean() if flagged.any() else float('nan'):.3f}, on the rest "
        f"{correct[~flagged].mean():.3f}.",
        "",
        *(robustness_section(a.robustness, a.jpeg_folder, out) if a.robustness else []),
        "## Speed (onnxruntime, CPU provider)",
        "",
        f"{machine()}: batch-1 latency p50 {timing['batch1_p50_ms']:.2f} ms (p99 {timing['batch1_p99_ms']:.2f} ms), "
        f"{timing['images_per_s']:.0f} images/s at batch 256.",
        "",
        "## Known weaknesses",
        "",
        "- Most confused pairs (both directions, of 10,000): "
        + ", ".join(f"{info.class_names[i]}/{info.class_names[j]} {n}" for n, i, j in pairs)
        + ".",
        f"- Weakest class: {min(rep.per_class, key=rep.per_class.get)} ({min(rep.per_class.values()):.3f}).",
        "- It knows ten classes and nothing else: anything else (a person, a cup) still gets one of the ten "
        "labels; the 'uncertain' flag catches some of these, not all.",
        "- It sees 32x32 pixels. Photos far from CIFAR-style images (large, detailed, several objects, unusual "
        "viewpoints, drawings) are out of its depth: the app shows the 32x32 it actually classified.",
        "- CIFAR-10's test set shares photographers and style with its training set; accuracy on your own "
        "photos will be lower than the figure above.",
        "",
    ]
    if a.notes:
        lines += ["## Choices and caveats", "", Path(a.notes).read_text().strip(), ""]
    (out / "MODEL_CARD.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
