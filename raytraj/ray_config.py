"""How a transfer runs on Ray: workers, their resources, the cluster, recovery (no Ray import here).

Built by the CLI from its flags, or by a user for ``transfer(..., backend="ray", ray_config=...)``;
checked when built, so a bad value fails in one line before Ray starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .config import ConfigError, check_number


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
        for name, (flag, rule) in RULES.items():
            label = f"RayConfig.{name}" + (f" ({flag})" if flag else "")
            if getattr(self, name) is None:
                raise ConfigError(f"{label} must be set, got None")
            check_number(label, getattr(self, name), **rule)
        if self.address is not None and not isinstance(self.address, str):
            raise ConfigError(f"address must be a string such as 'auto' or 'ray://host:10001', got {self.address!r}")
        if self.runtime_env is not None and not isinstance(self.runtime_env, dict):
            raise ConfigError(f"runtime_env must be a dict, got {type(self.runtime_env).__name__}")


# The one home of the numeric rules: the CLIs and the analysis grid build a RayConfig and check nothing themselves.
RULES: dict[str, tuple[str | None, dict]] = {  # field: (its CLI flag, check_number's rule)
    "workers": ("--workers", {"minimum": 1, "integer": True}),
    "cpus_per_worker": ("--cpus-per-worker", {"above": 0}),
    "gpus_per_worker": ("--gpus-per-worker", {"minimum": 0}),
    "placement_timeout_s": ("--placement-timeout", {"above": 0}),
    "max_recoveries": (None, {"minimum": 0, "integer": True}),
}
