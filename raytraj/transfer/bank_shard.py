"""One worker's share of a pair bank: the ``PairBank`` terms of the tensors it owns (pure; no Ray).

A shard is a ``PairBank`` fed only the owned tensors of each pair, so its cost terms, caches
and their refresh schedule are exactly those of the same terms in an unsharded bank. It keeps
a replica of the current permutation, updated by small diffs, and can

* contract its terms of a group into (term index, n x n matrix) parts,
* reduce every shard's parts of a group, in term order, into the group's cost matrix and solve
  its LAP: the sum is the unsharded bank's ``cost`` bit for bit,
* write its pairs and caches to the run folder's ``state/shards/`` and read them back, so a
  lost worker (or a resumed run, with any worker count) rebuilds its shard.
"""

from __future__ import annotations

import time
from typing import Mapping, Sequence

import numpy as np
import torch

from .. import fs
from ..checkpoint import load_checkpoint, save_checkpoint
from ..perm import PairBank, PermutationSpec, identity_permutation, solve_laps_serial
from ..perm.descent import assignment_gain, sum_terms

Diff = dict[str, tuple[np.ndarray, np.ndarray]]  # group -> (changed positions, their new values)


def perm_diff(old: Mapping[str, np.ndarray], new: Mapping[str, np.ndarray]) -> Diff:
    """What changed from ``old`` to ``new``: a few integers per moved unit."""
    out = {}
    for g, p in new.items():
        idx = np.flatnonzero(old[g] != p)
        if len(idx):
            out[g] = (idx.astype(np.int32), np.asarray(p)[idx].astype(np.int32))
    return out


def apply_diff(perm: dict, diff: Diff) -> None:
    for g, (idx, val) in diff.items():
        p = perm[g]
        if isinstance(p, torch.Tensor):
            # np.array: the arrays arrive read-only from Ray's object store
            index = torch.as_tensor(np.array(idx), dtype=torch.long, device=p.device)
            p[index] = torch.as_tensor(np.array(val), dtype=p.dtype, device=p.device)
        else:
            p[idx] = val


class BankShard:
    def __init__(self, spec: PermutationSpec, owned: Sequence[str], normalize: bool, device=None):
        self.spec, self.owned, self.normalize, self.device = spec, set(owned), normalize, device
        self.bank = PairBank(spec, normalize=normalize, device=device)
        self.perm = {g: p.to(device) if device is not None else p for g, p in identity_permutation(spec).items()}

    def reset(self) -> None:
        self.bank = PairBank(self.spec, normalize=self.normalize, device=self.device)

    def sync(self, diff: Diff) -> None:
        apply_diff(self.perm, diff)

    def add(self, target: Mapping[str, torch.Tensor], source: Mapping[str, torch.Tensor]) -> None:
        mine = [n for n in target if n in self.owned]
        if mine:
            self.bank.add({n: target[n] for n in mine}, {n: source[n] for n in mine})

    def parts(self, groups: Sequence[str]) -> list[list[tuple[int, torch.Tensor]]]:
        """Per group, this shard's cost terms under the replica permutation (on the CPU, to ship)."""
        return [[(i, c.cpu()) for i, c in self.bank.cost_terms(g, self.perm)] for g in groups]

    def solve(self, group: str, parts: Sequence[list[tuple[int, torch.Tensor]]]):
        """Reduce every shard's parts of ``group`` in term order and solve its LAP.

        Returns (diff of the group's assignment, value of the new one, value of the current one,
        LAP seconds): only O(n) numbers leave the worker.
        """
        terms = sorted((i, c) for part in parts for i, c in part)
        if len({i for i, _ in terms}) != len(terms):
            raise RuntimeError(f"group {group}: two shards sent the same cost term; the shard plan is broken")
        a = sum_terms(self.spec.sizes[group], [c for _, c in terms]).double().numpy()
        t0 = time.perf_counter()
        new = solve_laps_serial([a])[0]
        lap_s = time.perf_counter() - t0
        p_new, value_new, value_old = assignment_gain(a, self.perm[group], new)
        old = self.perm[group].cpu().numpy()
        return perm_diff({group: old}, {group: p_new}), value_new, value_old, lap_s

    def objective(self) -> float:
        """This shard's share of the permuted part of sum over pairs of <target, perm(source)>."""
        return self.bank.permuted_objective(self.perm) if self.bank.num_pairs else 0.0

    def constant(self) -> float:
        """This shard's share of the part no permutation touches."""
        return self.bank.constant

    # -- checkpoint ----------------------------------------------------------------------------
    def save(self, location: str, worker: int, step: int, target: Mapping[str, torch.Tensor] | None,
             source: Mapping[str, torch.Tensor] | None) -> None:
        """This step's pair (owned tensors) and the shard's caches, each file written atomically."""
        if target is not None:
            tensors = {f"target.{n}": target[n].contiguous() for n in target if n in self.owned}
            tensors.update({f"source.{n}": source[n].contiguous() for n in source if n in self.owned})
            save_checkpoint(pair_path(location, step, worker), tensors, {"step": step})
        save_checkpoint(cache_path(location, step, worker), self.bank.cache_state(), {"step": step})
        stale = cache_path(location, step - 2, worker)  # the last two stay: progress may still name step - 1
        if step >= 2 and fs.exists(stale):
            fs.remove(stale)

    def restore(self, record: dict) -> None:
        """Rebuild the bank from a shard record (written by any number of workers)."""
        self.reset()
        pairs, cache = read_shards(record, self.owned)
        for target, source in pairs:
            self.add(target, source)
        self.bank.load_cache_state(cache)


def pair_path(location: str, step: int, worker: int) -> str:
    return fs.join(location, "shards", f"pairs-{step:06d}-w{worker}.safetensors")


def cache_path(location: str, step: int, worker: int) -> str:
    return fs.join(location, "shards", f"cache-{step:06d}-w{worker}.safetensors")


def shard_record(location: str, pairs: list[list[int]], cache_step: int, cache_workers: int) -> dict:
    """What a checkpoint names: [step, workers that wrote it] per pair, and the caches' step and writers.

    Each step records its own writer count, so a run resumed with another worker count reads the
    old steps as they were written."""
    return {"location": location, "pairs": [list(p) for p in pairs], "cache": [cache_step, cache_workers]}


def _term_tensor(key: str) -> str:
    """'value/NAME:AXIS' or 'at/NAME:AXIS/DIM' -> NAME."""
    return key.split("/")[1].rsplit(":", 1)[0]


def read_shards(record: dict, names=None) -> tuple[list[tuple[dict, dict]], dict]:
    """The pairs and caches a shard record names, limited to tensors ``names`` (all when None)."""
    if not record:
        return [], {}
    keep = (lambda n: True) if names is None else (lambda n: n in names)
    loc = record["location"]
    pairs = []
    for step, workers in record["pairs"]:
        target, source = {}, {}
        for w in range(workers):
            tensors, _ = load_checkpoint(pair_path(loc, step, w))
            for key, v in tensors.items():
                side, name = key.split(".", 1)
                if keep(name):
                    (target if side == "target" else source)[name] = v
        pairs.append((target, source))
    cache = {}
    step, workers = record["cache"]
    for w in range(workers):
        tensors, _ = load_checkpoint(cache_path(loc, step, w))
        cache.update({k: v for k, v in tensors.items() if keep(_term_tensor(k))})
    return pairs, cache
