"""Trajectory points that travel through Ray's object store, so workers need no shared disk.

A linear trajectory is shipped whole (its two end points, once per run). For an actual
trajectory the driver puts a recorded step in the object store when a step of work needs it,
and hands workers the references with the work that uses them. Neither side keeps references
it no longer needs: the driver keeps the start and the last ``keep`` points asked for (FGMT
needs two per step), a worker only what its current call was handed, so the object store holds
O(keep) points, not all T (GMT asks for all points up to s, and they stay while it does).
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
        """The points the current call may read; references offered before are dropped (unpinned)."""
        self.refs = dict(refs)

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

    def __init__(self, trajectory: Trajectory, keep: int = 4):
        self.source = trajectory
        self.keep = keep
        self._refs: OrderedDict[int, ray.ObjectRef] = OrderedDict()  # the start, then least recently asked first
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
        for t in sorted({0, *ts}):
            if t not in self._refs:
                self._refs[t] = ray.put(self.source.point(t))
            self._refs.move_to_end(t)
            out[t] = self._refs[t]
        # Unpin the least recently asked points beyond ``keep`` (never one this call asked for: they
        # are the most recent, and the start is asked for by every call).
        while len(self._refs) > max(self.keep, len(out)):
            self._refs.popitem(last=False)
        return out

    def pinned(self) -> list[int]:
        """The points whose references the driver holds."""
        return sorted(self._refs)
