"""Trajectory points that travel through Ray's object store, so workers need no shared disk.

A linear trajectory is shipped whole (its two end points, once per run). For an actual
trajectory the driver puts each recorded step in the object store once, the first time a
step is needed, and hands workers the references with the work that uses them.
"""

from __future__ import annotations

from collections import OrderedDict

import ray
import torch

from ..trajectory import LinearTrajectory, Trajectory


class ObjectStoreTrajectory(Trajectory):
    def __init__(self, num_steps: int, param_names: list[str], cache_size: int = 4):
        self.num_steps = num_steps
        self.param_names = param_names
        self.refs: dict[int, ray.ObjectRef] = {}
        self.cache_size = cache_size
        self._cache: OrderedDict[int, dict] = OrderedDict()

    def offer(self, refs: dict) -> None:
        self.refs.update(refs)

    def point(self, t: int) -> dict[str, torch.Tensor]:
        self._check(t)
        if t not in self._cache:
            self._cache[t] = ray.get(self.refs[t])
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        self._cache.move_to_end(t)
        return self._cache[t]


class PointPublisher:
    """Driver side: what to hand workers for the trajectory, and point references on demand."""

    def __init__(self, trajectory: Trajectory):
        self.source = trajectory
        self._refs: dict[int, ray.ObjectRef] = {}
        if isinstance(trajectory, LinearTrajectory):
            start, end = trajectory.point(0), trajectory.point(trajectory.num_steps)
            self.for_workers = LinearTrajectory(start, end, trajectory.num_steps, trajectory.schedule,
                                                param_names=trajectory.param_names)
            self.linear = True
        else:
            self.for_workers = ObjectStoreTrajectory(trajectory.num_steps, trajectory.param_names)
            self.linear = False

    def points(self, *ts: int) -> dict | None:
        """References to points ``ts`` (and the start, which every transferred point needs)."""
        if self.linear:
            return None
        out = {}
        for t in {0, *ts}:
            if t not in self._refs:
                self._refs[t] = ray.put(self.source.point(t))
            out[t] = self._refs[t]
        return out
