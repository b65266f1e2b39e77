"""The runtime subcommands: predict, evaluate, info, bench, download (numpy, Pillow, onnxruntime only).

Every `--json` output names the provider the live session runs on (not the one asked for) and
the CPU threads it uses; exit codes are those of `common.py`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, err, fail, need_train_extra, open_model

# ----------------------------------------------------------------------------------------------
# predict


def cmd_predict(args: argparse.Namespace) -> int:
    from .runtime.predict import ProgressLine, classify_paths, collect
    from .runtime.results_csv import ResultsCsv

    model = open_model(args)
    top_k = min(args.top_k, model.info.num_classes)
    failed = []
    paths = collect(args.paths, failed)
    results = list(failed)
    progress = ProgressLine("classifying", force=args.progress) if not args.json else None
    table = None
    if args.csv:
        try:
            table = ResultsCsv(args.csv, top_k, model.provider)
        except OSError as e:
            fail(f"{args.csv}: cannot write the CSV file ({e.strerror or e})", EXIT_USAGE)
    heat = None
    if args.heatmap:  # one `<stem>_heatmap.png` per classified file, for the predicted class
        from .runtime.heatmap import OverlayWriter

        try:
            heat = OverlayWriter(model, args.heatmap, notify=err)
        except ValueError as e:
            fail(str(e), EXIT_USAGE)
    try:
        for r in failed:
            _emit(r, args, model.provider, table)
        for r in classify_paths(model, paths, top_k=top_k, batch_size=args.batch_size, progress=progress):
            results.append(r)
            _emit(r, args, model.provider, table)
            if heat:
                heat.write(r)
    except BaseException:
        if table:
            table.discard()
        raise
    if table:
        table.close()
    bad = sum(r.error is not None for r in results)
    if not args.json:
        print(f"{len(results) - bad} classified, {bad} failed ({model.provider})", file=sys.stderr)
    if heat and not args.json:
        n = heat.written
        print(f"{n} heatmap{'' if n == 1 else 's'} written to {heat.folder}", file=sys.stderr)
    return EXIT_FAILED if bad or not results or (heat and heat.failed) else EXIT_OK


def _emit(r, args: argparse.Namespace, provider: str, table) -> None:
    if table is not None:
        table.write(r)
    if args.json:
        print(json.dumps({**r.as_json(), "provider": provider}), flush=True)
    elif r.error:
        print(f"{r.path}: ERROR {r.error}", file=sys.stderr)
    else:
        flag = "  (uncertain: none of these?)" if r.uncertain else ""
        others = ", ".join(f"{n} {p:.1%}" for n, p in r.top_k[1:])
        print(f"{r.path}: {r.label} {r.probability:.1%}{flag}" + (f"   [{others}]" if others else ""))


# ----------------------------------------------------------------------------------------------
# evaluate


def _folder_probs(model, folder: str, args: argparse.Namespace):
    """(probs, labels, skipped) for FOLDER/<class>/<images>; unreadable images are skipped."""
    import numpy as np

    from .runtime.dataset import DatasetError, scan_image_folder
    from .runtime.predict import ProgressLine, classify_paths

    names = model.class_names
    items, folder_classes = scan_image_folder(folder)
    unknown = [c for c in folder_classes if c not in names]
    if unknown:
        raise DatasetError(f"{folder}: class folders {unknown} are not classes of this model ({', '.join(names)})")
    index = {n: i for i, n in enumerate(names)}
    progress = ProgressLine("evaluating", force=args.progress) if not args.json else None
    results = list(classify_paths(model, [p for p, _ in items], top_k=len(names), progress=progress))
    ok = [(r, folder_classes[c]) for r, (_, c) in zip(results, items) if r.error is None]
    for r in results:
        if r.error:
            print(f"skipped {r.error}", file=sys.stderr)
    probs = np.array([[dict(r.top_k)[n] for n in names] for r, _ in ok], dtype=np.float32)
    labels = np.array([index[c] for _, c in ok], dtype=np.int64)
    return probs, labels, len(results) - len(ok)


def _cifar_probs(model, args: argparse.Namespace):
    from .runtime.dataset import DatasetError, load_cifar10

    images, labels, data_names = load_cifar10(args.data_dir, "test")
    if tuple(data_names) != tuple(model.class_names):
        raise DatasetError(
            f"the model's classes ({', '.join(model.class_names)}) differ from CIFAR-10's "
            f"({', '.join(data_names)}); evaluate it on its own data with --folder"
        )
    if args.limit:
        images, labels = images[: args.limit], labels[: args.limit]
    return model.predict_probs(images, batch_size=args.batch_size), labels, 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .runtime.dataset import DatasetError
    from .runtime.evaluate import report

    model = open_model(args)
    names = model.class_names
    try:
        probs, labels, skipped = _folder_probs(model, args.folder, args) if args.folder else _cifar_probs(model, args)
    except DatasetError as e:
        fail(str(e), EXIT_USAGE)
    if len(labels) == 0:
        fail("no readable labelled images to evaluate", EXIT_FAILED)
    rep = report(probs.reshape(len(labels), len(names)), labels, names, skipped)
    if args.plot:
        try:
            from .runtime.plots import plot_confusion
        except ImportError:
            fail("--plot needs matplotlib: pip install 'cifar10kit[plot]'", EXIT_USAGE)
        plot_confusion(rep.confusion, names, Path(args.plot), f"{model.path.name}: accuracy {rep.accuracy:.4f}")
    if args.json:
        print(json.dumps({**rep.as_json(), **model.facts()}))
    else:
        print(rep.table())
        print(f"model {model.path} on {model.provider}, {model.threads} threads")
    return EXIT_OK


# ----------------------------------------------------------------------------------------------
# info


def cmd_info(args: argparse.Namespace) -> int:
    import dataclasses

    import onnxruntime

    from .runtime.bench import machine
    from .runtime.cpu import usable_cpus
    from .runtime.providers import duplicate_ort_warning, ort_build
    from .runtime.session import available_providers

    model = open_model(args)
    info = model.info
    build = ort_build(onnxruntime)
    duplicate = duplicate_ort_warning()
    out = {
        **model.facts(),
        "bytes": model.path.stat().st_size,
        "available_providers": available_providers(),
        "onnxruntime": dataclasses.asdict(build),
        "cpus": usable_cpus(),
        "machine": machine(),
        "warnings": [duplicate] if duplicate else [],
        "info": {k: v for k, v in dataclasses.asdict(info).items() if k != "raw"},
        "metadata": info.raw,
        "outputs": model.output_names,
    }
    if duplicate:
        print(duplicate, file=sys.stderr)
    if args.json:
        print(json.dumps(out))
        return EXIT_OK
    print(f"model       {model.path} ({out['bytes'] / 1e6:.1f} MB)")
    for key, value in sorted(info.raw.items()):
        value = value if len(value) < 200 else value[:197] + "..."
        print(f"  {key:<22} {value}")
    print(f"outputs     {', '.join(model.output_names)}")
    print(f"runtime     {build.describe()}")
    print(f"providers   available: {', '.join(out['available_providers'])}; in use: {model.provider}")
    if model.fallback_reason and model.requested_provider != "cpu":
        print(f"            not CUDA: {model.fallback_reason}")
    cpus = out["cpus"]
    print(f"cpu         {out['machine']}")
    print(
        f"threads     {model.threads} (logical CPUs {cpus['logical']}, allowed {cpus['affinity']}, "
        f"cgroup quota {cpus['cgroup_quota'] or 'none'}, physical cores {cpus['physical_cores']})"
    )
    return EXIT_OK


# ----------------------------------------------------------------------------------------------
# bench


def cmd_bench(args: argparse.Namespace) -> int:
    from .runtime.bench import run_bench

    model = open_model(args)
    runner = None
    if args.checkpoint:
        need_train_extra("bench --checkpoint")
        from .export.exporter import torch_runner

        runner = torch_runner(args.checkpoint, tta=model.info.tta)
    return run_bench(model, args, runner)


# ----------------------------------------------------------------------------------------------
# download


def cmd_download(args: argparse.Namespace) -> int:
    from .runtime.download import CIFAR_MD5, CIFAR_URL, download_cifar10, tqdm_progress
    from .runtime.locations import DatasetError, resolve_data_dir

    root = resolve_data_dir(args.data_dir)
    progress, close = tqdm_progress("CIFAR-10") if not args.quiet else (None, lambda: None)
    try:
        folder = download_cifar10(root, url=args.url or CIFAR_URL, md5=args.md5 or CIFAR_MD5, progress=progress)
    except DatasetError as e:
        close()
        err(str(e))
        return EXIT_FAILED
    close()
    print(folder)
    return EXIT_OK


def cmd_robustness(args: argparse.Namespace) -> int:
    from .runtime.dataset import DatasetError, load_cifar10
    from .runtime.robustness import CellProgress, measure, table

    models = {str(args.model or "default"): open_model(args)}
    for other in args.compare or []:
        args.model = other
        models[other] = open_model(args)
    try:
        images, labels, names = load_cifar10(args.data_dir, "test")
    except DatasetError as e:
        err(str(e))
        return EXIT_USAGE
    for label, m in models.items():
        if tuple(m.class_names) != tuple(names):
            err(f"{label}: its classes differ from CIFAR-10's; the corruption report runs on the CIFAR-10 test set")
            return EXIT_USAGE
    if args.limit:
        images, labels = images[: args.limit], labels[: args.limit]
    progress = CellProgress(force=args.progress) if not args.json else None
    predictors = {k: (lambda x, m=m: m.predict_probs(x, batch_size=args.batch_size)) for k, m in models.items()}
    try:
        reports = list(measure(predictors, images, labels, args.families, args.seed, progress).values())
    except ValueError as e:
        err(str(e))
        return EXIT_USAGE
    if args.plot:
        try:
            from .runtime.plots import plot_robustness
        except ImportError:
            err("--plot needs matplotlib: pip install 'cifar10kit[plot]'")
            return EXIT_USAGE
        plot_robustness(reports, Path(args.plot))
    provider = next(iter(models.values())).provider
    if args.json:
        print(json.dumps({"provider": provider, "reports": [r.as_json() for r in reports]}))
    else:
        print(table(reports))
        print(f"on {provider}")
    return EXIT_OK
