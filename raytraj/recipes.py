"""Named presets of ``raytraj ensemble --recipe``: each member's transfer settings and its
subsequent training, chosen by a ``raytraj sweep`` (the sweep and the choice are recorded in
``benchmarks/results/ensemble.md``). Options given on the command line override a preset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .config import ConfigError, from_dict


def check_finetune(finetune_epochs: int = 0, finetune_lr: float | None = None) -> None:
    """The subsequent training's settings, as ensembles and sweeps take them."""
    if finetune_epochs < 0:
        raise ConfigError(f"finetune_epochs must be >= 0 (0: no subsequent training), got {finetune_epochs}")
    if finetune_lr is not None and not (math.isfinite(finetune_lr) and finetune_lr > 0):
        raise ConfigError(f"finetune_lr must be a finite number > 0, got {finetune_lr}")


@dataclass(frozen=True)
class EnsembleRecipe:
    """A named preset of ``raytraj ensemble``'s settings (``--recipe``), checked when built.

    Args:
        transfer: TransferConfig fields of every member's transfer.
        finetune_epochs: subsequent training of every member (0: none).
        finetune_lr: its learning rate (None: the source recipe's).
        why: how the preset was chosen, for the record.
    """

    transfer: dict = field(default_factory=dict)  # TransferConfig fields
    finetune_epochs: int = 0
    finetune_lr: float | None = None  # None: the source's recipe lr
    why: str = ""

    def __post_init__(self):
        from .transfer import TransferConfig

        # unknown fields and bad values fail here, not in every trial
        from_dict(TransferConfig, self.transfer, what="recipe's transfer settings")
        check_finetune(self.finetune_epochs, self.finetune_lr)

    def options(self) -> dict:
        """The preset as CLI option destinations (``steps``, ``finetune_epochs``, ...)."""
        lr = {} if self.finetune_lr is None else {"finetune_lr": self.finetune_lr}
        return {**self.transfer, "finetune_epochs": self.finetune_epochs, **lr}


ENSEMBLE_RECIPES: dict[str, EnsembleRecipe] = {
    # A 24-trial grid (steps 10/30, grad_batches 1/4, finetune_epochs 1/2/3, finetune_lr 0.02 or the
    # source's 0.1) on MNIST-1D 200k, MLP 512-512: the best val among the trials that cost at most an
    # eighth of the source's training, so that 8 members and the source stay within 25% of 8 trainings.
    # The source's own lr beat 0.02 in every pairing; steps and grad_batches moved val by < 0.2 point.
    "fast": EnsembleRecipe(
        transfer={"steps": 10, "grad_batches": 4, "eval_every": 1, "val_subset": 1000},
        finetune_epochs=2, finetune_lr=None,
        why="transfer T=10 then 2 epochs at the source's lr: 98.46% val for 13.2 CPU s against 122 s to train",
    ),
}


def ensemble_recipe(name: str) -> EnsembleRecipe:
    if name not in ENSEMBLE_RECIPES:
        raise ConfigError(f"unknown --recipe {name!r}; choose from {', '.join(ENSEMBLE_RECIPES)}")
    return ENSEMBLE_RECIPES[name]
