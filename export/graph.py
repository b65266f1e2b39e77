"""The deployable graph: uint8 NHWC pixels in, probabilities and class maps out, and its ONNX export.

`Deployable` wraps the trained net (or an ensemble of nets) so that everything a client could get
wrong (layout, scaling, normalisation, test-time augmentation, the softmax temperature) happens
inside the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import onnx
import torch
import torch.nn.functional as F
from torch import nn

from ..runtime import contract
from ..train.model import AirNet, tta_views


class Deployable(nn.Module):
    """The net behind the contract, or several nets as one ensemble (their logits averaged, so one
    temperature calibrates them all). tta: 'none'; 'flip' (2 views: the image and its mirror);
    'translate' (6 views: those two, each also shifted one pixel up-left and down-right, weighted
    1/2 unshifted, 1/4 per shift, as in training's final evaluation). Class maps come from the
    unshifted views only (a shifted 3x3 map would be misaligned)."""

    def __init__(self, net: AirNet | Sequence[AirNet], mean: Sequence[float], std: Sequence[float], tta: str = "none"):
        super().__init__()
        if tta not in ("none", "flip", "translate"):
            raise ValueError(f"--tta {tta!r}: use none, flip or translate")
        nets = [net] if isinstance(net, nn.Module) else list(net)
        if not nets:
            raise ValueError("an ensemble needs at least one net")
        self.nets, self.tta = nn.ModuleList(nets), tta
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("inv_std", 1 / torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        # Softmax temperature, fitted at export (export/calibrate.py); 1 leaves the net's own confidences.
        self.register_buffer("temperature", torch.ones(()))

    @property
    def arch(self) -> str:
        """'airnet-64-256-256', or 'ensemble of 2: airnet-64-256-256 + airnet-128-384-384'."""
        if len(self.nets) == 1:
            return self.nets[0].arch
        return f"ensemble of {len(self.nets)}: " + " + ".join(net.arch for net in self.nets)

    @property
    def passes_per_image(self) -> int:
        """How many times each image goes through a net: nets x views."""
        return len(self.nets) * len(tta_views(torch.zeros(1, 3, 4, 4), self.tta)[0])

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, cam = self.scores(pixels)
        return self.probabilities(logits), cam

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return F.softmax(logits / self.temperature, dim=1)

    def scores(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """TTA-weighted logits (before the temperature) and class maps, averaged over the nets."""
        x = (pixels.permute(0, 3, 1, 2).float() - self.mean) * self.inv_std
        views, weights = tta_views(x, self.tta)
        # All views go through each net as one batch: one pass over its weights (faster at batch 1,
        # and a quantised graph holds each weight once instead of once per view).
        batch = torch.cat(views) if len(views) > 1 else x
        answers = [self._net_scores(net, batch, x.shape[0], weights) for net in self.nets]
        if len(answers) == 1:  # a single net: no averaging ops in its graph
            return answers[0]
        logits, cams = zip(*answers)
        return torch.stack(logits).mean(0), torch.stack(cams).mean(0)

    @staticmethod
    def _net_scores(
        net: AirNet, batch: torch.Tensor, n: int, weights: list[float]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        feats = net.features(batch)
        per_view = net.classify(feats).unflatten(0, (len(weights), n))
        logits = torch.einsum("vnk,v->nk", per_view, per_view.new_tensor(weights))
        cam = net.class_maps(feats[:n])
        if len(weights) > 1:
            cam = 0.5 * (cam + net.class_maps(feats[n : 2 * n]).flip(-1))
        return logits, cam


def export_onnx(module: nn.Module, path: Path) -> onnx.ModelProto:
    """torch.onnx's dynamo exporter at the contract's opset, batch dimension dynamic; returns the model."""
    example = torch.zeros(2, contract.IMAGE_SIZE, contract.IMAGE_SIZE, contract.CHANNELS, dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    torch.onnx.export(
        module,
        (example,),
        str(path),
        input_names=[contract.INPUT_NAME],
        output_names=[contract.OUTPUT_PROBS, contract.OUTPUT_CAM],
        dynamic_shapes={"pixels": {0: batch}},
        opset_version=contract.OPSET,
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    return onnx.load(str(path))


def set_metadata(model: onnx.ModelProto, meta: dict[str, str]) -> None:
    """Replace the file's metadata_props with `meta` (all values strings, as the contract says)."""
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
