"""Permutations the workers keep: written to the run folder by the rank that computed them, read
only where their values are needed (pure; no Ray).

A step's permutation is O(sum of group widths) integers. On the Ray backend rank 0 writes it to
``state/perms/perm-<step>.safetensors`` and the driver receives only the step's small progress
record, so the driver's bytes per step stay independent of the model's width. The engine keeps a
``HeldPermutation`` in its state like any permutation; its checkpoint names the file (``record``),
and only the final result (``perm.json``), a resume on the other backend, or an evaluation the
ranks no longer hold, read the values.
"""

from __future__ import annotations

from typing import Iterator, Mapping

import torch

from .. import fs
from ..checkpoint import load_checkpoint, save_checkpoint
from ..perm import perm_from_lists


def perm_path(location: str, step: int) -> str:
    return fs.join(location, "perms", f"perm-{step:06d}.safetensors")


def write_perm(location: str, step: int, perm: Mapping[str, torch.Tensor]) -> None:
    """Rank 0's record of step ``step``'s permutation (int32: a unit index fits), written atomically."""
    save_checkpoint(perm_path(location, step), {g: p.to(torch.int32) for g, p in perm.items()}, {"step": step})


def is_held_record(record) -> bool:
    """Whether a checkpoint's permutation record names a held file (``{"held": step}``) rather than
    holding the lists themselves (``{group: [indices]}``)."""
    return isinstance(record, dict) and isinstance(record.get("held"), int) and len(record) == 1


class HeldPermutation(Mapping):
    """Step ``step``'s permutation, in the file ``write_perm`` wrote under ``location``.

    Args:
        location: the run folder's state directory.
        step: the transfer step.
        sizes: group -> size, the spec's; the file is checked against it when first read (None: read
            the groups from the file).
    """

    def __init__(self, location: str, step: int, sizes: Mapping[str, int] | None):
        # absolute: a rank (another process, another working directory) may read it
        self.location, self.step, self.sizes = fs.absolute(location), step, dict(sizes or {})
        self._values: dict[str, torch.Tensor] | None = None

    @property
    def path(self) -> str:
        return perm_path(self.location, self.step)

    @property
    def record(self) -> dict:
        return {"held": self.step}

    @property
    def loaded(self) -> bool:
        return self._values is not None

    def values_now(self) -> dict[str, torch.Tensor]:
        """The permutation itself (read from its file once)."""
        if self._values is None:
            tensors, _ = load_checkpoint(self.path)
            # Checked as a saved permutation is: the groups and sizes of the spec, each a permutation.
            values = perm_from_lists({g: t.tolist() for g, t in tensors.items()}, self.sizes or None,
                                     f"{self.path}: the permutation of step {self.step}")
            self.sizes = self.sizes or {g: len(p) for g, p in values.items()}
            self._values = {g: values[g] for g in self.sizes}  # in the spec's group order
        return self._values

    def __getitem__(self, group: str) -> torch.Tensor:
        return self.values_now()[group]

    def __iter__(self) -> Iterator[str]:
        return iter(self.sizes or self.values_now())

    def __len__(self) -> int:
        return len(self.sizes or self.values_now())

    def __repr__(self) -> str:
        return f"HeldPermutation(step={self.step}, {self.path})"
