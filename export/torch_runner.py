"""PyTorch eager on the same deployable graph, for `cifar10 bench --checkpoint` to time side by side."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch

from ..train.checkpoint import load_model
from .graph import Deployable


def torch_runner(checkpoint: str | os.PathLike, tta: str = "none", threads: int = 0) -> Callable[[np.ndarray], object]:
    """A PyTorch eager callable on uint8 NHWC pixels (a run folder or a checkpoint file)."""
    net, ckpt = load_model(checkpoint)
    module = Deployable(net, ckpt["mean"], ckpt["std"], tta).eval().to(memory_format=torch.channels_last)
    torch.set_num_threads(threads or os.cpu_count() or 1)

    @torch.inference_mode()
    def run(pixels: np.ndarray):
        return module(torch.from_numpy(pixels))

    return run
