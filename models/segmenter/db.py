"""DB network: torchvision backbone -> FPN -> probability + threshold heads at input resolution.

Differentiable binarisation (Liao et al., 2020): training learns a per-pixel threshold map T
next to the text probability map P and supervises the approximate binary map
1 / (1 + exp(-k (P - T))). At inference only P is needed: threshold it, take contours,
and grow each shrunk kernel back to the full word (see postprocess.py).

With line_channels > 0 a second head predicts text-line kernels (lines shrunk by LINE_SHRINK):
it learns from the real pages' line polygons, which have no word boxes. Its map is channel 1 of
"prob" (channel 0 stays words), so every backend returns both maps in one output.

Models layer: imports models, transforms and batch.core only (tests/test_layers.py). Run by an
engine (models/engine.py) for the segmenter runner.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models as tvm
from torchvision.ops import FeaturePyramidNetwork

IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


class Backbone(nn.Module):
    """Feature maps at strides 4, 8, 16, 32 from a torchvision classifier (weights=None)."""

    def __init__(self, name: str, width_mult: float = 1.0):
        super().__init__()
        if name.startswith("mobilenet_v3"):
            net = getattr(tvm, name)(weights=None, width_mult=width_mult)
            self.stages = self._split_by_stride(net.features)
        elif name.startswith("resnet"):
            net = getattr(tvm, name)(weights=None)
            stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
            self.stages = nn.ModuleList([stem, net.layer2, net.layer3, net.layer4])
        else:
            raise ValueError(f"unknown backbone {name!r}")
        with torch.no_grad():
            feats = self(torch.zeros(1, 3, 64, 64))
        self.channels = [f.shape[1] for f in feats]

    @staticmethod
    def _split_by_stride(features: nn.Sequential) -> nn.ModuleList:
        """Group MobileNet blocks so each group ends at stride 4, 8, 16 and 32."""
        groups: list[nn.Sequential] = []
        current: list[nn.Module] = []
        size = 64
        x = torch.zeros(1, 3, size, size)
        with torch.no_grad():
            for block in features:
                y = block(x)
                # a group closes just before the block that halves the resolution again
                if current and y.shape[-1] < x.shape[-1] and size // x.shape[-1] >= 4:
                    groups.append(nn.Sequential(*current))
                    current = []
                current.append(block)
                x = y
        groups.append(nn.Sequential(*current))
        return (
            nn.ModuleList(groups[-4:])
            if len(groups) == 4
            else nn.ModuleList([nn.Sequential(*groups[0], *groups[1])] + groups[2:])
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out


def _up_head(cin: int, mid: int) -> nn.Sequential:
    """3x3 conv at stride 4, then two x2 transposed convs back to input resolution."""
    return nn.Sequential(
        nn.Conv2d(cin, mid, 3, padding=1, bias=False),
        nn.BatchNorm2d(mid),
        nn.ReLU(inplace=True),
        nn.ConvTranspose2d(mid, mid, 2, stride=2, bias=False),
        nn.BatchNorm2d(mid),
        nn.ReLU(inplace=True),
        nn.ConvTranspose2d(mid, 1, 2, stride=2),
    )


class DBNet(nn.Module):
    def __init__(
        self,
        backbone: str = "mobilenet_v3_small",
        width_mult: float = 1.0,
        fpn_channels: int = 64,
        head_channels: int = 32,
        k: float = 50.0,
        line_channels: int = 0,
    ):
        super().__init__()
        self.backbone = Backbone(backbone, width_mult)
        self.fpn = FeaturePyramidNetwork(self.backbone.channels, fpn_channels)
        # Levels are summed at stride 4 (not concatenated): 4x cheaper head, same receptive field.
        self.smooth = nn.Sequential(
            nn.Conv2d(fpn_channels, fpn_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(fpn_channels),
            nn.ReLU(inplace=True),
        )
        self.prob_head = _up_head(fpn_channels, head_channels)
        self.thresh_head = _up_head(fpn_channels, head_channels)
        self.line_head = _up_head(fpn_channels, line_channels) if line_channels else None
        self.k = k
        self.register_buffer("mean", torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGE_STD).view(1, 3, 1, 1), persistent=False)
        for head in (self.prob_head, self.line_head):  # start near "no text": stabler early training
            if head is not None:
                nn.init.constant_(head[-1].bias, -2.0)  # type: ignore[arg-type]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std  # type: ignore[operator]
        feats = self.backbone(x)
        pyramid = self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))
        levels = list(pyramid.values())
        size = levels[0].shape[-2:]
        fused = levels[0]
        for lvl in levels[1:]:
            fused = fused + F.interpolate(lvl, size=size, mode="nearest")
        return self.smooth(fused)

    def forward(self, x: torch.Tensor, with_threshold: bool | None = None) -> dict[str, torch.Tensor]:
        """x: Bx3xHxW floats in [0, 1], H and W multiples of 32. Returns logits and maps
        (channel 0 words, channel 1 lines where the model has a line head)."""
        fused = self.features(x)
        logits = self.prob_head(fused)
        if self.line_head is not None:
            logits = torch.cat([logits, self.line_head(fused)], 1)
        out = {"prob_logits": logits, "prob": torch.sigmoid(logits)}
        if with_threshold if with_threshold is not None else self.training:
            thresh = torch.sigmoid(self.thresh_head(fused))
            out["thresh"] = thresh
            out["binary"] = torch.sigmoid(self.k * (out["prob"][:, :1] - thresh))
        return out
