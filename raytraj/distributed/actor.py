"""The Ray actor that holds a model replica and the data, and computes for the driver.

It wraps the same ``TransferWorker`` the local backend runs in-process, so every number it
returns is computed by the same code. Torch threads follow the CPUs the actor holds (Ray sets
OMP_NUM_THREADS=1 in workers), and the model goes to ``cuda`` when the actor holds a GPU.
"""

from __future__ import annotations

import os

import ray
import torch

from ..perm import solve_laps_serial
from ..runtime import set_torch_threads
from ..transfer.worker import TransferWorker
from .trajectory import ObjectStoreTrajectory


@ray.remote(num_cpus=0, max_restarts=0)
class SharedState:
    """Holds the object refs of (data, spec, trajectory, target_init) that every GradientWorker
    starts, and restarts, from. A restartable actor must not take object-store arguments itself:
    Ray cannot promise they still exist at a restart (its "actor restart will fail" error line)."""

    def __init__(self, shared: list):
        self.shared = shared

    def get(self) -> list:
        return self.shared


@ray.remote
class GradientWorker:
    def __init__(self, model_cfg, holder: str, settings: dict):
        """``holder``: the name of the SharedState actor to fetch the shared objects from, at every
        restart too. A name, not a handle: a handle carries a reference, as an object ref does."""
        data, spec, trajectory, target_init = ray.get(ray.get(ray.get_actor(holder).get.remote()))
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
        self.threads = set_torch_threads(max(1, int(cpus)))
        self.gpu_ids = [str(g) for g in ray.get_gpu_ids()]
        device = "cuda" if self.gpu_ids and torch.cuda.is_available() else "cpu"
        self.worker = TransferWorker(model_cfg, data, spec, trajectory, target_init, device=device, **settings)

    def _points(self, points):
        if points and isinstance(self.worker.trajectory, ObjectStoreTrajectory):
            self.worker.trajectory.offer(points)

    def gradient_sums(self, perm, step: int, t: int, batch_ids, count: int, points=None):
        self._points(points)
        target, source = self.worker.gradient_sums(perm, step, t, batch_ids, count)
        return {k: v.cpu() for k, v in target.items()}, {k: v.cpu() for k, v in source.items()}

    def evaluate(self, perm, t: int, split: str, step: int | None, points=None) -> float:
        self._points(points)
        return self.worker.evaluate(perm, t, split, step)

    def materialize(self, perm, t: int, step: int | None, points=None):
        self._points(points)
        return {k: v.cpu() for k, v in self.worker.materialize(perm, t, step).items()}

    def solve_lap(self, cost):
        return solve_laps_serial([cost])[0]

    def describe(self) -> dict:
        return {"node": ray.get_runtime_context().get_node_id(), "pid": os.getpid(), "threads": self.threads,
                "gpu_ids": self.gpu_ids, "device": str(self.worker.device)}
