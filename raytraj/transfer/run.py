"""A transfer run, end to end: prepare, pick a backend, run the engine, write the run folder
(its files: see raytraj/runfolder.py)."""

from __future__ import annotations

from typing import Callable

import torch.nn as nn

from .. import fs
from ..checkpoint import save_checkpoint
from ..config import ConfigError, from_dict, to_dict
from ..data import DataConfig
from ..finite import nonfinite_names
from ..models import HEAD
from ..perm import perm_to_lists
from ..ray_config import RayConfig
from ..runfolder import RunFolder
from ..trajectory import is_store
from ..writelock import locks_output
from . import clock
from .backend import Backend
from .checkpointing import RunCheckpointer
from .config import TransferConfig
from .engine import run_transfer
from .local import LocalBackend
from .problem import Problem, prepare
from .worker import TransferWorker


def local_worker(problem: Problem, cfg: TransferConfig, device=None) -> TransferWorker:
    return TransferWorker(problem.model_cfg, problem.data, problem.spec, problem.trajectory, problem.target_init,
                          seed=cfg.seed, batch_size=cfg.batch_size, bn_batches=cfg.bn_batches,
                          eval_batch_size=cfg.eval_batch_size, val_subset=cfg.val_subset, init_decay=cfg.init_decay,
                          device=device)


def make_backend(problem: Problem, cfg: TransferConfig, backend: str = "local", *, device=None,
                 ray_config: RayConfig | None = None, state_dir: str | None = None) -> Backend:
    """The backend that runs ``problem``.

    Args:
        problem: the prepared transfer.
        cfg: the transfer settings.
        backend: ``"local"`` (this process, on ``device``) or ``"ray"`` (workers as ``ray_config`` says).
        device: the local backend's device (default: a GPU when there is one).
        ray_config: the Ray backend's workers and cluster (default ``RayConfig()``).
        state_dir: where the Ray workers checkpoint their bank shards (a run folder's state/).

    Returns:
        A ``Backend``; close it when done.
    """
    if backend == "local":
        if ray_config is not None:
            raise ConfigError("ray_config (--workers, --address, ...) needs --backend ray")
        return LocalBackend(local_worker(problem, cfg, device))
    if backend == "ray":
        if device is not None:
            raise ConfigError("--device is for --backend local; Ray workers use the GPUs they hold")
        if cfg.lap not in ("auto", "scipy"):  # the ranks' solve is scipy's: say so rather than ignore it
            raise ConfigError(f"--lap {cfg.lap} runs on --backend local only; the Ray backend's ranks solve "
                              "exactly with scipy: drop --lap, or use --backend local")
        from ..distributed import RayBackend  # upward, lazy: Ray is imported only when asked for

        return RayBackend(problem, cfg, ray_config, state_dir=state_dir)
    raise ConfigError(f"unknown backend {backend!r}; choose local or ray")


@locks_output("out", what="transfer")
def transfer(
    source: str,
    out: str,
    cfg: TransferConfig,
    *,
    target_seed: int | None = None,
    target_init: str | None = None,
    new_head: bool = False,
    oracle_target: str | None = None,
    backend: str = "local",
    device=None,
    ray_config: RayConfig | None = None,
    resume: bool = False,
    on_eval: Callable[[int, float], None] | None = None,
    progress: bool = True,
    force: bool = False,
    model=None,
    data=None,
    spec=None,
    head: str = HEAD,
    problem: Problem | None = None,
    keep_state: bool = False,
) -> dict:
    """Transfer the trajectory recorded at ``source`` to a new init, into the run folder ``out``.

    Args:
        source: a complete trajectory store.
        out: the run folder to write (see ``raytraj.runfolder``); it must not hold another run.
        cfg: the transfer settings.
        target_seed: the target init is the store's model built with this seed ...
        target_init: ... or the state at this path (a store or a run folder's model).
        new_head: give the target a freshly initialised head (the pre-trained scenario).
        oracle_target: the trained target whose weight matching the oracle method uses.
        backend: ``"local"`` or ``"ray"``.
        device: the local backend's device (default: a GPU when there is one).
        ray_config: the Ray backend's workers and cluster (default ``RayConfig()``).
        resume: continue the unfinished run in ``out``.
        on_eval: called with (step, val accuracy) as each evaluation finishes.
        progress: show a progress bar.
        keep_state: keep the run folder's ``state/`` (FGMT's gradient pairs, the progress) after the
            run succeeds; by default it is removed then, as only a resume reads it (1.1 GB for an MLP
            of width 2048).
        force: transfer a source that ends at chance level, or with a spec that permutes less than
            ``cfg.min_coverage`` of the model, which are otherwise refused.
        model, data, spec, head: override what the store records (see ``prepare``).
        problem: an already prepared problem (the Python API's), used instead of preparing.

    Returns:
        The metrics dict, as written to ``metrics.json``.
    """
    start = clock.now()
    timing = {}  # this call's setup and finish phases (the steps' phases are in the state: they resume)
    # Resolved paths: a resume that spells the source relatively or absolutely is the same run.
    source, target_init, oracle_target = (p if p is None else fs.absolute(p) for p in (source, target_init,
                                                                                        oracle_target))
    record = {
        "transfer": to_dict(cfg), "source": source, "target_seed": target_seed, "target_init": target_init,
        "new_head": new_head, "oracle_target": oracle_target,
        **_override_record(model, data, spec, head, problem),
    }
    folder = RunFolder(out)
    checkpointer = RunCheckpointer(folder.state_dir)
    _claim_output(out, record, checkpointer, resume, write=False)
    if problem is None:
        problem = prepare(source, cfg, target_seed=target_seed, target_init=target_init, new_head=new_head,
                          oracle_target=oracle_target, model=model, data=data, spec=spec, head=head, force=force)
    record["fingerprints"] = fingerprints(problem)
    checkpointer.sizes = problem.spec.sizes  # saved permutations must fit the spec
    claimed = _claim_output(out, record, checkpointer, resume)  # only once the inputs are known good
    try:
        # Ray workers keep their bank shards' checkpoint in the run folder.
        runner = make_backend(problem, cfg, backend, device=device, ray_config=ray_config,
                              state_dir=fs.absolute(folder.state_dir))
    except BaseException:
        if claimed:  # a failed start leaves no half-made run folder: the same command can run again
            fs.remove(folder.config_path)
        raise
    clock.add(timing, "setup", start)  # reading, checking, and starting the backend's workers
    try:
        state = run_transfer(cfg, runner, problem.spec, problem.num_steps, oracle_perm=problem.oracle_perm,
                             checkpointer=checkpointer, on_eval=on_eval, progress=progress)
        evaluated = sorted(state.val_acc)
        best = max(evaluated, key=lambda s: (state.val_acc[s], -s))  # first step reaching the maximum
        last = problem.num_steps
        with clock.phase(state.timing, "eval"):
            # The best step is often the last: score and build that model once.
            test_best = runner.evaluate(state.perms[best], best, "test", best).result()
            test_final = test_best if best == last else runner.evaluate(state.perms[last], last, "test",
                                                                        last).result()
        finish = clock.now()
        best_model = runner.materialize(state.perms[best], best, best)
        models = {"best": (best, best_model),
                  "final": (last, best_model if best == last else runner.materialize(state.perms[last], last, last))}
        cluster = runner.report()  # Ray: traffic and placement
    finally:
        runner.close()
    for name, (step, model_state) in models.items():  # check both before saving either
        _check_finite(model_state, f"the {name} transferred model (step {step})", source)
    for name, (step, model_state) in models.items():
        save_checkpoint(folder.model_path(name), model_state,
                        {"step": step, "method": cfg.method, "source": source})
    fs.atomic_write_json(folder.perm_path, {
        "best_step": best, "best": perm_to_lists(state.perms[best]), "final": perm_to_lists(state.perms[last]),
        "group_sizes": problem.spec.sizes,
    })
    clock.add(timing, "finish", finish)  # building, checking and saving the best and final models
    wall, cpu = clock.now()
    metrics = {
        "method": cfg.method,
        "steps": problem.num_steps,
        "schedule": cfg.schedule,
        "val_acc": [state.val_acc.get(s) for s in range(1, last + 1)],
        "best_step": best,
        "best_val_acc": state.val_acc[best],
        "final_val_acc": state.val_acc[last],
        "test_acc": test_best,
        "final_test_acc": test_final,
        "grad_batches": state.grad_batches,
        # Each phase in wall seconds (<phase>_s) and this process's CPU seconds (<phase>_cpu_s: all its
        # threads; a Ray backend's workers not included): grad, solve, eval and checkpoint over all
        # steps, setup and finish of this call; total_s and cpu_s: this call in all.
        "timing": {**state.timing, **timing, "total_s": wall - start[0], "cpu_s": cpu - start[1]},
        **({"bank": state.bank} if state.bank else {}),  # the pair bank's bytes: pairs and cached contractions
        "solver": solver_summary(state.solves, len(problem.spec.sizes)),
        "source": source,
        "target": problem.target,
        "data": problem.data_cfg.describe(),
        "backend": backend,
        **cluster,
    }
    fs.atomic_write_json(folder.metrics_path, metrics)
    if not keep_state:  # finished: nothing resumes from it any more
        fs.remove(folder.state_dir)
    return metrics


def _check_finite(state: dict, what: str, source: str) -> None:
    bad = nonfinite_names(state)
    if bad:
        raise FloatingPointError(f"{what} holds NaN or inf values in {bad[:3]}; not saving it. The source {source} "
                                 "or the transfer diverged")


def solver_summary(solves: list[dict], groups: int) -> dict:
    """Sweeps, LAPs and convergence of every step's solve, against the floor of one LAP per group per step."""
    sweeps = [s["sweeps"] for s in solves]
    laps = sum(s["laps"] for s in solves)
    floor = groups * len(solves)
    return {
        "sweeps": sum(sweeps), "mean_sweeps": sum(sweeps) / len(sweeps) if sweeps else 0.0,
        "laps": laps, "lap_floor": floor, "laps_per_floor": laps / floor if floor else 0.0,
        "lap_s": sum(s["lap_s"] for s in solves), "cost_s": sum(s["cost_s"] for s in solves),
        # steps that stopped at max_sweeps; those cut by step_sweeps are "capped" (they go on in the next step)
        "unconverged_steps": [i + 1 for i, s in enumerate(solves)
                              if not s.get("converged", True) and not s.get("capped")],
        "capped_steps": sum(1 for s in solves if s.get("capped") and not s.get("converged", True)),
        "per_step": {"sweeps": sweeps, "laps": [s["laps"] for s in solves],
                     "converged": [s.get("converged") for s in solves],
                     "capped": [bool(s.get("capped")) for s in solves]},
    }


def _override_record(model, data, spec, head, problem) -> dict:
    """What replaced the store's model, data or spec, for config.json (absent keys: the store's own)."""
    from ..recorded import describe_model

    out = {}
    if model is not None or problem is not None and isinstance(problem.model_cfg, nn.Module):
        out["model"] = describe_model(model if model is not None else problem.model_cfg)
    if data is not None:
        out["data"] = data if isinstance(data, str) else (
            to_dict(data) if isinstance(data, DataConfig) else getattr(getattr(data, "config", None), "source",
                                                                       "memory"))
    elif problem is not None and problem.data_cfg.source == "memory":
        out["data"] = "memory"
    if spec is not None:
        out["spec"] = spec if isinstance(spec, str) else "given"
    if head != HEAD:
        out["head"] = head
    return out


def _claim_output(out: str, record: dict, checkpointer: RunCheckpointer, resume: bool, write: bool = True) -> bool:
    """Refuse to mix runs in one folder; allow --resume only with the same settings.

    A folder whose run stopped before its first step (no progress saved) holds nothing to keep:
    the same or another command may start there again without --resume. Returns True when this
    call wrote the folder's config (a fresh run).
    """
    folder = RunFolder(out)
    config_path = folder.config_path
    if is_store(out):
        raise ConfigError(f"--out {out} is a trajectory store; a transfer run needs a folder of its own")
    if folder.finished:
        raise ConfigError(f"{out} already holds a finished transfer; choose another --out or delete it")
    # A folder whose run stopped before its first step is started over (below).
    if fs.exists(config_path) and checkpointer.exists():
        recorded = fs.read_json(config_path)
        if not resume:
            raise ConfigError(f"{out} holds an unfinished transfer; pass --resume to continue it, or choose another "
                              "--out")
        settings = [k for k in record if k != "fingerprints" and recorded.get(k) != record[k]]
        if settings:
            raise ConfigError(f"{out} holds a transfer with other settings ({_setting_changes(recorded, record)}); "
                              "resume with the same arguments")
        if "fingerprints" in record and recorded.get("fingerprints") not in (None, record["fingerprints"]):
            raise ConfigError(f"{out} was started on other inputs: {_input_changes(recorded['fingerprints'], record['fingerprints'])}; "
                              "resuming would mix two transfers. Restore the inputs, or start a new --out")
        return False
    if not write:
        return False
    fs.atomic_write_json(config_path, record)
    return True


def fingerprints(problem: Problem) -> dict:
    """The identities of a transfer's inputs, for config.json: a resume on changed inputs is refused."""
    import hashlib

    from ..trajectory import TrajectoryStore

    store = TrajectoryStore(problem.source)
    h = hashlib.sha256()
    for name, t in sorted(problem.target_init.items()):
        h.update(name.encode())
        h.update(t.detach().cpu().double().reshape(-1).numpy().tobytes())
    return {"source": {"digest": store.digest, "seed": store.meta.get("seed"), "steps": store.num_steps,
                       "data": (store.meta.get("data_fingerprint") or {}).get("sha256")},
            "target": {"digest": h.hexdigest()[:16], **problem.target}}


def _setting_changes(recorded: dict, record: dict) -> str:
    """``--method naive -> fgmt``: each setting that differs, as it was and as it is now."""
    out = []
    for key in sorted(k for k in record if k != "fingerprints" and recorded.get(k) != record[k]):
        was, now = recorded.get(key), record[key]
        if isinstance(was, dict) and isinstance(now, dict):
            out += [f"{key}.{k} {was.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(was) | set(now))
                    if was.get(k) != now.get(k)]
        else:
            out.append(f"{key} {was!r} -> {now!r}")
    return ", ".join(out)


def _input_changes(was: dict, now: dict) -> str:
    """What changed in the source or target since the run started, field by field."""
    out = []
    for role in ("source", "target"):
        a, b = was.get(role) or {}, now.get(role) or {}
        diff = [f"{k} {a.get(k)} -> {b.get(k)}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        if diff:
            out.append(f"the {role} changed ({', '.join(diff)})")
    return "; ".join(out) or "the inputs changed"


def load_run_config(out: str) -> tuple[dict, TransferConfig]:
    record = RunFolder(out).config()
    return record, from_dict(TransferConfig, record["transfer"])
