"""Training on several processes (torchrun + DistributedDataParallel), one per GPU or per CPU share.

`torchrun --nproc-per-node N -m cifar10kit.train ARGS` (what `cifar10 train --nproc N` runs) starts N
copies of the trainer and tells each its place in RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE.
The recipe stays the single-process one:

- every process computes the same augmented epoch and trains on its share of each global batch
  (`data.epoch_batches`); the global batch size and learning-rate schedule are the preset's;
- the loss is summed over the batch and DDP averages gradients over processes, so each process
  scales its loss by the number of processes: the all-reduced gradient is the global batch's sum;
- BatchNorm normalises with statistics of the global batch (`GlobalBatchNorm`), as one process would;
- optimisers (Muon's orthogonalisation included) then run on identical gradients in every process,
  so the replicas stay identical; `replicas_identical` checks that after every epoch;
- process 0 alone loads checkpoints (and sends them to the others), evaluates, logs and writes.

NCCL connects GPU processes, gloo CPU ones (each using its share of the machine's cores).
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .config import pick_device

# ----------------------------------------------------------------------------------------------
# Where this process stands


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    backend: str = ""  # "" when not launched by torchrun: no process group at all

    @property
    def main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores a scheduler (Slurm, cgroups) gave us
    except AttributeError:
        return os.cpu_count() or 1


def setup(device_name: str, threads: int) -> tuple[Dist, torch.device]:
    """Join torchrun's process group if launched by it; pick this process's device and threads."""
    device = pick_device(device_name)
    if not launched_by_torchrun():
        if device.type == "cpu":
            torch.set_num_threads(threads or os.cpu_count() or 1)
        return Dist(), device
    env = {k: int(os.environ.get(k, 1)) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    if device.type == "cuda":
        gpus = torch.cuda.device_count()
        if env["LOCAL_RANK"] >= gpus:
            raise SystemExit(
                f"{env['LOCAL_WORLD_SIZE']} processes on this node but {gpus} GPU(s) visible: "
                f"start at most {gpus} per node (--nproc {gpus}) or use --device cpu"
            )
        device = torch.device("cuda", env["LOCAL_RANK"])
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        torch.set_num_threads(threads or max(_cores() // env["LOCAL_WORLD_SIZE"], 1))
        backend = "gloo"
    # Generous timeout: process 0 evaluates and writes the checkpoint while the others wait.
    dist.init_process_group(backend, timeout=timedelta(minutes=30))
    _exit_with_launcher()
    return Dist(env["RANK"], env["WORLD_SIZE"], backend), device


def _exit_with_launcher() -> None:
    """torchrun starts each process in a session of its own, so a kill -9 of the launcher's process
    group (or a scheduler cancelling the job) would leave them training on as orphans. Exit as
    soon as the launcher is gone instead: `--resume` continues from the last checkpoint."""
    launcher = os.getppid()

    def watch() -> None:
        while os.getppid() == launcher:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="launcher-watch", daemon=True).start()


def teardown(d: Dist) -> None:
    if d.backend:
        dist.barrier()
        dist.destroy_process_group()


# ----------------------------------------------------------------------------------------------
# BatchNorm over the global batch


class _SumOverProcesses(torch.autograd.Function):
    """all_reduce(SUM) that autograd can go through: the gradient of a sum is summed the same way."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        x = x.clone()
        dist.all_reduce(x, group=group)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class GlobalBatchNorm(nn.BatchNorm2d):
    """BatchNorm whose training statistics are those of the global batch: per-channel sums are
    all-reduced over the processes (gloo or NCCL), and the backward pass all-reduces their
    gradients. A distributed step then normalises exactly as a single process would. (torch's
    SyncBatchNorm does the same, on GPUs only.) Evaluation uses the running statistics, locally."""

    group: Any = None  # the process group that carries the statistics

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        c = x.shape[1]
        xf = x.float()
        sums = torch.cat([xf.sum((0, 2, 3)), xf.new_full((1,), x.numel() / c)])
        sums = _SumOverProcesses.apply(sums, self.group)
        n = sums[c]
        mean = sums[:c] / n
        centred = xf - mean.view(1, c, 1, 1)
        var = _SumOverProcesses.apply(centred.square().sum((0, 2, 3)), self.group) / n
        with torch.no_grad():
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var * n / (n - 1), self.momentum)
            self.num_batches_tracked.add_(1)
        scale = torch.rsqrt(var + self.eps) * self.weight
        return (centred * scale.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)).to(x.dtype)


@functools.cache
def _keep_out_of_compiled_graphs() -> None:
    """torch.compile cannot trace the all-reduces in GlobalBatchNorm.forward. Marked here rather than
    with a decorator, which imports the compiler: 1.3 s of every `cifar10 train` start-up, distributed or not."""
    GlobalBatchNorm.forward = torch.compiler.disable(GlobalBatchNorm.forward)


def use_global_batchnorm(module: nn.Module) -> None:
    """Swap every BatchNorm2d below `module` for a GlobalBatchNorm holding the same parameters and
    buffers (the same objects: optimisers and state dicts are unaffected)."""
    _keep_out_of_compiled_graphs()
    _swap_batchnorms(module, dist.new_group())  # own group: never queues behind DDP's gradient buckets


def _swap_batchnorms(module: nn.Module, group) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            swapped = GlobalBatchNorm(child.num_features, eps=child.eps, momentum=child.momentum)
            for key, value in [*child._parameters.items(), *child._buffers.items()]:
                setattr(swapped, key, value)
            swapped.group = group
            setattr(module, name, swapped)
        else:
            _swap_batchnorms(child, group)


# ----------------------------------------------------------------------------------------------
# Keeping the replicas identical


def wrap(model: nn.Module, d: Dist, device: torch.device) -> nn.Module:
    """The module the training steps call: DDP around `model` in a distributed run, else `model`."""
    if not d.backend:
        return model
    if d.world > 1:
        use_global_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    # Buffers (BatchNorm's running statistics) stay identical by themselves: no broadcast every step.
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)


@torch.no_grad()
def broadcast_state(d: Dist, model: nn.Module) -> None:
    """Process 0's weights and buffers (whitening filters from its first images included) everywhere."""
    if d.world > 1:
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, src=0)


def broadcast_object(d: Dist, obj: Any, device: torch.device) -> Any:
    """Process 0's `obj` (a checkpoint it read, say) in every process; only process 0's is used."""
    if d.world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=device)
    return box[0]


def fingerprint(model: nn.Module) -> int:
    """A 63-bit hash of every parameter and buffer, bit for bit."""
    h = hashlib.blake2b(digest_size=8)
    for key, tensor in model.state_dict().items():
        h.update(key.encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return int.from_bytes(h.digest(), "little") >> 1


def replicas_identical(d: Dist, model: nn.Module, device: torch.device) -> bool:
    """Whether every process holds bit-identical weights and buffers (collective: all must call)."""
    if d.world == 1:
        return True
    mine = torch.tensor([fingerprint(model)], dtype=torch.int64, device=device)
    everyone = [torch.empty_like(mine) for _ in range(d.world)]
    dist.all_gather(everyone, mine)
    return all(bool((t == mine).all()) for t in everyone)


def all_sum(d: Dist, values: list[float], device: torch.device) -> list[float]:
    """Element-wise sums over the processes (epoch totals: loss, correct, seen)."""
    if d.world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def barrier(d: Dist) -> None:
    if d.world > 1:
        dist.barrier()
