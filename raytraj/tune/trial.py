"""One Tune trial: a transfer (and optionally subsequent training), reporting every evaluated step.

The trial's run folder (``config["run_dir"]``, local or object storage) holds the transfer's own
resumable state, so a trial restarted by ``FailureConfig`` or ``Tuner.restore`` continues from its
last step instead of starting over, and a finished trial is never recomputed. Reports therefore
carry no Tune checkpoint: nothing would read it, and Ray logs a line for every one.
"""

from __future__ import annotations

import io
import time
from typing import Callable

import numpy as np
import torch
from ray import tune

from .. import fs
from ..config import from_dict
from ..recorded import data_of
from ..evaluation import predict
from ..models import build_model
from ..runfolder import RunFolder
from ..runtime import set_torch_threads
from ..trajectory import TrajectoryStore, is_store
from ..transfer import TransferConfig, transfer
from ..transfer.checkpointing import RunCheckpointer
from ..transfer.finetune import finetune
from ..transfer.problem import open_source
from ..writelock import covered_by

PROBS = "probs-{split}.npy"
# Not Tune's own ``done``, which Tune also sets on trials its scheduler stops early.
FINISHED = "transfer_finished"
# ASHA's time axis: the fraction of the trajectory transferred, so that trials of different
# lengths (a swept ``steps``) meet at the same rungs.
TIME_ATTR = "trajectory_fraction"


# Where run_dir_and_target puts the trials' run folders, under OUT.
MEMBERS, TRIALS = "members", "trials"


def run_dir_and_target(config: dict) -> tuple[str, dict]:
    """Ensemble members live at OUT/members/member-K; sweep trials at OUT/trials/TRIAL_ID."""
    if "member" in config:
        k = config["member"]
        return fs.join(config["out"], MEMBERS, f"member-{k:03d}"), config["targets"][k]
    return fs.join(config["out"], TRIALS, tune.get_context().get_trial_id()), config["target"]


def trial_device() -> str:
    """Exactly the GPU Ray assigned to this trial, else the CPU. Ray 2.60 no longer hides GPUs from
    trials that asked for none, so "a GPU is visible" is not enough."""
    import ray

    return "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"


def eval_reporter(run_dir: str, length: int, report: Callable[[dict], None] = tune.report
                  ) -> Callable[[int, float], None]:
    """The transfer's ``on_eval`` for a trial: reports each evaluated step with the best val accuracy so far.

    A trial restarted after a failure resumes its run folder, whose steps evaluated before the
    failure are not evaluated again: the best starts from their recorded accuracies, so ASHA
    compares trials on their true best.

    Args:
        run_dir: the trial's run folder.
        length: the transfer's number of steps (ASHA's time axis is step / length).
        report: where results go (Tune's ``report``).

    Returns:
        ``on_eval(step, val_acc)``.
    """
    done = RunCheckpointer(RunFolder(run_dir).state_dir).evaluations()
    best = {"acc": max(done.values(), default=float("-inf"))}

    def on_eval(step: int, acc: float) -> None:
        best["acc"] = max(best["acc"], acc)
        if step == length:
            # The last step's result goes out with the final report (FINISHED, test accuracy, CPU
            # seconds): reported here, ASHA could stop at its last rung a trial that has run every step,
            # before the final report, and it would read "stopped early" with no final val.
            return
        report({"step": step, TIME_ATTR: step / length, "val_acc": acc, "best_val_acc": best["acc"]})

    return on_eval


def transfer_trial(config: dict, settings: dict | None = None) -> None:
    """Tune function trainable; the experiment's driver holds the lock of ``out``, under which the
    trial writes its run folder (see raytraj/writelock.py)."""
    settings = settings or {}
    with covered_by({**settings, **config}["out"]):
        _transfer_trial(config, settings)


def _transfer_trial(config: dict, settings: dict) -> None:
    """The trial itself. ``settings`` (shared by all trials) and ``config`` (this trial's
    searched values) together hold: source, out, transfer (TransferConfig fields, ``config``'s
    override ``settings``'), member + targets (ensembles) or target (sweeps), finetune_epochs,
    finetune_lr, save_probs."""
    cpu_start = time.process_time()  # CPU seconds of this trial, reported with its final result
    settings = settings or {}
    config = {**settings, **config, "transfer": {**settings.get("transfer", {}), **config.get("transfer", {})}}
    resources = tune.get_context().get_trial_resources().required_resources
    set_torch_threads(max(1, int(resources.get("CPU", 1))))
    device = trial_device()
    cfg = from_dict(TransferConfig, config["transfer"])
    run_dir, target = run_dir_and_target(config)
    length = cfg.steps if cfg.schedule != "actual" else TrajectoryStore(config["source"]).last_step
    on_eval = eval_reporter(run_dir, length)
    # a trial restarted after it finished reads its metrics; one cut short resumes
    metrics = RunFolder(run_dir).load_or_run(
        lambda resume: transfer(config["source"], run_dir, cfg, on_eval=on_eval, progress=False, resume=resume,
                                device=device, **target))
    final = {"step": metrics["steps"], TIME_ATTR: 1.0, "val_acc": metrics["final_val_acc"],
             "best_val_acc": metrics["best_val_acc"], "best_step": metrics["best_step"],
             "test_acc": metrics["test_acc"], "transfer_s": metrics["timing"]["total_s"], FINISHED: True}
    if config.get("finetune_epochs"):
        ft_dir = fs.join(run_dir, "finetune")
        if not (is_store(ft_dir) and TrajectoryStore(ft_dir).complete):
            finetune(run_dir, ft_dir, epochs=config["finetune_epochs"], lr=config.get("finetune_lr"), progress=False,
                     device=device)
        meta = TrajectoryStore(ft_dir).meta
        final.update(finetune_val_acc=meta["val_acc"][-1], finetune_test_acc=meta["test_acc"],
                     finetune_s=meta["total_s"])
    if config.get("save_probs"):
        final["member_test_acc"] = save_member_probs(config["source"], run_dir, bool(config.get("finetune_epochs")))
    # The trial's process, all threads: transfer, subsequent training and scoring. A trial restarted
    # after a failure counts only what its last attempt did.
    final["cpu_s"] = time.process_time() - cpu_start
    tune.report(final)


def member_state(run_dir: str, finetuned: bool) -> dict[str, torch.Tensor]:
    if finetuned:
        store = TrajectoryStore(fs.join(run_dir, "finetune"))
        return store.read(store.last_step)
    return RunFolder(run_dir).load_model("best")[0]


def save_member_probs(source: str, run_dir: str, finetuned: bool) -> float:
    """Softmax outputs of the member on every split (ensembles average them); returns test accuracy."""
    store = open_source(source)
    data = data_of(store)
    model = build_model(store.model_config(), 0)
    state = member_state(run_dir, finetuned)
    for split in ("train", "val", "test"):
        probs = predict(model, state, data.x[split]).numpy()
        fs.atomic_write_bytes(fs.join(run_dir, PROBS.format(split=split)), _npy(probs))
    return 100.0 * float((load_probs(run_dir, "test").argmax(1) == data.y["test"].numpy()).mean())


def load_probs(run_dir: str, split: str) -> np.ndarray:
    return np.load(io.BytesIO(fs.read_bytes(fs.join(run_dir, PROBS.format(split=split)))), allow_pickle=False)


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()
