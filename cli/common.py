"""What every `cifar10` subcommand shares: exit codes, one-line errors, opening the model.

Exit codes (the same for every subcommand, documented in the README):

- 0: success.
- 1: some input could not be used: an image, model file, checkpoint or CIFAR-10 file that is
  unreadable or corrupt, a download that failed, or `--provider cuda` where CUDA cannot run.
  Bad images in a batch are still reported one by one and the others classified.
- 2: usage: bad arguments (argparse's own code), or a path that does not hold what the command
  needs: no such model file, no CIFAR-10 in the data folder, a folder without class sub-folders.
- 130: interrupted (Ctrl+C).
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

TRAIN_EXTRA_HINT = (
    "cifar10 {cmd}: needs the training extra (PyTorch, torchvision, onnx). "
    "Install it with: pip install 'cifar10kit[train]'  (or `make dev` in a checkout)"
)


def err(message: str) -> None:
    """One line on stderr, prefixed `error:`."""
    print(f"error: {message}", file=sys.stderr)


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """Print one error line and leave with `code`."""
    err(message)
    raise SystemExit(code)


def need_train_extra(cmd: str) -> None:
    import importlib.util

    missing = [m for m in ("torch", "torchvision", "onnx") if importlib.util.find_spec(m) is None]
    if missing:
        fail(TRAIN_EXTRA_HINT.format(cmd=cmd) + f" [missing: {', '.join(missing)}]", EXIT_FAILED)


def open_model(args: argparse.Namespace):
    """The Classifier for --model/--provider/--threads, or a one-line error and the right exit code."""
    from .runtime.contract import ContractError
    from .runtime.session import Classifier, ProviderError, resolve_model_path, shipped_models

    path = resolve_model_path(getattr(args, "model", None))
    if not path.exists():
        names = ", ".join(shipped_models())
        fail(f"{path}: no such model file (give a .onnx file, or a shipped model: {names})", EXIT_USAGE)
    threads = getattr(args, "threads", None) or 0
    try:
        return Classifier(path, provider=args.provider, threads=threads, notify=lambda m: print(m, file=sys.stderr))
    except (ContractError, ProviderError) as e:
        fail(str(e), EXIT_FAILED)


def positive_int(text: str) -> int:
    """argparse type for counts that must be at least 1 (threads, batch sizes, top-k)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value
