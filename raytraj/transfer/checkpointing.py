"""Transfer state on disk (or object storage), so that a run killed mid-way resumes.

    OUT/state/progress.safetensors       step, every permutation so far, val accuracies, timing,
                                         and FGMT's cached cost contractions
    OUT/state/pairs-000007.safetensors   FGMT's gradient pair added at step 7 (append-only)

Pair files are written before the progress file that counts them, each atomically, so the
progress file never refers to a pair that is not on disk.
"""

from __future__ import annotations

from .. import fs
from ..checkpoint import load_checkpoint, save_checkpoint
from ..perm import perm_from_lists, perm_to_lists
from .engine import TransferState

PROGRESS = "progress.safetensors"


class RunCheckpointer:
    def __init__(self, location: str):
        self.location = location
        self.pair_steps: list[int] = []  # steps whose pair file is on disk

    def exists(self) -> bool:
        return fs.exists(fs.join(self.location, PROGRESS))

    def _pair_path(self, step: int) -> str:
        return fs.join(self.location, f"pairs-{step:06d}.safetensors")

    def save(self, state: TransferState, new_pairs, cache: dict) -> None:
        if new_pairs:
            tensors = {}
            for i, (target, source) in enumerate(new_pairs):
                tensors.update({f"{i}.target.{k}": v for k, v in target.items()})
                tensors.update({f"{i}.source.{k}": v for k, v in source.items()})
            save_checkpoint(self._pair_path(state.step), tensors, {"pairs": len(new_pairs)})
        info = {
            "step": state.step,
            "perms": [perm_to_lists(p) for p in state.perms],
            "val_acc": {str(k): v for k, v in state.val_acc.items()},
            "timing": state.timing,
            "solves": state.solves,
            "grad_batches": state.grad_batches,
            "shards": state.shards,
            "pair_steps": sorted(set(self.pair_steps) | ({state.step} if new_pairs else set())),
        }
        save_checkpoint(fs.join(self.location, PROGRESS), cache, info)
        self.pair_steps = info["pair_steps"]

    def load(self):
        if not self.exists():
            return None
        cache, info = load_checkpoint(fs.join(self.location, PROGRESS))
        self.pair_steps = info["pair_steps"]
        pairs = []
        for step in info["pair_steps"]:
            tensors, meta = load_checkpoint(self._pair_path(step))
            for i in range(meta["pairs"]):
                target = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"{i}.target.")}
                source = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"{i}.source.")}
                pairs.append((target, source))
        state = TransferState(
            step=info["step"],
            perms=[perm_from_lists(p) for p in info["perms"]],
            val_acc={int(k): v for k, v in info["val_acc"].items()},
            timing=info["timing"],
            solves=info["solves"],
            grad_batches=info["grad_batches"],
            shards=info.get("shards", {}),
        )
        return state, pairs, cache
