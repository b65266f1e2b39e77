"""The `cifar10` command line: train, export, predict, evaluate, bench, info, gui.

Each subcommand imports what it needs when it runs, so `predict` never loads PyTorch and
`train`/`export` without the training extra say how to install it instead of crashing.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import warnings
from pathlib import Path

from . import __version__

TRAIN_EXTRA_HINT = (
    "cifar10 {cmd}: needs the training extra (PyTorch, torchvision, onnx). "
    "Install it with: pip install 'cifar10kit[train]'  (or `make dev` in a checkout)"
)


def _need_train_extra(cmd: str) -> None:
    import importlib.util

    missing = [m for m in ("torch", "torchvision", "onnx") if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(TRAIN_EXTRA_HINT.format(cmd=cmd) + f" [missing: {', '.join(missing)}]")


def _err(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)


# ----------------------------------------------------------------------------------------------
# train / export (need the training extra)


def cmd_train(a: argparse.Namespace) -> int:
    _need_train_extra("train")
    from .train.trainer import make_config, train

    widths = tuple(int(w) for w in a.widths.split(",")) if a.widths else None
    if widths is not None and len(widths) != 3:
        raise SystemExit("--widths takes three comma-separated numbers, e.g. 128,384,384")
    cfg = make_config(
        a.preset,
        data_dir=a.data_dir, folder=a.folder, download=a.download or None, out=a.out, name=a.name,
        device=a.device, epochs=a.epochs, batch_size=a.batch_size, widths=widths, lr=a.lr,
        seed=a.seed, subset=a.subset, tta=a.tta, amp=a.amp, compile=a.compile or None,
        deterministic=a.deterministic or None, threads=a.threads, eval_every=a.eval_every,
        crop_epochs=a.crop_epochs, crop_size=a.crop_size, robust=0.0 if a.no_robust else a.robust,
    )  # fmt: skip
    try:
        run_dir = train(cfg, resume=a.resume)
    except KeyboardInterrupt:
        print("\ninterrupted: the last completed epoch is saved; continue with --resume RUN_DIR", file=sys.stderr)
        return 130
    print(f"run folder: {run_dir}\nexport it with: cifar10 export {run_dir} -o model.onnx")
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    _need_train_extra("export")
    from .export.exporter import ExportError, export
    from .train.checkpoint import CheckpointError

    try:
        precision = "fp16" if a.fp16 else "int8" if a.int8 else "fp32"
        result = export(a.checkpoint, a.output, data_dir=a.data_dir, tta=a.tta, verify_n=a.verify_n,
                        precision=precision, calibrate=not a.no_calibrate)  # fmt: skip
    except (ExportError, CheckpointError) as e:
        _err(str(e))
        return 1
    if a.json:
        print(json.dumps(result))
    return 0


# ----------------------------------------------------------------------------------------------
# runtime commands (numpy, pillow, onnxruntime only)


def _open_model(a: argparse.Namespace):
    from .runtime.contract import ContractError
    from .runtime.session import Classifier

    try:
        return Classifier(a.model, provider=a.provider, notify=lambda m: print(m, file=sys.stderr))
    except (ContractError, RuntimeError) as e:
        raise SystemExit(f"error: {e}") from None


def cmd_predict(a: argparse.Namespace) -> int:
    from .runtime.predict import ProgressLine, classify_paths, collect

    model = _open_model(a)
    failed = []
    paths = collect(a.paths, failed)
    results = list(failed)
    progress = ProgressLine("classifying", force=a.progress) if not a.json else None
    writer = None
    csv_file = open(a.csv, "w", newline="", encoding="utf-8", errors="surrogateescape") if a.csv else None  # noqa: SIM115
    if csv_file:
        writer = csv.writer(csv_file)
        writer.writerow(["path", "label", "probability", "uncertain", "top_k", "error"])
    for r in failed:
        _emit(r, a, writer)
    for r in classify_paths(model, paths, top_k=a.top_k, batch_size=a.batch_size, progress=progress):
        results.append(r)
        _emit(r, a, writer)
    if csv_file:
        csv_file.close()
    bad = sum(r.error is not None for r in results)
    if not a.json:
        print(f"{len(results) - bad} classified, {bad} failed ({model.provider})", file=sys.stderr)
    return 1 if bad or not results else 0


def _emit(r, a: argparse.Namespace, writer) -> None:
    if writer is not None:
        top = "; ".join(f"{n}:{p:.4f}" for n, p in r.top_k)
        prob = f"{r.probability:.6f}" if r.probability is not None else ""
        writer.writerow([r.path, r.label or "", prob, int(r.uncertain), top, r.error or ""])
    if a.json:
        print(json.dumps(r.as_json()), flush=True)
    elif r.error:
        print(f"{r.path}: ERROR {r.error}", file=sys.stderr)
    else:
        flag = "  (uncertain: none of these?)" if r.uncertain else ""
        others = ", ".join(f"{n} {p:.1%}" for n, p in r.top_k[1:])
        print(f"{r.path}: {r.label} {r.probability:.1%}{flag}" + (f"   [{others}]" if others else ""))


def cmd_evaluate(a: argparse.Namespace) -> int:
    import numpy as np

    from .runtime.dataset import DatasetError, load_cifar10, scan_image_folder
    from .runtime.evaluate import report
    from .runtime.predict import ProgressLine, classify_paths

    model = _open_model(a)
    names = model.class_names
    try:
        if a.folder:
            items, folder_classes = scan_image_folder(a.folder)
            unknown = [c for c in folder_classes if c not in names]
            if unknown:
                raise DatasetError(
                    f"{a.folder}: class folders {unknown} are not classes of this model ({', '.join(names)})"
                )
            index = {n: i for i, n in enumerate(names)}
            progress = ProgressLine("evaluating", force=a.progress) if not a.json else None
            results = list(classify_paths(model, [p for p, _ in items], top_k=len(names), progress=progress))
            ok = [(r, folder_classes[c]) for r, (_, c) in zip(results, items) if r.error is None]
            for r in results:
                if r.error:
                    print(f"skipped {r.error}", file=sys.stderr)
            probs = np.array([[dict(r.top_k)[n] for n in names] for r, _ in ok], dtype=np.float32)
            labels = np.array([index[c] for _, c in ok], dtype=np.int64)
            skipped = len(results) - len(ok)
        else:
            images, labels, data_names = load_cifar10(a.data_dir, "test")
            if tuple(data_names) != tuple(names):
                raise DatasetError(
                    f"the model's classes ({', '.join(names)}) differ from CIFAR-10's "
                    f"({', '.join(data_names)}); evaluate it on its own data with --folder"
                )
            if a.limit:
                images, labels = images[: a.limit], labels[: a.limit]
            probs, skipped = model.predict_probs(images, batch_size=a.batch_size), 0
    except DatasetError as e:
        _err(str(e))
        return 2
    if len(labels) == 0:
        _err("no readable labelled images to evaluate")
        return 2
    rep = report(probs.reshape(len(labels), len(names)), labels, names, skipped)
    if a.plot:
        try:
            from .runtime.plots import plot_confusion
        except ImportError:
            _err("--plot needs matplotlib: pip install 'cifar10kit[plot]'")
            return 2
        plot_confusion(rep.confusion, names, Path(a.plot), f"{model.path.name}: accuracy {rep.accuracy:.4f}")
    if a.json:
        out = rep.as_json()
        out.update(model=str(model.path), provider=model.provider)
        print(json.dumps(out))
    else:
        print(rep.table())
        print(f"model {model.path} on {model.provider}")
    return 0


def cmd_info(a: argparse.Namespace) -> int:
    from .runtime.session import available_providers

    model = _open_model(a)
    info = model.info
    out = {
        "model": str(model.path),
        "bytes": model.path.stat().st_size,
        "provider": model.provider,
        "available_providers": available_providers(),
        "metadata": info.raw,
        "outputs": model.output_names,
    }
    if a.json:
        print(json.dumps(out))
        return 0
    print(f"model       {model.path} ({out['bytes'] / 1e6:.1f} MB)")
    for key, value in sorted(info.raw.items()):
        value = value if len(value) < 200 else value[:197] + "..."
        print(f"  {key:<22} {value}")
    print(f"outputs     {', '.join(model.output_names)}")
    print(f"providers   available: {', '.join(out['available_providers'])}; in use: {model.provider}")
    return 0


def cmd_bench(a: argparse.Namespace) -> int:
    from .runtime.bench import run_bench

    model = _open_model(a)
    runner = None
    if a.checkpoint:
        _need_train_extra("bench --checkpoint")
        from .export.exporter import torch_runner

        runner = torch_runner(a.checkpoint, tta=model.info.tta)
    return run_bench(model, a, runner)


def cmd_gui(a: argparse.Namespace) -> int:
    try:
        from .gui.app import main as gui_main
    except ImportError as e:
        raise SystemExit(f"error: the GUI needs Tkinter ({e}); install your Python's tk package") from None
    return gui_main(model=a.model, image=a.image, provider=a.provider, data_dir=a.data_dir)


# ----------------------------------------------------------------------------------------------
# Parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cifar10",
        description="Train a CIFAR-10 classifier, export it to one ONNX file, run it anywhere.",
    )
    p.add_argument("--version", action="version", version=f"cifar10kit {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def model_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--model", "-m", help="a .onnx model file (default: the shipped model, or $CIFAR10_MODEL)")
        sp.add_argument("--provider", choices=["auto", "cuda", "cpu"], default="auto",
                        help="onnxruntime execution provider; auto tries CUDA, then the CPU")  # fmt: skip

    t = sub.add_parser("train", help="train a model (needs the [train] extra)")
    t.add_argument("--preset", default="fast", help="fast | accurate | best | smoke (default fast)")
    t.add_argument("--data-dir", help="folder holding cifar-10-batches-py/ (default $CIFAR10_DATA)")
    t.add_argument("--folder", help="train on your own images: FOLDER/<class>/<images>")
    t.add_argument("--download", action="store_true", help="download CIFAR-10 (MD5-checked) if missing")
    t.add_argument("--out", default="runs", help="parent folder of run folders (default runs/)")
    t.add_argument("--name", help="run folder name (default <preset>-<time>)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    t.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--widths", help="three conv widths, e.g. 128,384,384")
    t.add_argument("--lr", type=float, help="Muon learning rate for conv filters")
    t.add_argument("--seed", type=int)
    t.add_argument("--subset", type=int, help="train on the first N images only")
    t.add_argument("--tta", choices=["none", "flip", "translate"], help="TTA for the final evaluation")
    t.add_argument("--crop-epochs", type=int, help="train the first N epochs on random crops (fewer FLOPs)")
    t.add_argument("--crop-size", type=int, help="side of those crops in pixels (default 24)")
    t.add_argument("--amp", choices=["bf16", "fp16", "fp32"])
    t.add_argument("--compile", action="store_true", help="torch.compile the model")
    t.add_argument("--deterministic", action="store_true", help="deterministic kernels where available")
    t.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    t.add_argument("--robust", type=float, metavar="SHARE",
                   help="share of training images given a random corruption each epoch (JPEG, noise, blur, "
                        "exposure, colour, pixelation); default 0.4 for accurate and best, 0 for fast")
    t.add_argument("--no-robust", action="store_true", help="turn robustness augmentation off")
    t.add_argument("--eval-every", type=int, help="evaluate on the test set every N epochs (0: only at the end)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("export", help="export a checkpoint to a verified .onnx file (needs [train])")
    e.add_argument("checkpoint", help="a run folder or a .pt checkpoint")
    e.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    e.add_argument("--data-dir", help="CIFAR-10 for verification (default $CIFAR10_DATA)")
    e.add_argument("--tta", choices=["none", "flip", "translate"],
                   help="test-time augmentation in the graph: 2 views (flip) or 6 (translate); default flip")
    e.add_argument("--verify-n", type=int, default=0, help="test images to verify on (default all)")
    var = e.add_mutually_exclusive_group()
    var.add_argument("--fp16", action="store_true", help="half-precision weights (for the CUDA provider)")
    var.add_argument("--int8", action="store_true", help="static int8 quantisation, calibrated on training images")
    e.add_argument("--no-calibrate", action="store_true",
                   help="keep the net's raw confidences (default: fit a softmax temperature on half the "
                        "verification images)")  # fmt: skip
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_export)

    pr = sub.add_parser("predict", help="classify image files, folders and globs")
    pr.add_argument("paths", nargs="+", metavar="PATH")
    model_opts(pr)
    pr.add_argument("--top-k", "-k", type=int, default=3)
    pr.add_argument("--json", action="store_true", help="one JSON object per input line")
    pr.add_argument("--csv", metavar="FILE", help="also write results to a CSV file")
    pr.add_argument("--batch-size", type=int, default=64)
    pr.add_argument("--progress", action="store_true", help="show progress even when stderr is not a terminal")
    pr.set_defaults(func=cmd_predict)

    ev = sub.add_parser("evaluate", help="accuracy on the CIFAR-10 test batch or a labelled folder")
    model_opts(ev)
    src = ev.add_mutually_exclusive_group()
    src.add_argument("--data-dir", help="folder holding cifar-10-batches-py/ (default $CIFAR10_DATA)")
    src.add_argument("--folder", help="FOLDER/<class name>/<images>")
    ev.add_argument("--limit", type=int, help="first N test images only")
    ev.add_argument("--plot", metavar="PNG", help="save the confusion matrix and per-class accuracy")
    ev.add_argument("--json", action="store_true")
    ev.add_argument("--batch-size", type=int, default=500)
    ev.add_argument("--progress", action="store_true")
    ev.set_defaults(func=cmd_evaluate)

    b = sub.add_parser("bench", help="latency and throughput of the model (and PyTorch when installed)")
    model_opts(b)
    b.add_argument("--batch-size", type=int, default=256)
    b.add_argument("--repeats", type=int, default=200, help="batch-1 runs timed")
    b.add_argument("--checkpoint", help="also time PyTorch eager on this run folder / checkpoint (needs [train])")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bench)

    i = sub.add_parser("info", help="what the model file says about itself; providers")
    model_opts(i)
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_info)

    g = sub.add_parser("gui", help="the desktop app")
    model_opts(g)
    g.add_argument("image", nargs="?", help="an image to open")
    g.add_argument("--data-dir", help="CIFAR-10 for the examples gallery (default $CIFAR10_DATA, ../shared/data)")
    g.set_defaults(func=cmd_gui)
    return p


def main(argv: list[str] | None = None) -> int:
    # File names need not be valid UTF-8; print them escaped rather than crash on them.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = build_parser().parse_args(argv)
    # Pillow warns about odd-but-readable files (corrupt EXIF, large images); each file's real
    # problems are reported per file, so these would only be noise between the results.
    warnings.filterwarnings("ignore", module=r"PIL\..*")
    if getattr(args, "top_k", 1) is not None and getattr(args, "top_k", 1) < 1:
        raise SystemExit("--top-k must be at least 1")
    try:
        return args.func(args)
    except BrokenPipeError:  # `cifar10 predict ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
