"""Record a trajectory from any training loop: yours, or a Ray Train ``TorchTrainer``'s.

    rec = TrajectoryRecorder("runs/src", model, model_factory="mypkg.nets:make_net",
                             model_kwargs={"width": 512}, data="mypkg.data:load")
    for epoch in range(E):
        ...train...
        rec.record(model)        # or rec.step(model) every iteration, with every=N
    rec.close()                  # marks the store complete

Step 0 (the model as handed to the constructor, i.e. its init) is written at once. Only
parameters and buffers are stored (no optimiser state, no pickles), through the same Arrow
writer as ``raytraj train``, so each step is written atomically and a crash leaves an unfinished
store that :meth:`TrajectoryRecorder.resume` continues. Under DDP (``torch.distributed``
initialised, as in Ray Train) only rank 0 writes; the other ranks' recorders do nothing, and
DDP's ``module.`` wrapper is looked through.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

import torch
import torch.nn as nn

from .. import fs
from ..config import ConfigError, to_dict
from .store import MANIFEST, TrajectoryError, TrajectoryStore, TrajectoryWriter

RECORDER = "recorder"


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside DDP / DataParallel / ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    state = unwrap(model).state_dict()
    # A state dict saved from a wrapper that was not unwrapped still carries its prefix.
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}


def _rank() -> int:
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _model_record(model: nn.Module, factory: str | None, kwargs: Mapping[str, Any] | None) -> dict:
    from ..models import FactoryConfig, build_model, model_to_dict

    if factory is None:
        if kwargs:
            raise ConfigError("model_kwargs go with model_factory")
        from ..recorded import describe_model

        # Enough to say what it was; `raytraj transfer` then needs --model (or the Python API a target module).
        return describe_model(model)
    cfg = FactoryConfig(factory, dict(kwargs or {}))
    built = _state(build_model(cfg, 0))
    own = _state(model)
    bad = sorted(k for k in set(own) | set(built) if k not in own or k not in built
                 or tuple(own[k].shape) != tuple(built[k].shape))
    if bad:
        raise ConfigError(f"model factory {cfg.describe()} builds a model whose state dict differs from the recorded "
                          f"model's (at {bad[:4]}); record with the factory and kwargs that made the model")
    return model_to_dict(cfg)


def _data_record(data, data_kwargs: Mapping[str, Any] | None) -> dict | None:
    from ..data import DataConfig, parse_data

    if data is None:
        if data_kwargs:
            raise ConfigError("data_kwargs go with data")
        return None
    cfg = data if isinstance(data, DataConfig) else parse_data(data)
    if data_kwargs:
        if cfg.source != "import":
            raise ConfigError(f"data_kwargs go with a data function (package.module:function), not {data!r}")
        cfg = DataConfig(source="import", path=cfg.path, args=dict(data_kwargs))
    return to_dict(cfg)


class TrajectoryRecorder:
    """Writes a model's parameters and buffers to a trajectory store as it trains.

    Args:
        location: the store: a folder, ``s3://...`` or ``gs://...``; it must not hold a store yet.
        model: the model at its init (a DDP-wrapped model is fine). Step 0 is written from it now.
        model_factory: ``package.module:function`` that builds the model, so that ``raytraj transfer``
            and Ray workers can rebuild it. Optional, but without it a transfer needs ``--model``.
        model_kwargs: the factory's keyword arguments (JSON values).
        data: the training data: ``package.module:function`` or a bundled name like ``digits``.
        data_kwargs: the data function's keyword arguments (JSON values).
        every: ``"epoch"`` (write on each :meth:`record`) or N (:meth:`step` writes every N iterations).
        seed: the seed of the init, for the record.
        meta: more JSON metadata to keep in the store (e.g. your recipe).
    """

    def __init__(self, location: str, model: nn.Module, *, model_factory: str | None = None,
                 model_kwargs: Mapping[str, Any] | None = None, data=None, data_kwargs: Mapping[str, Any] | None = None,
                 every: str | int = "epoch", seed: int | None = None, meta: Mapping[str, Any] | None = None,
                 _writer: TrajectoryWriter | None = None):
        self.location = str(location)
        self.active = _rank() == 0
        self.writer = _writer
        self._t0 = time.perf_counter()
        if _writer is not None:
            info = _writer.manifest["steps"][-1]
            self.every = _writer.manifest["meta"][RECORDER]["every"]
            self.epoch, self.iteration = int(info.get("epoch", 0)), int(info.get("iteration", 0))
            self._elapsed0 = float(info.get("elapsed_s", 0.0))
            return
        if every is None and self.active:
            raise ConfigError("every must be 'epoch' or an iteration count >= 1, got None")
        if every not in ("epoch", None) and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
            raise ConfigError(f"every must be 'epoch' or an iteration count >= 1, got {every!r}")
        self.every, self.epoch, self.iteration, self._elapsed0 = every, 0, 0, 0.0
        if not self.active:
            return
        record = {
            "model": _model_record(model, model_factory, model_kwargs),
            "data": _data_record(data, data_kwargs),
            "seed": seed,
            RECORDER: {"every": every},
            **dict(meta or {}),
        }
        state = _state(model)
        params = [k.removeprefix("module.") for k, _ in unwrap(model).named_parameters()]
        if fs.exists(fs.join(self.location, MANIFEST)):
            raise TrajectoryError(f"{self.location} already holds a trajectory; continue an unfinished one with "
                                  "TrajectoryRecorder.resume(location), or record to another location")
        self.writer = TrajectoryWriter.create(self.location, record, state, params)
        try:
            self.writer.write(0, state, {"epoch": 0, "iteration": 0, "elapsed_s": 0.0})
        except BaseException:
            # Without step 0 the store is useless; removing its manifest lets the same call run again.
            fs.remove(fs.join(self.location, MANIFEST))
            raise

    @classmethod
    def resume(cls, location: str, step: int | None = None) -> "TrajectoryRecorder":
        """Continue an unfinished store after a crash.

        Args:
            location: the store.
            step: the last step to keep (the one your own training checkpoint matches); later steps are
                dropped and will be written again. Default: keep every recorded step.
        """
        if _rank() != 0:
            # Other ranks record nothing, and need not read the store (it may sit on rank 0's disk):
            # their recorder only counts iterations, whatever ``every`` rank 0 records with.
            return cls(location, nn.Module(), every=None)
        writer = TrajectoryWriter.resume(location)
        if RECORDER not in writer.manifest["meta"]:
            raise TrajectoryError(f"{location} was recorded by `raytraj train`; resume it with the same command")
        if step is not None:
            if not 0 <= step < len(writer.steps):
                raise TrajectoryError(f"{location} holds steps 0..{len(writer.steps) - 1}; cannot resume at {step}")
            writer.truncate(step + 1)
        return cls(location, nn.Module(), _writer=writer)

    @property
    def last_step(self) -> int:
        """The last step written (-1 on ranks that do not write)."""
        return len(self.writer.steps) - 1 if self.writer else -1

    def latest_state(self) -> dict[str, torch.Tensor]:
        """The parameters and buffers of the last written step (to restart a model from)."""
        return TrajectoryStore(self.location).read(self.last_step)

    def record(self, model: nn.Module, **info) -> None:
        """Write the model as the next step (call it at the end of each epoch).

        Args:
            model: the model now (DDP-wrapped is fine).
            info: JSON values kept with the step, e.g. ``val_acc=91.2``.
        """
        self.epoch += 1
        self._write(model, info)

    def step(self, model: nn.Module, **info) -> None:
        """Count one iteration; writes the model every ``every`` iterations (``every`` must be an int)."""
        if self.every == "epoch":
            raise ConfigError("step() counts iterations; create the recorder with every=N, or call record() per epoch")
        self.iteration += 1
        if self.every is not None and self.iteration % self.every == 0:  # None: a resumed rank that writes nothing
            self._write(model, info)

    def _write(self, model, info) -> None:
        if not self.active:
            return
        if self.writer.manifest["complete"]:
            raise TrajectoryError(f"{self.location} is closed; nothing more can be recorded")
        self.writer.write(len(self.writer.steps), _state(model), {
            "epoch": self.epoch, "iteration": self.iteration, "elapsed_s": self.elapsed_s, **info})

    @property
    def elapsed_s(self) -> float:
        return self._elapsed0 + time.perf_counter() - self._t0

    def close(self, **meta) -> None:
        """Mark the store complete; ``meta`` (e.g. ``test_acc=93.1``) is kept in it.

        Stores with fewer than two steps cannot be transferred, so closing one raises.
        """
        if not self.active or self.writer.manifest["complete"]:
            return
        if len(self.writer.steps) < 2:
            raise TrajectoryError(f"{self.location} holds only the init; record at least one step before close()")
        self.writer.finish(total_s=self.elapsed_s, **meta)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:  # a failed loop leaves the store unfinished, to resume
            self.close()
