"""A scaling model on paper for the sharded Ray backend, from the per-step costs bench_scale.py measured.

    python benchmarks/scale_model.py --work runs/bench-scale --out benchmarks/results/scale-model.md

GMT at T=30 with grad_batches B=1 (the paper's setting), W workers (one GPU each), one "unit" being one
mini-batch gradient of both models:

    wall = sum over s of [ ceil(s*B / W) * c_g  +  RS(W) ]  +  T * solve_step
    RS(W) = 16 * P * (W - 1) / W / bw          (reduce-scatter of float64 sums of both models)
    solve_step = sweeps * sum over colour classes of ( L + max LAP(n_g) in the class )

c_g, L, LAP(n) and sweeps come from the measured runs; bw is an assumption (stated in the report).
A step cannot use more than s*B workers for gradients, so beyond W = T*B only RS and the solve remain.
The driver's traffic is O(sum of n_g) per LAP and does not grow with W or P.
"""

from __future__ import annotations

import argparse
import math
import os

from report import write_report

BW = 10e9  # bytes/s per worker link: an assumption (a 100 Gb/s cluster network at ~80%)


def load(work, name):
    from raytraj.runfolder import RunFolder

    return RunFolder(os.path.join(work, name)).metrics()


def predict(c_g, P, T, B, W, solve_step):
    grad = sum(math.ceil(s * B / W) * c_g for s in range(1, T + 1))
    rs = T * 16 * P * (W - 1) / W / BW
    return grad, rs, T * solve_step


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="runs/bench-scale")
    ap.add_argument("--out", default="benchmarks/results/scale-model.md")
    args = ap.parse_args()
    # ResNet-20 (digits, width 1): GMT T=10 on 2 workers, B=1.
    rn = load(args.work, "traffic-ResNet-20")
    rn_units = rn["steps"] * (rn["steps"] + 1) // 2
    rn_cg = rn["timing"]["grad_s"] * 2 / rn_units  # 2 workers computed in parallel
    rn_solve = rn["timing"]["solve_s"] / rn["steps"]
    rn_P = 272_186  # ResNet-20 width 1 on 1-channel digits, parameters counted from its store
    # MLP 1024-1024 (MNIST-1D, batch 1024): the local run of the wall-time table.
    ml = load(args.work, "scale-local")
    T, B = ml["steps"], 8
    ml_cg = ml["timing"]["grad_s"] / (B * T * (T + 1) // 2)
    lap_1024 = ml["solver"]["lap_s"] / ml["solver"]["laps"]
    sweeps = ml["solver"]["mean_sweeps"]
    ray = load(args.work, "scale-ray2")
    per_class = max(0.0, (ray["timing"]["solve_s"] - ray["solver"]["lap_s"]) / ray["solver"]["laps"])
    # A 25M-parameter MLP, 4 hidden layers of 2560 (P = 40*2560 + 3*2560^2 + 2560*10 ~ 19.8M + ~6.5M in a
    # wider head is close enough: we take P = 25.6M). Its gradient cost scales with P from the measured
    # MLP-1024 (matmul flops are proportional to P at a fixed batch); LAP(2560) from LAP(1024) by n^3.
    big_P, mlp_P = 25.6e6, 40 * 1024 + 1024 * 1024 + 1024 * 10
    big_cg = ml_cg * big_P / mlp_P
    lap_2560 = lap_1024 * (2560 / 1024) ** 3
    big_solve = sweeps * 2 * (per_class + lap_2560)  # classes {h1,h3}, {h2,h4}: two LAPs in parallel each
    lines = [
        "# Scaling model on paper: GMT T=30, B=1, on 8, 64 and 256 workers", "",
        f"Command: `python benchmarks/scale_model.py --work {args.work} --out {args.out}`, from the runs of "
        "`bench_scale.py` (see scale.md). Constants measured there, on this shared 2-core CPU machine "
        "(no GPU was lent to this session, so GPU-speed constants are not measured: divide c_g by a "
        "GPU's speed-up to read the GPU case; the bound analysis below does not depend on it):", "",
        f"- ResNet-20: c_g = {rn_cg:.3f} s per unit on one worker thread; solve = {rn_solve:.3f} s per step "
        "(round-trip bound: its LAPs are 16-64 wide);",
        f"- MLP 1024-1024: c_g = {ml_cg:.3f} s per unit (batch 1024); LAP(1024) = {lap_1024:.3f} s; "
        f"{sweeps:.1f} sweeps per step; per colour class on Ray {per_class * 1e3:.0f} ms besides the LAP "
        "(two round trips, term contractions, cost-part transfer);",
        f"- 25M model (assumed: an MLP of four 2560-wide layers, P = 25.6M): c_g scaled by P = {big_cg:.2f} s, "
        f"LAP(2560) = LAP(1024) x 2.5^3 = {lap_2560:.2f} s; two colour classes of two groups;",
        f"- bw = {BW / 1e9:.0f} GB/s per worker link (assumed).", "",
        "| model | workers | gradients s | reduce-scatter s | solve s | total s | bound by |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, c_g, P, solve in [("ResNet-20", rn_cg, rn_P, rn_solve), ("25M MLP", big_cg, big_P, big_solve)]:
        for W in (8, 64, 256):
            grad, rs, sol = predict(c_g, P, 30, 1, W, solve)
            parts = {"gradients": grad, "reduce-scatter": rs, "solve": sol}
            bound = max(parts, key=parts.get)
            lines.append(f"| {label} | {W} | {grad:.1f} | {rs:.2f} | {sol:.1f} | {grad + rs + sol:.1f} | {bound} |")
    rn_path = 30 * rn_cg
    lines += [
        "", "Reading:",
        "- With B=1, GMT's step s has s units, so beyond W = T = 30 workers more GPUs cannot shorten the "
        "gradients: 64 and 256 workers give the same gradient time, the critical path of T units "
        f"(ResNet-20: 30 x {rn_cg:.2f} s = {rn_path:.1f} s on these CPU constants). They help only with larger "
        "grad_batches, or with several transfers at once (Tune ensembles).",
        f"- ResNet-20 stays gradient-bound on CPU constants; with a GPU computing a unit more than "
        f"{rn_path / (30 * rn_solve):.1f}x faster than one CPU thread here, the solve ({30 * rn_solve:.1f} s, "
        "round trips of its many small colour classes) becomes the bound, and it does not shrink with W.",
        "- The 25M model is solve-bound at every W: its 2560-wide LAPs run in parallel only within a colour "
        "class (two per class here), so the solve is sweeps x classes x LAP(2560) whatever W is. Faster LAPs "
        "(GPU auction solvers, fewer sweeps by warm starts) are the next lever, not more workers.",
        "- Reduce-scatter is seconds at most; the driver moves O(sum of n_g) numbers per LAP (scale.md: under "
        "1% of the old design's bytes), independent of P and W.",
    ]
    write_report(args.out, lines)


if __name__ == "__main__":
    main()
