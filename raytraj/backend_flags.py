"""The command line's --backend flags, as a run's keyword arguments: ``device`` for the local backend,
a checked :class:`~raytraj.ray_config.RayConfig` for Ray. Shared by ``raytraj transfer`` and
``raytraj analyze``; no torch or Ray import until a device is named."""

from __future__ import annotations

import argparse

from .config import ConfigError
from .ray_config import RayConfig

# Flag attribute → RayConfig field; a command that lacks a flag leaves it at RayConfig's default.
RAY_FLAGS = {"address": "address", "workers": "workers", "cpus_per_worker": "cpus_per_worker",
             "gpus_per_worker": "gpus_per_worker", "placement_timeout": "placement_timeout_s"}


def backend_options(args: argparse.Namespace, runtime_env: dict | None = None) -> dict:
    """``{"device": ...}`` (or ``{}``) for --backend local, ``{"ray_config": RayConfig}`` for --backend ray.

    Args:
        args: parsed flags with ``backend`` and ``device``, and any of :data:`RAY_FLAGS`.
        runtime_env: the Ray workers' runtime environment (--working-dir/--py-modules).

    Raises:
        ConfigError: a Ray flag without --backend ray, --device with it, a device this machine
            lacks, or a value RayConfig refuses.
    """
    given = {field: getattr(args, flag) for flag, field in RAY_FLAGS.items() if getattr(args, flag, None) is not None}
    if args.backend != "ray":
        if given:
            flag = next(f for f, field in RAY_FLAGS.items() if field in given)
            raise ConfigError(f"--{flag.replace('_', '-')} needs --backend ray")
        if not args.device:
            return {}
        from .runtime import resolve_device  # torch, only once a device is named

        resolve_device(args.device)  # refused at once if this machine cannot use it
        return {"device": args.device}
    if args.device:
        raise ConfigError("--device is for --backend local; Ray workers use the GPUs they hold")
    return {"ray_config": RayConfig(**given, runtime_env=runtime_env)}
