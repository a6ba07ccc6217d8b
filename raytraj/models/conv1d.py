"""A 1-D ConvNet for sequences such as MNIST-1D: strided convs, a global max-pool, an FC head."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .blocks import classifier, init_weights


@dataclass(frozen=True)
class Conv1dConfig:
    in_channels: int = 1
    num_classes: int = 10
    channels: tuple[int, ...] = (32, 64, 64)
    kernel_size: int = 5
    stride: int = 2
    fc: tuple[int, ...] = (128,)
    batch_norm: bool = False
    init: str = "kaiming"  # or "torch" (PyTorch's default)


class Conv1dNet(nn.Module):
    def __init__(self, cfg: Conv1dConfig):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = cfg.in_channels
        for c in cfg.channels:
            layers.append(nn.Conv1d(c_in, c, cfg.kernel_size, stride=cfg.stride, padding=cfg.kernel_size // 2,
                                    bias=not cfg.batch_norm))
            if cfg.batch_norm:
                layers.append(nn.BatchNorm1d(c))
            layers.append(nn.ReLU())
            c_in = c
        layers += [nn.AdaptiveMaxPool1d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.fc, self.head = classifier(c_in, cfg.fc, cfg.num_classes)
        init_weights(self, cfg.init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.fc(self.features(x)))
