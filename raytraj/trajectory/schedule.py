"""Interpolation schedules for linear trajectories (paper-notes section 2).

lambda_k for k = 0..T, with lambda_0 = 0 and lambda_T = 1:

* uniform: lambda_k = k / T
* cosine:  lambda_k = sum_{t<k} f(t) / sum_{t<T} f(t), with f(t) = 1 + cos(pi t / T).
  Steps are largest early and shrink to ~0 at the end, like a cosine-annealed learning rate.
  This is what every released config of the official code uses; the normaliser is T + 1.
"""

from __future__ import annotations

import math

from ..config import ConfigError

SCHEDULES = ("cosine", "uniform")


def lambdas(steps: int, schedule: str = "cosine") -> list[float]:
    """The interpolation coefficients of a linear trajectory (see the module's docstring).

    Args:
        steps: T >= 1.
        schedule: ``cosine`` or ``uniform``.

    Returns:
        T + 1 floats from 0 to 1: point k is theta^0 + lambda_k (theta^T - theta^0).
    """
    if steps < 1:
        raise ConfigError(f"a trajectory needs at least 1 step, got {steps}")
    if schedule == "uniform":
        return [k / steps for k in range(steps + 1)]
    if schedule == "cosine":
        f = [1 + math.cos(math.pi * t / steps) for t in range(steps)]
        total = sum(f)
        out, acc = [0.0], 0.0
        for v in f:
            acc += v
            out.append(acc / total)
        out[-1] = 1.0
        return out
    raise ConfigError(f"unknown schedule {schedule!r}; choose one of {SCHEDULES} (or 'actual' for the recorded steps)")
