"""The training recipe, recorded with every trajectory."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import ConfigError


@dataclass(frozen=True)
class TrainConfig:
    """The training recipe: SGD with momentum, cosine learning rate after an optional linear warmup.

    Args:
        epochs: passes over the training split.
        batch_size: mini-batch size.
        lr: the initial learning rate.
        momentum: SGD momentum, in [0, 1).
        weight_decay: L2 weight decay.
        warmup_epochs: epochs of linear warmup before the cosine schedule.
        save_every: iterations between recorded checkpoints (0: one per epoch).
    """

    epochs: int = 20
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.0
    save_every: int = 0  # iterations between checkpoints; 0 checkpoints every epoch

    def __post_init__(self):
        # Checked here, not where used: a bad value would otherwise surface deep in the loop as an
        # IndexError, a torch ValueError, or a "complete" store holding only the init.
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "momentum", "weight_decay", "warmup_epochs"):
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(f"--{name.replace('_', '-')} must be a finite number, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"--lr must be > 0, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"--momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise ConfigError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        if self.warmup_epochs < 0:
            raise ConfigError(f"--warmup-epochs must be >= 0, got {self.warmup_epochs}")
        if self.save_every < 0:
            raise ConfigError(f"--save-every must be >= 0 (0: every epoch), got {self.save_every}")
