"""The engine's matcher on the Ray backend: one command to the worker group per step.

The command carries the step number, the settings and the changes from the permutation the ranks
hold to the step's starting one (nothing on an undisturbed run: the ranks hold the permutation they
returned). With a run folder, rank 0 writes the step's permutation into it (``transfer/held.py``)
and the answer carries the solver's statistics only, so the driver's bytes per step do not grow
with the model; without one, the answer carries the changes the step made as well. FGMT's pair
bank lives on the ranks, sharded by tensor, and each rank checkpoints its shard after each step.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..perm import identity_permutation
from ..transfer.bank_shard import apply_diff, perm_diff, shard_record
from ..transfer.held import HeldPermutation
from .group import GroupLost


class SpmdMatcher:
    def __init__(self, backend):
        self.b = backend
        self.record: dict = {}  # the shard checkpoint the last finished step wrote
        self.pair_steps: list[list[int]] = []  # [step, ranks that wrote its pair files]
        self.added = 0  # FGMT steps whose pairs the shards hold
        self.synced = self._identity()  # the permutation the ranks hold, when this process knows its values
        self.synced_step = None  # else the step whose permutation rank 0 wrote to the run folder

    def _identity(self) -> dict[str, np.ndarray]:
        return {g: p.numpy() for g, p in identity_permutation(self.b.spec).items()}

    # -- recovery ------------------------------------------------------------------------------------
    def restore(self, pairs, cache, shards):
        if pairs or cache:  # a run begun on the local backend, resumed here
            shards = self._seed_from_local(pairs, cache)
        self.record = dict(shards)
        self.pair_steps = list(shards.get("pairs", []))
        self.added = len(self.pair_steps)
        if shards:
            self._command("restore", {"record": self.record})

    def _seed_from_local(self, pairs, cache) -> dict:
        """Write the pairs checkpointed by the local backend as one writer's shard files (one-off)."""
        if self.b.state_dir is None:
            raise RuntimeError("resuming a local-backend FGMT run on Ray needs the run folder")
        from ..checkpoint import save_checkpoint
        from ..transfer.bank_shard import cache_path, pair_path

        loc = self.b.state_dir
        for step, (target, source) in enumerate(pairs, start=1):
            tensors = {f"target.{k}": v for k, v in target.items()}
            tensors.update({f"source.{k}": v for k, v in source.items()})
            save_checkpoint(pair_path(loc, step, 0), tensors, {"step": step})
        save_checkpoint(cache_path(loc, len(pairs), 0), cache, {"step": len(pairs)})
        return shard_record(loc, [[step, 1] for step in range(1, len(pairs) + 1)], len(pairs), 1)

    def after_restart(self) -> None:
        """A new group holds nothing: identity permutations and, for FGMT, the last checkpoint."""
        self.synced, self.synced_step = self._identity(), None
        if self.added:
            if not self.record:
                raise RuntimeError("a rank holding FGMT pairs was lost and this run keeps no checkpoint; run it "
                                   "through `raytraj transfer` (which writes state/) to survive worker loss")
            self.b.group.command("restore", {"record": self.record})

    def _command(self, kind: str, args: dict):
        for _ in range(self.b.max_recoveries + 1):
            try:
                self.b._count(args)
                out = self.b.group.command(kind, args)
                self.b._count(out)
                return out
            except GroupLost:
                self.b.recover()
        raise RuntimeError("the worker group kept failing")

    def snapshot(self):
        return [], {}, self.record

    def memory(self):
        return {}  # the bank lives on the ranks, sharded

    # -- a step ----------------------------------------------------------------------------------------
    def _start(self, prev) -> dict:
        """How the command names the step's starting permutation: no change from what the ranks hold, the
        changes from it, or (values the ranks hold but this process never read) the permutation itself."""
        if isinstance(prev, HeldPermutation) and prev.step == self.synced_step and prev.location == self.b.state_dir:
            return {"diff": {}}
        start = {g: p.cpu().numpy() for g, p in prev.items()}
        if self.synced is None:
            return {"diff": {}, "perm": start}
        return {"diff": perm_diff(self.synced, start)}

    def step(self, s, prev, requests, count, *, fresh, init, options):
        b = self.b
        persist = b.state_dir if (not fresh and b.state_dir is not None) else None
        if init is not None and init is not prev and any(not torch.equal(init[g].cpu(), prev[g].cpu()) for g in prev):
            raise ValueError("the Ray backend warm-starts from the previous step's permutation only")
        for attempt in range(b.max_recoveries + 1):
            # With a run folder, rank 0 writes the step's permutation there and the answer is its record only.
            args = {"s": s, "ts": [r.t for r in requests], "count": count, **self._start(prev), "fresh": fresh,
                    "warm": init is not None, "options": dataclasses.asdict(options), "persist": persist,
                    "perms_at": b.state_dir}
            b._count(args)
            try:
                out = b.group.command("step", args)
            except GroupLost:
                if attempt == b.max_recoveries:
                    raise
                b.recover()  # FGMT: the shards go back to the last finished step's checkpoint
                continue
            b._count(out)
            if "diff" in out:
                start = {g: p.cpu().numpy().copy() for g, p in prev.items()}
                apply_diff(start, out["diff"])
                self.synced, self.synced_step = start, None
                perm = {g: torch.as_tensor(p, dtype=torch.long) for g, p in start.items()}
            else:
                perm = HeldPermutation(b.state_dir, s, b.spec.sizes)
                self.synced, self.synced_step = None, s
            b._held[s] = perm
            for old in [k for k in b._held if k <= s - 8]:
                del b._held[old]
            b._busy = out["busy"]
            if persist:
                self.pair_steps = self.pair_steps + [[s, b.n]]
                self.record = shard_record(persist, self.pair_steps, s, b.n)
            self.added += not fresh
            b.end_step()
            return perm, out["info"]
        raise AssertionError("unreachable")
