"""A trajectory as a sequence of points 0..T, each a full state (parameters and buffers).

* ``ActualTrajectory``: the recorded checkpoints themselves.
* ``LinearTrajectory``: the segment from the first to the last checkpoint, at lambda_k of a
  uniform or cosine schedule, computed lazily from the two end points.

Both are small and picklable (a store location, not tensors), so Ray workers can open them
where they run; each loads what it needs on first use.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Mapping

import torch

from ..config import ConfigError
from .schedule import lambdas
from .store import TrajectoryError, TrajectoryStore


class Trajectory:
    num_steps: int  # T: points 0..T
    param_names: list[str]

    def point(self, t: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _check(self, t: int):
        if not 0 <= t <= self.num_steps:
            raise TrajectoryError(f"trajectory point {t} is outside 0..{self.num_steps}")


class ActualTrajectory(Trajectory):
    def __init__(self, location: str, cache_size: int = 4):
        self.location = location
        self.cache_size = cache_size
        store = TrajectoryStore(location)
        self.num_steps = store.last_step
        self.param_names = store.param_names
        self._store: TrajectoryStore | None = None
        self._cache: OrderedDict[int, dict] = OrderedDict()

    def __getstate__(self):
        return {**self.__dict__, "_store": None, "_cache": OrderedDict()}

    def point(self, t: int) -> dict[str, torch.Tensor]:
        self._check(t)
        if t not in self._cache:
            self._store = self._store or TrajectoryStore(self.location)
            self._cache[t] = self._store.read(t)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        self._cache.move_to_end(t)
        return self._cache[t]


class LinearTrajectory(Trajectory):
    def __init__(self, start: Mapping[str, torch.Tensor] | None, end: Mapping[str, torch.Tensor] | None,
                 steps: int, schedule: str = "cosine", *, location: str | None = None,
                 param_names: list[str] | None = None):
        """From two states in memory, or lazily from the first and last step of a store at ``location``."""
        self.num_steps = steps
        self.schedule = schedule
        self.lambdas = lambdas(steps, schedule)
        self.location = location
        self._ends = (dict(start), dict(end)) if start is not None else None
        if location is not None:
            self.param_names = TrajectoryStore(location).param_names
        else:
            self.param_names = list(param_names) if param_names is not None else list(start)

    def __getstate__(self):
        return {**self.__dict__, "_ends": None if self.location else self._ends}

    def _endpoints(self):
        if self._ends is None:
            store = TrajectoryStore(self.location)
            if store.last_step < 1:
                raise TrajectoryError(f"{self.location} holds only its init; a trajectory needs a trained step")
            self._ends = (store.read(0), store.read(store.last_step))
        return self._ends

    def point(self, t: int) -> dict[str, torch.Tensor]:
        self._check(t)
        start, end = self._endpoints()
        lam = self.lambdas[t]
        out = {}
        for name, a in start.items():
            b = end[name]
            if a.is_floating_point():
                out[name] = a + lam * (b - a) if 0 < t < self.num_steps else (a if t == 0 else b).clone()
            else:
                out[name] = (a if t == 0 else b).clone()  # counters such as num_batches_tracked
        return out


def open_trajectory(location: str, schedule: str, steps: int | None = None) -> Trajectory:
    """The trajectory a transfer follows: the recorded steps (``actual``) or a linear segment.

    Args:
        location: a complete trajectory store.
        schedule: ``actual`` (every recorded step), or ``uniform``/``cosine`` (a linear segment
            from the first to the last recorded step).
        steps: T of a linear segment (an actual trajectory has its own; give None or that count).

    Returns:
        the Trajectory, whose ``point(t)`` is the source's state at step t.
    """
    if schedule == "actual":
        traj = ActualTrajectory(location)
        if steps is not None and steps != traj.num_steps:
            raise ConfigError(f"--steps {steps} does not match the {traj.num_steps} recorded steps of {location}; "
                              "with schedule 'actual' omit --steps (steps=None) or give that count")
        return traj
    if steps is None:
        raise ConfigError("a linear trajectory needs --steps T")
    return LinearTrajectory(None, None, steps, schedule, location=location)
