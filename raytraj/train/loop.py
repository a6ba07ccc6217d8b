"""Training with recording: SGD with momentum, cosine LR with warmup, a checkpoint per epoch
(or every N iterations) into a trajectory store. An interrupted run resumes where it stopped.

Step 0 of the store is the init. Batch order is a function of (seed, epoch), and the learning
rate a function of the iteration, so resuming needs only the weights, the momentum buffers
and the iteration count, which are saved atomically next to every checkpoint.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from .. import fs
from ..checkpoint import load_checkpoint, save_checkpoint
from ..config import ConfigError, check_seed, to_dict
from ..data import Dataset, epoch_batches, fingerprint
from ..evaluation import accuracy, at_chance_level, chance_accuracy
from ..models import HEAD, build_model, logits_of, model_to_dict, reinit_head
from ..progress import progress_bar
from ..runfolder import RunFolder
from ..runtime import resolve_device
from ..trajectory import TrajectoryError, TrajectoryStore, TrajectoryWriter, is_store
from ..trajectory.store import MANIFEST
from ..writelock import locks_output
from .recipe import TrainConfig

TRAIN_STATE = "train_state.safetensors"


@dataclass
class TrainResult:
    location: str
    steps: int
    val_acc: list[float]  # per checkpoint, step 1..
    test_acc: float
    train_s: float  # optimiser steps only: forward, backward, update
    total_s: float
    chance_val_acc: float = 0.0  # what predicting the most frequent class scores on val
    cpu_s: float = 0.0  # CPU seconds of this process (all its threads) over the whole run, resumes summed

    @property
    def at_chance_level(self) -> bool:
        return at_chance_level(self.val_acc[-1], self.chance_val_acc) if self.val_acc else False


def lr_at(recipe: TrainConfig, iteration: int, iters_per_epoch: int) -> float:
    total = recipe.epochs * iters_per_epoch
    warmup = int(recipe.warmup_epochs * iters_per_epoch)
    if iteration < warmup:
        return recipe.lr * (iteration + 1) / warmup
    progress = (iteration - warmup) / max(1, total - warmup)
    return 0.5 * recipe.lr * (1 + math.cos(math.pi * progress))


def initial_state(model_cfg, seed: int, init: Mapping[str, torch.Tensor] | None, new_head: bool,
                  head_seed: int | None = None, head: str = HEAD) -> dict[str, torch.Tensor]:
    """A fresh seeded init, or ``init`` (e.g. a pre-trained checkpoint) with an optional new head.

    With ``new_head`` the head (module ``head``) comes from ``head_seed`` (default 2*seed+1, as in
    the official code) and may have another number of classes than ``init``'s.
    """
    model = build_model(model_cfg, seed)
    if init is None:
        return model.state_dict()
    own = model.state_dict()
    body = {k: v for k, v in init.items() if not (new_head and k.startswith(head + "."))}
    missing = [k for k in own if k not in body and not (new_head and k.startswith(head + "."))]
    extra = [k for k in body if k not in own]
    bad = [k for k in body if k in own and tuple(body[k].shape) != tuple(own[k].shape)]
    if missing or extra or bad:
        hint = " (a different class count needs --new-head)" if any(k.startswith(head + ".") for k in bad) else ""
        raise ConfigError(
            "the init checkpoint does not fit the model: "
            + "; ".join(p for p in [f"missing {missing[:4]}" if missing else "", f"unexpected {extra[:4]}" if extra
                                    else "", f"wrong shapes {bad[:4]}{hint}" if bad else ""] if p)
            + ". Was it trained with another --model or model options?"
        )
    if new_head:
        reinit_head(model, 2 * seed + 1 if head_seed is None else head_seed, head)
        body.update({k: v for k, v in model.state_dict().items() if k.startswith(head + ".")})
    return {k: body[k].clone() for k in own}


@locks_output("out", what="training run")
def train(
    model_cfg,
    data: Dataset,
    recipe: TrainConfig,
    seed: int,
    out: str,
    *,
    init: Mapping[str, torch.Tensor] | None = None,
    init_info: dict | None = None,
    new_head: bool = False,
    device: torch.device | str | None = None,
    soft_targets: torch.Tensor | None = None,
    soft_info: dict | None = None,
    progress: bool = True,
    head: str = HEAD,
) -> TrainResult:
    """Train and record; with ``soft_targets`` (class probabilities per training sample, e.g. an
    ensemble's), the loss is cross-entropy against them instead of the labels (distillation).

    Training seeds torch's generators per epoch (Dropout); the caller's generator states are
    restored afterwards, so calling it as a library leaves the caller's random stream as it was.
    """
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        return _train(model_cfg, data, recipe, seed, out, init=init, init_info=init_info, new_head=new_head,
                      device=device, soft_targets=soft_targets, soft_info=soft_info, progress=progress, head=head)


def _train(model_cfg, data: Dataset, recipe: TrainConfig, seed: int, out: str, *, init, init_info, new_head, device,
           soft_targets, soft_info, progress, head) -> TrainResult:
    check_seed("--seed", seed)
    device = resolve_device(device)
    model = build_model(model_cfg, seed).to(device)
    param_names = [n for n, _ in model.named_parameters()]
    meta = {
        "model": model_to_dict(model_cfg), "data": to_dict(data.config), "data_fingerprint": fingerprint(data),
        "recipe": to_dict(recipe), "seed": seed,
        "init": init_info, "new_head": new_head, **({"soft_targets": soft_info} if soft_targets is not None else {}),
    }
    state_path = fs.join(out, TRAIN_STATE)
    start_state = initial_state(model_cfg, seed, init, new_head, head=head)
    writer, state, resume = _open_writer(out, meta, start_state, param_names, state_path)
    model.load_state_dict(state)
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                          weight_decay=recipe.weight_decay)
    iteration, train_s, val_accs = 0, 0.0, []
    if resume is not None:
        iteration, train_s, val_accs = resume["iteration"], resume["train_s"], resume["val_acc"]
        for p, name in zip(model.parameters(), param_names):
            if f"momentum.{name}" in resume["tensors"]:
                opt.state[p]["momentum_buffer"] = resume["tensors"][f"momentum.{name}"].to(device)

    n = data.size("train")
    iters_per_epoch = len(epoch_batches(n, recipe.batch_size, seed, 0))
    total = recipe.epochs * iters_per_epoch
    x_train, y_train = data.x["train"].to(device), data.y["train"].to(device)
    if soft_targets is not None:
        if tuple(soft_targets.shape) != (n, data.num_classes):
            raise ConfigError(f"soft targets have shape {tuple(soft_targets.shape)}, the training split needs "
                              f"({n}, {data.num_classes})")
        soft_targets = soft_targets.to(device)
    elapsed0 = (resume or {}).get("elapsed_s", 0.0)
    # CPU seconds besides wall seconds: on a shared machine only they compare training with transfer.
    cpu0 = (resume or {}).get("cpu_s", 0.0)
    t_start, c_start = time.perf_counter(), time.process_time()
    bar = progress_bar(total, iteration, f"train {out}", progress)

    def checkpoint():
        model.eval()
        val = accuracy(model, model.state_dict(), data, "val", device=device)
        val_accs.append(val)
        step = len(writer.steps)
        writer.write(step, model.state_dict(), {"epoch": iteration / iters_per_epoch, "iteration": iteration,
                                                "val_acc": val})
        momentum = {f"momentum.{name}": opt.state[p]["momentum_buffer"]
                    for p, name in zip(model.parameters(), param_names) if "momentum_buffer" in opt.state[p]}
        save_checkpoint(state_path, momentum, {
            "step": step, "iteration": iteration, "train_s": train_s, "val_acc": val_accs,
            "elapsed_s": elapsed0 + time.perf_counter() - t_start, "cpu_s": cpu0 + time.process_time() - c_start})
        bar.set_postfix(step=step, val_acc=f"{val:.2f}")  # the recorded step and its val
        model.train()

    model.train()
    while iteration < total:
        epoch, offset = divmod(iteration, iters_per_epoch)
        # Dropout draws from torch's global RNG: seed it by (seed, epoch), as the batch order is, so
        # that a seeded run repeats, and a run resumed at an epoch's checkpoint goes on as it would
        # have (one resumed mid-epoch, with save_every, draws other masks for that epoch's rest).
        torch.manual_seed(int(np.random.default_rng([seed, epoch, 1]).integers(2**62)))
        for idx in epoch_batches(n, recipe.batch_size, seed, epoch)[offset:]:
            t0 = time.perf_counter()
            for group in opt.param_groups:
                group["lr"] = lr_at(recipe, iteration, iters_per_epoch)
            logits = logits_of(model(x_train[idx]))
            if soft_targets is None:
                loss = F.cross_entropy(logits, y_train[idx])
            else:
                loss = -(soft_targets[idx] * F.log_softmax(logits, dim=1)).sum(1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            train_s += time.perf_counter() - t0
            iteration += 1
            if recipe.save_every:
                due = iteration % recipe.save_every == 0 or iteration == total
            else:
                due = iteration % iters_per_epoch == 0
            if due:
                if not math.isfinite(loss.item()):
                    raise FloatingPointError(f"training loss became {loss.item()} by iteration {iteration}; "
                                             "lower --lr")
                checkpoint()
            bar.update(1)  # after the checkpoint: its line shows the step just recorded
    bar.close()
    model.eval()
    test = accuracy(model, model.state_dict(), data, "test", device=device)
    total_s = elapsed0 + time.perf_counter() - t_start
    cpu_s = cpu0 + time.process_time() - c_start
    writer.finish(test_acc=test, train_s=train_s, total_s=total_s, cpu_s=cpu_s, val_acc=val_accs)
    return TrainResult(out, len(writer.steps) - 1, val_accs, test, train_s, total_s, chance_accuracy(data, "val"),
                       cpu_s)


def _open_writer(out, meta, start_state, param_names, state_path):
    """A writer for a new store, or for an unfinished one with the same settings (resume)."""
    try:
        store = TrajectoryStore(out)
    except TrajectoryError:
        if is_store(out):
            raise
        if RunFolder(out).started:
            raise ConfigError(f"--out {out} holds a transfer run; a trajectory store needs a folder of its own")
        writer = TrajectoryWriter.create(out, meta, start_state, param_names)
        writer.write(0, start_state, {"epoch": 0.0, "iteration": 0})
        return writer, start_state, None
    if store.complete:
        raise TrajectoryError(f"{out} already holds a finished trajectory; choose another --out or delete it")
    recorded, meta = store.meta, json.loads(json.dumps(meta))  # as JSON: tuples read back as lists
    if recorded != meta and store.num_steps <= 1 and not fs.exists(state_path):
        # Stopped before its first checkpoint: nothing to keep, so any command may start over here.
        fs.remove(fs.join(out, MANIFEST))
        return _open_writer(out, meta, start_state, param_names, state_path)
    if recorded != meta:
        diff = sorted(k for k in meta if recorded.get(k) != meta[k])
        raise ConfigError(f"{out} holds an unfinished run with other settings ({', '.join(diff)}); resume it with "
                          "the same arguments, or choose another --out")
    writer = TrajectoryWriter.resume(out)
    if not fs.exists(state_path):  # interrupted before the first checkpoint: start over from the init
        writer.truncate(1)
        return writer, store.read(0), None
    tensors, info = load_checkpoint(state_path)
    writer.truncate(info["step"] + 1)  # a step written after the last saved optimiser state is redone
    return writer, store.read(info["step"]), {**info, "tensors": tensors}
