"""ResNet-18 trunk with torchvision's exact module names, state-dict keys and numerics.

Written here so that torchvision stays optional (it costs 5 GB and 5 s of import time on CPU-only
machines). A test checks identical outputs against ``torchvision.models.resnet18`` where it is installed.
"""

from __future__ import annotations

import typing
from typing import Literal

import torch
from torch import nn

from .freezing import FreezeMode, freeze_stages, keep_frozen_norms_in_eval


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: two 3x3 convs with a residual, optional 1x1 downsample."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


StemMode = Literal["imagenet", "small"]
STEMS: tuple[str, ...] = typing.get_args(StemMode)
# torchvision's ImageNet normalisation, which its weights and the MS-Celeb-1M ResNet-18 were trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ResNet18Trunk(nn.Module):
    """conv1 .. layer4 followed by global average pooling: image (B,3,H,W) -> basic feature (B,512).

    There is no ``fc``; a foreign checkpoint's ``fc.*`` keys are dropped by the weight loader.

    ``stem="imagenet"`` is torchvision's 7x7 stride-2 conv + 3x3 max-pool (/4): at FER2013's 48 px layer4 sees
    2x2 maps. ``stem="small"`` is a 3x3 stride-2 conv without max-pool (/2), so layer4 sees 3x3 at 48 px, at about
    3-4x the MACs; it keeps the module names, but ``conv1.weight`` is 3x3, so ImageNet/MS-Celeb stems do not load.
    """

    num_features = 512
    input_mean, input_std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(self, stem: str = "imagenet") -> None:
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
        self.stem = stem
        self.inplanes = 64
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=2, padding=1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(64, stride=1)
        self.layer2 = self._make_layer(128, stride=2)
        self.layer3 = self._make_layer(256, stride=2)
        self.layer4 = self._make_layer(512, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.reset_parameters()

    def _make_layer(self, planes: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        layers = [BasicBlock(self.inplanes, planes, stride, downsample), BasicBlock(planes, planes)]
        self.inplanes = planes
        return nn.Sequential(*layers)

    def reset_parameters(self) -> None:
        """torchvision's initialisation (He fan-out for convs, unit BN)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def stages(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def freeze(self, mode: FreezeMode) -> None:
        """Train everything (``none``), nothing (``all``) or only layer4 (``all_but_last``); frozen batch norms
        keep their running statistics (see :mod:`fdrl.models.freezing`)."""
        freeze_stages(self, self.stages, mode)
        self.train(self.training)

    def train(self, mode: bool = True) -> ResNet18Trunk:
        super().train(mode)
        keep_frozen_norms_in_eval(self)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)  # (B, 512)
