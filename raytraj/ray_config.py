"""How a transfer runs on Ray: workers, their resources, the cluster, recovery (no Ray import here).

Built by the CLI from its flags, or by a user for ``transfer(..., backend="ray", ray_config=...)``;
checked when built, so a bad value fails in one line before Ray starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .config import ConfigError


@dataclass(frozen=True)
class RayConfig:
    """The Ray backend's workers and cluster, in the manner of Ray Train's ``ScalingConfig``.

    Args:
        workers: gradient actors, one per placement-group bundle (spread over nodes); each owns a
            shard of the pair bank.
        cpus_per_worker: CPUs each worker holds; its torch threads follow them.
        gpus_per_worker: GPUs each worker holds (0: none; fractions share a GPU).
        address: the cluster to join (``"auto"``: the one ``ray start`` began on this machine;
            ``ray://host:port``); None starts a local Ray instance for the run.
        placement_timeout_s: how long to wait for the cluster to place the workers (autoscalers
            start nodes meanwhile); a request no node of a fixed local cluster can hold fails at once.
        max_recoveries: lost workers rebuilt per step (or per evaluation) before the run fails.
        runtime_env: Ray's runtime environment for the workers (e.g. ``{"pip": [...]}``).
    """

    workers: int = 2
    cpus_per_worker: float = 1
    gpus_per_worker: float = 0
    address: str | None = None
    placement_timeout_s: float = 600
    max_recoveries: int = 3
    runtime_env: dict[str, Any] | None = field(default=None, hash=False)

    def __post_init__(self):
        def number(name: str) -> float:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"RayConfig.{name} must be a number, got {value!r}")
            return value

        if number("workers") < 1 or int(self.workers) != self.workers:
            raise ConfigError(f"workers must be an integer >= 1 (--workers), got {self.workers!r}")
        if not number("cpus_per_worker") > 0:
            raise ConfigError(f"cpus_per_worker must be > 0 (--cpus-per-worker), got {self.cpus_per_worker!r}")
        if not number("gpus_per_worker") >= 0:
            raise ConfigError(f"gpus_per_worker must be >= 0 (--gpus-per-worker), got {self.gpus_per_worker!r}")
        if not number("placement_timeout_s") > 0:
            raise ConfigError(f"placement_timeout_s must be > 0 seconds (--placement-timeout), got "
                              f"{self.placement_timeout_s!r}")
        if number("max_recoveries") < 0 or int(self.max_recoveries) != self.max_recoveries:
            raise ConfigError(f"max_recoveries must be an integer >= 0, got {self.max_recoveries!r}")
        if self.address is not None and not isinstance(self.address, str):
            raise ConfigError(f"address must be a string such as 'auto' or 'ray://host:10001', got {self.address!r}")
        if self.runtime_env is not None and not isinstance(self.runtime_env, dict):
            raise ConfigError(f"runtime_env must be a dict, got {type(self.runtime_env).__name__}")
