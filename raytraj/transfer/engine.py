"""The transfer algorithms: GMT, FGMT, Naive and Oracle (paper-notes sections 3 and 7).

For s = 1..T:
  GMT:    recompute the gradient pairs of points t = 0..s-1 under pi_{s-1}, fresh batches
  FGMT:   add the one new pair of point s-1 under pi_{s-1} to the cached pairs
  then    pi_s = argmax sum over pairs <target grad, pi(source grad)>   (coordinate descent)
  Naive:  pi_s = identity;   Oracle: pi_s = the weight-matching of the trained target, fixed
  and     theta2^s = theta2^0 + pi_s(theta1^s - theta1^0), evaluated on val when asked.

This module is pure: it never imports Ray. The backend decides where work runs.
"""

from __future__ import annotations

import time
import warnings
from typing import Callable

import numpy as np

from ..perm import Permutation, PermutationSpec, SolveOptions, identity_permutation
from ..progress import progress_bar
from .backend import Backend, GradRequest
from .config import TransferConfig
from .state import Checkpointer, TransferState


def _solve_seed(seed: int, step: int) -> int:
    """The seed of step ``step``'s group order: a pure function of the run's seed, so a resumed run repeats it."""
    return int(np.random.SeedSequence([seed, 2, step]).generate_state(1)[0])


def run_transfer(
    cfg: TransferConfig,
    backend: Backend,
    spec: PermutationSpec,
    num_steps: int,
    *,
    oracle_perm: Permutation | None = None,
    checkpointer: Checkpointer | None = None,
    on_eval: Callable[[int, float], None] | None = None,
    progress: bool = True,
) -> TransferState:
    """Run (or continue) a transfer; returns the final state with every step's permutation."""
    if cfg.method == "oracle" and oracle_perm is None:
        raise ValueError("the oracle method needs the permutation matched on the trained target")
    loaded = checkpointer.load() if checkpointer else None
    state, cached, cache = loaded if loaded else (TransferState(step=0, perms=[identity_permutation(spec)]), [], {})
    # The matcher keeps the pair bank where the backend wants it (in this process, or sharded over workers).
    matcher = backend.matcher(spec, cfg)
    matcher.restore(cached, cache, state.shards)  # FGMT's pairs and caches from before a restart
    fgmt = cfg.method == "fgmt"

    pending: dict[int, object] = {}

    def collect(before: int):
        # A handle already done (the local backend's) is read at once; another backend's evaluation
        # runs on while the next step computes, and is read then.
        for s in sorted(k for k in pending if k < before or pending[k].done()):
            t0 = time.perf_counter()
            acc = pending.pop(s).result()
            state.timing["eval_s"] += time.perf_counter() - t0
            state.val_acc[s] = acc
            if on_eval:
                on_eval(s, acc)

    def submit_eval(s: int):
        t0 = time.perf_counter()
        pending[s] = backend.evaluate(state.perms[s], s, "val", s)
        state.timing["eval_s"] += time.perf_counter() - t0

    # Evaluations lost with a restart are redone first.
    for s in range(1, state.step + 1):
        if cfg.evaluates(s, num_steps) and s not in state.val_acc:
            submit_eval(s)

    bar = progress_bar(num_steps, state.step, f"transfer {cfg.method}", progress, unit="step")

    shown = [state.step]  # steps counted on the bar (a disabled bar counts nothing itself)

    def report(upto: int):
        """Count steps up to ``upto`` on the bar, each beside its own val (evaluated steps only)."""
        while shown[0] < upto:
            shown[0] += 1
            done = shown[0]
            note = {"val_acc": f"{state.val_acc[done]:.2f}"} if done in state.val_acc else {}
            busy = backend.utilisation()  # the share of time a backend's workers computed (None: no workers)
            if busy is not None:
                note["workers_busy"] = f"{100 * busy:.0f}%"
            bar.set_postfix(**note)
            bar.update(1)

    for s in range(state.step + 1, num_steps + 1):
        prev = state.perms[s - 1]
        if cfg.method in ("gmt", "fgmt"):
            points = range(s) if cfg.method == "gmt" else [s - 1]
            capped = bool(cfg.step_sweeps) and cfg.warm_start and s < num_steps and cfg.step_sweeps < cfg.max_sweeps
            t0 = time.perf_counter()
            options = SolveOptions(max_sweeps=cfg.step_sweeps if capped else cfg.max_sweeps, tol=cfg.tol,
                                   rtol=cfg.rtol, seed=_solve_seed(cfg.seed, s))
            perm, info = matcher.step(s, prev, [GradRequest(t=t, step=s) for t in points], cfg.grad_batches,
                                      fresh=cfg.method == "gmt", init=prev if cfg.warm_start else None,
                                      options=options)
            state.timing["grad_s"] += info["grad_s"]
            state.timing["solve_s"] += time.perf_counter() - t0 - info["grad_s"]
            state.grad_batches += 2 * len(points) * cfg.grad_batches  # both models
            state.solves.append({**{k: info[k] for k in ("sweeps", "laps", "converged", "objective", "cost_s",
                                                         "lap_s", "pairs")}, "capped": capped})
            if not info["converged"] and not capped:
                warnings.warn(f"step {s}: the matching stopped at max_sweeps={cfg.max_sweeps} before converging "
                              f"(last sweep gained {info['gains'][-1]:.3g}); raise max_sweeps or rtol",
                              RuntimeWarning, stacklevel=2)
        elif cfg.method == "naive":
            perm = identity_permutation(spec)
        else:
            perm = oracle_perm
        state.perms.append(perm)
        if cfg.evaluates(s, num_steps):
            submit_eval(s)
        collect(before=s)  # the previous step's evaluation overlapped this step's work
        state.step = s
        if checkpointer:
            new_pairs, cache, state.shards = matcher.snapshot() if fgmt else ([], {}, {})
            checkpointer.save(state, new_pairs, cache)
        report(s - 1 if s in pending else s)  # a step is shown once its val is known
    collect(before=num_steps + 1)
    report(num_steps)
    bar.close()
    if checkpointer:
        _, cache, state.shards = matcher.snapshot() if fgmt else ([], {}, {})
        checkpointer.save(state, [], cache)
    return state
