"""``raytraj compare``: one scenario end to end, with its baselines and the seeds that make them fair.

For each seed pair (A, B) and transfer seed S:

random init (``data`` only)
    source   trained from init A on ``data``;
    target   trained from init B, the same recipe: Oracle's target and the trained reference;
    transfers of the source onto init B (``--target-seed B``);
    plain    standard training from init B for the epochs of the training after.

pre-trained (``pretrain_data`` given; the paper's "follow an updated foundation model")
    pre-A, pre-B  trained from inits A and B on ``pretrain_data``;
    source        pre-A fine-tuned on ``data`` with a new head seeded by A (``--seed A``);
    target        pre-B fine-tuned on ``data`` with a new head seeded by **S**: the transfer's
                  target is pre-B with a new head seeded by its ``--seed`` S, so only this head
                  makes the fine-tuned target the trained version of the transfer's init (Oracle);
    transfers of the source onto pre-B (``--target-init pre-B --new-head --seed S``);
    plain         the plain fine-tune: pre-B, new head seeded by S, for the epochs of the training after.

Then the training after (paper 4.2): ``finetune_epochs`` from FGMT's and Naive's best-on-val
models, beside ``plain``. Every stage is a run folder or store under ``out``; a stage already
complete is read back, so an interrupted comparison continues where it stopped.
"""

from __future__ import annotations

import statistics
import sys

from . import fs
from .config import ConfigError
from .runfolder import RunFolder
from .trajectory import TrajectoryStore, is_store

TRANSFERS = ("naive", "fgmt", "gmt", "oracle")
COMPARE = "compare.json"


def mean_std(values, sep: str = " ± ") -> str:
    """A table cell: the mean of the values given (None: missing), with their std where there are several."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f}{sep}{statistics.stdev(values):.1f}"


def trained(path: str, data: str, seed: int, *, progress: bool = False, model: str = "mlp",
            model_args: dict | None = None, **kw) -> TrajectoryStore:
    """The complete store at ``path``, trained first if it is not there yet (resuming an unfinished one)."""
    from .train import train_from_args

    if not (is_store(path) and TrajectoryStore(path).complete):
        train_from_args(model, data, path, seed=seed, model_args=model_args, progress=progress, **kw)
    return TrajectoryStore(path)


def transferred(src: str, out: str, cfg, progress: bool = False, **kw) -> dict:
    """The metrics of the transfer run at ``out``, run (or resumed) first if it is not finished."""
    from .transfer import transfer

    return RunFolder(out).load_or_run(lambda resume: transfer(src, out, cfg, resume=resume, progress=progress, **kw))


def finetuned(run: str, out: str, epochs: int, lr: float | None, progress: bool = False) -> TrajectoryStore:
    from .transfer.finetune import finetune

    if not (is_store(out) and TrajectoryStore(out).complete):
        finetune(run, out, epochs=epochs, lr=lr, progress=progress)
    return TrajectoryStore(out)


def parse_pairs(text: str) -> list[tuple[int, int]]:
    """``"1-2,3-4"`` -> [(1, 2), (3, 4)]: source and target init seeds."""
    pairs = []
    for item in text.split(","):
        a, sep, b = item.strip().partition("-")
        if not (sep and a.isdigit() and b.isdigit()) or a == b:
            raise ConfigError(f"--pairs {text!r}: give SOURCE-TARGET init seeds, two different integers, e.g. 1-2 "
                              "or 1-2,3-4")
        pairs.append((int(a), int(b)))
    return pairs


def compare(out: str, *, model: str, data: str, pretrain_data: str | None = None, pairs=((1, 2),),
            methods=("naive", "fgmt", "oracle"), steps: int | None = None, seed: int = 0,
            finetune_epochs: int = 1, finetune_lr: float | None = None, model_args: dict | None = None,
            recipe: dict | None = None, progress: bool = True, say=None) -> dict:
    """Run the scenario (see the module docstring) for every seed pair; returns and writes ``OUT/compare.json``.

    Args:
        methods: transfer methods, among naive, fgmt, gmt, oracle.
        steps: T of every transfer (default: TransferConfig's).
        seed: the transfers' ``--seed`` S (batches, solver order, and the pre-trained target's new head).
        finetune_epochs: epochs of the training after (0: none); ``finetune_lr`` its lr (default the recipe's).
        recipe: TrainConfig fields of every training (epochs, lr, ...).
        say: where stage lines go (default: stderr).
    """
    from .transfer import TransferConfig

    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    unknown = [m for m in methods if m not in TRANSFERS]
    if unknown or not methods:
        raise ConfigError(f"--methods: unknown {unknown}; choose among {', '.join(TRANSFERS)}")
    if finetune_epochs < 0:
        raise ConfigError(f"--finetune-epochs must be >= 0, got {finetune_epochs}")
    cfg_fields = {"steps": steps} if steps is not None else {}
    TransferConfig(**cfg_fields)  # bad values fail before any training
    recipe = dict(recipe or {})
    train_kw = {"model": model, "model_args": model_args, "progress": progress, **recipe}
    rows = []
    for a, b in pairs:
        root = fs.join(out, f"{a}-{b}")
        after_stages = (len({"fgmt", "naive"} & set(methods)) + 1) if finetune_epochs else 0
        stage = _stages(say, f"{a}-{b}", 2 + len(methods) + after_stages + (2 if pretrain_data else 0))
        if pretrain_data:
            stage("pre-train A")
            pre_a = trained(fs.join(root, "pre-a"), pretrain_data, a, **train_kw).location
            stage("pre-train B")
            pre_b = trained(fs.join(root, "pre-b"), pretrain_data, b, **train_kw).location
            head = {"init": pre_b, "new_head": True}
            stage(f"source: pre-train A fine-tuned, new head seeded by {a}")
            src = trained(fs.join(root, "source"), data, a, init=pre_a, new_head=True, **train_kw)
            stage(f"target: pre-train B fine-tuned, new head seeded by the transfer seed {seed}")
            tgt = trained(fs.join(root, "target"), data, seed, **head, **train_kw)
            target = {"target_init": pre_b, "new_head": True}
        else:
            stage("source")
            src = trained(fs.join(root, "source"), data, a, **train_kw)
            stage("target")
            tgt = trained(fs.join(root, "target"), data, b, **train_kw)
            target = {"target_seed": b}
        runs = {}
        for method in methods:
            cfg = TransferConfig(method=method, seed=seed, **cfg_fields)
            stage(f"transfer {method}")
            runs[method] = transferred(src.location, fs.join(root, method), cfg, progress=progress,
                                       oracle_target=tgt.location if method == "oracle" else None, **target)
        after = {}
        if finetune_epochs:
            for method in ("fgmt", "naive"):
                if method in runs:
                    stage(f"{finetune_epochs} epoch(s) from {method}")
                    after[method] = _result(finetuned(fs.join(root, method), fs.join(root, f"after-{method}"),
                                                      finetune_epochs, finetune_lr, progress))
            plain_recipe = {**train_kw, "epochs": finetune_epochs, **({"lr": finetune_lr} if finetune_lr else {})}
            stage(f"{finetune_epochs} epoch(s) of plain " + ("fine-tuning" if pretrain_data else "training"))
            if pretrain_data:
                plain = trained(fs.join(root, "plain"), data, seed, **head, **plain_recipe)
            else:
                plain = trained(fs.join(root, "plain"), data, b, **plain_recipe)
            after["plain"] = _result(plain)
        rows.append({"pair": [a, b], "runs": {m: _transfer_row(r) for m, r in runs.items()},
                     "source": _result(src), "target": _result(tgt), "after": after})
    result = {"scenario": "pre-trained" if pretrain_data else "random init", "model": model,
              "model_args": model_args or {}, "data": data, "pretrain_data": pretrain_data, "seed": seed,
              "pairs": [list(p) for p in pairs], "methods": list(methods), "recipe": recipe,
              "finetune_epochs": finetune_epochs, "finetune_lr": finetune_lr, "rows": rows,
              "plot": _plot(out, pairs[0], methods, pretrain_data is not None)}
    fs.atomic_write_json(fs.join(out, COMPARE), result)
    return result


def _stages(say, pair: str, total: int):
    """A function announcing each stage: ``<time> compare 1-2: [3/9] transfer fgmt``."""
    from .progress import timestamp

    count = [0]

    def stage(name: str) -> None:
        count[0] += 1
        say(f"{timestamp()} compare {pair}: [{count[0]}/{total}] {name}")

    return stage


def _result(store: TrajectoryStore) -> dict:
    meta = store.meta
    return {"val_acc": meta["val_acc"][-1], "test_acc": meta["test_acc"], "epochs": len(meta["val_acc"]),
            "location": store.location}


def _transfer_row(m: dict) -> dict:
    return {k: m[k] for k in ("best_val_acc", "best_step", "final_val_acc", "test_acc")}


def _plot(out: str, pair, methods, pretrained: bool) -> str:
    from .plot import plot_runs

    root = fs.join(out, f"{pair[0]}-{pair[1]}")
    path = fs.join(out, "compare.png")
    plot_runs([fs.join(root, m) for m in methods], path,
              title=f"{'pre-trained' if pretrained else 'random init'}, seed pair {pair[0]}-{pair[1]}")
    return path


def format_table(result: dict) -> str:
    """One table: each method's val (best and final) and test at its best step, the trained references,
    and the training after; means over the seed pairs (± their std with more than one)."""
    rows = result["rows"]
    epochs = result["finetune_epochs"]

    after_name = f"after {epochs} epoch{'s' if epochs != 1 else ''}"
    lines = [f"| {result['scenario']} | best val % | final val % | test % at best | {after_name}: val % | test % |",
             "|---|---|---|---|---|---|"]
    for m in result["methods"]:
        after = [r["after"].get(m) for r in rows]
        lines.append(f"| {m.upper() if m in ('gmt', 'fgmt') else m.capitalize()} | "
                     f"{mean_std(r['runs'][m]['best_val_acc'] for r in rows)} | "
                     f"{mean_std(r['runs'][m]['final_val_acc'] for r in rows)} | "
                     f"{mean_std(r['runs'][m]['test_acc'] for r in rows)} | "
                     f"{mean_std(a['val_acc'] for a in after if a)} | {mean_std(a['test_acc'] for a in after if a)} |")
    pre = result["pretrain_data"] is not None
    if epochs:
        lines.append(f"| plain {'fine-tune' if pre else 'training'} from the target init | | | | "
                     f"{mean_std(r['after']['plain']['val_acc'] for r in rows)} | "
                     f"{mean_std(r['after']['plain']['test_acc'] for r in rows)} |")
    full = result["recipe"].get("epochs")
    for key, name in (("target", f"target {'fine-tuned' if pre else 'trained'} (the recipe)"),
                      ("source", "source (the recipe)")):
        lines.append(f"| {name} | | {mean_std(r[key]['val_acc'] for r in rows)} | | | "
                     f"{mean_std(r[key]['test_acc'] for r in rows)} |")
    lines.append(f"\n{len(rows)} seed pair(s) {', '.join('-'.join(map(str, r['pair'])) for r in rows)}; "
                 f"transfer seed {result['seed']}; training recipe: {full or 'default'} epochs")
    return "\n".join(lines)
