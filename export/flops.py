"""Forward-pass cost of the deployable graph, for the `gflop_per_image` metadata key (bench divides by it)."""

from __future__ import annotations

import torch
from torch import nn

from ..runtime import contract


def gflop_per_image(module: nn.Module) -> float:
    """Forward FLOPs of one image (multiply-adds count 2), by PyTorch's FLOP counter; TTA views included."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(torch.zeros(1, contract.IMAGE_SIZE, contract.IMAGE_SIZE, contract.CHANNELS, dtype=torch.uint8))
    return counter.get_total_flops() / 1e9
