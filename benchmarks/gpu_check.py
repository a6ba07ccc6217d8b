"""Check raytraj's CUDA path: models and gradients on the GPU, results equal to the CPU's.

    PYTHONPATH=. python benchmarks/gpu_check.py [--out benchmarks/results/gpu_check.md]

For an MLP and a BatchNorm ResNet-20 on digits it trains a source on the CPU, then:
  1. builds a TransferWorker on cuda and checks the model, the transferred state and the
     gradients live on the GPU;
  2. compares one gradient pair computed on cuda with the CPU's (relative error);
  3. runs the same FGMT transfer with the local backend on cpu and on cuda and compares the
     permutations, the accuracy curves and the timing;
  4. trains two epochs on cuda;
  5. times the batched torch auction on cuda against scipy on the CPU at n = 512, 1024, 2048
     (a colour class of 4 random matrices) and checks they reach the same optimum.
The Ray actors run this same TransferWorker on the GPU they hold, so this covers them too
(Ray itself does not fit in the device check's upload budget). Exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch

from raytraj.data import load_data
from raytraj.models import config_for_data
from raytraj.perm import random_permutation, solve_laps_auction, solve_laps_serial
from raytraj.runfolder import RunFolder
from raytraj.train import TrainConfig, train
from raytraj.transfer import TransferConfig, prepare, transfer
from raytraj.transfer.run import local_worker

CASES = [("mlp", {"hidden": (512, 512)}), ("resnet20", {"width": 1.0})]


def rel_err(a: dict, b: dict) -> float:
    num = sum(float((a[k].double().cpu() - b[k].double().cpu()).norm() ** 2) for k in a) ** 0.5
    den = sum(float(b[k].double().cpu().norm() ** 2) for k in b) ** 0.5
    return num / max(den, 1e-30)


def check_case(name, overrides, root, lines) -> bool:
    ok = True
    data = load_data("digits")
    model_cfg = config_for_data(name, data.input_shape, data.num_classes, **overrides)
    src = os.path.join(root, f"{name}-src")
    train(model_cfg, data, TrainConfig(epochs=8), 1, src, device="cpu", progress=False)
    cfg = TransferConfig(method="fgmt", steps=10, seed=0, bn_batches=5)
    problem = prepare(src, cfg, target_seed=2)
    gpu, cpu = local_worker(problem, cfg, "cuda"), local_worker(problem, cfg, "cpu")
    perm = random_permutation(problem.spec, torch.Generator().manual_seed(0))
    state = gpu.target_point(perm, 3)
    on_gpu = all(p.is_cuda for p in gpu.model.parameters()) and all(v.is_cuda for v in state.values())
    g_gpu = gpu.gradient_sums(perm, 1, 3, [0], 1)
    g_cpu = cpu.gradient_sums(perm, 1, 3, [0], 1)
    grads_on_gpu = all(v.is_cuda for v in g_gpu[0].values())
    err = max(rel_err(g_gpu[0], g_cpu[0]), rel_err(g_gpu[1], g_cpu[1]))
    lines.append(f"| {name} | model+state on cuda: {on_gpu} | gradients on cuda: {grads_on_gpu} | "
                 f"gradient rel. error vs cpu: {err:.2e} |")
    ok &= on_gpu and grads_on_gpu and err < 1e-3

    runs = {}
    for device in ("cpu", "cuda"):
        t0 = time.perf_counter()
        runs[device] = transfer(src, os.path.join(root, f"{name}-{device}"), cfg, target_seed=2,
                                device=device, progress=False)
        runs[device]["wall_s"] = time.perf_counter() - t0
    perms = {d: RunFolder(os.path.join(root, f"{name}-{d}")).perm()["final"] for d in runs}
    same_units = sum(a == b for g in perms["cpu"] for a, b in zip(perms["cpu"][g], perms["cuda"][g]))
    total_units = sum(len(v) for v in perms["cpu"].values())
    acc_gap = max(abs(a - b) for a, b in zip(runs["cpu"]["val_acc"], runs["cuda"]["val_acc"]))
    lines.append(f"| {name} | FGMT T=10 final val cpu {runs['cpu']['final_val_acc']:.1f} / cuda "
                 f"{runs['cuda']['final_val_acc']:.1f} | max per-step val gap {acc_gap:.2f} pts | "
                 f"final perm agreement {same_units}/{total_units} units |")
    lines.append(f"| {name} | transfer wall s: cpu {runs['cpu']['wall_s']:.2f}, cuda {runs['cuda']['wall_s']:.2f} | "
                 f"grad s: cpu {runs['cpu']['timing']['grad_s']:.2f}, cuda {runs['cuda']['timing']['grad_s']:.2f} | "
                 f"solve s: cpu {runs['cpu']['timing']['solve_s']:.2f}, cuda {runs['cuda']['timing']['solve_s']:.2f} |")
    ok &= acc_gap <= 3.0

    r = train(model_cfg, data, TrainConfig(epochs=2), 3, os.path.join(root, f"{name}-gpu-train"), device="cuda",
              progress=False)
    lines.append(f"| {name} | training on cuda: 2 epochs, val {r.val_acc[-1]:.1f} | {r.train_s:.2f}s | |")
    ok &= r.val_acc[-1] > 50
    return ok


def lap_timing(lines, sizes=(512, 1024, 2048), batch=4) -> bool:
    """GPU auction against CPU scipy on one colour class of random matrices; True if the optima agree."""
    import numpy as np

    ok = True
    lines += ["", "| n | scipy CPU s (4 LAPs) | auction cuda s (one batch of 4) | same optimum |", "|---|---|---|---|"]
    for n in sizes:
        mats = [torch.randn(n, n, generator=torch.Generator().manual_seed(i), dtype=torch.float64)
                for i in range(batch)]
        t0 = time.perf_counter()
        ref = solve_laps_serial([m.numpy() for m in mats])
        scipy_s = time.perf_counter() - t0
        gpu = [m.cuda() for m in mats]
        solve_laps_auction([g[:8, :8].contiguous() for g in gpu])  # warm up the kernels
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        got = solve_laps_auction(gpu)
        torch.cuda.synchronize()
        auction_s = time.perf_counter() - t0
        rows = np.arange(n)
        same = all(abs(m.numpy()[rows, c.cpu().numpy()].sum() - m.numpy()[rows, r].sum()) <= 1e-9 * n
                   for m, c, r in zip(mats, got, ref))
        lines.append(f"| {n} | {scipy_s:.3f} | {auction_s:.3f} | {same} |")
        ok &= same
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", help="also write the report here")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device visible: nothing to check")
        return 2
    lines = [f"# GPU check ({time.strftime('%Y-%m-%d')})", "",
             f"Command: `PYTHONPATH=. python benchmarks/gpu_check.py` on {torch.cuda.get_device_name(0)}, "
             f"torch {torch.__version__}, TF32 matmul {torch.backends.cuda.matmul.allow_tf32}, "
             f"cuDNN TF32 {torch.backends.cudnn.allow_tf32}.", "", "| model | | | |", "|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as root:
        ok = all([check_case(name, overrides, root, lines) for name, overrides in CASES])
    ok &= lap_timing(lines)
    lines += ["", f"result: {'PASS' if ok else 'FAIL'}"]
    report = "\n".join(lines)
    print(report)
    for path in filter(None, [args.out, os.path.join(os.environ["OUT"], "gpu_check.md") if "OUT" in os.environ
                              else None]):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w") as f:
            f.write(report + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
