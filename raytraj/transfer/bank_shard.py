"""One worker's share of a pair bank: the ``PairBank`` terms of the tensors it owns (pure; no Ray).

A shard is a ``PairBank`` fed only the owned tensors of each pair, so its cost terms, caches
and their refresh schedule are exactly those of the same terms in an unsharded bank: summing
every shard's terms of a group in term order gives the unsharded bank's ``cost`` bit for bit
(``transfer/collective.py`` does that on each group's solver rank). A shard writes its pairs and
caches to the run folder's ``state/shards/`` and reads them back, so a lost rank (or a resumed
run, with any rank count) rebuilds its shard. Permutations travel as small diffs (``perm_diff``).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from .. import fs
from ..checkpoint import load_checkpoint, save_checkpoint
from ..perm import PairBank, PermutationSpec

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
    def __init__(self, spec: PermutationSpec, owned: Sequence[str], normalize: bool, device=None,
                 dtype: torch.dtype = torch.float32):
        self.spec, self.owned, self.normalize, self.device, self.dtype = spec, set(owned), normalize, device, dtype
        self.bank = PairBank(spec, normalize=normalize, device=device, dtype=dtype)

    def reset(self) -> None:
        self.bank = PairBank(self.spec, normalize=self.normalize, device=self.device, dtype=self.dtype)

    def add(self, target: Mapping[str, torch.Tensor], source: Mapping[str, torch.Tensor]) -> None:
        mine = [n for n in target if n in self.owned]
        if mine:
            self.bank.add({n: target[n] for n in mine}, {n: source[n] for n in mine})

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

    def restore(self, record: dict, rank: tuple[int, int] | None = None) -> None:
        """Rebuild the bank from a shard record (written by any number of workers). ``rank``
        (index, world size): files written by a group of this size are this rank's own, so only those are read."""
        self.reset()
        pairs, cache = read_shards(record, self.owned, rank)
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


def read_shards(record: dict, names=None, rank: tuple[int, int] | None = None) -> tuple[list[tuple[dict, dict]], dict]:
    """The pairs and caches a shard record names, limited to tensors ``names`` (all when None).

    With ``rank`` = (index, world size), files written by a group of that size are read only for
    that index: the shard plan depends on the world size alone, so they hold all of its tensors.
    """
    if not record:
        return [], {}
    keep = (lambda n: True) if names is None else (lambda n: n in names)
    loc = record["location"]

    def writers(count: int) -> range:
        return range(rank[0], rank[0] + 1) if rank is not None and count == rank[1] else range(count)

    pairs = []
    for step, workers in record["pairs"]:
        target, source = {}, {}
        for w in writers(workers):
            tensors, _ = load_checkpoint(pair_path(loc, step, w))
            for key, v in tensors.items():
                side, name = key.split(".", 1)
                if keep(name):
                    (target if side == "target" else source)[name] = v
        pairs.append((target, source))
    cache = {}
    step, workers = record["cache"]
    for w in writers(workers):
        tensors, _ = load_checkpoint(cache_path(loc, step, w))
        cache.update({k: v for k, v in tensors.items() if keep(_term_tensor(k))})
    return pairs, cache
