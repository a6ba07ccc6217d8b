"""The Ray backend: the transfer as an SPMD worker group (see ``group.py`` and ``rank.py``).

The driver computes the shard plan once (tensors and cost terms by owner, LAP solvers by colour
class, gradient units by rank: ``transfer/sharding.py``) and starts the group. After that, per
step, it makes one call (rank 0's ``lead``: the step number and the settings, a few hundred bytes)
and receives the step's progress record (the solver's statistics and the ranks' busy share). Rank 0
writes the step's permutation to the run folder's ``state/perms`` (``transfer/held.py``); the
engine keeps a ``HeldPermutation`` naming it, so the driver's bytes per step do not grow with the
model's width (without a run folder the answer carries the permutation's changes instead). Gradients, cost terms and assignments move among the ranks
through torch.distributed collectives (``transfer/collective.py``); evaluation and the saved
models are computed beside the next step on one rank, which holds the permutations of recent
steps, so an evaluation names its step only.

Faults: a lost rank or node restarts the group (``WorkerGroup.restart``); each rank restores its
shard of FGMT's pair bank from the run folder's ``state/shards`` checkpoint, reading only its own
files, and the step is run again. Every result is a pure function of its inputs, so the answer is
the uninterrupted run's.

``traffic`` in metrics.json is this process's own count (pickled argument and result bytes of
each call, and calls per step); ``benchmarks/bench_scale.py`` measures the driver's sockets from
the kernel as well.
"""

from __future__ import annotations

import pickle
import time

import ray
import torch

from .. import fs
from ..ray_config import RayConfig
from ..transfer.held import HeldPermutation
from ..transfer.sharding import plan_shards
from .cluster import connect
from .group import WorkerGroup
from .recovery import is_worker_loss, retry_on_worker_loss


def _size(obj) -> int:
    try:
        return len(pickle.dumps(obj, protocol=5))
    except Exception:  # noqa: BLE001 - object refs and the like: what Ray sends for them is small
        return 100


class _EvalHandle:
    """An evaluation in flight; asked again after a restart of the group."""

    def __init__(self, backend, args):
        self.backend, self.args = backend, args
        self.ref = backend._submit_eval(*args)

    def _get(self):
        value = ray.get(self.ref)
        self.backend._count(value)
        return value

    def _resubmit(self, _error):
        self.ref = self.backend._submit_eval(*self.args)

    def done(self):
        return False  # it runs on while the next step computes, and is read then

    def result(self):
        b = self.backend
        return retry_on_worker_loss(self._get, b.recover, b.max_recoveries, self._resubmit)


class RayBackend:
    """The transfer ``Backend`` on Ray (see the module's docstring).

    Args:
        problem: the prepared transfer.
        cfg: the transfer settings.
        config: the ranks and the cluster (default ``RayConfig()``; ``workers`` is the world size).
        state_dir: where the ranks checkpoint their bank shards (a run folder's state/); without it a
            lost rank holding FGMT pairs cannot be restored.
        collective_timeout_s: how long one collective may wait for a peer (a rank that neither answers
            nor dies is otherwise found by the driver's pings).
    """

    def __init__(self, problem, cfg, config: RayConfig | None = None, *, state_dir: str | None = None,
                 collective_timeout_s: float = 1800):
        self.config = config = config or RayConfig()
        self._owns_ray = connect(config.address, runtime_env=config.runtime_env)
        self.n, self.max_recoveries = config.workers, config.max_recoveries
        self.state_dir = fs.absolute(state_dir) if state_dir else None  # rank 0 writes permutations there
        workers = config.workers
        self.spec = problem.spec
        self.plan = plan_shards(problem.spec, {k: tuple(v.shape) for k, v in problem.target_init.items()
                                               if k in problem.param_names}, workers)
        # Each rank loads the data from its config, unless it exists only in this process.
        data = problem.data if problem.data_cfg.source == "memory" else problem.data_cfg
        settings = {"seed": cfg.seed, "batch_size": cfg.batch_size, "bn_batches": cfg.bn_batches,
                    "eval_batch_size": cfg.eval_batch_size, "val_subset": cfg.val_subset, "bank_dtype": cfg.bank_dtype,
                    "init_decay": cfg.init_decay}
        self._shared = shared = tuple(ray.put(x) for x in (data, problem.spec, problem.trajectory, problem.target_init))
        gpus = config.gpus_per_worker
        bundle = {"CPU": config.cpus_per_worker, **({"GPU": gpus} if gpus else {})}
        self.group = WorkerGroup(workers, bundle, (problem.model_cfg, *shared, settings, self.plan, cfg.normalize),
                                 placement_timeout_s=config.placement_timeout_s,
                                 collective_timeout_s=collective_timeout_s)
        self.traffic = {"driver_bytes": [], "calls": [], "recoveries": 0}
        self._bytes, self._calls_at = 0, 0
        self._held: dict[int, dict] = {}  # step -> the permutation the group returned for it (ranks hold it)
        self._next_eval = 0
        self._matcher = None
        self._t_start = time.perf_counter()
        self._busy = None
        try:
            self.group.start()
        except BaseException:
            self.close()
            raise
        self.placement = self.group.placement

    # -- accounting ----------------------------------------------------------------------------------
    def _count(self, *objs) -> None:
        self._bytes += sum(_size(o) for o in objs)

    def end_step(self) -> None:
        self.traffic["driver_bytes"].append(self._bytes)
        self.traffic["calls"].append(self.group.calls - self._calls_at)
        self._bytes, self._calls_at = 0, self.group.calls

    def utilisation(self) -> float | None:
        """Mean share of the gradient phase the ranks spent computing (reported by the last step)."""
        return self._busy

    # -- faults ----------------------------------------------------------------------------------------
    def recover(self) -> None:
        if self.traffic["recoveries"] >= self.max_recoveries:
            raise RuntimeError(f"the worker group was lost {self.traffic['recoveries']} times; giving up "
                               "(raise max_recoveries, or check the cluster's nodes)")
        self.traffic["recoveries"] += 1
        self.group.restart()
        self.placement = self.group.placement
        self._held = {}
        if self._matcher is not None:
            self._matcher.after_restart()

    # -- the engine's interface --------------------------------------------------------------------------
    def matcher(self, spec, cfg):
        from .matcher import SpmdMatcher

        self._matcher = SpmdMatcher(self)
        return self._matcher

    def _perm_arg(self, perm, step):
        """The step number when the ranks hold that step's permutation; the name of the file rank 0 wrote
        for a permutation the ranks no longer hold; else the permutation itself."""
        held = self._held.get(step)
        if isinstance(perm, HeldPermutation):
            if isinstance(held, HeldPermutation) and held.step == perm.step == step and held.location == perm.location:
                return step
            return {"held": perm.step, "at": perm.location}
        if held is not None and not isinstance(held, HeldPermutation) and all(
                torch.equal(held[g], perm[g].cpu()) for g in perm):
            return step
        return {g: p.cpu() for g, p in perm.items()}

    def _submit_eval(self, perm, t, split, step):
        rank = self._next_eval % self.n
        self._next_eval += 1
        args = (self._perm_arg(perm, step), t, split, step)
        self._count(*args)
        return self.group.side(rank, "evaluate", *args)

    def evaluate(self, perm, t, split="val", step=None):
        return _EvalHandle(self, (perm, t, split, step))

    def materialize(self, perm, t, step=None):
        return retry_on_worker_loss(
            lambda: ray.get(self.group.side(0, "materialize", self._perm_arg(perm, step), t, step)), self.recover,
            self.max_recoveries)

    def report(self) -> dict:
        stats = self.group.stats() if self.group.ranks else []
        return {"traffic": {**self.traffic, "ranks": stats, "world": self.n}, "placement": self.placement}

    def describe(self) -> list[dict]:
        return ray.get([r.describe.remote() for r in self.group.ranks])

    def close(self) -> None:
        self.group.stop()
        self.group.close()
        if self._owns_ray:
            ray.shutdown()
