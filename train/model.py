"""The network: an airbench-shaped CNN (whitened 2x2 stem, three conv groups, max-pool head).

Facts from the airbench papers that shape it: a frozen first layer initialised to whiten 2x2
patches makes early training much faster; BatchNorm with a high stats momentum and a frozen scale;
Dirac-initialised 3x3 convs (each starts as an identity on its first channels); logits divided by
the width so the head's effective learning rate does not grow with it.

Inputs are normalised float images [N, 3, 32, 32]; `export/` adds the uint8 -> float step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BatchNorm(nn.BatchNorm2d):
    # Running stats follow recent batches closely (momentum 0.4 in PyTorch's convention): with so
    # few steps per run, a slow average would still remember the untrained network at test time.
    def __init__(self, num_features: int):
        super().__init__(num_features, eps=1e-12, momentum=0.4)
        self.weight.requires_grad = False  # the following conv's scale is free anyway


class Conv(nn.Conv2d):
    def __init__(self, cin: int, cout: int):
        super().__init__(cin, cout, kernel_size=3, padding="same", bias=False)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        n = min(self.in_channels, self.out_channels)
        nn.init.dirac_(self.weight.data[:n, :n])


class ConvGroup(nn.Module):
    """conv -> pool -> BN -> GELU -> conv -> BN -> GELU; pooling early halves the second conv's cost."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1, self.norm1 = Conv(cin, cout), BatchNorm(cout)
        self.conv2, self.norm2 = Conv(cout, cout), BatchNorm(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.norm1(F.max_pool2d(self.conv1(x), 2)))
        return F.gelu(self.norm2(self.conv2(x)))


class AirNet(nn.Module):
    def __init__(self, widths: tuple[int, int, int] = (64, 256, 256), num_classes: int = 10):
        super().__init__()
        self.widths = tuple(widths)
        self.num_classes = num_classes
        self.whiten = nn.Conv2d(3, 24, kernel_size=2, padding=0, bias=True)
        self.whiten.weight.requires_grad = False
        w1, w2, w3 = widths
        self.groups = nn.Sequential(ConvGroup(24, w1), ConvGroup(w1, w2), ConvGroup(w2, w3))
        self.head = nn.Linear(w3, num_classes, bias=False)
        with torch.no_grad():
            self.head.weight /= self.head.weight.std()

    @property
    def arch(self) -> str:
        return "airnet-" + "-".join(str(w) for w in self.widths)

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the stem to the ZCA-like whitening of 2x2 patches of `images` (normalised, NCHW)."""
        patches = images.float().unfold(2, 2, 1).unfold(3, 2, 1)  # N,C,H',W',2,2
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, 12)
        cov = patches.T @ patches / len(patches)
        evals, evecs = torch.linalg.eigh(cov)
        filters = (evecs.T / torch.sqrt(evals + eps)[:, None]).reshape(12, 3, 2, 2)
        # Both signs of each eigen-filter, so the GELU after it loses nothing.
        self.whiten.weight.copy_(torch.cat([filters, -filters]))

    def features(self, x: torch.Tensor, whiten_bias: bool = True) -> torch.Tensor:
        """The last feature map [N, C, 3, 3], before the global max pool."""
        bias = self.whiten.bias if whiten_bias else self.whiten.bias.detach()
        x = F.gelu(F.conv2d(x, self.whiten.weight, bias))
        return self.groups(x)

    def classify(self, feats: torch.Tensor) -> torch.Tensor:
        pooled = feats.amax(dim=(2, 3))
        return self.head(pooled) / pooled.shape[1]

    def class_maps(self, feats: torch.Tensor) -> torch.Tensor:
        """Class-activation maps [N, classes, h, w]: the head applied at every position, in logit
        units; high where the features that vote for a class fire (the pooled max picks them)."""
        return torch.einsum("nchw,kc->nkhw", feats, self.head.weight) / feats.shape[1]

    def forward(self, x: torch.Tensor, whiten_bias: bool = True) -> torch.Tensor:
        return self.classify(self.features(x, whiten_bias))


def tta_views(x: torch.Tensor, level: str = "flip") -> tuple[list[torch.Tensor], list[float]]:
    """Test-time augmentation views and their weights. 'none'; 'flip': the image and its mirror;
    'translate': also one-pixel shifts up-left and down-right, weighted 1/2 unshifted, 1/4 each
    shift (airbench's level 2), six views in all. The first two views are always the image and its
    mirror (the exporter's class maps rely on it)."""
    if level == "none":
        return [x], [1.0]
    if level == "flip":
        return [x, x.flip(-1)], [0.5, 0.5]
    if level == "translate":
        h, w = x.shape[-2:]
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        up_left, down_right = padded[..., :h, :w], padded[..., 2 : h + 2, 2 : w + 2]
        views = [x, x.flip(-1), up_left, up_left.flip(-1), down_right, down_right.flip(-1)]
        return views, [0.25, 0.25, 0.125, 0.125, 0.125, 0.125]
    raise ValueError(f"unknown TTA level {level!r}: use none, flip or translate")


def tta_logits(model: nn.Module, x: torch.Tensor, level: str = "flip") -> torch.Tensor:
    """Weighted mean of the logits over `tta_views`, one view at a time (bounded memory)."""
    views, weights = tta_views(x, level)
    return sum(wt * model(v) for v, wt in zip(views, weights))
