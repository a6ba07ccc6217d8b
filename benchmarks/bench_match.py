"""Permutation-matching benchmark: raytraj's Git Re-Basin coordinate descent on the model zoo.

For each zoo model this measures, on the machine it runs on:

* weight matching against a planted permutation of the model itself (must recover it exactly),
  and between two independently seeded models (the realistic case): wall time, sweeps, LAP
  count, and the split between building cost matrices (``cost_s``) and solving LAPs (``lap_s``);
* gradient matching with P stacked (target, source) pairs of real cross-entropy gradients on
  random inputs, P = 1, 10, 30, to show how cost building grows with P against LAP time, with
  the flop count of one from-scratch build of every cost matrix (2 * n^2 * d * P per term);
* the PyPI package ``rebasin`` (if importable) on the same weight-matching problems, as a
  ratio of seconds and a check of whether it reaches the planted permutation / same objective.

    python benchmarks/bench_match.py --out benchmarks/results/match.md

Everything runs on CPU. Timings are medians of ``--repeats`` runs with the same seed (the work
is deterministic); the slow rebasin runs are repeated only while they stay under a time budget.
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import os
import platform
import shlex
import statistics
import sys
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from raytraj.models import build_model, config_for_data
from raytraj.perm import PairBank, apply_permutation, identity_permutation, infer_spec, match, random_permutation
from report import write_report

# key -> (model name, input shape, config overrides, label)
ZOO = {
    "mlp-8x8": ("mlp", (1, 8, 8), {}, "MLP 512-512, (1,8,8)"),
    "mlp-mnist1d": ("mlp", (1, 40), {}, "MLP 512-512, (1,40)"),
    "conv8": ("conv", (3, 32, 32), {"width": 1.0}, "Conv8 w=1, (3,32,32)"),
    "resnet20": ("resnet20", (3, 32, 32), {"width": 1}, "ResNet-20 w=1, (3,32,32)"),
    "conv1d": ("conv1d", (1, 40), {}, "Conv1d, (1,40)"),
}
NUM_CLASSES = 10
PLANT_SEED = 7


# -- helpers ----------------------------------------------------------------------------------
def med(xs):
    return float(statistics.median(xs))


def float_state(sd):
    return {k: v for k, v in sd.items() if v.is_floating_point()}


def inner(a, b) -> float:
    """sum over shared float tensors of <a, b>, in float64."""
    return float(sum((a[k].double() * b[k].double()).sum() for k in a if a[k].is_floating_point()))


def exact_equal(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def naive_flops(spec, names, pairs: int) -> int:
    """Flops of building every group's cost matrix once from scratch: 2 * n * numel * P per term."""
    total = 0
    for g, members in spec.groups.items():
        n = spec.sizes[g]
        for name, _axis in members:
            if name in names:
                numel = int(np.prod(spec.shapes[name]))
                total += 2 * n * numel * pairs  # = 2 n^2 d P with d = numel / n
    return total


def timed_match(spec, pairs, seed, repeats, budget_s):
    """match() repeated (up to ``repeats`` times, stopping once the runs total ``budget_s``).

    Wall time includes building the PairBank (its add() pays for the static terms).
    """
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        perm, info = match(spec, pairs, seed=seed)
        runs.append((time.perf_counter() - t0, perm, info))
        if sum(r[0] for r in runs) > budget_s:
            break
    walls = [r[0] for r in runs]
    assert all(r[2]["objective"] == runs[0][2]["objective"] for r in runs), "match() is not deterministic"
    perm, info = runs[0][1], runs[0][2]
    return perm, {
        "wall_s": med(walls),
        "wall_min_s": min(walls),
        "cost_s": med([r[2]["cost_s"] for r in runs]),
        "lap_s": med([r[2]["lap_s"] for r in runs]),
        "sweeps": info["sweeps"],
        "laps": info["laps"],
        "converged": info["converged"],
        "objective": info["objective"],
        "repeats": len(runs),
    }


def cold_build(spec, pairs, names):
    """Seconds to add the pairs to a bank and build every cost matrix once, and the flop rate."""
    t0 = time.perf_counter()
    bank = PairBank(spec)
    for t, s in pairs:
        bank.add(t, s)
    t1 = time.perf_counter()
    ident = identity_permutation(spec)
    for g in spec.sizes:
        bank.cost(g, ident)
    t2 = time.perf_counter()
    flops = naive_flops(spec, names, len(pairs))
    return {"add_s": t1 - t0, "build_s": t2 - t1, "flops": flops, "gflops_per_s": flops / max(t2 - t0, 1e-12) / 1e9}


def gradients(model, x, y):
    model.zero_grad(set_to_none=True)
    model.train()
    F.cross_entropy(model(x), y).backward()
    out = {k: p.grad.detach().clone() for k, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return out


# -- rebasin ----------------------------------------------------------------------------------
def import_rebasin():
    try:
        import rebasin  # noqa: F401
        from importlib.metadata import version

        return rebasin, version("rebasin"), None
    except Exception as e:  # not installed or broken: skipped, reported
        return None, None, f"{type(e).__name__}: {e}"


def run_rebasin(rebasin, model_a, model_b, x, budget_s, max_repeats):
    """rebasin.PermutationCoordinateDescent(model_a, model_b, x): seconds and the permuted B state."""
    inits, calcs, result = [], [], None
    for i in range(max_repeats):
        a, b = copy.deepcopy(model_a), copy.deepcopy(model_b)
        torch.manual_seed(0)  # rebasin draws its sweep order from the global RNG
        t0 = time.perf_counter()
        pcd = rebasin.PermutationCoordinateDescent(a, b, x)
        t1 = time.perf_counter()
        pcd.calculate_permutations()
        t2 = time.perf_counter()
        pcd.apply_permutations()
        inits.append(t1 - t0)
        calcs.append(t2 - t1)
        if result is None:
            result = {k: v.detach().clone() for k, v in b.state_dict().items()}
            perms = pcd.pinit.model_graph.permutation_to_info
            nperms = len(perms)
            names = {id(p): n for n, p in b.named_parameters()}
            terms = [(names.get(id(info.parameter_b), "?"), info.axis) for _, infos in perms for info in infos]
            permuted_model = b
        if sum(inits) + sum(calcs) > budget_s:
            break
    return {
        "init_s": med(inits),
        "calc_s": med(calcs),
        "total_s": med([i + c for i, c in zip(inits, calcs)]),
        "repeats": len(calcs),
        "groups": nperms,
        "terms": len(terms),
        "unique_terms": len(set(terms)),
        "covered": sorted(set(terms)),
    }, result, permuted_model


# -- main -------------------------------------------------------------------------------------
@dataclass
class Setup:
    """One zoo model's two inits, its spec, and what the experiments hand on to later ones.

    The experiments draw from ``gen`` in turn (probe inputs, evaluation inputs, gradient batches),
    so they run in bench_model's order.
    """

    key: str
    label: str
    cfg: object
    shape: tuple
    model_a: torch.nn.Module
    model_b: torch.nn.Module
    gen: torch.Generator
    x_probe: torch.Tensor
    spec: object
    sa: dict
    sb: dict
    params: dict
    infer_s: float
    planted: dict | None = None  # the planted permutation
    sa_planted: dict | None = None  # planted(A), the planted case's target
    perm_planted: dict | None = None  # what match() returned on the planted case
    perm_ab: dict | None = None  # what match() returned on the independent case
    x_eval: torch.Tensor | None = None  # inputs of the function-preservation checks


def setup_model(key) -> Setup:
    """Models A (seed 0) and B (seed 1) of zoo entry ``key`` at init, and their inferred spec."""
    name, shape, overrides, label = ZOO[key]
    cfg = config_for_data(name, shape, NUM_CLASSES, **overrides)
    model_a, model_b = build_model(cfg, seed=0), build_model(cfg, seed=1)
    gen = torch.Generator().manual_seed(123)
    x_probe = torch.randn(4, *shape, generator=gen)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        spec = infer_spec(model_a, x_probe)
        infer_s = time.perf_counter() - t0
    model_a.eval(), model_b.eval()  # forward passes below must not move BatchNorm running stats
    sa = {k: v.detach().clone() for k, v in model_a.state_dict().items()}
    sb = {k: v.detach().clone() for k, v in model_b.state_dict().items()}
    return Setup(key, label, cfg, shape, model_a, model_b, gen, x_probe, spec, sa, sb,
                 dict(model_a.named_parameters()), infer_s)


def planted_weights(m: Setup, args, log) -> dict:
    """(a) planted: target = planted(A), source = A; match must return the planted permutation."""
    spec, sa = m.spec, m.sa
    m.planted = planted = random_permutation(spec, torch.Generator().manual_seed(PLANT_SEED))
    m.sa_planted = sa_planted = apply_permutation(spec, planted, sa)
    perm, res = timed_match(spec, [(sa_planted, sa)], args.seed, args.repeats, args.budget)
    m.perm_planted = perm
    res["perm_exact"] = all(torch.equal(perm[g], planted[g]) for g in spec.sizes)
    res["weights_exact"] = exact_equal(apply_permutation(spec, perm, sa), sa_planted)
    res["optimum"] = inner(sa, sa)  # <planted(A), planted(A)> = |A|^2
    res["objective_rel_gap"] = abs(res["objective"] - res["optimum"]) / res["optimum"]
    res["flops_sweep"] = naive_flops(spec, sa, 1)
    log(f"  planted   : exact={res['perm_exact']} wall={res['wall_s']*1e3:.1f}ms sweeps={res['sweeps']} laps={res['laps']}")
    return res


def independent_weights(m: Setup, args, log) -> dict:
    """(a) independent: target = A (seed 0), source = B (seed 1)."""
    spec, sa, sb = m.spec, m.sa, m.sb
    perm_ab, res = timed_match(spec, [(sa, sb)], args.seed, args.repeats, args.budget)
    m.perm_ab = perm_ab
    res["identity_objective"] = inner(sa, sb)
    # coordinate descent finds a local optimum that depends on the sweep order: spread over seeds
    res["seed_objectives"] = [match(spec, [(sa, sb)], seed=s)[1]["objective"] for s in range(args.spread_seeds)]
    res["objective_check"] = inner(sa, apply_permutation(spec, perm_ab, sb))
    res["flops_sweep"] = naive_flops(spec, sa, 1)
    model_b_perm = build_model(m.cfg, seed=1)
    model_b_perm.load_state_dict(apply_permutation(spec, perm_ab, sb))
    m.model_a.eval(), m.model_b.eval(), model_b_perm.eval()
    m.x_eval = torch.randn(64, *m.shape, generator=m.gen)
    with torch.no_grad():
        res["function_max_abs_diff"] = float((m.model_b(m.x_eval) - model_b_perm(m.x_eval)).abs().max())
    log(
        f"  independent: wall={res['wall_s']*1e3:.1f}ms sweeps={res['sweeps']} laps={res['laps']} "
        f"cost={res['cost_s']*1e3:.1f}ms lap={res['lap_s']*1e3:.1f}ms obj {res['identity_objective']:.3f}->{res['objective']:.3f}"
    )
    return res


def gradient_batches(m: Setup, args) -> tuple[list, list, list, float]:
    """(gradients of A, of B, of planted(A), seconds): real CE gradients on the same random batches."""
    grads_a, grads_b, grads_plant = [], [], []
    pmax = max(args.pairs)
    # gradients in train mode (batch statistics) on copies, so A and B keep their buffers
    grad_a, grad_b = copy.deepcopy(m.model_a), copy.deepcopy(m.model_b)
    model_plant = build_model(m.cfg, seed=0)
    model_plant.load_state_dict(m.sa_planted)
    t0 = time.perf_counter()
    for i in range(pmax):
        xb = torch.randn(args.grad_batch, *m.shape, generator=m.gen)
        yb = torch.randint(0, NUM_CLASSES, (args.grad_batch,), generator=m.gen)
        grads_a.append(gradients(grad_a, xb, yb))
        grads_b.append(gradients(grad_b, xb, yb))
        if i < args.planted_grad_pairs:
            grads_plant.append(gradients(model_plant, xb, yb))
    return grads_a, grads_b, grads_plant, time.perf_counter() - t0


def gradient_pairs(m: Setup, args, grads_a, grads_b, log) -> list[dict]:
    """(b) gradient matching with P stacked pairs of real CE gradients on random inputs: one row per P."""
    rows = []
    for p in args.pairs:
        pairs = list(zip(grads_a[:p], grads_b[:p]))
        _, res = timed_match(m.spec, pairs, args.seed, args.repeats, args.budget)
        res.update(cold_build(m.spec, pairs, m.params))
        res["P"] = p
        rows.append(res)
        log(
            f"  grad P={p:<3d}: wall={res['wall_s']:.3f}s sweeps={res['sweeps']} laps={res['laps']} "
            f"cost={res['cost_s']:.3f}s lap={res['lap_s']:.3f}s add={res['add_s']:.3f}s "
            f"cold build {res['flops']/1e9:.2f} GFLOP @ {res['gflops_per_s']:.1f} GFLOP/s"
        )
    return rows


def planted_gradients(m: Setup, args, grads_a, grads_plant, log) -> dict:
    """Planted recovery from gradients: only units with a nonzero gradient are identifiable."""
    spec, planted = m.spec, m.planted
    pp = args.planted_grad_pairs
    perm_g, info_g = match(spec, list(zip(grads_plant[:pp], grads_a[:pp])), seed=args.seed)
    live_ok, dead = True, 0
    for g, members in spec.groups.items():
        alive = torch.zeros(spec.sizes[g], dtype=torch.bool)
        for tname, axis in members:
            t = grads_plant[0][tname] if tname in grads_plant[0] else None
            if t is not None:
                for gp in grads_plant[:pp]:
                    alive |= torch.movedim(gp[tname], axis, 0).reshape(spec.sizes[g], -1).abs().sum(1) > 0
        live_ok &= torch.equal(perm_g[g][alive], planted[g][alive])
        dead += int((~alive).sum())
    log(f"  grad planted P={pp}: live units exact={live_ok}, dead units={dead}")
    return {"P": pp, "live_exact": bool(live_ok), "dead_units": dead, "sweeps": info_g["sweeps"]}


def rebasin_cases(m: Setup, args, rebasin, row, log) -> dict:
    """rebasin on the same weight-matching problems (planted and independent), against raytraj's ``row``."""
    spec, sa, sb, sa_planted, params, cfg = m.spec, m.sa, m.sb, m.sa_planted, m.params, m.cfg
    rb = {}
    for case, mb_state in {"planted": sa_planted, "independent": sb}.items():
        mb = build_model(cfg, seed=1)
        mb.load_state_dict(mb_state)
        mb.eval()  # rebasin traces with a forward pass; keep BatchNorm stats fixed
        ours = row[case]
        try:
            timing, state, permuted = run_rebasin(rebasin, m.model_a, mb, m.x_probe, args.rebasin_budget,
                                                  args.repeats)
            entry = dict(timing)
            entry["objective"] = inner(sa, state)
            entry["ratio_calc"] = timing["calc_s"] / ours["wall_s"]
            entry["ratio_total"] = timing["total_s"] / ours["wall_s"]
            if case == "planted":  # raytraj matched A onto planted(A); same optimum |A|^2
                ours_obj = inner(sa_planted, apply_permutation(spec, m.perm_planted, sa))
            else:
                ours_obj = inner(sa, apply_permutation(spec, m.perm_ab, sb))
            entry["raytraj_objective"] = ours_obj
            covered = {tuple(t) for t in entry.pop("covered")}
            entry["groups_left_fixed"] = [
                f"{g} [{spec.sizes[g]}]" for g, members in spec.groups.items()
                if not any((n, a) in covered for n, a in members if n in params)
            ]
            entry["raytraj_terms"] = sum(1 for mem in spec.groups.values() for n, _ in mem if n in params)
            entry["same_objective"] = abs(entry["objective"] - ours_obj) <= 1e-6 * abs(ours_obj)
            # is rebasin's result a coordinate-wise optimum of the true objective? raytraj from there
            _, polish = match(spec, [(sa, state)], seed=args.seed)
            entry["raytraj_from_rebasin"] = polish["objective"]
            if case == "planted":
                # rebasin permutes B (= planted A) back onto A: success means B's weights equal A's
                entry["recovered"] = exact_equal(float_state(state), float_state(sa)) or all(
                    torch.allclose(state[k], sa[k]) for k in float_state(sa)
                )
            with torch.no_grad():
                permuted.eval()
                ref = build_model(cfg, seed=1)
                ref.load_state_dict(mb_state)
                ref.eval()
                entry["function_max_abs_diff"] = float((ref(m.x_eval) - permuted(m.x_eval)).abs().max())
            entry["error"] = None
        except Exception as e:
            entry = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]}
        rb[case] = entry
        if entry.get("error"):
            log(f"  rebasin {case}: ERROR {entry['error']}")
        else:
            log(
                f"  rebasin {case}: calc={entry['calc_s']:.3f}s (+init {entry['init_s']:.3f}s) "
                f"ratio={entry['ratio_calc']:.1f}x groups={entry['groups']} obj={entry['objective']:.3f} "
                f"(raytraj {entry['raytraj_objective']:.3f})"
                + (f" recovered={entry['recovered']}" if case == "planted" else "")
            )
    return rb


def bench_model(key, args, rebasin, log):
    """Every experiment on zoo model ``key``, in the order they draw from the shared generator: one row."""
    m = setup_model(key)
    row = {
        "key": key,
        "label": m.label,
        "params": sum(p.numel() for p in m.params.values()),
        "groups": len(m.spec.sizes),
        "max_group": max(m.spec.sizes.values()),
        "infer_s": m.infer_s,
        "unpermuted": list(m.spec.unpermuted),
    }
    log(f"[{key}] {row['params']:,} params, {row['groups']} groups (largest {row['max_group']}), infer {m.infer_s:.3f}s")
    row["planted"] = planted_weights(m, args, log)
    row["independent"] = independent_weights(m, args, log)
    grads_a, grads_b, grads_plant, row["grad_compute_s"] = gradient_batches(m, args)
    row["grad"] = gradient_pairs(m, args, grads_a, grads_b, log)
    row["grad_planted"] = planted_gradients(m, args, grads_a, grads_plant, log)
    if rebasin is not None and key not in args.skip_rebasin:
        row["rebasin"] = rebasin_cases(m, args, rebasin, row, log)
    return row


def fmt_ms(s):
    return f"{s * 1e3:.1f}" if s < 10 else f"{s * 1e3:.0f}"


def header_lines(meta, args) -> list[str]:
    """Title, command, machine and load, and how timings are taken."""
    L = []
    L.append("# Permutation-matching benchmark (raytraj.perm.matching)")
    L.append("")
    L.append(f"- command: `{meta['command']}`")
    L.append(f"- date: {meta['date']}")
    L.append(
        f"- machine: {meta['cpu_count']} CPU cores ({meta['processor']}), torch {meta['torch']} "
        f"({meta['torch_threads']} intra-op threads), numpy {meta['numpy']}, scipy {meta['scipy']}, Python {meta['python']}"
    )
    L.append(f"- rebasin: {meta['rebasin']}")
    L.append(
        f"- total benchmark runtime: {meta['runtime_s']:.0f} s; 1/5/15-min load average at start "
        f"{meta['loadavg_start']}, at end {meta['loadavg_end']}"
    )
    L.append(
        f"- timings are medians over up to {args.repeats} runs of `match()` with seed {args.seed} (repeats stop once "
        f"a measurement's runs total {args.budget:g} s; the `runs` columns say how many ran), min in parentheses; "
        "`wall` is the whole `match()` call, including building the PairBank (whose `add()` contracts the static "
        "terms: first layers, biases, BatchNorm). Sweeps, LAPs and objectives are identical across runs (checked)."
    )
    L.append("")
    return L


def weight_lines(rows) -> list[str]:
    """(a) planted and independent weight matching."""
    L = []
    L.append("## (a) Weight matching")
    L.append("")
    L.append(
        "Planted: target = a random planted permutation of model A (seed 0), source = A. Recovered means the "
        "returned permutation equals the planted one in every group *and* permuting A with it reproduces the "
        "target bit for bit. Independent: target = A (seed 0), source = B (seed 1), both at init."
    )
    L.append("")
    L.append(
        "| model | params | groups (max n) | case | recovered | wall ms (min) | runs | sweeps | LAPs | cost_s ms | lap_s ms "
        "| other ms | objective (identity → matched) | flops / full sweep |"
    )
    L.append("|---|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in rows:
        for case in ("planted", "independent"):
            c = r[case]
            other = c["wall_s"] - c["cost_s"] - c["lap_s"]
            if case == "planted":
                rec = "yes" if (c["perm_exact"] and c["weights_exact"]) else f"**NO** (perm {c['perm_exact']}, weights {c['weights_exact']})"
                obj = f"{c['objective']:.4g} (optimum {c['optimum']:.4g})"
            else:
                rec = "n/a"
                so = c["seed_objectives"]
                obj = f"{c['identity_objective']:.4g} → {c['objective']:.4g} (seeds 0–{len(so) - 1}: {min(so):.4g}–{max(so):.4g})"
            L.append(
                f"| {r['label']} | {r['params']:,} | {r['groups']} ({r['max_group']}) | {case} | {rec} "
                f"| {fmt_ms(c['wall_s'])} ({fmt_ms(c['wall_min_s'])}) | {c['repeats']} | {c['sweeps']} | {c['laps']} | {fmt_ms(c['cost_s'])} | {fmt_ms(c['lap_s'])} | {fmt_ms(other)} | {obj} "
                f"| {c['flops_sweep'] / 1e6:.1f} MFLOP |"
            )
    L.append("")
    L.append(
        "`other` = wall − cost_s − lap_s: bank construction (stacking, static-term contractions), input checks, "
        "the final objective. Independent matches were also checked for function preservation (B and perm(B) on "
        "64 random inputs): max |Δlogit| = "
        + ", ".join(f"{r['key']} {r['independent']['function_max_abs_diff']:.1e}" for r in rows)
        + "."
    )
    L.append("")
    return L


def gradient_lines(rows, args) -> list[str]:
    """(b) gradient matching with P pairs, and planted recovery from gradients."""
    L = []
    L.append("## (b) Gradient matching: P stacked pairs")
    L.append("")
    L.append(
        f"Pairs are real cross-entropy gradients (batch {args.grad_batch}, random inputs and labels) of A (target) "
        "and B (source) on the same batch, parameters only. `cold build` = adding the P pairs to a fresh "
        "PairBank plus building every group's cost matrix once from scratch; `GFLOP` is 2·n²·d·P summed over "
        "every (tensor, axis) term of every group (= 2·n·numel·P), i.e. one full sweep without caching; "
        "the rate is that count over the measured cold-build seconds."
    )
    L.append("")
    L.append(
        "| model | P | wall s (min) | runs | sweeps | LAPs | cost_s | lap_s | cost_s / LAP ms | lap_s / LAP ms "
        "| cold build s | GFLOP | GFLOP/s |"
    )
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        for g in r["grad"]:
            L.append(
                f"| {r['label']} | {g['P']} | {g['wall_s']:.3f} ({g['wall_min_s']:.3f}) | {g['repeats']} | {g['sweeps']} | {g['laps']} | {g['cost_s']:.3f} "
                f"| {g['lap_s']:.3f} | {1e3 * g['cost_s'] / g['laps']:.2f} | {1e3 * g['lap_s'] / g['laps']:.2f} "
                f"| {g['add_s'] + g['build_s']:.3f} | {g['flops'] / 1e9:.2f} | {g['gflops_per_s']:.1f} |"
            )
    L.append("")
    L.append(
        f"Planted recovery from gradients (P = {args.planted_grad_pairs}; target = gradients of planted(A), source = "
        "gradients of A, same batches): units with a nonzero gradient on some batch must match the planted "
        "permutation exactly; units dead on every batch are unidentifiable."
    )
    L.append("")
    L.append("| model | live units exact | dead units | sweeps |")
    L.append("|---|---|---:|---:|")
    for r in rows:
        g = r["grad_planted"]
        L.append(f"| {r['label']} | {'yes' if g['live_exact'] else '**NO**'} | {g['dead_units']} | {g['sweeps']} |")
    L.append("")
    return L


def rebasin_lines(rows, meta) -> list[str]:
    """rebasin on the same weight-matching problems, or why it was skipped."""
    L = []
    L.append("## rebasin comparison (weight matching, same models, same run)")
    L.append("")
    if meta["rebasin_error"]:
        L.append(f"rebasin could not be imported, so it was skipped: `{meta['rebasin_error']}`")
    else:
        L.append(
            "`rebasin.PermutationCoordinateDescent(model_a, model_b, x)` then `.calculate_permutations()` "
            "(default max 100 iterations) and `.apply_permutations()`; seeded with `torch.manual_seed(0)` "
            "(rebasin draws its sweep order from the global RNG). `init` is its torchview tracing; `ratio` is "
            "rebasin calc seconds / raytraj `match()` wall seconds (and with init). Objective is "
            "Σ <A, perm(B)> over all float state tensors for both tools. Planted: B = planted(A); recovered "
            "means rebasin permuted B back onto A's weights."
        )
        L.append("")
        L.append(
            "| model | case | groups rebasin / raytraj | cost terms rebasin (unique) / raytraj | rebasin init s "
            "| rebasin calc s | raytraj wall s | ratio calc | ratio incl. init | runs | recovered | rebasin objective "
            "| raytraj objective | same | raytraj started at rebasin's result | max abs Δlogit (rebasin) |"
        )
        L.append("|---|---|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---|---:|---:|")
        for r in rows:
            for case, e in r.get("rebasin", {}).items():
                if e.get("error"):
                    L.append(f"| {r['label']} | {case} | error: `{e['error']}` | | | | | | | | | | | | | |")
                    continue
                rec = ("yes" if e["recovered"] else "**no**") if case == "planted" else "n/a"
                L.append(
                    f"| {r['label']} | {case} | {e['groups']} / {r['groups']} "
                    f"| {e['terms']} ({e['unique_terms']}) / {e['raytraj_terms']} | {e['init_s']:.3f} | {e['calc_s']:.3f} "
                    f"| {r[case]['wall_s']:.3f} | {e['ratio_calc']:.1f}× | {e['ratio_total']:.1f}× | {e['repeats']} | {rec} "
                    f"| {e['objective']:.6g} | {e['raytraj_objective']:.6g} | {'yes' if e['same_objective'] else 'no'} "
                    f"| {e['raytraj_from_rebasin']:.6g} "
                    f"| {e['function_max_abs_diff']:.1e} |"
                )
    L.append("")
    return L


def notes_lines(meta) -> list[str]:
    L = []
    L.append("## Notes")
    L.append("")
    for note in meta["notes"]:
        L.append(f"- {note}")
    return L


def write_markdown(path, rows, meta, args):
    write_report(path, header_lines(meta, args) + weight_lines(rows) + gradient_lines(rows, args)
                 + rebasin_lines(rows, meta) + notes_lines(meta))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="benchmarks/results/match.md", help="markdown results file")
    ap.add_argument("--json", default=None, help="raw results as JSON (default: --out with .json)")
    ap.add_argument("--models", nargs="+", default=list(ZOO), choices=list(ZOO))
    ap.add_argument("--repeats", type=int, default=5, help="runs per timing (median reported)")
    ap.add_argument("--pairs", type=int, nargs="+", default=[1, 10, 30], help="P values for gradient matching")
    ap.add_argument("--grad-batch", type=int, default=4, help="batch size of each gradient (random inputs)")
    ap.add_argument("--planted-grad-pairs", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0, help="match() sweep-order seed")
    ap.add_argument("--spread-seeds", type=int, default=8, help="seeds 0..N-1 for the objective spread")
    ap.add_argument("--no-rebasin", action="store_true", help="skip the rebasin comparison")
    ap.add_argument("--skip-rebasin", nargs="*", default=[], choices=list(ZOO), help="models to skip rebasin on")
    ap.add_argument("--budget", type=float, default=3.0,
                    help="stop repeating a raytraj timing once its runs total this many seconds")
    ap.add_argument("--rebasin-budget", type=float, default=3.0,
                    help="stop repeating a rebasin run once its runs total this many seconds")
    args = ap.parse_args(argv)
    start = time.perf_counter()

    if args.no_rebasin:
        rebasin, rb_version, rb_error = None, None, "skipped with --no-rebasin"
    else:
        rebasin, rb_version, rb_error = import_rebasin()
    import scipy

    meta = {
        "command": "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__)] + (sys.argv[1:] if argv is None else argv)),
        "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "processor": _cpu_name(),
        "rebasin": f"{rb_version} (imported)" if rebasin else f"not run ({rb_error})",
        "rebasin_error": rb_error,
        "loadavg_start": _loadavg(),
        "grad_batch": args.grad_batch,
        "seed": args.seed,
    }

    def log(msg):
        print(msg, flush=True)

    log(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, rebasin: {meta['rebasin']}")
    rows = [bench_model(k, args, rebasin, log) for k in args.models]
    meta["runtime_s"] = time.perf_counter() - start
    meta["loadavg_end"] = _loadavg()
    meta["notes"] = _notes(rows, meta)

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_markdown(args.out, rows, meta, args)
    json_path = args.json or os.path.splitext(args.out)[0] + ".json"
    with open(json_path, "w") as f:
        json.dump({"meta": meta, "args": vars(args), "rows": rows}, f, indent=1, default=str)
    log(f"wrote {args.out} and {json_path} in {meta['runtime_s']:.0f}s")


def _loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _notes(rows, meta):
    notes = [
        f"{meta['cpu_count']}-core CPU-only machine; torch matmuls use {meta['torch_threads']} threads, while "
        "scipy's linear_sum_assignment is single-threaded and the LAPs of one colour class are solved one after "
        "another (solve_laps_serial), so lap_s does not benefit from more cores here.",
        "Models are at initialisation (no training), so the independent case measures cost on random weights; "
        "trained models typically need a different number of sweeps.",
        "cost_s counts only cost-matrix builds inside the solve loop. Static terms (a tensor's only grouped axis: "
        "first layers, biases, BatchNorm) are contracted once in PairBank.add(), so they show up under `other`, "
        "and dynamic terms are updated incrementally when few units moved; hence later sweeps are cheaper than "
        "the `flops / full sweep` count suggests.",
        "ResNet-20's objective includes the BatchNorm running_var buffers (all ones at init), a constant that "
        "no permutation changes.",
    ]
    bad = [r["label"] for r in rows if not (r["planted"]["perm_exact"] and r["planted"]["weights_exact"])]
    notes.append(
        "Planted weight recovery: " + ("exact on every model." if not bad else f"FAILED on {', '.join(bad)}.")
    )
    badg = [r["label"] for r in rows if not r["grad_planted"]["live_exact"]]
    notes.append(
        "Planted gradient recovery (live units): " + ("exact on every model." if not badg else f"FAILED on {', '.join(badg)}.")
    )
    slow = []
    for r in rows:
        w = r["independent"]
        g1 = next((g for g in r["grad"] if g["P"] == min(x["P"] for x in r["grad"])), None)
        if g1 and w["laps"] and g1["laps"] and r["max_group"] >= 256:
            per_w, per_g = w["lap_s"] / w["laps"], g1["lap_s"] / g1["laps"]
            slow.append(f"{r['label']} {1e3 * per_g:.1f} ms vs {1e3 * per_w:.1f} ms ({per_g / per_w:.1f}×)")
    if slow:
        notes.append(
            f"LAPs on gradient costs with few pairs are slower per solve than on weight costs (P = "
            f"{min(rows[0]['grad'], key=lambda g: g['P'])['P']} vs independent weights, per LAP): "
            + "; ".join(slow)
            + ". A gradient of a batch of B inputs gives a cost matrix of rank about B per layer (here B = "
            f"{meta['grad_batch']}), and scipy's linear_sum_assignment is slower on such near-degenerate "
            "matrices (many ties). So for small P the LAP, not the cost build, dominates; cost building grows "
            "linearly with P and overtakes it for the big layers."
        )
    load = meta.get("loadavg_end") or [0]
    if load[0] > 0.75 * (meta["cpu_count"] or 1) + 1:
        notes.append(
            f"WARNING: the 1-min load average reached {load[0]} on {meta['cpu_count']} cores by the end of the run: "
            "other jobs were competing for the CPU and the timings above are inflated. Rerun on a quiet machine."
        )
    elif (meta.get("loadavg_start") or [9])[0] < 0.75:
        notes.append(
            "The machine is shared with other jobs; this run started while it was otherwise idle (load "
            "averages above; our own run accounts for up to ~2). Runs made while other jobs were busy were 3–20× "
            "slower, so compare timings only within one run."
        )
    else:
        notes.append(
            "The machine is shared with other jobs and was not idle when this run started (load averages above); "
            "timings may be inflated. Compare timings only within one run."
        )
    unconv = [f"{r['label']} ({c})" for r in rows for c in ("planted", "independent") if not r[c]["converged"]]
    unconv += [f"{r['label']} (grad P={g['P']})" for r in rows for g in r["grad"] if not g["converged"]]
    if unconv:
        notes.append("Hit max_sweeps=100 without converging: " + ", ".join(unconv) + ".")
    if meta["rebasin_error"] is None:
        rb = [(r, c, e) for r in rows for c, e in r.get("rebasin", {}).items() if not e.get("error")]
        if rb:
            ratios = [e["ratio_calc"] for _, _, e in rb]
            notes.append(
                f"rebasin / raytraj time ratio (calc only) ranges {min(ratios):.1f}×–{max(ratios):.1f}× over the runs "
                "above. rebasin deep-copies each parameter's info object and re-applies every other permutation "
                "for every cost term on every visit, with autograd enabled on the parameters; raytraj caches "
                "contractions across visits."
            )
        better = [(r, r["rebasin"]["independent"]) for r in rows
                  if not r.get("rebasin", {}).get("independent", {}).get("error")
                  and "independent" in r.get("rebasin", {})
                  and r["rebasin"]["independent"]["objective"] > r["rebasin"]["independent"]["raytraj_objective"] + 1e-9]
        if better:
            notes.append(
                "On the independent case rebasin ends at a higher objective than raytraj's seed-"
                f"{meta['seed']} run on " + ", ".join(
                    f"{r['label']} ({e['objective']:.4g} vs {e['raytraj_objective']:.4g}; raytraj's best over seeds "
                    f"{max(r['independent']['seed_objectives']):.4g})" for r, e in better)
                + ". Both are coordinate-descent local optima that depend on the visiting order. rebasin's result is "
                "not a coordinate-wise optimum of the true objective, though: raytraj started from it improves it "
                "further (column 'raytraj started at rebasin's result'), as expected when the duplicated terms below re-weight rebasin's costs."
            )
        for r in rows:
            e = r.get("rebasin", {}).get("planted", {})
            if e.get("groups_left_fixed"):
                notes.append(
                    f"rebasin on {r['label']} finds {e['groups']} permutation groups where raytraj's spec has "
                    f"{r['groups']}: it never permutes {', '.join(e['groups_left_fixed'])} (left at identity), so it "
                    "cannot reach a planted permutation that moves those units, and its optimum is lower."
                )
            if e.get("terms") and e["terms"] > e["unique_terms"]:
                notes.append(
                    f"rebasin on {r['label']} lists {e['terms']} cost terms of which {e['unique_terms']} are distinct "
                    f"(raytraj: {e['raytraj_terms']} parameter terms); repeated (tensor, axis) terms are summed "
                    "into the cost matrix more than once, which re-weights its cost matrices unless every term repeats equally often, and costs time."
                )
        errs = [f"{r['label']} {c}: `{e['error']}`" for r in rows for c, e in r.get("rebasin", {}).items() if e.get("error")]
        if errs:
            notes.append("rebasin errors: " + "; ".join(errs))
    return notes


if __name__ == "__main__":
    main()
