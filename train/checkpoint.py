"""The checkpoint format: what a cifar10kit `.pt` file holds, how it is written and how it is read.

Two kinds of file, both plain dicts of tensors, numbers, strings, lists and dicts, so that
`torch.load(..., weights_only=True)` reads them without unpickling arbitrary objects:

- training state, `RUN/last.pt`, replaced at the end of every epoch so `--resume` can continue:
  config, epoch (completed epochs), model, sgd, muon (optimiser states), history (metrics rows);
- model checkpoint, `RUN/model.pt`, written once when training ends; everything an exporter needs:
  format (FORMAT), arch, widths, class_names, mean, std, dataset, model, config, test_acc, tta.

Both are written atomically (temporary file, fsync, os.replace): a kill at any moment leaves the old
file or the new one, never half of one. Files from earlier versions carry the same keys.
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..runtime import contract
from ..runtime.atomic import atomic_write
from .model import AirNet

FORMAT = "cifar10kit-checkpoint"  # the `format` tag of a model checkpoint
TRAINING_STATE_KEYS = ("config", "epoch", "model", "sgd", "muon", "history")
MODEL_CHECKPOINT_KEYS = (
    "format",
    "arch",
    "widths",
    "class_names",
    "mean",
    "std",
    "dataset",
    "model",
    "config",
    "test_acc",
    "tta",
)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what to do."""


# ----------------------------------------------------------------------------------------------
# Writing: atomic, whatever the caller is interrupted by


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save, atomically (runtime/atomic.py)."""
    path = atomic_write(path, lambda f: torch.save(obj, f))
    _remove_stale_temps(path, keep_newer_than=600)


def _remove_stale_temps(path: Path, keep_newer_than: float) -> None:
    """A kill mid-write leaves its temp file behind (never read, but it costs disk); sweep old ones.
    Recent ones may belong to another writer still at work, so they stay."""
    cutoff = time.time() - keep_newer_than
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            if stale.stat().st_mtime < cutoff:
                stale.unlink()
        except OSError:
            pass


def save_training_state(
    path: str | os.PathLike,
    *,
    config: dict[str, Any],
    epoch: int,
    model: Mapping[str, torch.Tensor],
    sgd: dict[str, Any],
    muon: dict[str, Any],
    history: list[dict[str, Any]],
) -> None:
    """Write `last.pt`: everything `--resume` needs to continue after `epoch` completed epochs.
    State dicts as returned by `state_dict()` (their version metadata is kept), not modules: a DDP
    or compiled wrapper hands in its inner module's state."""
    atomic_save(dict(config=config, epoch=epoch, model=model, sgd=sgd, muon=muon, history=history), path)


def save_model_checkpoint(
    path: str | os.PathLike,
    *,
    widths: Sequence[int],
    class_names: Sequence[str],
    mean: Sequence[float],
    std: Sequence[float],
    dataset: str,
    model: Mapping[str, torch.Tensor],
    config: dict[str, Any],
    test_acc: float,
    tta: str,
) -> None:
    """Write `model.pt`, the finished run's weights with what the exporter needs to describe them.
    Checked before writing, so no file is written that `load_model_checkpoint` would refuse."""
    ckpt = dict(
        format=FORMAT,
        arch="airnet",
        widths=[int(w) for w in widths],
        class_names=list(class_names),
        mean=[float(v) for v in mean],
        std=[float(v) for v in std],
        dataset=dataset,
        model=model,
        config=config,
        test_acc=float(test_acc),
        tta=tta,
    )
    _check_model_fields(Path(path), ckpt)
    atomic_save(ckpt, path)


# ----------------------------------------------------------------------------------------------
# Reading: weights_only, then the schema


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Any cifar10kit `.pt` file as a dict, read without running code; no schema check."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint (a run folder holds last.pt and model.pt)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path}: refused: it holds Python objects, not just weights (not a cifar10kit checkpoint)"
        ) from None
    except Exception as e:  # noqa: BLE001 - truncated zip, empty file, ...
        first = next(iter(str(e).splitlines()), "") or type(e).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({first})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: not a cifar10kit checkpoint (top level is {type(obj).__name__})")
    return obj


def load_training_state(path: str | os.PathLike) -> dict[str, Any]:
    """`last.pt` for `--resume`, with every key present and of the right kind."""
    path = Path(path)
    ckpt = read_checkpoint(path)
    types = dict(config=dict, epoch=int, model=dict, sgd=dict, muon=dict, history=list)
    wrong = [k for k, t in types.items() if not isinstance(ckpt.get(k), t)]
    if wrong:
        raise CheckpointError(
            f"{path}: not a training state ({', '.join(wrong)} missing or damaged); "
            "--resume needs the last.pt of a run folder"
        )
    return ckpt


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A run folder (its model.pt, else last.pt) or a checkpoint file."""
    path = Path(path)
    if path.is_dir():
        for name in ("model.pt", "last.pt"):
            if (path / name).exists():
                return path / name
        raise CheckpointError(f"{path}: run folder has no model.pt or last.pt (did training finish?)")
    return path


def load_model_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A model checkpoint as a checked dict with all of MODEL_CHECKPOINT_KEYS' descriptive fields.

    An unfinished run's `last.pt` is accepted too: its config gives the widths, and the CIFAR-10
    class names and statistics (the only data a run without model.pt can have been described by)
    fill in the rest. A run folder stands for its model.pt, else its last.pt."""
    path = resolve_checkpoint(path)
    ckpt = read_checkpoint(path)
    if ckpt.get("format") != FORMAT:
        if "model" in ckpt and isinstance(ckpt.get("config"), dict):
            cfg = ckpt["config"]
            ckpt = dict(
                ckpt,
                widths=cfg.get("widths"),
                class_names=list(contract.CIFAR10_CLASSES),
                mean=list(contract.CIFAR10_MEAN),
                std=list(contract.CIFAR10_STD),
                dataset="CIFAR-10",
                tta=cfg.get("tta", "none"),
            )
        else:
            raise CheckpointError(f"{path}: not a cifar10kit checkpoint (no model weights and config)")
    _check_model_fields(path, ckpt)
    return ckpt


def load_model(path: str | os.PathLike) -> tuple[AirNet, dict[str, Any]]:
    """The network of a model checkpoint (or last.pt, or a run folder), in eval mode, and its checked dict."""
    path = resolve_checkpoint(path)
    ckpt = load_model_checkpoint(path)
    model = AirNet(tuple(int(w) for w in ckpt["widths"]), len(ckpt["class_names"]))
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, ValueError, TypeError) as e:
        lines = str(e).splitlines()
        first = lines[1 if len(lines) > 1 else 0].strip()
        raise CheckpointError(
            f"{path}: weights do not fit {model.arch} with {len(ckpt['class_names'])} classes ({first})"
        ) from None
    return model.eval(), ckpt


def _check_model_fields(path: Path, ckpt: dict[str, Any]) -> None:
    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{path}: damaged checkpoint ({what}); re-run training or use another file")

    if not isinstance(ckpt.get("model"), Mapping):
        raise bad("no weights")
    widths = ckpt.get("widths")
    if not (isinstance(widths, (list, tuple)) and len(widths) == 3 and all(type(w) is int and w > 0 for w in widths)):
        raise bad(f"widths {widths!r} are not three positive integers")
    names = ckpt.get("class_names")
    if not (isinstance(names, (list, tuple)) and names and all(isinstance(n, str) for n in names)):
        raise bad("class_names missing or not a list of strings")
    for key in ("mean", "std"):
        v = ckpt.get(key)
        if not (isinstance(v, (list, tuple)) and len(v) == 3 and all(isinstance(x, (int, float)) for x in v)):
            raise bad(f"{key} is not three numbers")
