"""The engine's matcher on the Ray backend: the pair bank lives on the workers, sharded by tensor.

Per step the driver schedules, and only small things pass through it: permutation diffs out,
and per LAP the changed entries and two assignment values back (O(sum of n_g) numbers), plus
object references. Gradients and cost matrices move worker to worker.

Same answer as the local backend: the solve flow is ``raytraj.perm.solve`` itself, with this
matcher as its ``Costs``; each cost matrix is the sum of the same terms in the same order;
gradient means are the per-batch gradients summed in float64 in batch order, whichever worker
computed each batch (``transfer.worker.mean_gradients``), so the LAPs see the local backend's
inputs bit for bit. The objective adds per-shard float64 partials, so it may differ from the
local one in the last bits: it only scales rtol and compares block starts.
"""

from __future__ import annotations

import time

import ray

from ..perm import solve
from ..transfer.bank_shard import shard_record
from ..transfer.sharding import split_units
from .recovery import retry_on_worker_loss


class ShardedMatcher:
    """The Ray backend's ``Matcher``, and the ``Costs`` of its solves: the bank is sharded on the workers."""

    device = None  # the driver keeps the permutations on the CPU

    def __init__(self, backend, spec):
        self.b, self.spec = backend, spec
        self.record: dict = {}  # the shard checkpoint the last finished step wrote
        self.pair_steps: list[list[int]] = []  # [step, workers that wrote its pair files]
        self.added = 0  # FGMT steps whose pairs the shards hold
        self.fgmt = False

    # -- recovery ------------------------------------------------------------------------------
    def restore(self, pairs, cache, shards):
        if pairs or cache:  # a run begun on the local backend, resumed here
            self._seed_from_local(pairs, cache)
            return
        self.record = dict(shards)
        self.pair_steps = list(shards.get("pairs", []))
        self.added = len(self.pair_steps)
        if shards:
            self._call_all("restore", lambda i: (self.record,))

    def _seed_from_local(self, pairs, cache):
        """Hand each worker its tensors of pairs checkpointed by the local backend (one-off)."""
        if self.b.state_dir is None:
            raise RuntimeError("resuming a local-backend FGMT run on Ray needs the run folder")
        from ..checkpoint import save_checkpoint
        from ..transfer.bank_shard import cache_path, pair_path

        loc = self.b.state_dir
        for step, (target, source) in enumerate(pairs, start=1):
            tensors = {f"target.{k}": v for k, v in target.items()}
            tensors.update({f"source.{k}": v for k, v in source.items()})
            save_checkpoint(pair_path(loc, step, 0), tensors, {"step": step})
        save_checkpoint(cache_path(loc, len(pairs), 0), cache, {"step": len(pairs)})
        self.pair_steps = [[step, 1] for step in range(1, len(pairs) + 1)]
        self.added = len(pairs)
        self.record = shard_record(loc, self.pair_steps, len(pairs), 1)
        self._call_all("restore", lambda i: (self.record,))

    def snapshot(self):
        return [], {}, self.record

    def _call_all(self, method: str, args_of, workers=None):
        refs = []
        for i in workers if workers is not None else range(self.b.n):
            args = args_of(i)
            self.b.meter.sent(*args)
            refs.append(getattr(self.b.workers[i], method).remote(*args))
        out = ray.get(refs)
        self.b.meter.got(out)
        return out

    # -- a step --------------------------------------------------------------------------------
    def step(self, s, prev, requests, count, *, fresh, init, options):
        self.fgmt = not fresh
        perm, info, record = retry_on_worker_loss(
            lambda: self._step(s, prev, requests, count, fresh, init, options), self.b.recover,
            self.b.max_recoveries, self._back_to_checkpoint)
        self.b.end_step()
        # Only a finished step moves the checkpoint on: a retried one restores the previous.
        if record:
            self.record, self.pair_steps = record, record["pairs"]
        self.added += self.fgmt
        return perm, info

    def _back_to_checkpoint(self, error: BaseException) -> None:
        """Shards may hold part of the failed step: every worker goes back to the last checkpoint."""
        if not self.fgmt:
            return  # GMT builds each step's bank afresh
        if self.added and not self.record:
            raise RuntimeError("a worker holding FGMT pairs was lost and this run keeps no checkpoint; "
                               "run it through `raytraj transfer` (which writes state/) to survive "
                               "worker loss") from error
        self._call_all("restore", lambda i: (self.record,))

    def _step(self, s, prev, requests, count, fresh, init, options):
        b = self.b
        t0 = time.perf_counter()
        ts = [r.t for r in requests]
        points = b.publisher.points(*ts)
        units = split_units(len(requests), count, b.n)
        active = [j for j in range(b.n) if units[j]]
        parts = {}
        for j in active:
            args = (b.diff_for(j, prev), s, ts, units[j], count, points)
            b.meter.sent(*args)
            refs = b.workers[j].grad_parts.options(num_returns=b.n).remote(*args)
            parts[j] = [refs] if b.n == 1 else list(refs)
        acks = []
        for k in range(b.n):
            args = (fresh, len(requests), count, active, *[parts[j][k] for j in active])
            b.meter.sent(*args)
            acks.append(b.workers[k].reduce_add.remote(*args))
        pairs = ray.get(acks)
        b.meter.got(pairs)
        grad_s = time.perf_counter() - t0

        perm, info = solve(self.spec, self, options, init=init)
        info["pairs"] = max(pairs)
        info["grad_s"] = grad_s
        record = {}
        if self.fgmt and b.state_dir is not None:
            self._call_all("persist", lambda i: (b.state_dir, s))
            record = shard_record(b.state_dir, self.pair_steps + [[s, b.n]], s, b.n)
        return perm, info, record

    # -- the Costs of a solve (raytraj.perm.descent.Costs) ----------------------------------------
    def block_scores(self, outer, inners, perm):
        """``block_scores`` summed over the shards, in worker order."""
        parts = self._call_all("block_parts", lambda i: (self.b.diff_for(i, perm), inners))
        within = {}
        for inner in inners:
            ms = [p[inner] for p in parts if inner in p]
            if ms:
                within[inner] = sum(ms[1:], ms[0].copy())
        return within

    def objective(self, perm) -> float:
        """The permuted part of sum over pairs of <target, perm(source)>: the shards' float64 partials,
        in worker order."""
        return float(sum(self._call_all("objective", lambda i: (self.b.diff_for(i, perm),))))

    def constant(self) -> float:
        """The part no permutation touches, summed over the shards in worker order."""
        return float(sum(self._call_all("constant", lambda i: ())))

    def solve_class(self, todo, perm):
        """One colour class: partial terms on the workers, each LAP on its group's solver."""
        b, plan = self.b, self.b.plan
        t0 = time.perf_counter()
        part_refs: dict[str, list] = {g: [] for g in todo}
        senders: dict[str, list[int]] = {g: [] for g in todo}
        for j in range(b.n):
            mine = plan.groups_of(j, todo)
            if not mine:
                continue
            args = (b.diff_for(j, perm), mine)
            b.meter.sent(*args)
            refs = b.workers[j].cost_parts.options(num_returns=len(mine)).remote(*args)
            for g, r in zip(mine, [refs] if len(mine) == 1 else refs):
                part_refs[g].append(r)
                senders[g].append(j)
        solves = []
        for g in todo:
            w = plan.solver[g]
            args = (b.diff_for(w, perm), g, senders[g], *part_refs[g])
            b.meter.sent(*args)
            solves.append(b.workers[w].solve_group.remote(*args))
        answers = ray.get(solves)
        b.meter.got(answers)
        results, lap_s = [], 0.0
        for g, (diff, value_new, value_old, l_s) in zip(todo, answers):
            p_new = perm[g].cpu().numpy().copy()
            if g in diff:
                idx, val = diff[g]
                p_new[idx] = val
            results.append((p_new, value_new, value_old))
            lap_s = max(lap_s, l_s)  # the class's LAPs ran in parallel
        # Replicas change only by the driver's diffs: the next call to a worker carries these.
        return results, time.perf_counter() - t0 - lap_s, lap_s
