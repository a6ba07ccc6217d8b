"""A ReLU MLP on flattened inputs (the paper's 2-MLP, with the ReLU its official code lacks)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass(frozen=True)
class MLPConfig:
    in_features: int = 64
    num_classes: int = 10
    hidden: tuple[int, ...] = (512, 512)
    bias: bool = True


class MLP(nn.Module):
    def __init__(self, cfg: MLPConfig):
        super().__init__()
        widths = (cfg.in_features, *cfg.hidden)
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=cfg.bias) for a, b in zip(widths[:-1], widths[1:]))
        self.head = nn.Linear(widths[-1], cfg.num_classes, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.layers:
            x = torch.relu(layer(x))
        return self.head(x)
