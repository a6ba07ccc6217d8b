"""One rank's share of a GMT/FGMT step in an SPMD process group (torch.distributed; no Ray).

Every rank of the group calls :meth:`RankMatcher.step` with the same arguments and returns the
same permutation; ranks exchange tensors only through ``torch.distributed`` (gloo on CPU, NCCL
on GPU), never through the caller. The shard plan (``sharding.py``) fixes who does what:

* **Gradients.** A step's units, one model's gradient (target or source) on one batch, are cut into
  contiguous runs, one per rank, so every rank computes about the same number of backward passes;
  a pair's two models are two units, so FGMT's single batch keeps two ranks busy. Each model's
  float64 sum of a request is continued along the ranks that hold its units, in batch order (rank k
  adds its units to the sum rank k-1 sends it): the fixed-order reduction gives, bit for bit, what
  one process summing all batches gives, whatever the world size. The rank holding a sum's last unit
  turns it into float32 means (``finish_sums``) and scatters each owner its tensors' contiguous slice.
  A batch is never split across ranks: BatchNorm normalises with its batch's statistics, so half
  batches would give another gradient, not just other rounding. Steps with fewer than ranks/2
  units per model (FGMT's default one batch on 3+ ranks) leave ranks idle; grad_batches >= ranks/2
  keeps all busy.
* **Solves.** Each rank holds the pair-bank terms of its tensors (``BankShard``). Per colour class,
  every rank contracts its terms of the class's groups and sends them to each group's solver; the
  solver adds them in term order (the unsharded bank's sum, bit for bit) and solves the LAP, so the
  class's groups are solved on their solvers at the same time. Each new assignment is broadcast
  from its solver: O(sum of widths) numbers per class.
* The solve flow is ``perm.solve`` itself, with this rank as its ``Costs``: it runs on every rank
  alike (same seeded order, same broadcast results), so no rank waits for an answer from outside
  the group. The objective adds each rank's float64 partial in rank order (equal to one process's
  to the last bits; it scales ``rtol`` and judges block starts).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Mapping

import numpy as np
import torch
import torch.distributed as dist

from ..finite import is_finite
from ..perm import PermutationSpec, SolveOptions, identity_permutation, solve, solve_laps_serial
from ..perm.descent import assignment_gain, sum_terms
from ..perm.matching import block_term
from .bank_shard import BankShard
from .sharding import SOURCE, TARGET, ShardPlan, split_side_units
from .worker import TransferWorker, check_gradient, grad_batches_for


class RankMatcher:
    """This rank's pair-bank shard and its part in each step's collectives."""

    def __init__(self, worker: TransferWorker, spec: PermutationSpec, plan: ShardPlan, rank: int, normalize: bool,
                 dtype: torch.dtype = torch.float32):
        self.worker, self.spec, self.plan, self.rank, self.world = worker, spec, plan, rank, plan.workers
        self.device = worker.device
        # Collectives run where the backend wants their tensors: NCCL on the GPU, gloo on the CPU.
        self.comm = self.device if dist.get_backend() == "nccl" else torch.device("cpu")
        self.shard = BankShard(spec, plan.owned(rank), normalize, device=self.device, dtype=dtype)  # the bank's storage
        self.perm = identity_permutation(spec)  # the permutation the last step returned (or the caller set)
        self.pairs = 0  # pairs in the (unsharded) bank
        self.last_pair = None  # this rank's tensors of the last pair added (FGMT checkpoints it)
        # The flattened parameter vector: each owner's tensors are one contiguous run of it.
        self.names = list(worker.param_names)
        self.shapes = {n: tuple(worker.target_init[n].shape) for n in self.names}
        sizes = [int(np.prod(self.shapes[n])) if self.shapes[n] else 1 for n in self.names]
        self.offsets = dict(zip(self.names, np.cumsum([0] + sizes[:-1]).tolist()))
        self.numel = int(sum(sizes))
        self.span = {}
        for k in range(self.world):
            mine = [n for n in self.names if plan.owner.get(n) == k]
            self.span[k] = ((self.offsets[mine[0]], self.offsets[mine[-1]] + sizes[self.names.index(mine[-1])])
                            if mine else (0, 0))
            if mine and self.span[k][1] - self.span[k][0] != sum(sizes[self.names.index(n)] for n in mine):
                raise ValueError("the shard plan's owners are not contiguous runs of the parameters")
        # Which rank holds each cost term, in the bank's term order.
        names_of = self.shard.bank.term_names
        self.holders = {g: [plan.owner.get(n) for n in names_of(g)] for g in spec.sizes}
        self.busy = {"grad_s": 0.0, "grad_wall_s": 0.0, "solve_s": 0.0}
        # (start, end) of the last steps' gradient phases on the machine's monotonic clock: an outside
        # meter of the rank (its thread's scheduler state) can then be read over exactly these spans.
        self.grad_windows: deque = deque(maxlen=1024)

    # -- one step ------------------------------------------------------------------------------
    def step(self, s: int, ts: list[int], count: int, *, fresh: bool, warm: bool,
             options: SolveOptions) -> tuple[dict, dict]:
        """Gradients at points ``ts`` under ``self.perm``, into the bank (a new one if ``fresh``), then
        ``perm.solve`` from ``self.perm`` (``warm``) or the identity, with this rank as its ``Costs``."""
        t0 = time.perf_counter()
        if fresh:
            self.shard.reset()
            self.pairs = 0
        self._gradients(s, ts, count)
        grad_s = time.perf_counter() - t0
        self.busy["grad_wall_s"] += grad_s
        self.grad_windows.append((t0, t0 + grad_s))
        t1 = time.perf_counter()
        init = self.perm if warm else identity_permutation(self.spec)
        perm, info = solve(self.spec, self, options, init={g: p.clone() for g, p in init.items()})
        info["pairs"] = self.pairs
        info["grad_s"] = grad_s
        self.busy["solve_s"] += time.perf_counter() - t1
        self.perm = perm
        return perm, info

    # -- gradients: units spread over the ranks, sums continued in unit order -------------------
    def _gradients(self, s: int, ts: list[int], count: int) -> None:
        runs = split_side_units(len(ts), count, self.world)
        chains = [(r, side) for r in range(len(ts)) for side in (TARGET, SOURCE)]
        holders = {c: [k for k in range(self.world) if c in runs[k]] for c in chains}  # in rank order
        mine = runs[self.rank]
        t0 = time.perf_counter()
        sums = {}  # (request, side) -> (numel,) float64 sums; a chain begun on a lower rank: each batch's
        for c, batch_ids in mine.items():
            grads = self._side_gradients(c[1], s, ts[c[0]], batch_ids, count)
            if holders[c][0] != self.rank:
                sums[c] = list(grads)  # kept until that rank's sum arrives
            else:
                acc = torch.zeros(self.numel, dtype=torch.float64, device=self.device)
                for g in grads:  # from zero, in batch order: as mean_gradients adds them
                    acc += g
                sums[c] = [acc]
        self.busy["grad_s"] += time.perf_counter() - t0
        tag = {c: 4 * c[0] + c[1] for c in chains}  # the chain's; + 2: the scatter of its means
        sends, finals = [], {}
        for c, terms in sums.items():
            hs = holders[c]
            i = hs.index(self.rank)
            if i > 0:
                acc = torch.empty(self.numel, dtype=torch.float64, device=self.comm)
                dist.recv(acc, src=hs[i - 1], tag=tag[c])
                acc = acc.to(self.device)
                for term in terms:
                    acc += term
            else:
                acc = terms[0]
            if i + 1 < len(hs):
                buf = acc.to(self.comm)
                sends.append((dist.isend(buf, dst=hs[i + 1], tag=tag[c]), buf))
            else:
                finals[c] = (acc / count).float()  # mean_gradients' means, on the flat vector (elementwise)
        # Scatter: the rank holding a chain's last unit sends each owner its slice of the means.
        for c, mean in finals.items():
            for k in range(self.world):
                a, b = self.span[k]
                if k != self.rank and b > a:
                    buf = mean[a:b].contiguous().to(self.comm)
                    sends.append((dist.isend(buf, dst=k, tag=tag[c] + 2), buf))
        a, b = self.span[self.rank]
        for r in range(len(ts)):
            if b > a:
                parts = []
                for side in (TARGET, SOURCE):
                    c = (r, side)
                    if holders[c][-1] == self.rank:
                        parts.append(finals[c][a:b])
                    else:
                        part = torch.empty(b - a, dtype=torch.float32, device=self.comm)
                        dist.recv(part, src=holders[c][-1], tag=tag[c] + 2)
                        parts.append(part.to(self.device))
                target, source = self._unflat(parts[0], a), self._unflat(parts[1], a)
                self.shard.add(target, source)
                self.last_pair = (target, source)
            else:
                self.last_pair = ({}, {})
            self.pairs += 1
        for work, _ in sends:
            work.wait()

    def _side_gradients(self, side: int, s: int, t: int, batch_ids: list[int], count: int):
        """One model's flat float32 gradient per batch of ``batch_ids``, in order: the same batches,
        dropout keys and checks as ``TransferWorker.gradient_batches``, for the target or the source only."""
        w = self.worker
        batches = grad_batches_for(w.seed, s, t, w.data.size("train"), w.batch_size, count)
        state = w.target_point(self.perm, t) if side == TARGET else w.source_point(t)
        for i in batch_ids:
            grad = w._gradient(state, batches[i], (w.seed, s, t, i))
            check_gradient(grad, state, "transferred model" if side == TARGET else "source", t, s)
            yield torch.cat([grad[n].reshape(-1) for n in self.names])

    def _unflat(self, vec: torch.Tensor, start: int) -> dict[str, torch.Tensor]:
        out = {}
        for n in self.plan.owned(self.rank):
            o = self.offsets[n] - start
            size = int(np.prod(self.shapes[n])) if self.shapes[n] else 1
            out[n] = vec[o:o + size].reshape(self.shapes[n])
        return out

    # -- the Costs of the solve (perm.descent.Costs): terms to each group's solver, answers broadcast --
    def solve_class(self, todo: list[str], perm):
        t0 = time.perf_counter()
        bank = self.shard.bank
        sends, recvs = [], {}
        base = len(max(self.holders.values(), key=len, default=[])) + 1  # tags: (group position, term index)
        mine = {}
        for j, g in enumerate(todo):
            solver = self.plan.solver[g]
            held = bank.cost_terms(g, perm) if bank.num_pairs else []
            if solver == self.rank:
                mine[g] = list(held)
                recvs[g] = []
                for i, h in enumerate(self.holders[g]):
                    if h is not None and h != self.rank:
                        n = self.spec.sizes[g]
                        buf = torch.empty((n, n), dtype=torch.float64, device=self.comm)
                        recvs[g].append((i, buf, dist.irecv(buf, src=h, tag=j * base + i)))
            else:
                for i, c in held:
                    buf = c.to(self.comm, torch.float64).contiguous()
                    sends.append((dist.isend(buf, dst=solver, tag=j * base + i), buf))
        packed, lap_s = {}, 0.0
        for g in mine:
            terms = list(mine[g])
            for i, buf, work in recvs[g]:
                work.wait()
                terms.append((i, buf.to(self.device)))
            terms.sort(key=lambda x: x[0])
            a = sum_terms(self.spec.sizes[g], [c for _, c in terms], self.device)
            if not is_finite(a):
                raise FloatingPointError(
                    f"the cost matrix of permutation group {g} holds NaN or inf: products of the matched tensors "
                    "overflow, so their values are too large. Check the source's weights and the training data "
                    "for extreme values, or record the source with a lower --lr")
            a = a.double().cpu().numpy()
            t1 = time.perf_counter()
            new = solve_laps_serial([a])[0]
            lap_s += time.perf_counter() - t1
            p_new, value_new, value_old = assignment_gain(a, perm[g], new)
            packed[g] = torch.as_tensor(np.concatenate([p_new.astype(np.float64), [value_new, value_old]]))
        for work, _ in sends:
            work.wait()
        results = []
        for g in todo:
            buf = packed[g].to(self.comm) if g in packed else torch.empty(self.spec.sizes[g] + 2,
                                                                          dtype=torch.float64, device=self.comm)
            dist.broadcast(buf, src=self.plan.solver[g])
            buf = buf.cpu().numpy()
            results.append((buf[:-2].astype(np.int64), float(buf[-2]), float(buf[-1])))
        return results, time.perf_counter() - t0 - lap_s, lap_s

    def _in_rank_order(self, mine: float) -> float:
        """Every rank's float64 value, added in rank order (the same sum on every rank)."""
        value = torch.tensor([mine], dtype=torch.float64, device=self.comm)
        parts = [torch.empty_like(value) for _ in range(self.world)]
        dist.all_gather(parts, value)
        return float(sum(float(p) for p in parts))

    def objective(self, perm) -> float:
        """The permuted part of sum over pairs of <target, perm(source)>: the ranks' partials in rank order."""
        bank = self.shard.bank
        return self._in_rank_order(bank.permuted_objective(perm) if bank.num_pairs else 0.0)

    def constant(self) -> float:
        """The part no permutation touches, the ranks' partials in rank order."""
        return self._in_rank_order(self.shard.bank.constant)

    def block_scores(self, outer, inners, perm) -> dict:
        """Per inner group, the sum over its tensors in spec order of each one's block scores, broadcast
        from the tensor's owner: one bank's ``block_scores``, bit for bit."""
        bank = self.shard.bank
        within = {}
        for inner, members in inners.items():
            m = None
            for name, axis in members:
                owner = self.plan.owner.get(name)
                if owner is None:
                    continue
                if owner == self.rank:
                    c = block_term(bank, perm, name, axis).to(self.comm).contiguous()
                    shape = torch.tensor(c.shape, dtype=torch.int64, device=self.comm)
                else:
                    shape = torch.empty(4, dtype=torch.int64, device=self.comm)
                dist.broadcast(shape, src=owner)
                if owner != self.rank:
                    c = torch.empty(tuple(shape.tolist()), dtype=torch.float64, device=self.comm)
                dist.broadcast(c, src=owner)
                m = c if m is None else m + c
            if m is not None:
                within[inner] = m.cpu().numpy()
        return within

    # -- checkpoint ------------------------------------------------------------------------------
    def persist(self, location: str, step: int) -> None:
        target, source = self.last_pair if self.last_pair else (None, None)
        self.shard.save(location, self.rank, step, target, source)

    def restore(self, record: dict) -> None:
        self.shard.restore(record, (self.rank, self.world))
        self.pairs = len(record.get("pairs", [])) if record else 0
