"""`cifar10 train`: presets, the training loop, checkpoints every epoch, resume, metrics and plots.

Read top to bottom: configuration, data, optimisers, evaluation, the loop, the run directory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..runtime.contract import CIFAR10_MEAN, CIFAR10_STD
from ..runtime.dataset import download_cifar10, load_cifar10
from .augment import alternating_flip, epoch_generator, random_crop, random_translate, robust_corrupt
from .checkpoint import load_training_state, save_model_checkpoint, save_training_state
from .model import AirNet, tta_logits
from .optim import Muon

# ----------------------------------------------------------------------------------------------
# Configuration: plain values with defaults; presets override some; the command line overrides any.


@dataclass
class Config:
    preset: str = "fast"
    data_dir: str | None = None  # folder holding cifar-10-batches-py/ ($CIFAR10_DATA)
    folder: str | None = None  # train on your own images: root/<class>/<image>
    download: bool = False
    out: str = "runs"
    name: str = ""  # run folder name; default: <preset>-<time>
    device: str = "auto"  # auto | cuda | cpu
    epochs: int = 8
    batch_size: int = 2000
    widths: tuple[int, int, int] = (64, 256, 256)
    lr: float = 0.24  # Muon, conv filters
    momentum: float = 0.6  # Muon
    bias_lr: float = 0.053  # SGD, BatchNorm and whitening biases (loss is summed over the batch)
    head_lr: float = 0.67  # SGD, classifier
    sgd_momentum: float = 0.85
    weight_decay: float = 2e-6  # per example; scaled by batch size
    label_smoothing: float = 0.2
    whiten_bias_epochs: int = 3
    translate: int = 2
    crop_epochs: int = 0  # the first N epochs train on random crop_size crops: same objects, fewer FLOPs
    crop_size: int = 24
    robust: float = 0.0  # share of each epoch's images given a random corruption (JPEG, noise, ...); 0 = off
    tta: str = "translate"  # final evaluation: none | flip | translate
    seed: int = 0
    subset: int = 0  # use only the first N training images (smoke tests)
    eval_every: int = 1
    amp: str = "bf16"  # bf16 | fp16 (CUDA) | fp32
    compile: bool = False
    deterministic: bool = False
    threads: int = 0  # CPU threads; 0 = all cores


PRESETS: dict[str, dict[str, Any]] = {
    # airbench94-shaped; the first 4 of 11 epochs on 24x24 crops (about half the FLOPs each).
    "fast": dict(epochs=11, batch_size=2000, widths=(64, 256, 256), tta="translate", crop_epochs=4),
    # Wider: the 95% recipe; robustness augmentation, since this is the model users see.
    "accurate": dict(epochs=14, batch_size=2000, widths=(128, 384, 384), tta="translate", robust=0.4),
    # For a GPU: wider and longer still.
    "best": dict(epochs=40, batch_size=1000, widths=(192, 512, 512), tta="translate", robust=0.4),
    # Seconds, not accuracy: for tests and trying the pipeline.
    "smoke": dict(epochs=1, batch_size=500, widths=(16, 32, 32), tta="none", subset=2000),
}


def make_config(preset: str = "fast", **overrides: Any) -> Config:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    values = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    return Config(preset=preset, **values)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU is visible to PyTorch; use --device cpu")
    return torch.device(name)


# ----------------------------------------------------------------------------------------------
# Data: everything lives in one tensor on the training device.


@dataclass
class Data:
    train_x: torch.Tensor  # normalised float NCHW
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    class_names: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str
    train_u8: np.ndarray | None = None  # raw NHWC pixels, kept when robustness augmentation needs them


def _normalise(images: np.ndarray, mean, std, device) -> torch.Tensor:
    x = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float()
    m = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=device).view(1, 3, 1, 1)
    return ((x - m) / s).contiguous(memory_format=torch.channels_last)


def load_data(cfg: Config, device: torch.device) -> Data:
    if cfg.folder:
        from .folder import load_folder_split

        tr_x, tr_y, te_x, te_y, names = load_folder_split(cfg.folder, seed=cfg.seed)
        mean = tuple(float(v) for v in tr_x.reshape(-1, 3).mean(0))
        std = tuple(float(v) for v in tr_x.reshape(-1, 3).std(0) + 1e-3)
        source = f"folder:{Path(cfg.folder).name}"
    else:
        if cfg.download:
            download_cifar10(cfg.data_dir)
        tr_x, tr_y, names = load_cifar10(cfg.data_dir, "train")
        te_x, te_y, _ = load_cifar10(cfg.data_dir, "test")
        mean, std, source = CIFAR10_MEAN, CIFAR10_STD, "CIFAR-10"
    if cfg.subset:
        tr_x, tr_y = tr_x[: cfg.subset], tr_y[: cfg.subset]
        te_x, te_y = te_x[: max(cfg.subset // 5, 100)], te_y[: max(cfg.subset // 5, 100)]
    return Data(
        _normalise(tr_x, mean, std, device),
        torch.from_numpy(tr_y).to(device),
        _normalise(te_x, mean, std, device),
        torch.from_numpy(te_y).to(device),
        tuple(names),
        mean,
        std,
        source,
        train_u8=tr_x if cfg.robust > 0 else None,
    )


class RobustImages:
    """Each epoch's corrupted training images, the next epoch's computed on a worker thread while
    this one trains (Pillow releases the GIL), so the corruptions cost almost no wall time."""

    def __init__(self, data: Data, cfg: Config):
        self.data, self.cfg = data, cfg
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="robust")
        self.pending: dict[int, Future] = {}

    def _submit(self, epoch: int) -> None:
        if epoch < self.cfg.epochs and epoch not in self.pending:
            args = (self.data.train_u8, self.cfg.robust, self.cfg.seed, epoch)
            self.pending[epoch] = self.pool.submit(robust_corrupt, *args)

    def __call__(self, epoch: int) -> torch.Tensor:
        self._submit(epoch)
        images = self.pending.pop(epoch).result()
        self._submit(epoch + 1)
        return _normalise(images, self.data.mean, self.data.std, self.data.train_x.device)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def epoch_batches(data: Data, cfg: Config, epoch: int, source: torch.Tensor | None = None):
    """Augmented, shuffled batches for one epoch; a pure function of (seed, epoch). `source`
    replaces the clean training images (robustness augmentation)."""
    gen = epoch_generator(cfg.seed, epoch, data.train_x.device)
    images = alternating_flip(data.train_x if source is None else source, cfg.seed, epoch)
    images = random_translate(images, cfg.translate, gen)
    if epoch < cfg.crop_epochs:
        images = random_crop(images, cfg.crop_size, gen)
    order = torch.randperm(len(images), generator=gen, device=images.device)
    n = len(order) // cfg.batch_size * cfg.batch_size or len(order)  # drop the ragged last batch
    for i in range(0, n, cfg.batch_size):
        idx = order[i : i + cfg.batch_size]
        yield images[idx], data.train_y[idx]


def steps_per_epoch(data: Data, cfg: Config) -> int:
    return max(len(data.train_x) // cfg.batch_size, 1)


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
    muon = Muon(filters, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
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
# The loop


def train(cfg: Config, resume: str | None = None) -> Path:
    """Train (or resume) a run; returns the run directory holding model.pt, metrics and plots."""
    if resume:
        run_dir = Path(resume)
        ckpt = load_training_state(run_dir / "last.pt")
        saved = ckpt["config"]
        saved["widths"] = tuple(saved["widths"])
        # The run's own config decides what is trained; only where it runs may change.
        cfg = Config(**{**saved, "device": cfg.device, "threads": cfg.threads})
    else:
        ckpt = None
        run_dir = Path(cfg.out) / (cfg.name or f"{cfg.preset}-{time.strftime('%Y%m%d-%H%M%S')}")
        run_dir.mkdir(parents=True, exist_ok=False)
    device = pick_device(cfg.device)
    if device.type == "cpu":
        torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    torch.manual_seed(cfg.seed)

    data = load_data(cfg, device)
    model = build_model(cfg, len(data.class_names), device)
    sgd, muon = build_optimisers(model, cfg)
    history: list[dict[str, Any]] = []
    start_epoch, train_seconds = 0, 0.0
    if ckpt is None:
        model.init_whitening(data.train_x[:5000])
        (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
    else:
        model.load_state_dict(ckpt["model"])
        sgd.load_state_dict(ckpt["sgd"])
        muon.load_state_dict(ckpt["muon"])
        history, start_epoch = ckpt["history"], ckpt["epoch"]
        train_seconds = history[-1]["train_seconds"] if history else 0.0
        print(f"resuming {run_dir} after epoch {start_epoch} of {cfg.epochs}")
    step_fn = torch.compile(model) if cfg.compile else model

    per_epoch = steps_per_epoch(data, cfg)
    total_steps = cfg.epochs * per_epoch
    whiten_steps = max(cfg.whiten_bias_epochs * per_epoch, 1)
    print(
        f"training {model.arch} on {data.source} ({len(data.train_x)} images, "
        f"{len(data.class_names)} classes) on {describe_device(device)}, "
        f"{cfg.epochs} epochs of {per_epoch} steps, batch {cfg.batch_size}, amp {cfg.amp}"
        + (f", robustness augmentation on {cfg.robust:.0%} of images" if cfg.robust > 0 else "")
    )
    # Ctrl-C or kill may land anywhere: last.pt is replaced atomically at the end of each epoch,
    # so `--resume` always finds the last completed epoch.
    robust = RobustImages(data, cfg) if data.train_u8 is not None else None
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        t0 = time.perf_counter()
        loss_sum = correct = seen = 0.0
        bar = tqdm(
            epoch_batches(data, cfg, epoch, robust(epoch) if robust else None),
            total=per_epoch,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            unit="batch",
            leave=False,
            file=sys.stdout,
            dynamic_ncols=True,
        )
        for i, (x, y) in enumerate(bar):
            step = epoch * per_epoch + i
            with autocast(device, cfg.amp):
                logits = step_fn(x, whiten_bias=step < whiten_steps)
            loss = F.cross_entropy(
                logits.float(), y, label_smoothing=cfg.label_smoothing, reduction="sum"
            )
            loss.backward()
            set_lr(sgd, muon, step, total_steps, whiten_steps)
            sgd.step()
            muon.step()
            model.zero_grad(set_to_none=True)
            loss_sum += loss.item()
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
            rate = seen / (time.perf_counter() - t0)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", img_s=f"{rate:.0f}")
        bar.close()
        epoch_seconds = time.perf_counter() - t0
        train_seconds += epoch_seconds
        row: dict[str, Any] = dict(
            epoch=epoch + 1,
            train_loss=loss_sum / seen,
            train_acc=correct / seen,
            test_acc=None,
            epoch_seconds=round(epoch_seconds, 2),
            train_seconds=round(train_seconds, 2),
            images_per_s=round(seen / epoch_seconds, 1),
        )
        last = epoch + 1 == cfg.epochs
        if last or (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0):
            row["test_acc"] = accuracy(predict_logits(model, data.test_x, cfg, "none"), data.test_y)
        history.append(row)
        _write_metrics(run_dir, history)
        save_training_state(run_dir / "last.pt", config=dataclasses.asdict(cfg), epoch=epoch + 1,
                            model=model.state_dict(), sgd=sgd.state_dict(), muon=muon.state_dict(),
                            history=history)  # fmt: skip
        test = f"{row['test_acc']:.4f}" if row["test_acc"] is not None else "-"
        print(
            f"epoch {epoch + 1:>3}/{cfg.epochs}  loss {row['train_loss']:.4f}  train {row['train_acc']:.4f}  "
            f"test {test}  {epoch_seconds:6.1f}s  {row['images_per_s']:7.0f} img/s  "
            f"total {train_seconds:7.1f}s",
            flush=True,
        )
    if robust:
        robust.close()
    return finish(run_dir, model, data, cfg, history)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"CUDA ({torch.cuda.get_device_name(device)})"
    return f"CPU ({torch.get_num_threads()} threads)"


# ----------------------------------------------------------------------------------------------
# Run directory: final checkpoint, metrics, plots


def _write_metrics(run_dir: Path, history: list[dict[str, Any]]) -> None:
    tmp = run_dir / "metrics.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in history))
    os.replace(tmp, run_dir / "metrics.jsonl")


def finish(run_dir: Path, model: AirNet, data: Data, cfg: Config, history: list) -> Path:
    t0 = time.perf_counter()
    logits = predict_logits(model, data.test_x, cfg, cfg.tta)
    eval_seconds = time.perf_counter() - t0
    acc = accuracy(logits, data.test_y)
    plain = history[-1]["test_acc"]
    preds = logits.argmax(1).cpu().numpy()
    labels = data.test_y.cpu().numpy()
    k = len(data.class_names)
    confusion = np.bincount(labels * k + preds, minlength=k * k).reshape(k, k)
    summary = dict(
        test_acc=acc,
        test_acc_no_tta=plain,
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
    print(
        f"done: test accuracy {acc:.4f} (TTA {cfg.tta}; {plain:.4f} without) after "
        f"{summary['train_seconds']:.1f}s of training + {eval_seconds:.1f}s evaluating -> {run_dir / 'model.pt'}"
    )
    return run_dir


def time_to_accuracy(history: list[dict[str, Any]], target: float) -> float | None:
    """Training seconds until the per-epoch (no-TTA) test accuracy first reached target."""
    for row in history:
        if row["test_acc"] is not None and row["test_acc"] >= target:
            return row["train_seconds"]
    return None
