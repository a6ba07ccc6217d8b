"""A member of the SPMD worker group: one Ray actor, one rank of a torch.distributed process group.

Rank 0 takes the driver's one call per command (a step, a restore) and broadcasts it to the
other ranks, which wait for commands in ``follow`` from the moment the group starts. Every rank
then runs the same code (``RankMatcher``) and exchanges tensors only with its peers.

Three concurrency groups keep the actor responsive: ``spmd`` (one thread: the process group and
its collectives), ``side`` (evaluation and saving, on a model replica of their own, overlapping the
next step) and ``ping`` (liveness and stats: a rank busy computing still answers, so being busy is
never taken for being lost).

Each rank loads the data itself from the data config, and opens a recorded trajectory from its
store, so neither passes through the driver: both must be readable from every node (a shared
path, or object storage such as s3:// or gs:// through pyarrow). Only data that exists solely in
the driver's memory (the Python API's in-memory splits), a linear trajectory's two end points and
the target init travel through Ray's object store, once at start-up.
"""

from __future__ import annotations

import datetime
import os
import pickle
import socket
import time
from collections import OrderedDict

import numpy as np
import ray
import torch
import torch.distributed as dist

from ..data import Dataset, load_data
from ..perm import SolveOptions
from ..runtime import set_torch_threads
from ..transfer.bank_shard import apply_diff, perm_diff
from ..transfer.collective import RankMatcher
from ..transfer.held import HeldPermutation, is_held_record, write_perm
from ..transfer.worker import TransferWorker

HISTORY = 8  # permutations of recent steps each rank keeps, so an evaluation names its step only


@ray.remote(max_restarts=0, concurrency_groups={"spmd": 1, "side": 1, "ping": 1})
class Rank:
    def __init__(self, rank: int, world: int, model_cfg, data_cfg, spec, trajectory, target_init, settings: dict,
                 plan, normalize: bool):
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
        self.threads = set_torch_threads(max(1, int(cpus)))
        self.gpu_ids = [str(g) for g in ray.get_gpu_ids()]
        self.device = "cuda" if self.gpu_ids and torch.cuda.is_available() else "cpu"
        self.rank, self.world, self.plan, self.normalize = rank, world, plan, normalize
        self.data = data_cfg if isinstance(data_cfg, Dataset) else load_data(data_cfg)
        settings = dict(settings)
        self.bank_dtype = getattr(torch, settings.pop("bank_dtype", "float32"))  # the shard's, as the local bank's
        self.args = (model_cfg, spec, trajectory, target_init, settings)
        self.worker = self._worker()
        self._evaluator = None
        self.history: OrderedDict[int, dict] = OrderedDict()
        self.matcher = None

    def _worker(self) -> TransferWorker:
        model_cfg, spec, trajectory, target_init, settings = self.args
        # A copy of its own per model (a trajectory from a store pickles as its location, with an empty cache).
        trajectory = pickle.loads(pickle.dumps(trajectory))
        return TransferWorker(model_cfg, self.data, spec, trajectory, target_init, device=self.device, **settings)

    # -- the process group -------------------------------------------------------------------------
    @ray.method(concurrency_group="ping")
    def rendezvous(self) -> tuple[str, int]:
        """Rank 0: an address and free port of this node for the others to join at."""
        host = ray.util.get_node_ip_address()
        with socket.socket() as s:
            s.bind((host, 0))
            return host, s.getsockname()[1]

    @ray.method(concurrency_group="spmd")
    def join(self, host: str, port: int, timeout_s: float) -> None:
        backend = "nccl" if self.device == "cuda" else "gloo"
        dist.init_process_group(backend, init_method=f"tcp://{host}:{port}", rank=self.rank, world_size=self.world,
                                timeout=datetime.timedelta(seconds=timeout_s))
        self.matcher = RankMatcher(self.worker, self.args[1], self.plan, self.rank, self.normalize,
                                   dtype=self.bank_dtype)

    @ray.method(concurrency_group="spmd")
    def lead(self, command: tuple) -> dict | None:
        """Rank 0: hand the command to every rank, run it here too, return its result."""
        box = [command]
        dist.broadcast_object_list(box, src=0)
        return self._run(command)

    @ray.method(concurrency_group="spmd")
    def follow(self) -> None:
        """Ranks 1..N-1: run rank 0's commands until it says stop."""
        while True:
            box = [None]
            dist.broadcast_object_list(box, src=0)
            if box[0][0] == "stop":
                return
            self._run(box[0])

    def _run(self, command: tuple):
        kind, args = command
        if kind == "step":
            return self._step(**args)
        if kind == "restore":
            self.matcher.restore(args["record"])
            return None
        if kind == "stop":
            return None
        raise ValueError(f"unknown command {kind!r}")

    def _step(self, s, ts, count, diff, fresh, warm, options, persist, perm=None, perms_at=None):
        if perm is not None:  # a starting permutation the ranks do not hold (after a restart or a resume)
            self.matcher.perm = {g: torch.as_tensor(np.array(p), dtype=torch.long) for g, p in perm.items()}
        else:
            apply_diff(self.matcher.perm, diff)
        before = None if perms_at else {g: p.clone() for g, p in self.matcher.perm.items()}
        perm, info = self.matcher.step(s, ts, count, fresh=fresh, warm=warm, options=SolveOptions(**options))
        if persist:
            self.matcher.persist(persist, s)
        if perms_at and self.rank == 0:
            write_perm(perms_at, s, perm)  # the run folder keeps it; the driver gets the step's record only
        self.history[s] = {g: p.clone() for g, p in perm.items()}
        while len(self.history) > HISTORY:
            self.history.popitem(last=False)
        busy = self.matcher.busy
        share = torch.tensor([busy["grad_s"] / max(busy["grad_wall_s"], 1e-12)], dtype=torch.float64)
        shares = [torch.empty_like(share) for _ in range(self.world)]
        dist.all_gather(shares, share)
        if self.rank:
            return None
        out = {"info": info, "busy": float(sum(shares)) / self.world}
        if before is not None:  # no run folder to write to: the changes travel with the answer
            out["diff"] = perm_diff({g: p.numpy() for g, p in before.items()}, {g: p.numpy() for g, p in perm.items()})
        return out

    # -- side work: evaluation and saving, overlapping the next step ---------------------------------
    def _perm(self, perm):
        """``perm`` itself, the permutation of step ``perm`` from this rank's history, or one rank 0 wrote
        to the run folder (``{"held": step, "at": location}``)."""
        if isinstance(perm, int):
            return self.history[perm]
        if is_held_record({"held": perm.get("held")}) and "at" in perm:
            step = perm["held"]
            if step in self.history:
                return self.history[step]
            return HeldPermutation(perm["at"], step, self.args[1].sizes).values_now()
        return perm

    @property
    def evaluator(self) -> TransferWorker:
        if self._evaluator is None:  # a model of its own: the step's thread switches its model to train mode
            self._evaluator = self._worker()
        return self._evaluator

    @ray.method(concurrency_group="side")
    def evaluate(self, perm, t: int, split: str, step: int | None) -> float:
        return self.evaluator.evaluate(self._perm(perm), t, split, step)

    @ray.method(concurrency_group="side")
    def materialize(self, perm, t: int, step: int | None) -> dict:
        return {k: v.cpu() for k, v in self.evaluator.materialize(self._perm(perm), t, step).items()}

    # -- liveness and accounting ---------------------------------------------------------------------
    @ray.method(concurrency_group="ping")
    def describe(self) -> dict:
        ctx = ray.get_runtime_context()
        return {"worker": self.rank, "node": ctx.get_node_id(), "host": ray.util.get_node_ip_address(),
                "pid": os.getpid(), "threads": self.threads, "gpu_ids": self.gpu_ids, "device": self.device,
                "owned_tensors": len(self.plan.owned(self.rank)),
                "backend": dist.get_backend() if dist.is_initialized() else None}

    @ray.method(concurrency_group="ping")
    def stats(self, windows: bool = False) -> dict:
        """Busy seconds and CPU seconds; with ``windows``, the last steps' gradient phases as (start,
        end) on ``time.perf_counter``'s clock (the machine's monotonic clock, shared by its processes)."""
        busy = dict(self.matcher.busy) if self.matcher else {}
        if windows:
            busy["grad_windows"] = list(self.matcher.grad_windows) if self.matcher else []
        return {**busy, "cpu_s": time.process_time()}
