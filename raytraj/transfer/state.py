"""A transfer's progress: what the engine keeps between steps and a checkpointer writes to disk."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ..perm import Permutation


@dataclass
class TransferState:
    """Everything needed to continue a transfer after step ``step``."""

    step: int
    perms: list[Permutation]  # perms[s] = pi_s; perms[0] = identity
    val_acc: dict[int, float] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=lambda: {"grad_s": 0.0, "solve_s": 0.0, "eval_s": 0.0})
    solves: list[dict] = field(default_factory=list)
    grad_batches: int = 0  # mini-batch gradients computed so far, both models counted
    shards: dict = field(default_factory=dict)  # where a sharded pair bank keeps its checkpoint (Ray backend)


class Checkpointer(Protocol):
    """Keeps what a restart needs: the state, FGMT's pairs, and the pair bank's cached contractions
    (so that a resumed run continues bit for bit)."""

    def load(self) -> tuple[TransferState, list[tuple[dict, dict]], dict] | None: ...

    def save(self, state: TransferState, new_pairs: list[tuple[dict, dict]], cache: dict) -> None: ...
