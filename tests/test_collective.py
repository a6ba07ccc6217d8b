"""The SPMD step without Ray: plain processes joined into a gloo process group, each running
``RankMatcher``, give the local matcher's permutations bit for bit, whatever the world size, with
units split inside a request (the ordered sum crosses ranks) and across requests."""

import multiprocessing as mp
import socket

import pytest
import torch

from raytraj.perm import SolveOptions
from raytraj.transfer import TransferConfig, prepare
from raytraj.transfer.engine import _solve_seed as solve_seed

pytestmark = pytest.mark.slow

STEPS = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def settings(method):
    return TransferConfig(method=method, steps=STEPS, grad_batches=3, seed=11)


def steps(cfg):
    for s in range(1, STEPS + 1):
        ts = list(range(s)) if cfg.method == "gmt" else [s - 1]
        yield s, ts, dict(fresh=cfg.method == "gmt", options=SolveOptions(max_sweeps=cfg.max_sweeps, tol=cfg.tol,
                                                                         rtol=cfg.rtol, seed=solve_seed(cfg.seed, s)))


def rank_main(rank, world, port, src, method, out):
    import torch.distributed as dist

    from raytraj.runtime import set_torch_threads
    from raytraj.transfer.collective import RankMatcher
    from raytraj.transfer.run import local_worker
    from raytraj.transfer.sharding import plan_shards

    set_torch_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    cfg = settings(method)
    problem = prepare(src, cfg, target_seed=2)
    plan = plan_shards(problem.spec, {k: tuple(v.shape) for k, v in problem.target_init.items()
                                      if k in problem.param_names}, world)
    matcher = RankMatcher(local_worker(problem, cfg, "cpu"), problem.spec, plan, rank, cfg.normalize,
                          dtype=getattr(torch, cfg.bank_dtype))
    perms = []
    for s, ts, kw in steps(cfg):
        perm, info = matcher.step(s, ts, cfg.grad_batches, warm=True, **kw)
        perms.append((perm, info["sweeps"], info["laps"]))
    if rank == world - 1:  # every rank holds the answer; the last one reports it
        torch.save(perms, out)
    dist.destroy_process_group()


def local_perms(src, method):
    from raytraj.transfer.backend import GradRequest
    from raytraj.transfer.local import LocalMatcher
    from raytraj.transfer.run import local_worker

    cfg = settings(method)
    problem = prepare(src, cfg, target_seed=2)
    matcher = LocalMatcher(local_worker(problem, cfg, "cpu"), problem.spec, cfg)
    prev, out = None, []
    for s, ts, kw in steps(cfg):
        prev = prev or {g: torch.arange(n) for g, n in problem.spec.sizes.items()}
        perm, info = matcher.step(s, prev, [GradRequest(t=t, step=s) for t in ts], cfg.grad_batches, init=prev, **kw)
        out.append((perm, info["sweeps"], info["laps"]))
        prev = perm
    return out


@pytest.mark.parametrize("method,world", [("fgmt", 2), ("gmt", 3)])
def test_ranks_give_the_local_permutations_bit_for_bit(digits_source, tmp_path, method, world):
    src = str(digits_source / "source")
    out = tmp_path / "perms.pt"
    port = free_port()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=rank_main, args=(r, world, port, src, method, str(out))) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    ranked = torch.load(out)
    local = local_perms(src, method)
    for (a, sa, la), (b, sb, lb) in zip(ranked, local):
        assert all(torch.equal(a[g], b[g]) for g in b)
        assert (sa, la) == (sb, lb)  # the same descent: sweeps and LAPs
