"""The Ray backend: the transfer engine's work spread over gradient actors.

Data flow of a GMT/FGMT step (see ``matcher.py``):

* Workers are ``GradientWorker`` actors, one per placement-group bundle (SPREAD across nodes).
  Each loads the data itself and owns a shard of the tensors (contiguous layers).
* The step's (gradient pair, mini-batch) units are split over all workers; each worker's
  float64 partial sums are reduce-scattered worker to worker, so the owner of a tensor ends up
  with its summed gradients and adds them to its bank shard. The driver passes references only.
* The solve's sweeps are scheduled by the driver: per colour class, workers contract their
  terms into partial cost matrices, the group's solver worker reduces them in term order and
  solves the LAP, and only the changed entries of the assignment come back.
* Faults: a dead worker (process or node) is rebuilt in its bundle (Ray re-places bundles of a
  lost node), every shard is restored from the run folder's ``state/shards`` checkpoint, and the
  step is recomputed; every result is a pure function of its inputs, so the answer is unchanged.
* Evaluation of step s runs on a worker while step s+1 computes.

``traffic`` counts payload bytes into and out of the driver (tensor/array bytes, 8 per scalar,
100 per object reference, plus ``CALL_BYTES`` per remote call) and among the workers.
"""

from __future__ import annotations

import itertools
import time
import uuid

import numpy as np
import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from ..config import ConfigError
from ..ray_config import RayConfig
from ..perm import solve_laps_serial
from ..transfer.sharding import plan_shards
from .actor import GradientWorker, nbytes
from .cluster import connect, fits, fixed_cluster, node_totals, short_resources
from .matcher import ShardedMatcher
from .recovery import is_worker_loss, retry_on_worker_loss
from .trajectory import PointPublisher

CALL_BYTES = 300  # a remote call's own envelope (ids, function descriptor), counted with its payload


class _EvalHandle:
    """An evaluation in flight; resubmitted on a live worker if its worker is lost."""

    def __init__(self, backend, args):
        self.backend, self.args = backend, args
        self.ref = backend._submit_eval(*args)

    def _get(self):
        value = ray.get(self.ref)
        self.backend.meter.got(value)
        return value

    def _resubmit(self, _error):
        self.ref = self.backend._submit_eval(*self.args)

    def done(self):
        return False  # it runs on while the next step computes, and is read then

    def result(self):
        b = self.backend
        return retry_on_worker_loss(self._get, b.recover, b.max_recoveries, self._resubmit)


class Meter:
    """Bytes into and out of the driver, counted per step."""

    def __init__(self):
        self.total = 0

    def sent(self, *args) -> None:
        self.total += CALL_BYTES + sum(nbytes(a) for a in args)

    def got(self, value) -> None:
        self.total += nbytes(value)


class RayBackend:
    """The transfer ``Backend`` on Ray (see the module's docstring).

    Args:
        problem: the prepared transfer.
        cfg: the transfer settings.
        config: the workers and the cluster (default ``RayConfig()``).
        state_dir: where the workers checkpoint their bank shards (a run folder's state/); without
            it a lost worker holding FGMT pairs cannot be rebuilt.
    """

    def __init__(self, problem, cfg, config: RayConfig | None = None, *, state_dir: str | None = None):
        self.config = config = config or RayConfig()
        self._owns_ray = connect(config.address, runtime_env=config.runtime_env)
        self.workers: list = []
        self.pg = None
        self.n = workers = config.workers
        self.state_dir = state_dir
        self.max_recoveries = config.max_recoveries
        self.placement_timeout_s = config.placement_timeout_s
        self.probe_timeout_s = 60.0  # an unanswered liveness probe: the worker's node is gone
        self.meter = Meter()
        self.traffic = {"driver_bytes": [], "worker_bytes": [], "busy_s": [0.0] * workers, "recoveries": 0}
        self._stats = [{"busy_s": 0.0, "exchanged": 0} for _ in range(workers)]
        self._t_start = time.perf_counter()
        try:
            gpus = config.gpus_per_worker
            self.bundle = {"CPU": config.cpus_per_worker, **({"GPU": gpus} if gpus else {})}
            self.pg = placement_group([self.bundle] * workers, strategy="SPREAD")
            self._wait_for_placement()
            self._start_workers(problem, cfg, config.cpus_per_worker, gpus)
        except BaseException:
            self.close()
            raise

    # -- placement -----------------------------------------------------------------------------
    def _wait_for_placement(self) -> None:
        deadline = time.monotonic() + self.placement_timeout_s
        while True:
            ready, _ = ray.wait([self.pg.ready()], timeout=min(2.0, max(0.01, deadline - time.monotonic())))
            if ready:
                return
            present = ray.cluster_resources()
            if fixed_cluster() and not fits(self.bundle, self.n):
                raise ConfigError(
                    f"the Ray cluster can never place {self.n} workers of {self.bundle}: it is a fixed local cluster "
                    f"with {node_totals()} (in all {short_resources(present)}); use fewer --workers or smaller "
                    "--cpus-per-worker/--gpus-per-worker")
            if time.monotonic() >= deadline:
                raise ConfigError(
                    f"the Ray cluster cannot place {self.n} workers of {self.bundle} within "
                    f"{self.placement_timeout_s:.0f}s (it has {short_resources(present)}); use fewer --workers, "
                    "smaller --cpus-per-worker/--gpus-per-worker, or a longer --placement-timeout while nodes start")

    def _start_workers(self, problem, cfg, cpus_per_worker, gpus_per_worker):
        self.publisher = PointPublisher(problem.trajectory)
        self.spec = problem.spec
        self.plan = plan_shards(problem.spec, {k: tuple(v.shape) for k, v in problem.target_init.items()
                                               if k in problem.param_names}, self.n)
        # Kept on self: a rebuilt worker starts from these same object-store copies. The data is
        # not among them: each worker loads it from the data config, unless it exists only in
        # this process (the Python API's in-memory splits), which then travel themselves.
        data = problem.data if problem.data_cfg.source == "memory" else problem.data_cfg
        self._shared = [ray.put(x) for x in (data, problem.spec, self.publisher.for_workers, problem.target_init)]
        self._settings = {"seed": cfg.seed, "batch_size": cfg.batch_size, "bn_batches": cfg.bn_batches,
                          "eval_batch_size": cfg.eval_batch_size, "val_subset": cfg.val_subset,
                          "init_decay": cfg.init_decay}
        self._model_cfg, self._normalize = problem.model_cfg, cfg.normalize
        self._options = {"num_cpus": cpus_per_worker, "num_gpus": gpus_per_worker}
        self._run_id = uuid.uuid4().hex[:8]
        self.workers = [self._make_worker(i) for i in range(self.n)]
        self.synced = [None] * self.n  # each worker's replica permutation, as the driver last set it
        self._next = itertools.cycle(range(self.n))
        self._perm_refs: dict = {}
        self.placement = self.describe()  # waits until every worker is up, and surfaces its errors

    def _make_worker(self, i: int):
        return GradientWorker.options(
            **self._options, name=f"raytraj-{self._run_id}-{uuid.uuid4().hex[:4]}-worker-{i}",
            scheduling_strategy=PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=i),
        ).remote(i, self._model_cfg, *self._shared, self._settings, self.plan, self._normalize)

    # -- faults --------------------------------------------------------------------------------
    def recover(self) -> list[int]:
        """Rebuild every lost worker in its bundle; returns their indices.

        A worker is lost when its liveness probe fails or goes unanswered for ``probe_timeout_s``;
        the probe runs in a concurrency group of its own, so a worker busy with a long task (a big
        evaluation, a slow LAP) answers it at once and is kept.
        """
        lost = []
        probes = [w.describe.remote() for w in self.workers]  # all at once: one timeout for all
        for i, probe in enumerate(probes):
            try:
                ray.get(probe, timeout=self.probe_timeout_s)
            except Exception as e:  # noqa: BLE001
                if not is_worker_loss(e):
                    raise
                lost.append(i)
        for i in lost:
            try:
                ray.kill(self.workers[i])
            except Exception:  # noqa: BLE001 - already gone
                pass
            self.workers[i] = self._make_worker(i)
            self.synced[i] = None
        if lost:
            self.traffic["recoveries"] += 1
            ready = [w.describe.remote() for w in (self.workers[i] for i in lost)]
            placed = ray.get(ready, timeout=self.placement_timeout_s)
            for p in placed:
                self.placement[p["worker"]] = p
        return lost

    # -- the permutation on the workers ----------------------------------------------------------
    def diff_for(self, i: int, perm) -> dict:
        """The changes that bring worker i's replica to ``perm`` (and records them as sent)."""
        from ..transfer.bank_shard import perm_diff

        now = {g: p.cpu().numpy() for g, p in perm.items()}
        before = self.synced[i] or {g: np.arange(len(p)) for g, p in now.items()}
        self.synced[i] = {g: p.copy() for g, p in now.items()}
        return perm_diff(before, now)

    def _perm_ref(self, perm):
        """One object-store copy per distinct permutation, keyed by its content (not by ``id``,
        which CPython reuses once an object is freed)."""
        key = tuple((g, p.cpu().numpy().tobytes()) for g, p in sorted(perm.items()))
        if key not in self._perm_refs:
            if len(self._perm_refs) >= 4:
                self._perm_refs.pop(next(iter(self._perm_refs)))
            value = {g: p.cpu() for g, p in perm.items()}
            self.meter.sent(value)
            self._perm_refs[key] = ray.put(value)
        return self._perm_refs[key]

    # -- the engine's interface (transfer/backend.py) ---------------------------------------------
    def matcher(self, spec, cfg) -> ShardedMatcher:
        """The pair bank stays sharded on the workers; its LAPs are solved there (scipy, per group)."""
        return ShardedMatcher(self, spec)

    def solve_laps(self, costs):
        """LAPs of cost matrices held by the caller, spread over the workers (for ``match``)."""
        if len(costs) < 2:
            return solve_laps_serial(costs)
        return ray.get([self.workers[i % self.n].solve_lap.remote(c) for i, c in enumerate(costs)])

    def _submit_eval(self, perm, t, split, step):
        worker = self.workers[next(self._next)]
        points = self.publisher.points(t)
        ref = self._perm_ref(perm)
        self.meter.sent(ref, t, split, step, points)
        return worker.evaluate.remote(ref, t, split, step, points)

    def evaluate(self, perm, t, split="val", step=None):
        return _EvalHandle(self, (perm, t, split, step))

    def materialize(self, perm, t, step=None):
        return retry_on_worker_loss(
            lambda: ray.get(self.workers[0].materialize.remote(perm, t, step, self.publisher.points(t))),
            self.recover, self.max_recoveries)

    def end_step(self) -> None:
        """Close a step's books: driver bytes, bytes among workers, busy seconds per worker."""
        stats = ray.get([w.stats.remote() for w in self.workers])
        exchanged = 0
        for i, st in enumerate(stats):
            prev = self._stats[i]
            # A rebuilt worker counts from zero again.
            d_busy = st["busy_s"] - prev["busy_s"] if st["busy_s"] >= prev["busy_s"] else st["busy_s"]
            d_ex = st["exchanged"] - prev["exchanged"] if st["exchanged"] >= prev["exchanged"] else st["exchanged"]
            self.traffic["busy_s"][i] += d_busy
            exchanged += d_ex
            self._stats[i] = st
        self.meter.sent()  # the stats call
        self.meter.got(stats)
        self.traffic["driver_bytes"].append(self.meter.total)
        self.traffic["worker_bytes"].append(exchanged)
        self.meter.total = 0

    def utilisation(self) -> float | None:
        """Mean share of wall time the workers spent computing since they started."""
        wall = time.perf_counter() - self._t_start
        if not self.traffic["driver_bytes"] or wall <= 0:
            return None
        return min(1.0, sum(self.traffic["busy_s"]) / (self.n * wall))

    def report(self) -> dict:
        return {"traffic": {**self.traffic, "call_bytes": CALL_BYTES}, "placement": self.placement}

    def describe(self) -> list[dict]:
        return ray.get([w.describe.remote() for w in self.workers])

    def close(self):
        for w in self.workers:
            try:
                ray.kill(w)
            except Exception:  # noqa: BLE001 - already gone with its node
                pass
        if self.pg is not None:
            remove_placement_group(self.pg)
        if self._owns_ray:
            ray.shutdown()
