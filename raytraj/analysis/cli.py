"""The ``raytraj analyze`` command group; ``raytraj.cli`` registers it with :func:`add_analyze_parser`.

Argument parsing only: the work is imported when a command runs.
"""

from __future__ import annotations

from ..backend_flags import backend_options
from ..config import ConfigError


def _common(q, grid: bool = True) -> None:
    q.add_argument("--out", required=True, help="output folder (JSON and PNG)")
    if grid:
        q.add_argument("--bn-batches", type=int, default=10, help="batches for BatchNorm recalibration per point")
        q.add_argument("--seed", type=int, default=0, help="BatchNorm batches and the matching solver's order")
        q.add_argument("--backend", default="local", choices=["local", "ray"], help="ray: grid points on actors")
        q.add_argument("--address", help="Ray cluster: auto or ray://HOST:PORT (default: a new local one)")
        q.add_argument("--workers", type=int, help="Ray actors (default 2)")
        q.add_argument("--cpus-per-worker", type=float)
        q.add_argument("--device", help="local backend: cpu or cuda (default: cuda when available)")
    q.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_interpolate(args):
    from .interpolate import interpolate_models

    r = interpolate_models(args.a, args.b, args.out, points=args.points, align=args.align, data=args.data,
                           bn_batches=args.bn_batches, seed=args.seed, backend=args.backend,
                           **backend_options(args), progress=not args.quiet)
    print(f"barrier {r['barrier']:.4f} (train loss), {r['val_barrier']:.4f} (val loss); val acc "
          f"{r['val_acc'][0]:.1f}% -> min {min(r['val_acc']):.1f}% -> {r['val_acc'][-1]:.1f}%; "
          f"wrote {args.out}/interpolate.json, interpolate.png")


def cmd_plane(args):
    from .plane import plane_landscape

    r = plane_landscape(args.a, args.b, args.c, args.out, grid=args.grid, margin=args.margin, align=args.align,
                        data=args.data, labels=args.labels.split(",") if args.labels else None,
                        bn_batches=args.bn_batches, seed=args.seed, backend=args.backend,
                        **backend_options(args), progress=not args.quiet)
    coords = ", ".join(f"{k} ({x:.2f}, {y:.2f})" for k, (x, y) in r["coords"].items())
    print(f"plane: {coords}; val loss {min(map(min, r['val_loss'])):.3f}..{max(map(max, r['val_loss'])):.3f}; "
          f"wrote {args.out}/plane.json, plane.png")


def cmd_similarity(args):
    from .similarity import trajectory_similarity

    r = trajectory_similarity(args.source, args.target, args.out, window=args.window, every=args.every,
                              seed=args.seed, progress=not args.quiet)
    held = f", held-out pi {r['heldout']['mean']:.3f}" if r["heldout"] else ""
    print(f"mean cosine over {len(r['iterations'])} displacements: matched pi {r['mean_matched']:.3f}{held}, "
          f"identity {r['mean_identity']:.3f}; wrote {args.out}/similarity.json, similarity.png")


def cmd_report(args):
    from .report import transfer_report

    r = transfer_report(args.runs, args.out, target=args.target, points=args.points, align=args.align,
                        bn_batches=args.bn_batches, seed=args.seed, backend=args.backend,
                        **backend_options(args), progress=not args.quiet)
    for row in r["runs"]:
        b = f", barrier to target {row['barrier']:.3f}" if "barrier" in row else ""
        print(f"{row['label']}: best val {row['best_val_acc']:.1f}%, test {row['test_acc']:.1f}%{b}")
    print(f"wrote {args.out}/report.json, report.png")


def add_analyze_parser(sub) -> None:
    """Add ``analyze`` and its subcommands to the ``raytraj`` subparsers ``sub``."""
    an = sub.add_parser("analyze", help="loss landscape and alignment: interpolate, plane, similarity, report")
    asub = an.add_subparsers(dest="analysis", required=True)

    i = asub.add_parser("interpolate", help="loss and accuracy along (1-a)A + aB, and the barrier")
    i.add_argument("a", help="run folder, STORE[:STEP] or .safetensors")
    i.add_argument("b", help="run folder, STORE[:STEP] or .safetensors (a bare one takes the model and data of A)")
    i.add_argument("--points", type=int, default=25)
    i.add_argument("--align", default="none", choices=["weights", "none"], help="weights: weight-match B to A")
    i.add_argument("--data", help="score on this data (default: A's)")
    _common(i)
    i.set_defaults(func=cmd_interpolate)

    p = asub.add_parser("plane", help="val loss and accuracy on the plane through A, B, C (paper Fig. 7)")
    for name in ("a", "b", "c"):
        p.add_argument(name, help="run folder, STORE[:STEP] or .safetensors")
    p.add_argument("--grid", type=int, default=21, help="points per axis")
    p.add_argument("--margin", type=float, default=0.2, help="room around the models, fraction of their span")
    p.add_argument("--align", default="none", choices=["none", "b", "c", "bc"],
                   help="weight-match these models to A first (Fig. 7: c, the source)")
    p.add_argument("--labels", help="names of A,B,C in the plot, comma-separated")
    p.add_argument("--data", help="score on this data (default: A's)")
    _common(p)
    p.set_defaults(func=cmd_plane)

    s = asub.add_parser("similarity", help="cosine of pi(source step) and target step along two trajectories "
                                           "(paper Fig. 3)")
    s.add_argument("--source", required=True, help="trajectory store (permuted)")
    s.add_argument("--target", required=True, help="trajectory store")
    s.add_argument("--window", type=int, default=500, help="last training iteration")
    s.add_argument("--every", type=int, default=10, help="iterations between points")
    s.add_argument("--seed", type=int, default=0, help="the matching solver's group order")
    _common(s, grid=False)
    s.set_defaults(func=cmd_similarity)

    r = asub.add_parser("report", help="one page for transfer runs: curves, methods, barriers, time per step")
    r.add_argument("runs", nargs="+", help="transfer run folders")
    r.add_argument("--target", help="normally trained target STORE[:STEP] (default: the Oracle run's)")
    r.add_argument("--points", type=int, default=11)
    r.add_argument("--align", default="none", choices=["weights", "none"])
    _common(r)
    r.set_defaults(func=cmd_report)
