"""Named presets of ``raytraj ensemble --recipe``: each member's transfer settings and its
subsequent training, chosen by a ``raytraj sweep`` (the sweep and the choice are recorded in
``benchmarks/results/ensemble-200k.md``). Options given on the command line override a preset.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import ConfigError


@dataclass(frozen=True)
class EnsembleRecipe:
    transfer: dict = field(default_factory=dict)  # TransferConfig fields
    finetune_epochs: int = 0
    finetune_lr: float | None = None  # None: the source's recipe lr
    why: str = ""

    def options(self) -> dict:
        """The preset as CLI option destinations (``steps``, ``finetune_epochs``, ...)."""
        return {**self.transfer, "finetune_epochs": self.finetune_epochs, "finetune_lr": self.finetune_lr}


ENSEMBLE_RECIPES: dict[str, EnsembleRecipe] = {
    "fast": EnsembleRecipe(
        transfer={"steps": 10, "grad_batches": 1, "eval_every": 1, "val_subset": 1000},
        finetune_epochs=2, finetune_lr=0.02,
        why="TO BE SET FROM THE SWEEP",
    ),
}


def ensemble_recipe(name: str) -> EnsembleRecipe:
    if name not in ENSEMBLE_RECIPES:
        raise ConfigError(f"unknown --recipe {name!r}; choose from {', '.join(ENSEMBLE_RECIPES)}")
    return ENSEMBLE_RECIPES[name]
