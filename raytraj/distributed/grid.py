"""Analysis grid points on Ray: one evaluator per actor, points handed out as actors free up.

Each point is an independent evaluation, so the driver keeps two points in flight per actor
and collects results as they finish; the base states and the data go to the object store once.
Results come back in the order of the points, and each is the same pure function of its
coefficients that the local backend computes.
"""

from __future__ import annotations

from typing import Callable, Sequence

import ray
import torch

from ..progress import progress_bar
from ..ray_config import RayConfig
from ..runtime import set_torch_threads
from .cluster import connect


@ray.remote
class GridWorker:
    def __init__(self, make_evaluator: Callable):
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
        set_torch_threads(max(1, int(cpus)))
        device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
        self.evaluator = make_evaluator(device=device)

    def evaluate(self, index: int, coeffs) -> tuple[int, dict]:
        return index, self.evaluator.evaluate(coeffs)


def evaluate_points_ray(make_evaluator: Callable, points: Sequence[Sequence[float]], ray_config: RayConfig, *,
                        progress: bool = True, desc: str = "points",
                        note: Callable[[dict], dict] = lambda result: {}) -> list[dict]:
    """``make_evaluator(device=...).evaluate(coeffs)`` for every point, on ``ray_config.workers`` actors, in order.

    Args:
        make_evaluator: builds one evaluator per actor (e.g. ``functools.partial(GridEvaluator, **args)``);
            it travels through the object store once.
        points: one coefficient vector per point.
        ray_config: the actors (workers, CPUs and GPUs each holds) and the cluster to join.
        progress: show a progress bar.
        desc: the progress bar's label.
        note: a result's values for its progress line (the caller's format: analysis/grid.py's).

    Returns:
        each point's result, in the order of ``points``.
    """
    owns = connect(ray_config.address, runtime_env=ray_config.runtime_env)
    actors = []
    try:
        shared = ray.put(make_evaluator)
        actors = [GridWorker.options(num_cpus=ray_config.cpus_per_worker,
                                     num_gpus=ray_config.gpus_per_worker).remote(shared)
                  for _ in range(ray_config.workers)]
        todo = list(enumerate(points))[::-1]
        results: list[dict | None] = [None] * len(points)
        in_flight = {}
        for actor in actors * 2:
            if todo:
                i, c = todo.pop()
                in_flight[actor.evaluate.remote(i, list(c))] = actor
        bar = progress_bar(len(points), desc=desc, enabled=progress, unit="point")
        while in_flight:
            done, _ = ray.wait(list(in_flight), num_returns=1)
            actor = in_flight.pop(done[0])
            i, r = ray.get(done[0])
            results[i] = r
            bar.set_postfix(**note(r))  # the point just scored (points finish out of order)
            bar.update(1)
            if todo:
                j, c = todo.pop()
                in_flight[actor.evaluate.remote(j, list(c))] = actor
        bar.close()
        return results
    finally:
        for a in actors:
            ray.kill(a)
        if owns:
            ray.shutdown()
