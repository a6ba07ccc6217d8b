"""Wall-clock and CPU seconds per phase of a transfer, for metrics.json's ``timing``.

Wall seconds alone mislead on a shared machine: a loaded box stretches them while the work is
the same. CPU seconds (``time.process_time``: user + sys of every thread of this process) do
not stretch, so each phase records both, as ``<phase>_s`` and ``<phase>_cpu_s``. With the Ray
backend the CPU seconds are the driver's; its workers' busy seconds are in ``traffic``.
"""

from __future__ import annotations

import time
from contextlib import contextmanager


def now() -> tuple[float, float]:
    """(wall, CPU) seconds since arbitrary origins."""
    return time.perf_counter(), time.process_time()


def add(timing: dict, phase: str, since: tuple[float, float], minus: tuple[float, float] = (0.0, 0.0)) -> None:
    """Add the wall and CPU seconds from ``since`` to now, less ``minus``, to ``phase`` in ``timing``."""
    wall, cpu = now()
    timing[f"{phase}_s"] = timing.get(f"{phase}_s", 0.0) + wall - since[0] - minus[0]
    timing[f"{phase}_cpu_s"] = timing.get(f"{phase}_cpu_s", 0.0) + cpu - since[1] - minus[1]


@contextmanager
def phase(timing: dict, name: str):
    """Time the block as ``name`` in ``timing``."""
    start = now()
    try:
        yield
    finally:
        add(timing, name, start)
