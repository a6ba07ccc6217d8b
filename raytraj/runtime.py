"""Where tensors live and how many threads torch uses."""

from __future__ import annotations

import os

import torch

from .config import ConfigError


def default_device() -> torch.device:
    """``cuda`` when a GPU is visible (in a Ray actor: when the actor holds one), else ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: torch.device | str | None = None, flag: str = "--device") -> torch.device:
    """``device`` checked to be usable here (default: :func:`default_device`).

    A name torch does not know (``garbage``), or a device this machine lacks (``cuda`` on a
    CPU-only machine or build, ``cuda:3`` on a one-GPU machine), is a ConfigError naming the fix,
    not torch's RuntimeError or AssertionError on the first tensor moved there.
    """
    if device is None:
        return default_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"{flag} {device!r} is not a torch device ({str(e).splitlines()[0]}); use cpu or cuda "
                          "(cuda:N for the N-th GPU)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise ConfigError(f"{flag} {device}: {why} (torch {torch.__version__}); use {flag} cpu, or leave it unset "
                          "to use a GPU when there is one")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"{flag} {device}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                          f"numbered from 0")
    try:
        torch.empty(1, device=dev)  # any other type (mps, xpu, ...): usable only if a tensor can live there
    except (RuntimeError, AssertionError) as e:
        raise ConfigError(f"{flag} {device}: this machine cannot use it ({str(e).splitlines()[0]}); use {flag} cpu")
    return dev


def available_memory() -> int | None:
    """Bytes of memory this machine can still give (Linux ``MemAvailable``), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def set_torch_threads(n: int | None = None) -> int:
    """Use ``n`` threads (default: the CPUs this process may run on).

    Ray sets OMP_NUM_THREADS=1 in workers, so an actor holding C CPUs must ask for C threads.
    """
    if n is None:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n = max(1, int(n))
    torch.set_num_threads(n)
    return n
