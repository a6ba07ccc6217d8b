"""A VGG-style ConvNet with the paper's Conv8 shape.

Eight 3x3 convs (64, 64 | 128, 128 | 256, 256 | 512, 512) with 2x2 max-pools between stages,
a global max-pool to a 1x1 feature (the official code's 4x4 pool on 32-px inputs, which also
fits small inputs such as 8x8 digits), then two hidden FC layers and the classifier head.
A pool is skipped once the feature map is 1x1, so tiny inputs work.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .blocks import classifier, init_weights


@dataclass(frozen=True)
class ConvConfig:
    in_channels: int = 3
    num_classes: int = 10
    input_size: int = 32
    width: float = 1.0
    channels: tuple[int, ...] = (64, 64, 128, 128, 256, 256, 512, 512)
    pool_after: tuple[int, ...] = (1, 3, 5)
    fc: tuple[int, ...] = (256, 256)
    batch_norm: bool = False
    init: str = "kaiming"  # or "torch": PyTorch's default init, which the official code uses


def _scaled(c: int, width: float) -> int:
    return max(1, int(round(c * width)))


class ConvNet(nn.Module):
    def __init__(self, cfg: ConvConfig):
        super().__init__()
        layers: list[nn.Module] = []
        c_in, size = cfg.in_channels, cfg.input_size
        for i, c in enumerate(cfg.channels):
            c_out = _scaled(c, cfg.width)
            layers.append(nn.Conv2d(c_in, c_out, 3, padding=1, bias=not cfg.batch_norm))
            if cfg.batch_norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.ReLU())
            if i in cfg.pool_after and size >= 2:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            c_in = c_out
        layers += [nn.AdaptiveMaxPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.fc, self.head = classifier(c_in, tuple(_scaled(f, cfg.width) for f in cfg.fc), cfg.num_classes)
        init_weights(self, cfg.init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.fc(self.features(x)))
