"""Training data: the whole dataset as tensors on the training device, and each epoch's batches.

An epoch's augmentations and order are pure functions of (seed, epoch), so a resumed run sees
exactly the data an uninterrupted one would. In a distributed run every process computes the same
augmented epoch and takes its own share of each global batch, so the global batches are those of a
single-process run whatever the number of processes.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..runtime.contract import CIFAR10_MEAN, CIFAR10_STD
from ..runtime.dataset import download_cifar10, load_cifar10
from .augment import alternating_flip, epoch_generator, random_crop, random_cutout, random_translate, robust_corrupt
from .config import Config

# ----------------------------------------------------------------------------------------------
# Loading


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
    train_u8: np.ndarray | None = None  # raw NHWC pixels, kept for robustness augmentation and teachers
    train_soft: torch.Tensor | None = None  # the teachers' probabilities per training image (distillation)
    holdout_x: torch.Tensor | None = None  # training images set aside (`--holdout`), normalised like the rest
    holdout_y: torch.Tensor | None = None


def normalise(images: np.ndarray, mean, std, device) -> torch.Tensor:
    x = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float()
    m = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=device).view(1, 3, 1, 1)
    return ((x - m) / s).contiguous(memory_format=torch.channels_last)


def fetch_data(cfg: Config) -> None:
    """`--download`: fetch CIFAR-10 if missing. Once per run (process 0), before anyone reads it."""
    if cfg.download and not cfg.folder:
        download_cifar10(cfg.data_dir)


def load_data(cfg: Config, device: torch.device) -> Data:
    if cfg.folder:
        from .folder_dataset import load_folder_split

        tr_x, tr_y, te_x, te_y, names = load_folder_split(cfg.folder, seed=cfg.seed)
        mean = tuple(float(v) for v in tr_x.reshape(-1, 3).mean(0))
        std = tuple(float(v) for v in tr_x.reshape(-1, 3).std(0) + 1e-3)
        source = f"folder:{Path(cfg.folder).name}"
    else:
        tr_x, tr_y, names = load_cifar10(cfg.data_dir, "train")
        te_x, te_y, _ = load_cifar10(cfg.data_dir, "test")
        mean, std, source = CIFAR10_MEAN, CIFAR10_STD, "CIFAR-10"
    if cfg.subset:
        tr_x, tr_y = tr_x[: cfg.subset], tr_y[: cfg.subset]
        te_x, te_y = te_x[: max(cfg.subset // 5, 100)], te_y[: max(cfg.subset // 5, 100)]
    ho_x = ho_y = None
    if cfg.holdout:
        kept, held = holdout_split(tr_y, cfg.holdout)
        ho_x, ho_y, tr_x, tr_y = tr_x[held], tr_y[held], tr_x[kept], tr_y[kept]
    return Data(
        normalise(tr_x, mean, std, device),
        torch.from_numpy(tr_y).to(device),
        normalise(te_x, mean, std, device),
        torch.from_numpy(te_y).to(device),
        tuple(names),
        mean,
        std,
        source,
        train_u8=tr_x if cfg.robust > 0 or cfg.teacher else None,
        holdout_x=None if ho_x is None else normalise(ho_x, mean, std, device),
        holdout_y=None if ho_y is None else torch.from_numpy(ho_y).to(device),
    )


# ----------------------------------------------------------------------------------------------
# The held-out images: decisions without the test set

HOLDOUT_SEED = 20261130  # not the run's seed: every run (and its teachers) sets the same images aside


class HoldoutError(ValueError):
    """--holdout asks for more images than there are to train on."""


def holdout_split(labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices kept for training, indices held out): `n` images as evenly spread over the classes as
    their counts allow, chosen by a fixed shuffle, so runs of any seed, their teachers and the exporter
    all set the same images aside. Both index arrays are sorted."""
    labels = np.asarray(labels)
    if not 0 < n < len(labels):
        raise HoldoutError(
            f"--holdout {n}: there are {len(labels)} training images; hold out fewer (e.g. {len(labels) // 10})"
        )
    order = np.random.default_rng(HOLDOUT_SEED).permutation(len(labels))
    rank = np.empty(len(labels), dtype=np.int64)  # each image's place among its class, in shuffled order
    for c in np.unique(labels):
        members = order[labels[order] == c]
        rank[members] = np.arange(len(members))
    # First every class's first shuffled image, then every class's second, ...: balanced classes.
    held = np.sort(order[np.argsort(rank[order], kind="stable")[:n]])
    return np.setdiff1d(np.arange(len(labels)), held), held


# ----------------------------------------------------------------------------------------------
# Robustness augmentation, prepared one epoch ahead


def robust_workers() -> int:
    """Epochs prepared at once: one per four cores, at most four. Corrupting 50,000 images takes 4-7 s of
    one core (Pillow and numpy, mostly under the GIL, so threads do not help), about what a GPU needs for
    several epochs; a 2-core machine trains far slower than that and keeps to one worker thread."""
    return max(1, min(4, (os.cpu_count() or 1) // 4))


_worker_images: np.ndarray | None = None


def _hold_images(images: np.ndarray) -> None:
    global _worker_images
    _worker_images = images


def _corrupt_held(share: float, seed: int, epoch: int, mix: dict[str, float]) -> np.ndarray:
    return robust_corrupt(_worker_images, share, seed, epoch, mix)


class RobustImages:
    """Each epoch's corrupted training images, computed ahead while earlier epochs train: one epoch on a
    worker thread (Pillow releases the GIL), or several at once in worker processes on machines with the
    cores for it. Each epoch's copy is a pure function of (seed, epoch), so how many workers made it
    changes nothing."""

    def __init__(self, data: Data, cfg: Config, workers: int | None = None):
        self.data, self.cfg = data, cfg
        self.ahead = robust_workers() if workers is None else max(1, workers)
        self.pool: Executor
        if self.ahead == 1:
            self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="robust")
            self.corrupt = functools.partial(robust_corrupt, data.train_u8)
        else:  # spawn: the trainer's process may hold CUDA and threads, which fork would copy half-alive
            ctx = multiprocessing.get_context("spawn")
            self.pool = ProcessPoolExecutor(self.ahead, ctx, initializer=_hold_images, initargs=(data.train_u8,))
            self.corrupt = _corrupt_held  # each worker holds the images once, not once per epoch
        self.pending: dict[int, Future] = {}

    def _submit(self, epoch: int) -> None:
        if epoch < self.cfg.epochs and epoch not in self.pending:
            args = (self.cfg.robust, self.cfg.seed, epoch, self.cfg.robust_mix)
            self.pending[epoch] = self.pool.submit(self.corrupt, *args)

    def __call__(self, epoch: int) -> torch.Tensor:
        for ahead in range(self.ahead):
            self._submit(epoch + ahead)
        images = self.pending.pop(epoch).result()
        self._submit(epoch + self.ahead)
        return normalise(images, self.data.mean, self.data.std, self.data.train_x.device)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


# ----------------------------------------------------------------------------------------------
# Batches


def epoch_batches(
    data: Data, cfg: Config, epoch: int, source: torch.Tensor | None = None, rank: int = 0, world: int = 1
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """Augmented, shuffled (images, labels, teacher probabilities or None) for one epoch; a pure
    function of (seed, epoch). `source` replaces the clean training images (robustness augmentation).
    With `world` processes, each global batch of cfg.batch_size is dealt out like cards and this
    process gets share `rank`."""
    gen = epoch_generator(cfg.seed, epoch, data.train_x.device)
    images = alternating_flip(data.train_x if source is None else source, cfg.seed, epoch)
    images = random_translate(images, cfg.translate, gen)
    cutout = cfg.cutout
    if epoch < cfg.crop_epochs:
        images = random_crop(images, cfg.crop_size, gen)
        cutout = round(cutout * cfg.crop_size / data.train_x.shape[-1])  # the same share of a smaller image
    images = random_cutout(images, cutout, gen)
    order = torch.randperm(len(images), generator=gen, device=images.device)
    n = len(order) // cfg.batch_size * cfg.batch_size or len(order)  # drop the ragged last batch
    for i in range(0, n, cfg.batch_size):
        idx = order[i : i + cfg.batch_size][rank::world]
        yield images[idx], data.train_y[idx], None if data.train_soft is None else data.train_soft[idx]


def steps_per_epoch(data: Data, cfg: Config) -> int:
    return max(len(data.train_x) // cfg.batch_size, 1)
