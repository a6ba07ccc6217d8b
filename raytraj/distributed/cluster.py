"""Connecting to Ray: a running cluster (address, RAY_ADDRESS, or inside ``ray job submit``), or a
new local one."""

from __future__ import annotations

import os
import socket
import warnings

import ray

from ..config import ConfigError


def connect(address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None,
            runtime_env: dict | None = None) -> bool:
    """Make sure this process is a Ray driver; returns True if this call did the ``ray.init``.

    ``address`` is ``auto`` (the cluster ``ray start`` made on this machine), ``HOST:PORT`` or
    ``ray://HOST:PORT``. Without it, Ray joins the cluster named by RAY_ADDRESS (as set by
    ``ray job submit``) or starts a fresh local instance without a dashboard. ``runtime_env``
    (e.g. ``{"working_dir": ..., "py_modules": [...]}``) ships the user's own modules to the workers.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        if runtime_env:
            warnings.warn("Ray is already initialised in this process; --working-dir/--py-modules are ignored. "
                          "Pass runtime_env to ray.init instead", stacklevel=2)
        return False
    env = {"runtime_env": runtime_env} if runtime_env else {}
    if address or os.environ.get("RAY_ADDRESS"):
        check_address(address or os.environ["RAY_ADDRESS"], "--address" if address else "RAY_ADDRESS")
        check_reachable(address or os.environ["RAY_ADDRESS"])
        ray.init(address=address, log_to_driver=True, **env)
    else:
        _watch_once()  # the local instance's processes die with this one, even on SIGKILL
        ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, log_to_driver=True,
                 **env)
    return True


_watchdog = []


def _watch_once() -> None:
    from ..watchdog import watch

    if not _watchdog:
        _watchdog.append(watch())


def check_address(address: str, where: str = "--address") -> None:
    """``auto``, ``local``, ``HOST:PORT`` or ``ray://HOST[:PORT]``; anything else fails here in one line,
    not as Ray's ValueError ("Unable to parse port number") from deep inside ``ray.init``."""
    if address in ("auto", "local"):
        return
    client = address.startswith("ray://")
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if client and not sep and address.removeprefix("ray://"):
        return  # Ray Client's default port
    if not (sep and host and port.isdigit() and 0 < int(port) < 65536):
        raise ConfigError(f"{where} {address!r} is not a Ray address: give auto, HOST:PORT (the head's GCS port, "
                          "6379 by default) or ray://HOST:PORT" + (" (or unset RAY_ADDRESS to start a local "
                                                                  "instance)" if where == "RAY_ADDRESS" else ""))


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Ray retries a HOST:PORT nothing listens on for many minutes, silently: fail at once instead.
    ``auto`` and other forms without a port are left to Ray."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not (sep and host and port.isdigit()):
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ConfigError(f"cannot reach a Ray cluster at {address} ({e.strerror or e}); start one there "
                          "(`ray start --head`) or correct --address (or RAY_ADDRESS)") from None


def short_resources(resources: dict) -> dict:
    return {k: v for k, v in resources.items() if k in ("CPU", "GPU", "memory") or k.startswith("accelerator")}


def node_totals() -> list[dict]:
    return [short_resources(n["Resources"]) for n in ray.nodes() if n["Alive"]]


def fits(bundle: dict, count: int) -> bool:
    """Could ``count`` bundles be placed on the live nodes, first fit by node capacity?"""
    free = [dict(n["Resources"]) for n in ray.nodes() if n["Alive"]]
    for _ in range(count):
        for node in free:
            if all(node.get(k, 0) >= v for k, v in bundle.items()):
                for k, v in bundle.items():
                    node[k] -= v
                break
        else:
            return False
    return True


def fixed_cluster() -> bool:
    """All nodes on this machine: nothing can autoscale, so an unfit request is final."""
    here = {"127.0.0.1", ray.util.get_node_ip_address()}
    try:
        here.add(socket.gethostbyname(socket.gethostname()))
    except OSError:
        pass
    return all(n["NodeManagerAddress"] in here for n in ray.nodes() if n["Alive"])
