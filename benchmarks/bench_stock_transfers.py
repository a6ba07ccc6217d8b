"""Learning transfer of stock models in the pre-trained scenario, with inferred specs only.

    python benchmarks/bench_stock_transfers.py --work runs/stock --out benchmarks/results/stock-transfers.md

Models (benchmarks/stock_models.py, each its library's own code with random weights): the stock
nn.TransformerEncoder over the rows of the digit, Hugging Face BertForSequenceClassification
(small config) over the pixel values (4x4) as token ids, torchvision's resnet18 on 3x8x8 digits,
timm's VisionTransformer and Hugging Face's ViTForImageClassification (small configs, 2x2 patches of
the 3x8x8 digits), and a hand-written GroupNorm CNN with a residual block. No spec is written by
hand: each transfer infers its own.

Scenario (as in the README): pre-train two models (seeds a, b) on digits 0-4; fine-tune a on
digits 5-9 with a new head (the source trajectory); move that fine-tuning onto pre-trained b with
its own new head. Naive, FGMT and Oracle (b fine-tuned for real, weight-matched), 3 seed pairs,
cosine schedule of T steps, one batch of 128 per gradient. A transfer that is refused (a spec
that covers too little, a failed proof) is one line in the table. Runs are kept under --work, so
an interrupted benchmark resumes. The report keeps the rows the results file already holds for the
pairs a run does not measure (--fresh: only this run's), and says which command measured each row.

torchvision, timm and transformers come from the benchmark environment (see bench_permutability.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_permutability import this_command, write_report  # noqa: E402

from raytraj import compare, fs  # noqa: E402
from raytraj.runfolder import RunFolder  # noqa: E402
from raytraj.train import train_from_args  # noqa: E402
from raytraj.trajectory import TrajectoryStore  # noqa: E402
from raytraj.transfer import TransferConfig, transfer  # noqa: E402

SEED_PAIRS = [(101, 102), (201, 202), (301, 302)]
METHODS = ["naive", "fgmt", "oracle"]
MODELS = {  # name: (factory, data before, data after, data kwargs?, head, recipe)
    "GroupNorm CNN": ("stock_models:gn_cnn", "digits[0-4]", "digits[5-9]", False, "head",
                      dict(epochs=10, lr=0.05)),
    "nn.TransformerEncoder": ("stock_models:encoder", "digits[0-4]", "digits[5-9]", False, "head",
                              dict(epochs=8, lr=0.05, warmup_epochs=1)),
    "HF BERT (small config)": ("stock_models:bert", "stock_models:digits_tokens", None, True, "classifier",
                               dict(epochs=16, lr=0.02, batch_size=32)),
    "torchvision resnet18": ("stock_models:resnet18", "stock_models:digits_images", None, True, "fc",
                             dict(epochs=5, lr=0.05)),
    # SGD moves a ViT slowly from timm's 0.02-std init: batches of 32, 30 epochs, 2 of warmup
    "timm ViT (small config)": ("stock_models:vit", "stock_models:digits_images", None, True, "head",
                                dict(epochs=30, lr=0.1, warmup_epochs=2, batch_size=32)),
    "HF ViT (small config)": ("stock_models:hf_vit", "stock_models:digits_images", None, True, "classifier",
                              dict(epochs=30, lr=0.1, warmup_epochs=2, batch_size=32)),
}
HAND_WRITTEN = {  # rows whose model is not a library's stock model, and what their gain is bounded by
    "GroupNorm CNN": "written in stock_models.py, not a library's model",
}


def one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"


def trained(path, model, data, data_args, seed, recipe, **kw) -> str:
    if not (fs.exists(fs.join(path, "trajectory.json")) and TrajectoryStore(path).complete):
        train_from_args(model, data, path, seed=seed, data_args=data_args, progress=False, **recipe, **kw)
    return path


def run_pair(work: str, key: str, a: int, b: int, steps: int, train_only: bool = False,
             report_only: bool = False) -> dict | None:
    factory, before, after, by_args, head, recipe = MODELS[key]
    root = os.path.join(work, key.split()[0].replace("/", "_") + ("-" + key.split()[1] if " " in key else ""),
                        f"{a}-{b}")
    if by_args:  # a data function, given the class range
        low, high, args_low, args_high = before, before, {"classes": "0-4"}, {"classes": "5-9"}
    else:
        low, high, args_low, args_high = before, after, None, None
    if report_only and not all(fs.exists(os.path.join(root, d, "trajectory.json"))
                               for d in ("pre-a", "pre-b", "source", "target")):
        return {"pair": f"{a}-{b}", "missing": True}
    pre_a = trained(os.path.join(root, "pre-a"), factory, low, args_low, a, recipe)
    pre_b = trained(os.path.join(root, "pre-b"), factory, low, args_low, b, recipe)
    src = trained(os.path.join(root, "source"), factory, high, args_high, a, recipe, init=pre_a, new_head=True,
                  head=head)
    tgt = trained(os.path.join(root, "target"), factory, high, args_high, 0, recipe, init=pre_b, new_head=True,
                  head=head)
    if train_only:
        return None
    row = {"pair": f"{a}-{b}", "source_val": TrajectoryStore(src).meta["val_acc"][-1],
           "target_val": TrajectoryStore(tgt).meta["val_acc"][-1], "runs": {}}
    for method in METHODS:
        out = os.path.join(root, method)
        cfg = TransferConfig(method=method, steps=steps, seed=0)
        if report_only and not RunFolder(out).has_model("best"):
            row["runs"][method] = {"error": "not run in the time available"}
            continue
        try:
            m = RunFolder(out).load_or_run(lambda resume: transfer(
                src, out, cfg, target_init=pre_b, new_head=True, head=head, resume=resume, progress=False,
                oracle_target=tgt if method == "oracle" else None))
            if m["steps"] != steps:
                raise RuntimeError(f"{out} holds a run of T={m['steps']}, not {steps}; remove it or use another --work")
            row["runs"][method] = {"best_val_acc": m["best_val_acc"], "test_acc": m["test_acc"],
                                   "seconds": m["timing"]["total_s"], "cpu_s": m["timing"].get("cpu_s"),
                                   "val_acc": m["val_acc"]}
        except Exception as e:  # noqa: BLE001 - a refused or failed transfer is one line of the table
            row["runs"][method] = {"error": one_line(e)}
    return row


def mean_std(values) -> str:
    return compare.mean_std(values, sep="±")  # this table's cells, as written in results/stock-transfers.md


def secs(s: float) -> str:
    return f"{s:.1f}" if s < 10 else f"{s:.0f}"


def complete(row: dict) -> bool:
    return all("error" not in row["runs"][m] for m in METHODS)


def merged(recorded: dict, results: dict) -> dict:
    """This run's rows, and the recorded rows of the pairs it did not measure (a model, a pair it skipped,
    or whose runs are not under --work). Of two rows of one pair, the one with more methods measured
    wins, this run's on a tie: a pair is one set of trainings, so its methods are never mixed."""
    out: dict = {}
    for key in MODELS:
        rows = {r["pair"]: r for r in recorded.get(key, [])}
        for r in results.get(key, []):
            old = rows.get(r["pair"])
            if old is None or sum(map(complete_method(r), METHODS)) >= sum(map(complete_method(old), METHODS)):
                rows[r["pair"]] = r
        order = [f"{a}-{b}" for a, b in SEED_PAIRS]
        out[key] = sorted(rows.values(), key=lambda r: order.index(r["pair"]) if r["pair"] in order else len(order))
    return out


def complete_method(row: dict):
    return lambda m: "error" not in row["runs"].get(m, {"error": ""})


def render(results: dict, command: str, load: str, steps: int, seconds: float) -> str:
    lines = ["## Stock models, pre-trained scenario (digits 0-4 -> 5-9, new head)", "",
             f"Command: `{command}`; {seconds:.0f} s wall for what was not already under --work; load: `{load}`.",
             f"T={steps} (cosine), one batch of 128 per gradient, specs inferred (none written by hand). "
             "Best val % over the trajectory and test % at the best step, mean±std over the seed pairs run; "
             "pairs: those with all three methods measured, of those recorded. oracle - naive is the gain a "
             "perfect matching of the trained target reaches: the ceiling FGMT is measured against.", "",
             "| model | pairs | naive val | fgmt val | oracle val | fgmt - naive | oracle - naive | naive test | "
             "fgmt test | oracle test | source / target trained (val) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for key, rows in results.items():
        if not rows:
            continue

        def col(method, field):
            return [r["runs"][method].get(field) for r in rows if "error" not in r["runs"][method]]

        def gain(method):
            return [r["runs"][method]["best_val_acc"] - r["runs"]["naive"]["best_val_acc"] for r in rows
                    if "error" not in r["runs"][method] and "error" not in r["runs"]["naive"]]
        errors = sorted({f"{m}: {r['runs'][m]['error']}" for r in rows for m in METHODS if "error" in r["runs"][m]})
        done = sum(map(complete, rows))
        name = f"{key} (hand-written)" if key in HAND_WRITTEN else key
        lines.append(f"| {name} | {done if done == len(rows) else f'{done} of {len(rows)}'} | "
                     f"{mean_std(col('naive', 'best_val_acc'))} | {mean_std(col('fgmt', 'best_val_acc'))} | "
                     f"{mean_std(col('oracle', 'best_val_acc'))} | {mean_std(gain('fgmt'))} | "
                     f"{mean_std(gain('oracle'))} | {mean_std(col('naive', 'test_acc'))} | "
                     f"{mean_std(col('fgmt', 'test_acc'))} | {mean_std(col('oracle', 'test_acc'))} | "
                     f"{mean_std([r['source_val'] for r in rows])} / {mean_std([r['target_val'] for r in rows])} |")
        for err in errors:
            lines.append(f"| {key}: {err} | | | | | | | | | | |")
        if key in HAND_WRITTEN and gain("oracle"):
            notes.append(f"- {key}: {HAND_WRITTEN[key]}. Its Oracle (the trained target itself, weight-matched) "
                         f"gains only {mean_std(gain('oracle'))} points over Naive (per pair: "
                         + ", ".join(f"{g:+.1f}" for g in gain("oracle")) + "): +15 is more than the Oracle "
                         f"itself gains here, so the miss is the scenario's on this model, not FGMT's; FGMT gets "
                         f"{mean_std(gain('fgmt'))}.")
    by: dict = {}
    for key, rows in results.items():
        for r in rows:
            m = r.get("measured", {})
            how = m.get("how", "ran")
            by.setdefault((how, m.get("command", "?"), m.get("date", ""), m.get("load", "?") if how == "legacy" else ""),
                          []).append(f"{key} {r['pair']}" + ("" if how == "legacy" else
                                                              f" (load {m.get('load', '?').rpartition('average: ')[2]})"))
    for (how, cmd, date, load), where in by.items():
        if how == "legacy":
            notes.append(f"- {', '.join(where)}: runs no longer on disk, measured before each row recorded its own "
                         f"command; kept from the results file written by `{cmd}`, load then `{load}`.")
        else:
            notes.append(f"- {', '.join(where)}: {'reported from --work' if how == 'reported' else 'measured'} by "
                         f"`{cmd}` on {date} (load average at the end of each pair).")
    lines += ["", "Per pair (best val %): " + "; ".join(
        f"{key} {r['pair']}: " + ", ".join(f"{m} {r['runs'][m].get('best_val_acc', float('nan')):.1f}" for m in METHODS)
        for key, rows in results.items() for r in rows)]
    lines += ["", "Per pair (each transfer's wall s, and its CPU s where recorded; Python start excluded): " + "; ".join(
        f"{key} {r['pair']}: " + ", ".join(
            f"{m} {secs(r['runs'][m]['seconds'])}" + (f" ({secs(r['runs'][m]['cpu_s'])} CPU)"
                                                      if r["runs"][m].get("cpu_s") is not None else "")
            for m in METHODS if "seconds" in r["runs"][m])
        for key, rows in results.items() for r in rows if any("seconds" in r["runs"][m] for m in METHODS))]
    if notes:
        lines += ["", "Notes:", ""] + notes
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", default="runs/stock")
    p.add_argument("--out", default="benchmarks/results/stock-transfers.md")
    p.add_argument("--only", help="comma-separated substrings of model names")
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--pair-seeds", help="comma-separated seed pairs to run, e.g. 201-202,301-302 (instead of --pairs)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--train-only", action="store_true", help="only record the trajectories the transfers need")
    p.add_argument("--report-only", action="store_true", help="only report the runs already under --work")
    p.add_argument("--fresh", action="store_true",
                   help="report only this run's rows (by default the rows --out's .json holds for pairs this run "
                        "does not measure are kept)")
    args = p.parse_args()
    pairs = SEED_PAIRS[:args.pairs]
    if args.pair_seeds:
        pairs = [tuple(int(x) for x in ab.split("-")) for ab in args.pair_seeds.split(",")]
        unknown = [f"{a}-{b}" for a, b in pairs if (a, b) not in SEED_PAIRS]
        if unknown:
            p.error(f"--pair-seeds {','.join(unknown)}: not one of {', '.join(f'{a}-{b}' for a, b in SEED_PAIRS)}")
    record_path = os.path.splitext(args.out)[0] + ".json"
    recorded: dict = {}
    if not args.fresh and os.path.exists(record_path):
        with open(record_path) as f:
            old = json.load(f)
        recorded = old.get("results", {})
        for rows in recorded.values():  # rows from before rows said who measured them
            for r in rows:
                r.setdefault("measured", {"how": "legacy", "command": old.get("command", "?"),
                                          "load": old.get("load", "?")})
    command, t0 = this_command(), time.perf_counter()
    results: dict = {}
    for key in MODELS:
        if args.only and not any(s.lower() in key.lower() for s in args.only.split(",")):
            continue
        results[key] = []
        for a, b in pairs:
            row = run_pair(args.work, key, a, b, args.steps, args.train_only, args.report_only)
            if row is None or row.get("missing"):
                print(f"{key} {a}-{b}: " + ("trained" if row is None else "not trained yet"), flush=True)
                continue
            before = {r["pair"]: r for r in recorded.get(key, [])}.get(row["pair"], {}).get("measured")
            if args.report_only and before:  # the same runs: who measured them does not change
                row["measured"] = before
            else:
                row["measured"] = {"how": "reported" if args.report_only else "ran", "command": command,
                                   "load": os.popen("uptime").read().strip(),
                                   "date": time.strftime("%Y-%m-%d", time.gmtime())}
            results[key].append(row)
            print(json.dumps({"model": key, **row}), flush=True)
    if args.train_only:
        return
    load = os.popen("uptime").read().strip()
    results = merged(recorded, results)
    write_report(args.out, render(results, command, load, args.steps, time.perf_counter() - t0),
                 {"command": command, "load": load, "results": results})


if __name__ == "__main__":
    main()
