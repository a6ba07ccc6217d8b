"""Transfer settings, with paper-faithful defaults except where noted."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import ConfigError
from ..trajectory import SCHEDULES

METHODS = ("fgmt", "gmt", "naive", "oracle")


@dataclass(frozen=True)
class TransferConfig:
    method: str = "fgmt"
    steps: int | None = 30  # T; None follows the recorded steps (schedule "actual")
    schedule: str = "cosine"  # cosine | uniform | actual
    grad_batches: int = 1  # mini-batches averaged per gradient (the paper's B = batch_size x this)
    batch_size: int = 128
    seed: int = 0  # batch order, BatchNorm batches and the solver's group order all derive from it
    # Warm-start each solve from the previous step's permutation. The official code cold-starts
    # from identity; warm starts are cheaper and keep permutations from jumping between steps.
    warm_start: bool = True
    normalize: bool = False
    max_sweeps: int = 100
    tol: float = 1e-7
    eval_every: int = 1  # evaluate every k steps on val (0: only the last step)
    bn_batches: int = 10  # training batches to recalibrate BatchNorm stats after transfer
    eval_batch_size: int = 512

    def __post_init__(self):
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}; choose one of {METHODS}")
        if self.schedule not in (*SCHEDULES, "actual"):
            raise ConfigError(f"unknown schedule {self.schedule!r}; choose one of {(*SCHEDULES, 'actual')}")
        if self.steps is None and self.schedule != "actual":
            raise ConfigError("a linear schedule needs steps >= 1")
        for name in ("grad_batches", "batch_size", "max_sweeps", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("eval_every", "bn_batches"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}")

    def evaluates(self, step: int, last: int) -> bool:
        return step == last or (self.eval_every > 0 and step % self.eval_every == 0)
