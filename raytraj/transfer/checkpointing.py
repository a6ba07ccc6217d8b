"""Transfer state on disk (or object storage), so that a run killed mid-way resumes.

    OUT/state/progress.safetensors       step, timing, FGMT's cached cost contractions, and the
                                         records of the steps since the last chunk
    OUT/state/chunk-000000.json          the records (permutations, val accuracies, solver stats,
                                         pair steps) of CHUNK steps, written once (append-only)
    OUT/state/pairs-000007.safetensors   FGMT's gradient pair added at step 7 (append-only)

Each save rewrites only the progress file, whose size is bounded by CHUNK steps, so a run of T
steps writes O(T) bytes in all; rewriting every permutation at every step cost O(T^2) (T=100000
reached step 1882 in 300 s). Chunk and pair files are written before the progress file that
counts them, each atomically, so the progress file never refers to a file that is not on disk.

FGMT's cached contractions are n x n float64 per term: for wide layers they outweigh the step's
pair (67 MB against 34 MB per step at MLP width 2048), and rewriting them at every step made the
bytes written per step O(n^2). So the progress file, which holds them, is written only once the
pairs written since its last write weigh as much as the caches (and at the end): the bytes per
step stay within twice the pair's. A resumed run continues from the last progress file and redoes
the steps after it, which recompute the same pairs (every batch is seeded), so it stays bit-exact.
"""

from __future__ import annotations

from .. import fs
from ..checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ..perm import perm_from_lists, perm_to_lists
from ..runfolder import PROGRESS
from .held import HeldPermutation, is_held_record
from .state import TransferState
CHUNK = 256  # steps per chunk file
CACHE_WEIGHT = 1.0  # the progress file waits until the pairs since the last one weigh this x the caches


class RunCheckpointer:
    def __init__(self, location: str, chunk: int | None = None, sizes: dict[str, int] | None = None):
        """``sizes``: the permutation groups and sizes the saved permutations must have (the spec's)."""
        self.location = location
        self.sizes = sizes
        self.chunk = chunk or CHUNK
        self.pair_steps: list[int] = []  # steps whose pair file is on disk
        self._chunks = 0  # chunk files on disk
        self._flushed = {"perms": 0, "solves": 0, "val_acc": set(), "pair_steps": 0}
        self._pair_bytes = 0  # pair bytes written since the last progress file

    def exists(self) -> bool:
        return fs.exists(fs.join(self.location, PROGRESS))

    def _pair_path(self, step: int) -> str:
        return fs.join(self.location, f"pairs-{step:06d}.safetensors")

    def _chunk_path(self, index: int) -> str:
        return fs.join(self.location, f"chunk-{index:06d}.json")

    def _tail(self, state: TransferState) -> dict:
        """The records not yet in a chunk file."""
        f = self._flushed
        return {
            # A permutation the Ray ranks wrote to state/perms is named, not copied (see held.py).
            "perms": [p.record if isinstance(p, HeldPermutation) else perm_to_lists(p)
                      for p in state.perms[f["perms"]:]],
            "solves": state.solves[f["solves"]:],
            "val_acc": {str(k): v for k, v in state.val_acc.items() if k not in f["val_acc"]},
            "pair_steps": self.pair_steps[f["pair_steps"]:],
        }

    def _flush(self, part: dict) -> None:
        """Count the records of a chunk file as on disk, so that later tails leave them out."""
        f = self._flushed
        f["perms"] += len(part["perms"])
        f["solves"] += len(part["solves"])
        f["val_acc"] |= {int(k) for k in part["val_acc"]}
        f["pair_steps"] += len(part["pair_steps"])

    def save(self, state: TransferState, new_pairs, cache: dict, final: bool = False) -> None:
        """Write this step's pairs; write the progress file when due (see above), and always when ``final``."""
        if new_pairs:
            tensors = {}
            for i, (target, source) in enumerate(new_pairs):
                tensors.update({f"{i}.target.{k}": v for k, v in target.items()})
                tensors.update({f"{i}.source.{k}": v for k, v in source.items()})
            save_checkpoint(self._pair_path(state.step), tensors, {"pairs": len(new_pairs)})
            if state.step not in self.pair_steps:
                self.pair_steps.append(state.step)
            self._pair_bytes += sum(_nbytes(t) for pair in new_pairs for side in pair for t in side.values())
        if not final and self._pair_bytes < CACHE_WEIGHT * sum(_nbytes(t) for t in cache.values()):
            return  # the caches outweigh the pairs written since the last progress file: not yet
        self._pair_bytes = 0
        tail = self._tail(state)
        if len(tail["perms"]) >= self.chunk:
            fs.atomic_write_json(self._chunk_path(self._chunks), tail)
            self._chunks += 1
            self._flush(tail)
            tail = self._tail(state)
        # shards: where the Ray backend's workers keep their pair-bank checkpoint (see bank_shard.py)
        info = {"step": state.step, "timing": state.timing, "grad_batches": state.grad_batches,
                "chunks": self._chunks, "tail": tail, "shards": state.shards}
        save_checkpoint(fs.join(self.location, PROGRESS), cache, info)

    def _read(self) -> tuple[dict, dict, dict]:
        """(cached contractions, progress info, every record so far) from the progress, chunk and tail."""
        cache, info = load_checkpoint(fs.join(self.location, PROGRESS))
        try:
            records = {"perms": [], "solves": [], "val_acc": {}, "pair_steps": []}
            if "chunks" not in info:  # written by raytraj before chunks: every record in the progress file
                info = {**info, "chunks": 0, "tail": {k: info[k] for k in records}}
            for index in range(info["chunks"]):
                part = fs.read_json(self._chunk_path(index))
                self._merge(records, part)
                self._flush(part)
            self._chunks = info["chunks"]
            self._merge(records, info["tail"])
        except (KeyError, TypeError, FileNotFoundError) as e:
            raise CheckpointError(f"{self.location} holds damaged transfer progress ({e!r}); delete the run "
                                  "folder to start over") from e
        return cache, info, records

    def evaluations(self) -> dict[int, float]:
        """Val accuracy of every step evaluated so far ({} before the first save); reads no pairs."""
        if not self.exists():
            return {}
        return {int(k): v for k, v in RunCheckpointer(self.location, self.chunk)._read()[2]["val_acc"].items()}

    def load(self):
        if not self.exists():
            return None
        cache, info, records = self._read()
        # Pair files of steps after the progress file's (written before a crash) are redone: left out.
        self.pair_steps = [p for p in records["pair_steps"] if p <= info["step"]]
        pairs = []
        for step in self.pair_steps:
            tensors, meta = load_checkpoint(self._pair_path(step))
            for i in range(meta["pairs"]):
                target = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"{i}.target.")}
                source = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"{i}.source.")}
                pairs.append((target, source))
        state = TransferState(
            step=info["step"],
            perms=[HeldPermutation(self.location, p["held"], self.sizes) if is_held_record(p) else
                   perm_from_lists(p, self.sizes, f"{self.location}: the saved permutation of step {s}")
                   for s, p in enumerate(records["perms"])],
            val_acc={int(k): v for k, v in records["val_acc"].items()},
            timing=info["timing"],
            solves=records["solves"],
            grad_batches=info["grad_batches"],
            shards=info.get("shards", {}),
        )
        return state, pairs, cache

    @staticmethod
    def _merge(records: dict, part: dict) -> None:
        records["perms"] += part["perms"]
        records["solves"] += part["solves"]
        records["val_acc"].update(part["val_acc"])
        records["pair_steps"] += part["pair_steps"]


def _nbytes(t) -> int:
    return t.numel() * t.element_size()
