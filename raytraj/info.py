"""``raytraj info PATH``: what a trajectory store, a transfer run folder, an ensemble or a sweep
folder holds, in a few lines: model, data, steps, method, best, and the fingerprints that later
commands check."""

from __future__ import annotations

from . import fs
from .config import ConfigError
from .runfolder import RunFolder


def describe(path: str) -> str:
    """A short, human-readable account of ``path``; ConfigError when raytraj did not write it."""
    from .trajectory import is_store

    if is_store(path):
        return _store(path)
    run = RunFolder(path)
    if run.started:
        return _run(run)
    for name, what in (("ensemble.json", "ensemble"), ("ensemble-settings.json", "ensemble (unfinished)"),
                       ("best.json", "sweep"), ("sweep-settings.json", "sweep (unfinished)")):
        if fs.exists(fs.join(path, name)):
            return _tune(path, name, what)
    if not fs.exists(path):
        raise ConfigError(f"{path} does not exist")
    raise ConfigError(f"{path} is neither a trajectory store, a transfer run folder, an ensemble nor a sweep folder")


def _model(record) -> str:
    if not isinstance(record, dict):
        return str(record)
    name = record.get("name") or record.get("factory") or record.get("class") or "?"
    opts = {k: v for k, v in record.items() if k not in ("name", "factory", "class", "input_shape", "num_classes")}
    return f"{name} {opts}" if opts else name


def _store(path: str) -> str:
    from .trajectory import TrajectoryStore

    store = TrajectoryStore(path)
    meta = store.meta
    data = meta.get("data")
    lines = [f"{path}: trajectory store, {'complete' if store.complete else 'UNFINISHED'}, "
             f"{store.num_steps} steps (0..{store.last_step})",
             f"  model: {_model(meta.get('model'))}",
             f"  data: {store.data_config().describe() if data else 'not recorded'}"]
    if meta.get("seed") is not None:
        lines.append(f"  seed: {meta['seed']}" + (f", init from {meta['init']}" if meta.get("init") else ""))
    if meta.get("recipe"):
        lines.append("  recipe: " + ", ".join(f"{k} {v}" for k, v in meta["recipe"].items()))
    if meta.get("val_acc"):
        lines.append(f"  val: {meta['val_acc'][-1]:.2f}% at the last step"
                     + (f"; test {meta['test_acc']:.2f}%" if meta.get("test_acc") is not None else ""))
    fp = meta.get("data_fingerprint") or {}
    lines.append(f"  fingerprints: store {store.digest}, data "
                 + (f"{fp['sha256']} ({', '.join(f'{s} {tuple(v)}' for s, v in fp['shapes'].items())})"
                    if fp else "not recorded"))
    return "\n".join(lines)


def _run(run: RunFolder) -> str:
    record = run.config()
    t = record.get("transfer", {})
    target = (f"seed {record['target_seed']}" if record.get("target_seed") is not None
              else f"init {record.get('target_init')}" + (" (new head)" if record.get("new_head") else ""))
    lines = [f"{run.location}: transfer run, " + ("finished" if run.finished else
                                                    "unfinished (progress saved: --resume continues it)"
                                                    if run.progressed else "not started"),
             f"  method: {t.get('method')}, {t.get('steps')} steps ({t.get('schedule')}), seed {t.get('seed')}",
             f"  source: {record.get('source')}; target: {target}"]
    if record.get("data") or record.get("model"):
        lines.append(f"  overrides: " + ", ".join(f"{k} {record[k]}" for k in ("model", "data", "spec")
                                                  if record.get(k)))
    if run.finished:
        m = run.metrics()
        lines.append(f"  data: {m.get('data')}")
        lines.append(f"  best: step {m['best_step']}, val {m['best_val_acc']:.2f}%, test {m['test_acc']:.2f}%; "
                     f"final val {m['final_val_acc']:.2f}%")
    fp = record.get("fingerprints")
    if fp:
        s, g = fp.get("source", {}), fp.get("target", {})
        lines.append(f"  fingerprints: source store {s.get('digest')} (data {s.get('data')}), "
                     f"target init {g.get('digest')}")
    return "\n".join(lines)


def _tune(path: str, name: str, what: str) -> str:
    doc = fs.read_json(fs.join(path, name))
    lines = [f"{path}: {what}"]
    if name == "ensemble.json":
        lines.append(f"  {len(doc['members'])} members of {doc['method']} from {doc['source']}: ensemble test "
                     f"{doc['ensemble_test_acc']:.2f}% (mean member {doc['mean_member_test_acc']:.2f}%)")
    elif name == "best.json":
        lines.append(f"  best trial {doc.get('trial_id')}: {doc.get('config')}")
    else:
        lines.append(f"  source {doc.get('source')}; " + ", ".join(f"{k} {v}" for k, v in doc.items()
                                                                  if k in ("targets", "params", "transfer")))
    return "\n".join(lines)
