"""Running a Tune experiment of transfer trials: storage, resources, failures, and restore."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import time

import ray
from ray import tune

from .. import fs
from ..config import ConfigError, check_number
from ..distributed.cluster import connect, fits, fixed_cluster, node_totals
from ..progress import meter, timestamp
from ..ray_errors import describe
from ..runfolder import RunFolder
from .trial import FINISHED, MEMBERS, TRIALS, transfer_trial


def storage_root(out: str, storage: str | None) -> str:
    """Where Tune keeps experiment state: ``--storage`` (a path, s3:// or gs://) or OUT/tune."""
    return fs.absolute(storage or fs.join(out, "tune"))


def settings_path(out: str, name: str) -> str:
    """The settings an experiment was started with, kept pickle-free so that ``--resume`` can
    compare them before Tune touches anything."""
    return fs.join(out, f"{name}-settings.json")


def default_gpus_per_trial() -> float:
    """One GPU per trial when the (connected) cluster has GPUs, none otherwise."""
    return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def trials_progressed(out: str) -> bool:
    """Has any trial of the experiment in ``out`` saved a transfer step (or finished)?"""
    return any(RunFolder(fs.join(out, parent, name)).progressed
               for parent in (MEMBERS, TRIALS) for name in fs.listdir(fs.join(out, parent)))


def discard_failed_start(out: str, path: str, record: str) -> bool:
    """A start that failed before any trial saved a step (trials that cannot import the model, a
    placement that failed, Ctrl-C while trials start) left Tune's state but no work: remove it,
    so that the same command, or a corrected one, starts afresh without --resume. Returns True
    when there was such a start."""
    if not tune.Tuner.can_restore(path) or trials_progressed(out):
        return False
    for leftover in (path, record, fs.join(out, MEMBERS), fs.join(out, TRIALS)):
        fs.remove(leftover)
    return True


def check_trial_fits(cpus: float, gpus: float) -> None:
    """Tune waits forever (warning each minute) for a trial no node can hold; on a fixed local
    cluster, where no node will join, say so at once."""
    if fixed_cluster() and not fits({k: v for k, v in (("CPU", cpus), ("GPU", gpus)) if v}, 1):
        raise ConfigError(f"no node of this Ray cluster can hold a trial of {cpus:g} CPUs and {gpus:g} GPUs (it is a "
                          f"fixed local cluster; its nodes have {node_totals()}); lower --cpus-per-trial or "
                          "--gpus-per-trial")


def check_trusted_storage(path: str) -> None:
    """``Tuner.restore`` unpickles ``tuner.pkl`` from the experiment folder, which runs code: only
    restore from a folder that this user owns and that no one else may write to.

    Object storage (s3://, gs://) cannot be checked here: its bucket permissions are the boundary.
    """
    if fs.is_uri(path):
        return
    for p in (os.path.dirname(path), path, os.path.join(path, "tuner.pkl")):
        if not os.path.exists(p):
            continue
        st = os.stat(p)
        if st.st_uid != os.getuid():
            raise ConfigError(f"refusing to resume from {p}: it is owned by uid {st.st_uid}, not by you "
                              f"(uid {os.getuid()}); Tune's restore unpickles it, so it must be your own")
        if st.st_mode & stat.S_IWOTH:
            raise ConfigError(f"refusing to resume from {p}: it is world-writable, so anyone could have planted "
                              f"code in it; `chmod o-w {p}` if you trust its content")


def check_trial_options(cpus_per_trial, gpus_per_trial, max_concurrent) -> None:
    """Values Tune would take (and hang on, or fail on with a traceback): refused before anything starts."""
    check_number("--cpus-per-trial", cpus_per_trial, above=0)
    check_number("--gpus-per-trial", gpus_per_trial, minimum=0)
    check_number("--max-concurrent", max_concurrent, minimum=1, integer=True)


def say_trials(name: str, trials: int, cpus_per_trial: float, gpus_per_trial: float,
               max_concurrent: int | None) -> None:
    """One line before Tune starts: how many trials, and how many the cluster runs at once."""
    total = ray.cluster_resources()
    at_once = int(total.get("CPU", 0) // cpus_per_trial) if cpus_per_trial else trials
    if gpus_per_trial:
        at_once = min(at_once, int(total.get("GPU", 0) // gpus_per_trial))
    at_once = max(1, min(at_once, max_concurrent or at_once, trials))
    print(f"{name}: {trials} trials, {at_once} at a time on this cluster ({total.get('CPU', 0):g} CPUs, "
          f"{total.get('GPU', 0):g} GPUs): about {-(-trials // at_once)} rounds", flush=True)


def run_experiment(name: str, param_space: dict, *, out: str, storage: str | None, resume: bool,
                   cpus_per_trial: float, gpus_per_trial: float | None, tune_config: tune.TuneConfig,
                   max_failures: int = 2, address: str | None = None, settings: dict | None = None,
                   runtime_env: dict | None = None, trials: int | None = None) -> tune.ResultGrid:
    """Start (or with ``resume`` continue) experiment ``name``.

    Args:
        param_space: the searched values only; ``settings`` (shared by every trial) travel through
            ``tune.with_parameters``, so Tune prints a short config per trial.
        gpus_per_trial: None takes one GPU per trial when the cluster has GPUs.
        settings: JSON-friendly; a resume with other settings is refused before anything is touched.
        runtime_env: Ray's runtime_env (``working_dir``, ``py_modules``) for the user's own modules.
        trials: how many trials the experiment holds, for the progress count (default: Tune's count).
    """
    check_trial_options(cpus_per_trial, gpus_per_trial, tune_config.max_concurrent_trials)
    settings = json.loads(json.dumps(settings or {}))  # as it reads back: tuples become lists
    record = settings_path(out, name)
    root = storage_root(out, storage)
    path = fs.join(root, name)
    if discard_failed_start(out, path, record):
        resume = False  # nothing to continue: start afresh, with whatever settings are given now
    if resume and fs.exists(record):
        recorded = fs.read_json(record)
        diff = sorted(k for k in set(recorded) | set(settings) if recorded.get(k) != settings.get(k))
        if diff:
            raise ConfigError(f"{out} holds a {name} started with other settings ({', '.join(diff)}); resume with "
                              "the same arguments, or choose another --out")
    connect(address, runtime_env=runtime_env)
    if gpus_per_trial is None:
        gpus_per_trial = default_gpus_per_trial()
    check_trial_fits(cpus_per_trial, gpus_per_trial)
    if trials:
        say_trials(name, trials, cpus_per_trial, gpus_per_trial, tune_config.max_concurrent_trials)
    trainable = tune.with_resources(tune.with_parameters(transfer_trial, settings=settings),
                                    {"cpu": cpus_per_trial, "gpu": gpus_per_trial})
    if resume:
        if not tune.Tuner.can_restore(path):
            raise ConfigError(f"nothing to resume: no Tune experiment at {path}")
        check_trusted_storage(path)
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, restart_errored=True)
    else:
        if tune.Tuner.can_restore(path):
            raise ConfigError(f"{path} already holds this experiment; pass --resume to continue it, or choose "
                              "another --out/--storage")
        fs.atomic_write_json(record, settings)
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune_config,
            run_config=tune.RunConfig(
                name=name,
                storage_path=root,
                failure_config=tune.FailureConfig(max_failures=max_failures),
                # Tune's own tables (a status table every few seconds, each trial's result dump) give way
                # to one line per trial event; Tuner.restore keeps the callback it was started with.
                verbose=0,
                callbacks=[TrialLines(name, trials)],
            ),
        )
    with quiet_tune():
        return tuner.fit()


class TrialLines(tune.Callback):
    """One timestamped line per trial start, finish, early stop and failure, in a terminal and in
    logs alike; a trial's end also counts the trials done, with elapsed time, time remaining and rate."""

    def __init__(self, name: str, total: int | None = None):
        self.name, self.total = name, total
        self._runtime()

    def _runtime(self) -> None:
        # counted in this process only: Tuner.restore unpickles the callback it was started with
        self._t0, self._initial, self._ended = None, None, set()

    def __getstate__(self):
        return {"name": self.name, "total": self.total}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._runtime()

    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info):
        self._t0 = time.monotonic()
        if self.total is None and total_num_samples and total_num_samples > 0:
            self.total = total_num_samples

    def _say(self, trial, what: str) -> None:
        searched = " ".join(f"{k}={v}" for k, v in _flat(trial.config or {}).items())
        print(f"{timestamp()} {self.name}: trial {trial.trial_id} ({searched}) {what}", flush=True)

    def _count(self, trials, trial) -> str:
        """``; k/N trials done (pct%) [elapsed<remaining, rate]`` after ``trial`` ended."""
        if self._initial is None:  # trials a resumed experiment had already finished
            self._initial = sum(1 for t in trials if t is not trial and t.status in ("TERMINATED", "ERROR"))
        if self._t0 is None:
            self._t0 = time.monotonic()
        self._ended.add(trial.trial_id)
        n = self._initial + len(self._ended)
        total = max(self.total or len(trials), n)
        return "; trials done " + meter(n, total, time.monotonic() - self._t0, self._initial, unit="trial")

    def on_trial_start(self, iteration, trials, trial, **info):
        self._say(trial, "started")

    def on_trial_complete(self, iteration, trials, trial, **info):
        r = trial.last_result or {}
        best = f"best val {r['best_val_acc']:.2f}%" if r.get("best_val_acc") is not None else "no evaluation"
        if r.get(FINISHED) and r.get("finetune_val_acc") is not None:
            # what the trial hands over is the trained-on model: its val first, the transfer's after
            self._say(trial, f"finished: val {r['finetune_val_acc']:.2f}% after the training after the transfer "
                             f"(the transfer's {best} at step {r.get('best_step')}){self._count(trials, trial)}")
        elif r.get(FINISHED):
            self._say(trial, f"finished: {best} (step {r.get('best_step')}){self._count(trials, trial)}")
        else:
            self._say(trial, f"stopped early by the scheduler at step {r.get('step')}: {best}"
                             f"{self._count(trials, trial)}")

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._say(trial, "failed; Tune starts it again, from its last saved step")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._say(trial, f"failed{self._count(trials, trial)}")


def _flat(config: dict) -> dict:
    """A trial's searched values by their own names ({"transfer": {"steps": 4}} -> {"steps": 4})."""
    out = {}
    for k, v in config.items():
        out.update(_flat(v) if isinstance(v, dict) else {k: v})
    return out


@contextlib.contextmanager
def quiet_tune():
    """Tune's own output off while it runs; TrialLines speaks instead.

    * Tune's newer reporter prints its experiment table whatever the verbosity; its older one
      (RAY_AIR_NEW_OUTPUT=0) honours ``verbose=0``.
    * Its driver-side warnings on Ctrl-C advise its Python API ("Resume experiment with:
      Tuner.restore(...)") and complain about the trials that never started; the CLI says itself
      how to continue (--resume). Errors still show.
    """
    loggers = [logging.getLogger(n) for n in ("ray.tune.tune", "ray.tune.analysis.experiment_analysis")]
    levels = [lg.level for lg in loggers]
    before = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        if before is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = before


def result_rows(grid: tune.ResultGrid) -> list[dict]:
    """One row per trial: its config's searched values, last reported metrics, and its status:
    ``finished``, ``stopped early`` (by the scheduler), ``error``, or ``interrupted`` (never
    started, or still running when the experiment stopped)."""
    rows = []
    for result in grid:
        metrics = dict(result.metrics or {})
        if metrics.get(FINISHED):
            status = "finished"
        elif result.error:
            status = "error"
        elif metrics.get("done"):  # Tune's own key: the scheduler stopped the trial
            status = "stopped early"
        else:
            status = "interrupted"
        rows.append({"config": result.config or {}, "metrics": metrics, "path": result.path, "status": status,
                     "error": describe(result.error) if result.error else None})
    return rows


class Interrupted(KeyboardInterrupt):
    """Tune stopped on Ctrl-C (it catches SIGINT and returns what it has); the CLI says how to resume."""


def refuse_unfinished(rows: list[dict], what: str, expected: int,
                      command_hint: str = "the same command with --resume") -> None:
    """Interrupted (Ctrl-C, a killed driver) or failed trials, or fewer trials than ``expected``
    (an interrupted experiment lists only the trials it had created): say how to continue.

    Raises:
        Interrupted: no trial failed (a KeyboardInterrupt: the CLI exits 130 with how to resume).
        ConfigError: a trial failed; the message holds the first failure's root cause.
    """
    stopped = [r for r in rows if r["status"] in ("interrupted", "error")]
    missing = max(0, expected - len(rows))
    if stopped or missing:
        errors = [r["error"] for r in stopped if r["error"]]
        if not errors:  # no trial failed, yet some never ended: Tune caught a Ctrl-C and returned
            raise Interrupted(f"{len(stopped) + missing} of {max(expected, len(rows))} {what} did not finish; "
                              f"continue with {command_hint}")
        if not any("step" in r["metrics"] for r in rows):  # failed before any trial reported: nothing to keep
            command_hint = "the same command once the cause is fixed (no --resume needed)"
        raise ConfigError(f"{len(stopped) + missing} of {max(expected, len(rows))} {what} did not finish "
                          f"(failed: {errors[0]}); continue with {command_hint}")
