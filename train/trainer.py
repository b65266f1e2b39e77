"""`cifar10 train`: the training loop, in one process or several (torchrun), with a checkpoint every
epoch, resume, metrics and plots.

Read top to bottom: model and optimisers, evaluation, the loop, the run directory. The configuration
and presets are in config.py, the data and each epoch's batches in data.py, and what changes with
several processes in distributed.py.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..runtime.atomic import atomic_write
from ..runtime.corruptions import odds_text
from ..runtime.evaluate import confusion_matrix
from . import distill, distributed
from .checkpoint import load_training_state, save_model_checkpoint, save_training_state
from .config import PRESETS, Config, describe_device, make_config, resolve_amp
from .data import Data, RobustImages, epoch_batches, fetch_data, load_data, steps_per_epoch
from .model import AirNet, tta_logits
from .optim import Muon

__all__ = ["PRESETS", "Config", "make_config", "train", "time_to_accuracy"]

# ----------------------------------------------------------------------------------------------
# Model and optimisers


def build_model(cfg: Config, num_classes: int, device: torch.device) -> AirNet:
    model = AirNet(cfg.widths, num_classes).to(device)
    return model.to(memory_format=torch.channels_last)


def build_optimisers(model: AirNet, cfg: Config) -> tuple[torch.optim.SGD, Muon]:
    wd = cfg.weight_decay * cfg.batch_size
    norm_biases = [p for n, p in model.named_parameters() if "norm" in n and p.requires_grad]
    filters = [p for p in model.parameters() if p.ndim == 4 and p.requires_grad]
    groups = [
        dict(params=[model.whiten.bias], lr=cfg.bias_lr, weight_decay=wd / cfg.bias_lr),
        dict(params=norm_biases, lr=cfg.bias_lr, weight_decay=wd / cfg.bias_lr),
        dict(params=[model.head.weight], lr=cfg.head_lr, weight_decay=wd / cfg.head_lr),
    ]
    sgd = torch.optim.SGD(groups, momentum=cfg.sgd_momentum, nesterov=True)
    ns_dtype = torch.float32 if cfg.amp == "fp32" else torch.bfloat16  # fp32 means fp32 throughout
    muon = Muon(filters, lr=cfg.lr, momentum=cfg.momentum, nesterov=True, dtype=ns_dtype)
    for opt in (sgd, muon):
        for g in opt.param_groups:
            g["initial_lr"] = g["lr"]
    return sgd, muon


def set_lr(sgd: torch.optim.SGD, muon: Muon, step: int, total: int, whiten_steps: int) -> None:
    """Linear decay to zero; the whitening bias learns only during the first few epochs."""
    sgd.param_groups[0]["lr"] = sgd.param_groups[0]["initial_lr"] * max(0.0, 1 - step / whiten_steps)
    for g in sgd.param_groups[1:] + muon.param_groups:
        g["lr"] = g["initial_lr"] * (1 - step / total)


def autocast(device: torch.device, amp: str):
    """`amp` as the run's config records it, resolved at the start of train() (never "auto")."""
    if amp == "fp32":
        return torch.autocast(device.type, enabled=False)
    dtype = torch.float16 if amp == "fp16" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype)


# ----------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def predict_logits(model: AirNet, x: torch.Tensor, cfg: Config, tta: str, batch: int = 1000):
    model.eval()
    out = []
    with autocast(x.device, cfg.amp):
        for i in range(0, len(x), batch):
            out.append(tta_logits(model, x[i : i + batch], tta).float())
    return torch.cat(out)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(1) == labels).float().mean().item()


# ----------------------------------------------------------------------------------------------
# The loop. With torchrun, every process runs it on its share of each batch; process 0 alone
# reads checkpoints, evaluates, prints and writes (the others return None).


def train(cfg: Config, resume: str | None = None) -> Path | None:
    """Train (or resume) a run; returns the run directory holding model.pt, metrics and plots
    (None in the processes other than process 0 of a distributed run)."""
    procs, device = distributed.setup(cfg.device, cfg.threads)
    ckpt = None
    if resume:
        run_dir = Path(resume)
        ckpt = distributed.broadcast_object(
            procs, load_training_state(run_dir / "last.pt") if procs.main else None, device
        )
        saved = ckpt["config"]
        saved["widths"] = tuple(saved["widths"])
        saved["teacher"] = tuple(saved.get("teacher", ()))
        saved.setdefault("distill_temp", 1.0)  # runs from before the temperature trained on the teachers as they were
        # The run's own config decides what is trained; only where it runs may change.
        cfg = Config(**{**saved, "device": cfg.device, "threads": cfg.threads})
    else:
        run_dir = Path(cfg.out) / (cfg.name or f"{cfg.preset}-{time.strftime('%Y%m%d-%H%M%S')}")
        # Absolute: the config is the run's record, and a resume may start from another folder.
        cfg = dataclasses.replace(cfg, teacher=tuple(str(Path(t).resolve()) for t in cfg.teacher))
    # Resolved once and recorded: a resumed run keeps the precision it started with.
    amp, amp_reason = resolve_amp(cfg.amp, device)
    cfg = dataclasses.replace(cfg, amp=amp)
    if cfg.batch_size < procs.world:
        raise SystemExit(f"batch size {cfg.batch_size} is smaller than the {procs.world} processes sharing it")
    if ckpt is None and run_dir.exists():
        raise SystemExit(f"run folder {run_dir} exists: choose another --name, or continue it with --resume {run_dir}")
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # a few shapes, thousands of steps: worth timing each conv once
    torch.manual_seed(cfg.seed)

    if procs.main:
        fetch_data(cfg)
    distributed.barrier(procs)
    data = load_data(cfg, device)
    teacher = None
    if cfg.teacher:
        teacher, temperature = teach(run_dir, cfg, data, procs, device)
        cfg = dataclasses.replace(cfg, distill_temp=temperature)  # the run's record says which it was
    model = build_model(cfg, len(data.class_names), device)
    sgd, muon = build_optimisers(model, cfg)
    history: list[dict[str, Any]] = []
    start_epoch, train_seconds = 0, 0.0
    if ckpt is None:
        model.init_whitening(data.train_x[:5000])
        if procs.main:  # only now: a run that fails to find its data leaves no empty folder behind
            run_dir.mkdir(parents=True, exist_ok=False)
            (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
    else:
        model.load_state_dict(ckpt["model"])
        sgd.load_state_dict(ckpt["sgd"])
        muon.load_state_dict(ckpt["muon"])
        history, start_epoch = ckpt["history"], ckpt["epoch"]
        train_seconds = history[-1]["train_seconds"] if history else 0.0
        log(procs, f"resuming {run_dir} after epoch {start_epoch} of {cfg.epochs}")
    if procs.main and teacher is not None and not (run_dir / distill.CACHE_NAME).exists():
        distill.save_cache(run_dir, teacher)
    distributed.broadcast_state(procs, model)
    net = distributed.wrap(model, procs, device)
    step_fn = torch.compile(net) if cfg.compile else net

    per_epoch = steps_per_epoch(data, cfg)
    total_steps = cfg.epochs * per_epoch
    whiten_steps = max(cfg.whiten_bias_epochs * per_epoch, 1)
    log(
        procs,
        f"training {model.arch} on {data.source} ({len(data.train_x)} images, "
        f"{len(data.class_names)} classes) on {describe_device(device)}, "
        f"{cfg.epochs} epochs of {per_epoch} steps, batch {cfg.batch_size}, {cfg.amp} ({amp_reason})"
        + (f", robustness augmentation on {cfg.robust:.0%} of images" if cfg.robust > 0 else "")
        + (f" (odds {odds_text(cfg.robust_mix)})" if cfg.robust > 0 and cfg.robust_mix else "")
        + (f", cutout {cfg.cutout}x{cfg.cutout}" if cfg.cutout > 0 else "")
        + (f", distilling from {len(cfg.teacher)} teacher(s) at weight {cfg.distill}" if cfg.teacher else ""),
    )
    if data.holdout_y is not None:
        log(procs, f"{len(data.holdout_y)} training images held out: never trained on, measured every evaluation")
    if procs.world > 1:
        log(
            procs,
            f"distributed: {procs.world} processes ({procs.backend}), each batch of {cfg.batch_size} "
            "shared among them; BatchNorm statistics over the whole batch",
        )
    # Ctrl-C or kill may land anywhere: last.pt is replaced atomically at the end of each epoch,
    # so `--resume` always finds the last completed epoch.
    robust = RobustImages(data, cfg) if cfg.robust > 0 and data.train_u8 is not None else None
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        t0 = time.perf_counter()
        loss_sum = correct = seen = 0.0
        bar = tqdm(
            epoch_batches(data, cfg, epoch, robust(epoch) if robust else None, procs.rank, procs.world),
            total=per_epoch,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            unit="batch",
            leave=False,
            file=sys.stdout,
            dynamic_ncols=True,
            disable=not procs.main,
        )
        for i, (x, y, soft) in enumerate(bar):
            step = epoch * per_epoch + i
            learn_whitening = step < whiten_steps
            with autocast(device, cfg.amp):
                # DDP wants every parameter in every step's graph: the frozen whitening bias stays
                # in it, and its gradient is dropped below instead.
                logits = step_fn(x, whiten_bias=learn_whitening or bool(procs.backend))
            if soft is None:
                loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing, reduction="sum")
            else:
                target = distill.targets(y, soft, cfg.distill, cfg.label_smoothing)
                loss = F.cross_entropy(logits.float(), target, reduction="sum")
            # DDP averages gradients over processes; the recipe's gradient is the batch's sum.
            (loss * procs.world).backward()
            if not learn_whitening:
                model.whiten.bias.grad = None  # SGD then leaves it alone, as in one process
            set_lr(sgd, muon, step, total_steps, whiten_steps)
            sgd.step()
            muon.step()
            model.zero_grad(set_to_none=True)
            loss_sum += loss.item()
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
            rate = seen * procs.world / (time.perf_counter() - t0)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", img_s=f"{rate:.0f}")
        bar.close()
        loss_sum, correct, seen = distributed.all_sum(procs, [loss_sum, correct, seen], device)
        if not distributed.replicas_identical(procs, model, device):
            raise RuntimeError(
                f"after epoch {epoch + 1} the processes' weights differ; they must stay identical "
                "(a nondeterministic kernel?); resume from the last checkpoint"
            )
        epoch_seconds = time.perf_counter() - t0
        train_seconds += epoch_seconds
        row: dict[str, Any] = dict(
            epoch=epoch + 1,
            train_loss=loss_sum / seen,
            train_acc=correct / seen,
            test_acc=None,
            holdout_acc=None,
            epoch_seconds=round(epoch_seconds, 2),
            train_seconds=round(train_seconds, 2),
            images_per_s=round(seen / epoch_seconds, 1),
        )
        history.append(row)
        if procs.main:
            end_of_epoch(run_dir, model, data, cfg, history, sgd, muon)
        distributed.barrier(procs)  # the others wait while process 0 evaluates and writes
    if robust:
        robust.close()
    if procs.world > 1:
        log(procs, f"weights bit-identical in all {procs.world} processes after every epoch")
    distributed.teardown(procs)
    return evaluate_and_save(run_dir, model, data, cfg, history) if procs.main else None


def teach(
    run_dir: Path, cfg: Config, data: Data, procs: distributed.Dist, device: torch.device
) -> tuple[np.ndarray, float]:
    """(the teachers' probabilities for every training image as they gave them, the temperature they
    are softened at into `data.train_soft`). Process 0 computes them (or reads the run's cache) and
    hands them to the others."""
    probs = None
    if procs.main:
        probs = distill.load_or_compute(run_dir, cfg.teacher, data.train_u8, data.class_names, device, cfg.holdout)
    probs = distributed.broadcast_object(procs, probs, device)
    if cfg.robust <= 0:
        data.train_u8 = None  # only the teachers needed the raw pixels
    k = probs.shape[1]
    t = cfg.distill_temp or distill.matching_temperature(probs, 1 - cfg.label_smoothing + cfg.label_smoothing / k)
    soft = distill.soften(probs, t)
    log(procs, f"teacher temperature {t:g}: mean top-1 probability {soft.max(1).mean():.3f} on the training images")
    data.train_soft = torch.from_numpy(soft).to(device)
    return probs, t


def end_of_epoch(run_dir: Path, model: AirNet, data: Data, cfg: Config, history: list, sgd, muon) -> None:
    """Evaluate (when due), write the metrics and the checkpoint, print the epoch's line."""
    row, epoch = history[-1], history[-1]["epoch"]
    if epoch == cfg.epochs or (cfg.eval_every and epoch % cfg.eval_every == 0):
        row["test_acc"] = accuracy(predict_logits(model, data.test_x, cfg, "none"), data.test_y)
        if data.holdout_x is not None:
            row["holdout_acc"] = accuracy(predict_logits(model, data.holdout_x, cfg, "none"), data.holdout_y)
    _write_metrics(run_dir, history)
    save_training_state(
        run_dir / "last.pt",
        config=dataclasses.asdict(cfg),
        epoch=epoch,
        model=model.state_dict(),
        sgd=sgd.state_dict(),
        muon=muon.state_dict(),
        history=history,
    )
    test = f"{row['test_acc']:.4f}" if row["test_acc"] is not None else "-"
    held = f"holdout {row['holdout_acc']:.4f}  " if row.get("holdout_acc") is not None else ""
    print(
        f"epoch {epoch:>3}/{cfg.epochs}  loss {row['train_loss']:.4f}  train {row['train_acc']:.4f}  "
        f"{held}test {test}  {row['epoch_seconds']:6.1f}s  {row['images_per_s']:7.0f} img/s  "
        f"total {row['train_seconds']:7.1f}s",
        flush=True,
    )


def log(procs: distributed.Dist, message: str) -> None:
    if procs.main:
        print(message, flush=True)


# ----------------------------------------------------------------------------------------------
# Run directory: final checkpoint, metrics, plots


def _write_metrics(run_dir: Path, history: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(r) + "\n" for r in history)
    atomic_write(run_dir / "metrics.jsonl", lambda f: f.write(text.encode()))


def evaluate_and_save(run_dir: Path, model: AirNet, data: Data, cfg: Config, history: list) -> Path:
    t0 = time.perf_counter()
    logits = predict_logits(model, data.test_x, cfg, cfg.tta)
    eval_seconds = time.perf_counter() - t0
    acc = accuracy(logits, data.test_y)
    plain = history[-1]["test_acc"]
    preds = logits.argmax(1).cpu().numpy()
    labels = data.test_y.cpu().numpy()
    k = len(data.class_names)
    confusion = confusion_matrix(labels, preds, k)
    summary = dict(
        test_acc=acc,
        test_acc_no_tta=plain,
        **holdout_figures(model, data, cfg, history),
        tta=cfg.tta,
        train_seconds=history[-1]["train_seconds"],
        eval_seconds=round(eval_seconds, 2),  # the final (TTA) evaluation, not counted in train_seconds
        epochs=cfg.epochs,
        arch=model.arch,
        per_class_acc={n: float(confusion[i, i] / max(confusion[i].sum(), 1)) for i, n in enumerate(data.class_names)},
        confusion=confusion.tolist(),
    )
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    save_model_checkpoint(
        run_dir / "model.pt",
        widths=model.widths,
        class_names=data.class_names,
        mean=data.mean,
        std=data.std,
        dataset=data.source,
        model=model.state_dict(),
        config=dataclasses.asdict(cfg),
        test_acc=acc,
        tta=cfg.tta,
    )
    try:
        from .plots import plot_run

        plot_run(run_dir, history, confusion, data.class_names)
    except ImportError:
        print("matplotlib not installed: skipped the plots")
    if "holdout_acc" in summary:
        print(f"held-out training images: {summary['holdout_acc']:.4f} (TTA {cfg.tta})")
    print(
        f"done: test accuracy {acc:.4f} (TTA {cfg.tta}; {plain:.4f} without) after "
        f"{summary['train_seconds']:.1f}s of training + {eval_seconds:.1f}s evaluating -> {run_dir / 'model.pt'}"
    )
    return run_dir


def holdout_figures(model: AirNet, data: Data, cfg: Config, history: list) -> dict[str, Any]:
    """The held-out images' accuracy with the run's TTA and without, for the summary ({} without a holdout)."""
    if data.holdout_x is None:
        return {}
    return dict(
        holdout_acc=accuracy(predict_logits(model, data.holdout_x, cfg, cfg.tta), data.holdout_y),
        holdout_acc_no_tta=history[-1]["holdout_acc"],
        holdout_images=len(data.holdout_y),
    )


def time_to_accuracy(history: list[dict[str, Any]], target: float) -> float | None:
    """Training seconds until the per-epoch (no-TTA) test accuracy first reached target."""
    for row in history:
        if row["test_acc"] is not None and row["test_acc"] >= target:
            return row["train_seconds"]
    return None
