"""Where tensors live and how many threads torch uses."""

from __future__ import annotations

import os

import torch


def default_device() -> torch.device:
    """``cuda`` when a GPU is visible (in a Ray actor: when the actor holds one), else ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def set_torch_threads(n: int | None = None) -> int:
    """Use ``n`` threads (default: the CPUs this process may run on).

    Ray sets OMP_NUM_THREADS=1 in workers, so an actor holding C CPUs must ask for C threads.
    """
    if n is None:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n = max(1, int(n))
    torch.set_num_threads(n)
    return n
