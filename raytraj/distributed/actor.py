"""The Ray actor that holds a model replica, its own copy of the data, and a shard of the pair bank.

It wraps the same ``TransferWorker`` the local backend runs in-process and a ``BankShard`` (the
``PairBank`` terms of the tensors it owns), so every number it computes is computed by the same
code as on one machine. It loads the data itself from the data config (same ``load_data``, same
seeded split), so the training set never travels through the object store. Torch threads follow
the CPUs the actor holds (Ray sets OMP_NUM_THREADS=1 in workers), and the model goes to ``cuda``
when the actor holds a GPU.

Gradient reduce-scatter and cost-matrix reduction go worker to worker: the driver passes object
references, never the tensors, and each receiving worker adds the parts in worker (or term) order.
"""

from __future__ import annotations

import os
import time
from functools import wraps

import ray
import torch

from ..data import Dataset, load_data
from ..perm import solve_laps_serial
from ..perm.matching import block_scores
from ..runtime import set_torch_threads
from ..transfer.bank_shard import BankShard
from ..transfer.worker import TransferWorker, mean_gradients
from .trajectory import ObjectStoreTrajectory


def nbytes(obj) -> int:
    """Payload size of what crosses the wire: tensor and array bytes, 8 per scalar, 100 per object ref."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if hasattr(obj, "nbytes"):
        return int(obj.nbytes)
    if isinstance(obj, ray.ObjectRef):
        return 100
    if isinstance(obj, dict):
        return sum(nbytes(k) + nbytes(v) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return sum(nbytes(v) for v in obj)
    if isinstance(obj, str):
        return len(obj)
    return 8


def _busy(method):
    @wraps(method)
    def timed(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return method(self, *args, **kwargs)
        finally:
            self.busy_s += time.perf_counter() - t0
    return timed


# A dead worker lost its bank shard: the backend rebuilds and restores it (no restarts by Ray).
# ``describe`` runs in a group of its own, so that a worker busy with a long task still answers
# the backend's liveness probe at once.
@ray.remote(max_restarts=0, concurrency_groups={"probe": 1})
class GradientWorker:
    def __init__(self, index: int, model_cfg, data_cfg, spec, trajectory, target_init, settings: dict, plan,
                 normalize: bool):
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
        self.threads = set_torch_threads(max(1, int(cpus)))
        self.gpu_ids = [str(g) for g in ray.get_gpu_ids()]
        device = "cuda" if self.gpu_ids and torch.cuda.is_available() else "cpu"
        data = data_cfg if isinstance(data_cfg, Dataset) else load_data(data_cfg)
        self.worker = TransferWorker(model_cfg, data, spec, trajectory, target_init, device=device, **settings)
        self.index, self.plan = index, plan
        self.shard = BankShard(spec, plan.owned(index), normalize, device=self.worker.device)
        self.busy_s = 0.0
        self.exchanged = 0  # bytes received from other workers
        self._last_pair = None

    def _points(self, points):
        if points and isinstance(self.worker.trajectory, ObjectStoreTrajectory):
            self.worker.trajectory.offer(points)

    # -- gradients: compute, scatter by tensor owner, add to the bank shard -----------------------
    @_busy
    def grad_parts(self, diff, step: int, ts: list[int], units: dict, count: int, points=None):
        """Per-batch gradients of this worker's (request, batch) units, cut by owning worker:
        part k maps request r to {batch id: (target, source) of the tensors worker k owns}."""
        self._points(points)
        self.shard.sync(diff)
        parts = [{} for _ in range(self.plan.workers)]
        for r, batch_ids in units.items():
            for i, (target, source) in self.worker.gradient_batches(self.shard.perm, step, ts[r], batch_ids, count):
                for k in range(self.plan.workers):
                    owned = self.plan.owned(k)
                    parts[k].setdefault(r, {})[i] = ({n: target[n].cpu() for n in owned},
                                                     {n: source[n].cpu() for n in owned})
        return parts[0] if self.plan.workers == 1 else tuple(parts)

    @_busy
    def reduce_add(self, fresh: bool, requests: int, count: int, senders: list[int], *parts) -> int:
        """Average each request's batches in batch order, whoever computed them, then add the pairs to the shard."""
        self.exchanged += sum(nbytes(p) for j, p in zip(senders, parts) if j != self.index)
        if fresh:
            self.shard.reset()
        self._last_pair = None
        for r in range(requests):
            batches = {i: pair for p in parts if r in p for i, pair in p[r].items()}
            target, source = mean_gradients(sorted(batches.items()), count)
            device = self.worker.device
            target = {k: v.to(device) for k, v in target.items()}
            source = {k: v.to(device) for k, v in source.items()}
            self.shard.add(target, source)
            self._last_pair = (target, source)
        return self.shard.bank.num_pairs

    # -- the solve: partial cost terms, LAPs on the group's solver, the objective ---------------
    @_busy
    def cost_parts(self, diff, groups: list[str]):
        self.shard.sync(diff)
        parts = self.shard.parts(groups)
        return parts[0] if len(groups) == 1 else tuple(parts)

    @_busy
    def solve_group(self, diff, group: str, senders: list[int], *parts):
        self.shard.sync(diff)
        self.exchanged += sum(nbytes(p) for j, p in zip(senders, parts) if j != self.index)
        return self.shard.solve(group, parts)

    @_busy
    def objective(self, diff) -> float:
        self.shard.sync(diff)
        return self.shard.objective()

    def constant(self) -> float:
        return self.shard.constant()

    @_busy
    def block_parts(self, diff, inners: dict) -> dict:
        """This shard's part of one head group's block scores (see ``perm.matching.block_start``)."""
        self.shard.sync(diff)
        return block_scores(self.shard.bank, self.shard.perm, inners) if self.shard.bank.num_pairs else {}

    # -- checkpoint ----------------------------------------------------------------------------
    @_busy
    def persist(self, location: str, step: int) -> None:
        target, source = self._last_pair if self._last_pair else (None, None)
        self.shard.save(location, self.index, step, target, source)

    @_busy
    def restore(self, record: dict) -> int:
        self.shard.restore(record)
        return self.shard.bank.num_pairs

    @_busy
    def solve_lap(self, cost):
        return solve_laps_serial([cost])[0]

    def stats(self) -> dict:
        return {"busy_s": self.busy_s, "exchanged": self.exchanged}

    # -- evaluation ----------------------------------------------------------------------------
    @_busy
    def evaluate(self, perm, t: int, split: str, step: int | None, points=None) -> float:
        self._points(points)
        return self.worker.evaluate(perm, t, split, step)

    def materialize(self, perm, t: int, step: int | None, points=None):
        self._points(points)
        return {k: v.cpu() for k, v in self.worker.materialize(perm, t, step).items()}

    @ray.method(concurrency_group="probe")
    def describe(self) -> dict:
        ctx = ray.get_runtime_context()
        return {"worker": self.index, "node": ctx.get_node_id(), "host": ray.util.get_node_ip_address(),
                "pid": os.getpid(), "threads": self.threads, "gpu_ids": self.gpu_ids,
                "device": str(self.worker.device), "owned_tensors": len(self.shard.owned)}
