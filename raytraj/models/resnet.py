"""A CIFAR-style ResNet-20: 3 stages of 3 BasicBlocks, BatchNorm, projection shortcuts.

Widths are 16, 32, 64 times ``width``. A block whose stride or width changes gets a 1x1 conv +
BatchNorm shortcut (option B), so each stage's residual stream is one permutation group.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .blocks import init_weights


@dataclass(frozen=True)
class ResNet20Config:
    in_channels: int = 3
    num_classes: int = 10
    width: float = 1.0
    blocks_per_stage: int = 3
    init: str = "kaiming"  # or "torch" (PyTorch's default)


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    def __init__(self, cfg: ResNet20Config):
        super().__init__()
        widths = [max(1, int(round(w * cfg.width))) for w in (16, 32, 64)]
        self.stem = nn.Sequential(
            nn.Conv2d(cfg.in_channels, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        stages = []
        c_in = widths[0]
        for i, w in enumerate(widths):
            blocks = []
            for b in range(cfg.blocks_per_stage):
                blocks.append(BasicBlock(c_in, w, stride=2 if (i > 0 and b == 0) else 1))
                c_in = w
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(c_in, cfg.num_classes)
        init_weights(self, cfg.init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.stages(self.stem(x))).flatten(1))
