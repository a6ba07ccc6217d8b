"""The Ray backend: the transfer engine's work spread over gradient actors.

* Workers are ``GradientWorker`` actors, one per placement-group bundle (SPREAD across nodes),
  each with a model replica and the data. They restart when they die (``max_restarts``) and
  the task they were running is retried (``max_task_retries``); since every result is a pure
  function of (permutation, step, trajectory point, batches), a retry gives the same numbers.
* Per step the driver puts the permutation in the object store once; workers build the
  transferred parameters from it and the trajectory they hold.
* GMT's s gradient pairs of a step are spread over the workers. With fewer pairs than workers
  (FGMT has one), the ``grad_batches`` mini-batches of a pair are split data-parallel and the
  per-worker float64 sums are reduced in a fixed order.
* The LAPs of one colour class of permutation groups (groups that share no tensor) are solved
  in parallel on the workers, which are idle while the driver solves.
* Evaluation of step s runs on a worker while step s+1's gradients compute: ``evaluate``
  returns a handle the engine collects one step later.
"""

from __future__ import annotations

import itertools
import uuid

import numpy as np
import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from ..config import ConfigError
from ..perm import solve_laps_serial
from ..transfer.backend import finish_sums
from .actor import GradientWorker, SharedState
from .cluster import connect
from .trajectory import PointPublisher


class _RefHandle:
    def __init__(self, ref):
        self.ref = ref

    def result(self):
        return ray.get(self.ref)


class RayBackend:
    def __init__(self, problem, cfg, *, address: str | None = None, workers: int = 2, cpus_per_worker: float = 1,
                 gpus_per_worker: float = 0, max_restarts: int = 3, max_task_retries: int = 3,
                 placement_timeout_s: float = 120, runtime_env: dict | None = None):
        if workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {workers}")
        if cpus_per_worker <= 0 or gpus_per_worker < 0:
            raise ConfigError("--cpus-per-worker must be > 0 and --gpus-per-worker >= 0")
        self._owns_ray = connect(address, runtime_env=runtime_env)
        self.workers: list = []
        self.pg = None
        try:
            bundle = {"CPU": cpus_per_worker, **({"GPU": gpus_per_worker} if gpus_per_worker else {})}
            self.pg = placement_group([bundle] * workers, strategy="SPREAD")
            ready, _ = ray.wait([self.pg.ready()], timeout=placement_timeout_s)
            if not ready:
                raise ConfigError(
                    f"the Ray cluster cannot place {workers} workers of {bundle} within {placement_timeout_s:.0f}s "
                    f"(it has {ray.cluster_resources()}); use fewer --workers or smaller "
                    "--cpus-per-worker/--gpus-per-worker"
                )
            self._start_workers(problem, cfg, workers, cpus_per_worker, gpus_per_worker, max_restarts,
                                max_task_retries)
        except BaseException:
            self.close()
            raise

    def _start_workers(self, problem, cfg, workers, cpus_per_worker, gpus_per_worker, max_restarts,
                       max_task_retries):
        self.publisher = PointPublisher(problem.trajectory)
        # Kept on self: a restarted actor is rebuilt from these same object-store copies.
        self._shared = [ray.put(x) for x in (problem.data, problem.spec, self.publisher.for_workers,
                                             problem.target_init)]
        run_id = uuid.uuid4().hex[:8]
        holder = f"raytraj-{run_id}-shared"
        self._holder = SharedState.options(name=holder).remote(self._shared)  # what a (re)started worker fetches
        settings = {"seed": cfg.seed, "batch_size": cfg.batch_size, "bn_batches": cfg.bn_batches,
                    "eval_batch_size": cfg.eval_batch_size, "val_subset": cfg.val_subset}
        for i in range(workers):
            self.workers.append(GradientWorker.options(
                num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, max_restarts=max_restarts,
                max_task_retries=max_task_retries, name=f"raytraj-{run_id}-worker-{i}",
                scheduling_strategy=PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=i),
            ).remote(problem.model_cfg, holder, settings))
        self._next = itertools.cycle(range(workers))
        self._perm_cache: tuple[int, ray.ObjectRef] | None = None
        self.placement = self.describe()  # waits until every worker is up, and surfaces its errors

    def _perm_ref(self, perm):
        """One object-store copy of each step's permutation, shared by all its work items."""
        if self._perm_cache is None or self._perm_cache[0] != id(perm):
            self._perm_cache = (id(perm), ray.put(perm))
        return self._perm_cache[1]

    def gradient_pairs(self, perm, requests, count):
        perm_ref = self._perm_ref(perm)
        n = len(self.workers)
        # Enough pairs keep every worker busy; otherwise split each pair's batches data-parallel.
        splits = 1 if len(requests) >= n else max(1, min(count, -(-n // len(requests))))
        chunks = [[int(i) for i in c] for c in np.array_split(np.arange(count), splits) if len(c)]
        refs = []
        for r in requests:
            points = self.publisher.points(r.t)
            for chunk in chunks:
                worker = self.workers[len(refs) % n]
                refs.append(worker.gradient_sums.remote(perm_ref, r.step, r.t, chunk, count, points))
        results = ray.get(refs)
        pairs = []
        for i in range(len(requests)):
            parts = results[i * len(chunks):(i + 1) * len(chunks)]
            target, source = parts[0]
            for t_part, s_part in parts[1:]:  # fixed order: the same sums whichever worker ran them
                target = {k: v + t_part[k] for k, v in target.items()}
                source = {k: v + s_part[k] for k, v in source.items()}
            pairs.append(finish_sums(target, source, count))
        return pairs

    def solve_laps(self, costs):
        if len(costs) < 2:
            return solve_laps_serial(costs)
        refs = [self.workers[i % len(self.workers)].solve_lap.remote(c) for i, c in enumerate(costs)]
        return ray.get(refs)

    def evaluate(self, perm, t, split="val", step=None):
        worker = self.workers[next(self._next)]
        return _RefHandle(worker.evaluate.remote(self._perm_ref(perm), t, split, step, self.publisher.points(t)))

    def materialize(self, perm, t, step=None):
        return ray.get(self.workers[0].materialize.remote(perm, t, step, self.publisher.points(t)))

    def describe(self) -> list[dict]:
        return ray.get([w.describe.remote() for w in self.workers])

    def close(self):
        for w in [*self.workers, *([self._holder] if getattr(self, "_holder", None) else [])]:
            ray.kill(w)
        if self.pg is not None:
            remove_placement_group(self.pg)
        if self._owns_ray:
            ray.shutdown()
