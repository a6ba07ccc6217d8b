"""Transfer cost against training cost as models grow: LAP solvers, evaluation, the bank, disk, timing.

    PYTHONPATH=. python benchmarks/bench_cost.py --work runs/cost --baseline BASELINE_SRC [--models ...]
    PYTHONPATH=. python benchmarks/bench_cost.py --work runs/cost --report benchmarks/results/cost.md

BASELINE_SRC is a checkout of the code before these changes (``git archive a445375 | tar -x -C DIR``):
its FGMT defaults are "today's" (exact scipy LAPs, val at every step, float32 bank doubling its
capacity, caches written to state/ at every step and state/ kept).

Every measurement runs in a fresh subprocess with one torch thread (``--one``), which reports
the CPU seconds of its work (``time.process_time``: user + sys, so a loaded machine slows the wall
clock but hardly the ratios), its peak RSS (``ru_maxrss``) and the bytes it wrote (``wchar`` of
/proc/self/io: every write call, files and pipes, counted by the kernel, not by raytraj). Results
go to WORK/results.json, one entry per (model, run), so an interrupted benchmark continues.

Per model it trains the source (the cost denominator), then runs FGMT T=30 with target seed 2:

* today: the baseline checkout's defaults;
* new: this checkout's defaults;
* new-sparse: the defaults with ``--lap sparse`` (MLPs from 1024 wide; OR-tools solves the candidate graphs
  where it is installed, scipy's LAPJVsp otherwise: each row records which);
* new-exact: the defaults with ``--lap scipy`` (exact solves).

``--laps W,...`` also records the exact solves' cost matrices of a transfer (``--lap scipy``) on the
MLP source of each width and re-solves them with the sparse solver: time per LAP and objective gap.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

MNIST1D = dict(epochs=30, lr=0.1, weight_decay=1e-4)
DIGITS = dict(epochs=20, lr=0.05, weight_decay=5e-4)
FMNIST = dict(epochs=6, lr=0.05, weight_decay=5e-4)
FMNIST_DATA = "fashion-mnist:/usr/share/datasets/fashion-mnist:20000"
MODELS = {  # name -> (zoo model, data, model args, training recipe)
    **{f"mlp{w}": ("mlp", "mnist1d:20000", {"hidden": [w, w]}, MNIST1D) for w in (256, 512, 1024, 2048, 4096)},
    "conv8bn-0.25": ("conv", "digits", {"width": 0.25, "batch_norm": True}, DIGITS),
    "resnet20-0.5": ("resnet20", "digits", {"width": 0.5}, DIGITS),
    # Fashion-MNIST: a class-balanced, seeded 20,000 of its training images (18,000 train + 2,000 val) and its
    # 10,000 test images, read from the idx files of the dataset-fashion-mnist package
    "fmnist-conv8bn-0.25": ("conv", FMNIST_DATA, {"width": 0.25, "batch_norm": True}, FMNIST),
    "fmnist-resnet20-0.5": ("resnet20", FMNIST_DATA, {"width": 0.5}, FMNIST),
}


def meters() -> dict:
    io = {}
    with open("/proc/self/io") as f:
        for line in f:
            k, v = line.split(":")
            io[k] = int(v)
    return {"cpu_s": time.process_time(), "wchar": io["wchar"]}


def one(job: dict) -> dict:
    """Run one job in this process; what it cost, by the kernel's and the process's meters."""
    import torch

    torch.set_num_threads(1)
    import warnings

    warnings.simplefilter("ignore")
    model, data, model_args, recipe = MODELS[job["model"]]
    from raytraj.transfer import TransferConfig, transfer

    if job["kind"] == "train":
        from raytraj.train import train_from_args

        before = meters()
        r = train_from_args(model, data, job["out"], seed=1, model_args=model_args, progress=False, **recipe)
        after = meters()
        out = {"val_acc": r.val_acc[-1]}
    else:
        cfg = TransferConfig(method="fgmt", steps=30, seed=0, **job.get("cfg", {}))
        if job.get("warm"):  # the process's one-time imports and first-call costs, untimed
            transfer(job["source"], job["out"] + "-warm", TransferConfig(steps=1, eval_every=0), target_seed=2,
                     progress=False)
        captured = []
        if job["kind"] == "laps":
            import numpy as np

            import raytraj.perm.lap as lap

            exact = lap.linear_sum_assignment
            seen = [0]

            def recording(a, maximize=False):  # every 4th wide matrix, at most 12 (2048^2 float64 is 32 MB)
                seen[0] += 1
                if len(a) >= 256 and seen[0] % 4 == 1 and len(captured) < 12:
                    captured.append(np.array(a))
                return exact(a, maximize=maximize)

            lap.linear_sum_assignment = recording
        before = meters()
        m = transfer(job["source"], job["out"], cfg, target_seed=2, progress=False)
        after = meters()
        out = {k: m[k] for k in ("best_val_acc", "best_step", "final_val_acc", "test_acc", "timing", "solver")}
        out["bank"] = m.get("bank")
        from raytraj.perm.lap import _ortools

        out["ortools"] = _ortools() is not None  # the sparse solver's engine: OR-tools, or scipy's LAPJVsp
        out["evaluated"] = sum(v is not None for v in m["val_acc"])
        out["state_left"] = os.path.isdir(os.path.join(job["out"], "state"))
        if captured:
            out["laps"] = lap_table(captured)
    out.update({"cpu_s": after["cpu_s"] - before["cpu_s"], "written": after["wchar"] - before["wchar"],
                "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024})
    return out


def lap_table(mats) -> dict:
    """Exact against sparse on recorded cost matrices: CPU s per LAP, and the sparse answer's gap as a
    fraction of the way from a random assignment's value to the optimum's (mean and max)."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    from raytraj.perm.lap import sparse_assignment

    exact_s = sparse_s = 0.0
    gaps = []
    for a in mats:
        rows = np.arange(len(a))
        t = time.process_time()
        ref = linear_sum_assignment(a, maximize=True)[1]
        exact_s += time.process_time() - t
        t = time.process_time()
        cols = sparse_assignment(a, current=rows)
        sparse_s += time.process_time() - t
        best, rand = a[rows, ref].sum(), a.sum() / len(a)
        gaps.append(float((best - a[rows, cols].sum()) / (best - rand)))
    return {"n": len(mats[0]), "count": len(mats), "exact_s": exact_s / len(mats), "sparse_s": sparse_s / len(mats),
            "gap_mean": float(np.mean(gaps)), "gap_max": float(np.max(gaps))}


def run_one(job: dict, pythonpath: str) -> dict:
    env = {**os.environ, "PYTHONPATH": pythonpath, "OMP_NUM_THREADS": "1"}
    # /usr/bin/time -v: the kernel's peak RSS of the whole process (imports, data and warm-up included),
    # a meter outside the process beside its own ru_maxrss
    timer = ["/usr/bin/time", "-v"] if os.path.exists("/usr/bin/time") else []
    proc = subprocess.run([*timer, sys.executable, __file__, "--one", json.dumps(job)], env=env, capture_output=True,
                          text=True)
    if proc.returncode:
        raise RuntimeError(f"{job}: {proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for line in proc.stderr.splitlines():
        if "Maximum resident set size (kbytes)" in line:
            out["time_v_rss"] = int(line.rsplit(":", 1)[1]) * 1024
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--work", default="runs/cost")
    ap.add_argument("--baseline", help="a checkout of the code before these changes (today's defaults)")
    ap.add_argument("--models", default="mlp256,mlp512,mlp1024,conv8bn-0.25,resnet20-0.5")
    ap.add_argument("--laps", default="", help="MLP widths whose LAPs to compare, e.g. 1024,2048")
    ap.add_argument("--runs", default="", help="only these runs (comma-separated names), e.g. today")
    ap.add_argument("--report", help="write the markdown table here from WORK/results.json")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(json.loads(args.one))))
        return
    if args.report:  # the table from what earlier invocations recorded; runs nothing
        report(json.load(open(os.path.join(args.work, "results.json"))), args.report, args.work)
        return
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.makedirs(args.work, exist_ok=True)
    path = os.path.join(args.work, "results.json")
    results = json.load(open(path)) if os.path.exists(path) else {}
    results.setdefault("load", []).append([time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), os.getloadavg()[0]])

    def record(key, job, pythonpath):
        if key not in results:
            print(time.strftime("%H:%M:%S"), key, flush=True)
            results[key] = {**run_one(job, pythonpath), "load": os.getloadavg()[0]}
            # another invocation may have written meanwhile (e.g. the baseline's runs): keep its entries
            disk = json.load(open(path)) if os.path.exists(path) else {}
            results.update({k: v for k, v in disk.items() if k not in results})
            with open(path + ".tmp", "w") as f:
                json.dump(results, f, indent=1)
            os.replace(path + ".tmp", path)
        return results[key]

    for name in [m for m in args.models.split(",") if m]:
        root = os.path.join(os.path.abspath(args.work), name)
        src = os.path.join(root, "source")
        record(f"{name}/train", {"kind": "train", "model": name, "out": src}, here)
        # new-f32: the defaults with a float32 bank, the same seeds: bfloat16's effect on accuracy alone
        runs = {"new": {}, "new-f32": {"bank_dtype": "float32"}}
        if args.baseline:
            runs["today"] = {}
        if name.startswith("mlp") and int(name[3:]) >= 1024:
            runs["new-sparse"] = {"lap": "sparse"}  # the sparse LAP against the exact default, same run otherwise
            runs["new-exact"] = {"lap": "scipy"}  # exact solves, the same run otherwise
        for run, cfg in runs.items():
            if args.runs and run not in args.runs.split(","):
                continue
            out = os.path.join(root, run)
            record(f"{name}/{run}", {"kind": "transfer", "model": name, "source": src, "out": out, "cfg": cfg,
                                     "warm": True}, args.baseline if run == "today" else here)
    for w in [w for w in args.laps.split(",") if w]:
        name = f"mlp{w}"
        root = os.path.join(os.path.abspath(args.work), name)
        record(f"{name}/train", {"kind": "train", "model": name, "out": os.path.join(root, "source")}, here)
        record(f"{name}/laps", {"kind": "laps", "model": name, "source": os.path.join(root, "source"),
                                "out": os.path.join(root, "laps"), "cfg": {"lap": "scipy", "eval_every": 0}}, here)


def resnet50_terms() -> tuple[int, list[int]]:
    """torchvision's ResNet-50: its parameter count, and the width n of each cost term that depends on
    other groups' permutations (an n x n float64 cache each): both axes of every block conv and
    projection shortcut (the stem conv, BatchNorm and the classifier have one permuted axis)."""
    sizes, c_in = [], 64  # the stem's 64 channels feed the first block
    for w, c, blocks in ((64, 256, 3), (128, 512, 4), (256, 1024, 6), (512, 2048, 3)):
        for b in range(blocks):
            sizes += [w, c_in, w, w, c, w]  # conv1 (c_in -> w), conv2 (w -> w), conv3 (w -> c): out and in
            if b == 0:
                sizes += [c, c_in]  # the projection shortcut (c_in -> c)
            c_in = c
    return 25_557_032, sizes


def transformer_terms() -> tuple[int, list[int]]:
    """A 100M-parameter pre-LN transformer from raytraj's zoo (depth 14, width 768, 12 heads, MLP x4):
    parameter count and dynamic cost-term widths, read off a PairBank built on its inferred spec."""
    import torch

    from raytraj.models import build_model, config_for_data
    from raytraj.perm import PairBank, infer_spec

    model = build_model(config_for_data("transformer", (16, 256), 10, depth=14, width=768, heads=12, mlp_ratio=4),
                        0)
    bank = PairBank(infer_spec(model, torch.randn(2, 16, 256)))
    sizes = [bank._plain.sizes[g] for g, terms in bank._dynamic.items() for _ in terms]
    return sum(p.numel() for p in model.parameters()), sizes


def projected(params: int, sizes: list[int], steps: int = 30) -> dict:
    """Bank bytes at T steps: today's (float32, slots doubling from 4, so 32 for T=30, and 16 more held
    while they are copied at the 17th pair) against a bfloat16 bank of exactly T slots; both keep the
    n x n float64 caches."""
    slots = 4
    while slots < steps:
        slots *= 2
    cache = sum(8 * n * n for n in sizes)
    return {"params": params, "cache": cache, "today": 2 * slots * params * 4 + cache,
            "today_peak": 2 * (slots + slots // 2) * params * 4 + cache, "new": 2 * steps * params * 2 + cache}


def schedule_rows(work: str) -> list[str]:
    """On today's runs (val at every step): the best val over every step against over eval_steps(30) only,
    the same curve, so the difference is the schedule's alone."""
    from raytraj.transfer.config import eval_steps

    rows = []
    for name in MODELS:
        path = os.path.join(work, name, "today", "metrics.json")
        if not os.path.exists(path):
            continue
        val = json.load(open(path))["val_acc"]
        steps = eval_steps(len(val))
        best, sched = max(val), max(val[s - 1] for s in steps)
        rows.append(f"| {name} | {best:.2f} (step {val.index(best) + 1}) | {sched:.2f} "
                    f"(step {[s for s in steps if val[s - 1] == sched][0]}) | {sched - best:+.2f} |")
    return rows


def rss(r: dict) -> str:
    """Peak RSS in MiB: the process's own ru_maxrss, and /usr/bin/time -v's where it ran under it."""
    own = f"{r['peak_rss'] / 2**20:.0f}"
    return f"{own} ({r['time_v_rss'] / 2**20:.0f})" if "time_v_rss" in r else own


def report(results: dict, out: str, work: str) -> None:
    lines = ["| model | run | transfer CPU s | ÷ training | best val (step) | evaluated steps | LAPs | LAP s "
             "| eval CPU s | peak RSS MB (time -v) | written MB | bank MB |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, r in results.items():
        if key == "load" or key.endswith("/train") or key.endswith("/laps"):
            continue
        name, run = key.split("/")
        train = results[f"{name}/train"]
        bank = r.get("bank") or {}
        lines.append(
            f"| {name} | {run} | {r['cpu_s']:.1f} | {r['cpu_s'] / train['cpu_s']:.2f} | {r['best_val_acc']:.1f} "
            f"({r['best_step']}) | {r['evaluated']} | {r['solver']['laps']} | {r['solver']['lap_s']:.1f} | "
            f"{r['timing'].get('eval_cpu_s', r['timing']['eval_s']):.1f} | {rss(r)} | {r['written'] / 2**20:.1f} | "
            f"{(bank.get('pairs', 0) + bank.get('cache', 0)) / 2**20:.1f} |" if bank else
            f"| {name} | {run} | {r['cpu_s']:.1f} | {r['cpu_s'] / train['cpu_s']:.2f} | {r['best_val_acc']:.1f} "
            f"({r['best_step']}) | {r['evaluated']} | {r['solver']['laps']} | {r['solver']['lap_s']:.1f} | "
            f"{r['timing'].get('eval_cpu_s', r['timing']['eval_s']):.1f} | {rss(r)} | {r['written'] / 2**20:.1f} | – |")
    lines += ["", "| model | source training CPU s | source val |", "|---|---|---|"]
    lines += [f"| {k.split('/')[0]} | {r['cpu_s']:.1f} | {r['val_acc']:.1f} |" for k, r in results.items()
              if k.endswith("/train")]
    laps = [r["laps"] for k, r in results.items() if k.endswith("/laps")]
    if laps:
        lines += ["", "| n | matrices | exact ms/LAP | sparse ms/LAP | sparse ÷ exact | gap mean | gap max |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {t['n']} | {t['count']} | {t['exact_s'] * 1e3:.0f} | {t['sparse_s'] * 1e3:.0f} | "
                  f"{t['sparse_s'] / t['exact_s']:.2f} | {t['gap_mean']:.1e} | {t['gap_max']:.1e} |" for t in laps]
    lines += ["", "| model | best val, every step | best val, auto schedule (13 of 30 steps) | change |",
              "|---|---|---|---|", *schedule_rows(work)]
    lines += ["", "| model | params | caches GB | today's bank GB (peak) | bf16, T slots GB | new ÷ today (÷ peak) |",
              "|---|---|---|---|---|---|"]
    for name, (params, sizes) in (("ResNet-50", resnet50_terms()), ("transformer 100M", transformer_terms())):
        p = projected(params, sizes)
        lines.append(f"| {name} | {params / 1e6:.1f}M | {p['cache'] / 1e9:.2f} | {p['today'] / 1e9:.1f} "
                     f"({p['today_peak'] / 1e9:.1f}) | {p['new'] / 1e9:.1f} | {p['new'] / p['today']:.2f} "
                     f"({p['new'] / p['today_peak']:.2f}) |")
    lines += ["", "Load average (1 min) at each start: " + ", ".join(f"{t} {v:.1f}" for t, v in results["load"])]
    text = "\n".join(lines) + "\n"
    with open(out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
