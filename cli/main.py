"""The `cifar10` command line: train, export, predict, evaluate, bench, info, gui.

Each subcommand imports what it needs when it runs, so `predict` never loads PyTorch and
`train`/`export` without the training extra say how to install it instead of crashing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import warnings

from . import __version__
from .commands_runtime import cmd_bench, cmd_download, cmd_evaluate, cmd_info, cmd_predict, cmd_robustness
from .commands_serve import add_serve_parsers
from .common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, fail, positive_int
from .common import need_train_extra as _need_train_extra

# ----------------------------------------------------------------------------------------------
# train / export (need the training extra)


def cmd_train(args: argparse.Namespace) -> int:
    _need_train_extra("train")
    if args.nproc is not None and "LOCAL_RANK" not in os.environ:  # not yet one of torchrun's processes
        return _launch_torchrun(args)
    from .train.trainer import make_config, train

    widths = tuple(int(w) for w in args.widths.split(",")) if args.widths else None
    if widths is not None and len(widths) != 3:
        fail("--widths takes three comma-separated numbers, e.g. 128,384,384", EXIT_USAGE)
    for flag, value in (("--translate", args.translate), ("--cutout", args.cutout)):
        if value is not None and value < 0:
            fail(f"{flag} {value}: a number of pixels, 0 or more (0 turns it off)", EXIT_USAGE)
    if args.holdout is not None and args.holdout < 0:
        fail(f"--holdout {args.holdout}: a number of training images, 0 or more (0: none held out)", EXIT_USAGE)
    if args.robust is not None and not 0 <= args.robust <= 1:
        fail(f"--robust {args.robust}: a share of the images, from 0 to 1 (e.g. 0.4)", EXIT_USAGE)
    if args.distill is not None and not 0 <= args.distill <= 1:
        fail(f"--distill {args.distill}: the teachers' share of each target, from 0 to 1 (e.g. 0.7)", EXIT_USAGE)
    if args.distill_temp is not None and args.distill_temp < 0:
        fail(
            f"--distill-temp {args.distill_temp}: a temperature above 0 (or 0: as confident as the label)",
            EXIT_USAGE,
        )
    robust_mix = _robust_mix(args.robust_mix) if args.robust_mix else None
    for flag, value in (("--distill", args.distill), ("--distill-temp", args.distill_temp)):
        if value is not None and not args.teacher:
            fail(f"{flag} tunes what a teacher's probabilities do: give one with --teacher MODEL.onnx", EXIT_USAGE)
    cfg = make_config(
        args.preset,
        data_dir=args.data_dir,
        folder=args.folder,
        download=args.download or None,
        out=args.out,
        name=args.name,
        device=args.device,
        epochs=args.epochs,
        batch_size=args.batch_size,
        widths=widths,
        lr=args.lr,
        seed=args.seed,
        subset=args.subset,
        holdout=args.holdout,
        tta=args.tta,
        amp=args.amp,
        compile=args.compile or None,
        deterministic=args.deterministic or None,
        threads=args.threads,
        eval_every=args.eval_every,
        crop_epochs=args.crop_epochs,
        crop_size=args.crop_size,
        translate=args.translate,
        cutout=args.cutout,
        robust=0.0 if args.no_robust else args.robust,
        robust_mix=robust_mix,
        teacher=tuple(args.teacher) if args.teacher else None,
        distill=args.distill,
        distill_temp=args.distill_temp,
    )
    if cfg.robust_mix and cfg.robust <= 0:
        fail("--robust-mix changes which corruptions --robust applies: give --robust SHARE too", EXIT_USAGE)
    from .runtime.dataset import DatasetError
    from .runtime.preprocess import ImageError
    from .train.checkpoint import CheckpointError
    from .train.data import HoldoutError
    from .train.distill import TeacherError

    try:
        run_dir = train(cfg, resume=args.resume)
    except KeyboardInterrupt:
        print("\ninterrupted: the last completed epoch is saved; continue with --resume RUN_DIR", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (
        DatasetError,
        TeacherError,
        HoldoutError,
    ) as e:  # no data where it was asked for; a teacher with other classes
        fail(str(e), EXIT_USAGE)
    except (CheckpointError, ImageError) as e:  # a damaged checkpoint to resume, an unreadable file
        fail(str(e), EXIT_FAILED)
    if run_dir is not None:  # None: one of the other processes of a distributed run
        print(f"run folder: {run_dir}\nexport it with: cifar10 export {run_dir} -o model.onnx")
    return EXIT_OK


def _robust_mix(text: str) -> dict[str, float]:
    """`jpeg=1,pixelate=0.2` -> {"jpeg": 1.0, "pixelate": 0.2}, checked against the corruption families."""
    from .train.augment import robust_odds

    mix: dict[str, float] = {}
    for item in text.split(","):
        name, sep, value = item.strip().partition("=")
        try:
            mix[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            fail(
                f"--robust-mix {text}: give FAMILY=ODDS pairs separated by commas, e.g. jpeg=1,pixelate=0.2", EXIT_USAGE
            )
    try:
        robust_odds(mix)
    except ValueError as e:
        fail(f"--robust-mix {text}: {e}", EXIT_USAGE)
    return mix


def _launch_torchrun(args: argparse.Namespace) -> int:
    """`cifar10 train --nproc N ARGS` is `torchrun --standalone --nproc-per-node N -m cifar10kit.train ARGS`:
    N processes on this machine, meeting on a free local port."""
    if args.nproc < 1:
        fail("--nproc must be at least 1", EXIT_USAGE)
    rest, skip = [], False
    for arg in args.argv[1:]:  # after "train"
        if not skip and not arg.startswith("--nproc"):
            rest.append(arg)
        skip = arg == "--nproc"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={args.nproc}",
        "-m",
        "cifar10kit.train",
        *rest,
    ]
    # Each process takes its share of the cores (the trainer sets its threads; this quiets torchrun's notice).
    env = {"OMP_NUM_THREADS": str(max((os.cpu_count() or 1) // args.nproc, 1)), **os.environ}
    print("running:", " ".join(command[1:]), flush=True)
    if os.name == "nt":
        return subprocess.call(command, env=env)
    os.execve(sys.executable, command, env)  # torchrun takes this process's place (and its signals)
    return EXIT_FAILED  # not reached


def cmd_export(args: argparse.Namespace) -> int:
    _need_train_extra("export")
    from .export.exporter import ExportError, export
    from .export.quantize import CALIBRATION_IMAGES
    from .runtime.dataset import DatasetError
    from .train.checkpoint import CheckpointError

    if args.tta_rest and args.cascade is None:
        fail("--tta-rest sets the TTA of a cascade's later stages: add --cascade", EXIT_USAGE)
    if args.cascade is not None and not (len(args.checkpoint) >= 2 and 0 < args.cascade < 1):
        fail(
            f"--cascade {args.cascade}: give two or more checkpoints (the first answers alone when sure) and a "
            "threshold between 0 and 1, e.g. --cascade 0.95",
            EXIT_USAGE,
        )
    try:
        precision = "fp16" if args.fp16 else "int8" if args.int8 else "fp32"
        result = export(
            args.checkpoint,
            args.output,
            data_dir=args.data_dir,
            tta=args.tta,
            verify_n=args.verify_n,
            precision=precision,
            calibrate=not args.no_calibrate,
            calibration_n=args.calibration_images or CALIBRATION_IMAGES,
            cascade=args.cascade,
            tta_rest=args.tta_rest,
        )
    except DatasetError as e:
        fail(str(e), EXIT_USAGE)
    except (ExportError, CheckpointError) as e:
        fail(str(e), EXIT_FAILED)
    if args.json:
        print(json.dumps(result))
    return EXIT_OK


# ----------------------------------------------------------------------------------------------
# runtime commands: predict, evaluate, robustness, info, bench and download are in commands_runtime.py


def cmd_gui(args: argparse.Namespace) -> int:
    try:
        from .gui.app import main as gui_main
    except ImportError as e:
        raise SystemExit(f"error: the GUI needs Tkinter ({e}); install your Python's tk package") from None
    return gui_main(
        model=args.model, image=args.image, provider=args.provider, data_dir=args.data_dir, threads=args.threads or 0
    )


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
        sp.add_argument(
            "--model",
            "-m",
            help="a .onnx model file, or a shipped model by name: default, clean (default: $CIFAR10_MODEL or default)",
        )
        sp.add_argument(
            "--provider",
            choices=["auto", "cuda", "cpu"],
            default="auto",
            help="onnxruntime execution provider; auto tries CUDA, then the CPU",
        )

    def threads_opt(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--threads",
            type=positive_int,
            metavar="N",
            help="CPU threads for onnxruntime (default: the CPUs this process may use: affinity, "
            "cgroup quota, physical cores)",
        )

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
    t.add_argument(
        "--holdout",
        type=int,
        metavar="N",
        help="set N training images aside (the same ones in every run, classes balanced) and measure them "
        "every evaluation: decide on them, not on the test set; `export` then calibrates on them",
    )
    t.add_argument("--tta", choices=["none", "flip", "translate"], help="TTA for the final evaluation")
    t.add_argument("--crop-epochs", type=int, help="train the first N epochs on random crops (fewer FLOPs)")
    t.add_argument("--crop-size", type=int, help="side of those crops in pixels (default 24)")
    t.add_argument("--translate", type=int, metavar="PIXELS", help="random shifts of up to N pixels (default 2)")
    t.add_argument("--cutout", type=int, metavar="PIXELS", help="blank an N x N square of each image (default 0: off)")
    t.add_argument(
        "--amp",
        choices=["auto", "bf16", "fp16", "fp32"],
        help="training precision (default auto: bf16 autocast where the CPU or GPU computes bf16 in hardware, "
        "else fp32)",
    )
    t.add_argument("--compile", action="store_true", help="torch.compile the model")
    t.add_argument("--deterministic", action="store_true", help="deterministic kernels where available")
    t.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    t.add_argument(
        "--robust",
        type=float,
        metavar="SHARE",
        help="share of training images given a random corruption each epoch (JPEG, noise, blur, "
        "exposure, colour, pixelation); default 0.4 for accurate and best, 0 for fast",
    )
    t.add_argument(
        "--robust-mix",
        metavar="FAMILY=ODDS,...",
        help="change the relative odds of the corruption families among corrupted images, e.g. jpeg=1 for "
        "more JPEG or pixelate=0 for none (defaults jpeg=0.35, gaussian_noise=0.15, gaussian_blur=0.1, "
        "brightness=0.1, contrast=0.1, saturation=0.1, pixelate=0.1)",
    )
    t.add_argument("--no-robust", action="store_true", help="turn robustness augmentation off")
    t.add_argument(
        "--teacher",
        action="append",
        metavar="MODEL",
        help="distil: also train toward this model's probabilities on each training image: an exported "
        ".onnx, or a finished run (its folder or model.pt, run by PyTorch on the training device with "
        "flip TTA); repeat for an ensemble; they run once, before training",
    )
    t.add_argument(
        "--distill", type=float, metavar="WEIGHT", help="the teachers' share of each target, 0-1 (default 0.7)"
    )
    t.add_argument(
        "--distill-temp",
        type=float,
        metavar="T",
        help="soften the teachers' probabilities at temperature T (default 0: the T that makes them as "
        "confident as the label-smoothed label)",
    )
    t.add_argument("--eval-every", type=int, help="evaluate on the test set every N epochs (0: only at the end)")
    t.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        help="train on N processes with DistributedDataParallel (torchrun): one per GPU, or CPU "
        "processes sharing the cores; the batch size stays the global one",
    )
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("export", help="export a checkpoint to a verified .onnx file (needs [train])")
    e.add_argument(
        "checkpoint",
        nargs="+",
        help="a run folder or a .pt checkpoint; several make one ensemble file (their logits averaged, "
        "costing the sum of their time)",
    )
    e.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    e.add_argument("--data-dir", help="CIFAR-10 for verification (default $CIFAR10_DATA)")
    e.add_argument(
        "--tta",
        choices=["none", "flip", "translate"],
        help="test-time augmentation in the graph: 2 views (flip) or 6 (translate); default flip",
    )
    e.add_argument("--verify-n", type=int, default=0, help="test images to verify on (default all)")
    var = e.add_mutually_exclusive_group()
    var.add_argument("--fp16", action="store_true", help="half-precision weights (for the CUDA provider)")
    var.add_argument("--int8", action="store_true", help="static int8 quantisation, calibrated on training images")
    e.add_argument(
        "--calibration-images",
        type=positive_int,
        metavar="N",
        help="training images that set the int8 activation ranges (default 1024, fewer where the graph has many "
        "nets and views: the calibrator keeps every activation in memory; fewer export faster)",
    )
    e.add_argument(
        "--no-calibrate",
        action="store_true",
        help="keep the net's raw confidences (default: fit a softmax temperature on half the verification images)",
    )
    e.add_argument(
        "--cascade",
        type=float,
        nargs="?",
        const=0.95,
        metavar="THRESHOLD",
        help="with several checkpoints: the first net answers alone where its calibrated top probability is "
        "THRESHOLD or more (default 0.95), the others join where it is less; one file, most images at one "
        "net's cost",
    )
    e.add_argument(
        "--tta-rest",
        choices=["none", "flip", "translate"],
        help="with --cascade: the later stages' test-time augmentation (default: --tta's); they run for the "
        "unsure images only, where more views pay most. List the first run again to add its other views",
    )
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_export)

    pr = sub.add_parser("predict", help="classify image files, folders and globs")
    pr.add_argument("paths", nargs="+", metavar="PATH")
    model_opts(pr)
    threads_opt(pr)
    pr.add_argument("--top-k", "-k", type=positive_int, default=3)
    pr.add_argument("--json", action="store_true", help="one JSON object per input line")
    pr.add_argument("--csv", metavar="FILE", help="also write results to a CSV file (columns: see the README)")
    pr.add_argument("--batch-size", type=int, default=64)
    pr.add_argument("--progress", action="store_true", help="show progress even when stderr is not a terminal")
    pr.add_argument(
        "--heatmap",
        metavar="DIR",
        help="also write DIR/<name>_heatmap.png per image: where the evidence for the predicted "
        "class is (occlusion, 8x8)",
    )
    pr.set_defaults(func=cmd_predict)

    ev = sub.add_parser("evaluate", help="accuracy on the CIFAR-10 test batch or a labelled folder")
    model_opts(ev)
    threads_opt(ev)
    src = ev.add_mutually_exclusive_group()
    src.add_argument("--data-dir", help="folder holding cifar-10-batches-py/ (default $CIFAR10_DATA)")
    src.add_argument("--folder", help="FOLDER/<class name>/<images>")
    ev.add_argument("--limit", type=int, help="first N test images only")
    ev.add_argument("--plot", metavar="PNG", help="save the confusion matrix and per-class accuracy")
    ev.add_argument("--json", action="store_true")
    ev.add_argument("--batch-size", type=positive_int, help="images per run (default 32 on the CPU, 512 on a GPU)")
    ev.add_argument("--progress", action="store_true")
    ev.set_defaults(func=cmd_evaluate)

    b = sub.add_parser("bench", help="latency and throughput of the model (and PyTorch when installed)")
    model_opts(b)
    threads_opt(b)
    b.add_argument("--batch-size", type=int, default=256)
    b.add_argument("--repeats", type=int, default=200, help="batch-1 runs timed")
    b.add_argument("--checkpoint", help="also time PyTorch eager on this run folder / checkpoint (needs [train])")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bench)

    rb = sub.add_parser(
        "robustness", help="accuracy and calibration under JPEG, noise, blur, exposure, colour and pixelation"
    )
    model_opts(rb)
    threads_opt(rb)
    rb.add_argument("--data-dir", help="folder holding cifar-10-batches-py/ (default $CIFAR10_DATA)")
    rb.add_argument("--compare", nargs="+", metavar="MODEL", help="also measure these .onnx files on the same pictures")
    rb.add_argument(
        "--families",
        nargs="+",
        metavar="NAME",
        help="corruption families (default all: jpeg gaussian_noise gaussian_blur brightness contrast "
        "saturation pixelate)",
    )
    rb.add_argument("--limit", type=int, help="first N test images only (faster, coarser)")
    rb.add_argument("--seed", type=int, default=0, help="seed of the random corruptions (noise)")
    rb.add_argument("--plot", metavar="PNG", help="save accuracy against severity per family")
    rb.add_argument("--json", action="store_true")
    rb.add_argument("--batch-size", type=positive_int, help="images per run (default 32 on the CPU, 512 on a GPU)")
    rb.add_argument("--progress", action="store_true")
    rb.set_defaults(func=cmd_robustness)

    i = sub.add_parser("info", help="what the model file says about itself; providers, CPU threads")
    model_opts(i)
    threads_opt(i)
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_info)

    d = sub.add_parser("download", help="download CIFAR-10 (MD5-checked) into the data folder")
    d.add_argument("--data-dir", help="where to put cifar-10-batches-py/ (default $CIFAR10_DATA, else the user cache)")
    d.add_argument("--url", help="a mirror of the official archive (default: the official URL)")
    d.add_argument("--md5", help="the archive's MD5 when it is not the official one")
    d.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    d.set_defaults(func=cmd_download)

    add_serve_parsers(sub, model_opts, threads_opt)
    g = sub.add_parser("gui", help="the desktop app")
    model_opts(g)
    g.add_argument("image", nargs="?", help="an image to open")
    g.add_argument(
        "--data-dir",
        help="folder holding cifar-10-batches-py/ for the gallery (default $CIFAR10_DATA, "
        "else the user cache; without it the gallery shows the shipped examples)",
    )
    threads_opt(g)
    g.set_defaults(func=cmd_gui)
    return p


def main(argv: list[str] | None = None) -> int:
    # File names need not be valid UTF-8; print them escaped rather than crash on them.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `train --nproc` passes them on to torchrun
    # Pillow warns about odd-but-readable files (corrupt EXIF, large images); each file's real
    # problems are reported per file, so these would only be noise between the results.
    warnings.filterwarnings("ignore", module=r"PIL\..*")
    try:
        return args.func(args)
    except BrokenPipeError:  # `cifar10 predict ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
