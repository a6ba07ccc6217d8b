"""Bad inputs and faults, tried for real through the CLI: exit code, the first line of stderr, and
whether a traceback showed. Writes benchmarks/results/robustness.md.

    python benchmarks/robustness.py [--out /tmp/robustness]

Each case runs ``python -m raytraj ...`` in a subprocess on a small digits source. A tmpfs is
mounted for the read-only and full-disk cases when this user may mount (root); otherwise those
two rows are marked skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import write_report  # noqa: E402

PY = [sys.executable, "-m", "raytraj"]


def run(argv, timeout=300, env=None):
    t0 = time.perf_counter()
    try:
        p = subprocess.run([*PY, *argv], capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **(env or {})})
        code, err = p.returncode, p.stderr
    except subprocess.TimeoutExpired as e:
        code, err = "timeout", (e.stderr or b"").decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
    return code, err, time.perf_counter() - t0


def first_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("raytraj ")]
    text = lines[-1] if lines else (err.strip().splitlines() or ["(no output)"])[-1]
    return text if len(text) <= 150 else text[:147] + "..."


def plant(store: Path, step: int, edit) -> None:
    """Rewrite one step file with ``edit(name, values, meta) -> (values, meta)`` applied to its first tensor."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    path = store / "steps" / f"{step:06d}.arrow"
    table = ipc.open_file(pa.BufferReader(path.read_bytes())).read_all()
    fields, cols = [], []
    for i, (field, col) in enumerate(zip(table.schema, table.columns)):
        values = col.combine_chunks().values.to_numpy(zero_copy_only=False).copy()
        meta = dict(field.metadata)
        if i == 0:
            values, meta = edit(field.name, values, meta)
        fields.append(field.with_metadata(meta))
        cols.append(pa.FixedSizeListArray.from_arrays(pa.array(values), col.type.list_size))
    schema = pa.schema(fields, metadata=table.schema.metadata)
    with pa.OSFile(str(path), "wb") as f, ipc.new_file(f, schema) as w:
        w.write_batch(pa.record_batch(cols, schema=schema))


def edit_manifest(store: Path, fn) -> None:
    m = json.loads((store / "trajectory.json").read_text())
    fn(m)
    (store / "trajectory.json").write_text(json.dumps(m))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="/tmp/raytraj-robustness")
    args = ap.parse_args()
    root = Path(args.out)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    src = root / "src"
    code, err, _ = run(["train", "--model", "mlp", "--data", "digits", "--epochs", "3", "--seed", "1",
                        "--model-arg", "hidden=[32]", "--out", str(src), "--quiet"])
    assert code == 0, err

    def copy_src(name):
        dst = root / name
        shutil.copytree(src, dst)
        return dst

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 6)).astype(np.float32)
    y = np.arange(60) % 3

    def npz(name, **arrays):
        path = root / f"{name}.npz"
        np.savez(path, **arrays)
        return f"npz:{path}"

    train = ["train", "--model", "mlp", "--data", "digits", "--epochs", "1", "--model-arg", "hidden=[16]", "--quiet"]
    xfer = ["transfer", "--target-seed", "5", "--method", "fgmt", "--steps", "3", "--quiet"]
    rows = []

    def case(name, argv, setup=None, env=None, timeout=300, note=""):
        if setup:
            setup()
        code, err, s = run(argv, timeout=timeout, env=env)
        rows.append((name, code, first_error(err), "Traceback" in err, s, note))
        print(rows[-1], flush=True)

    case("`--epochs 0`", ["train", "--model", "mlp", "--data", "digits", "--epochs", "0", "--out", str(root / "e0")])
    case("`--epochs -3`", ["train", "--model", "mlp", "--data", "digits", "--epochs", "-3", "--out", str(root / "e1")])
    case("`--batch-size -8`", [*train, "--batch-size", "-8", "--out", str(root / "b")])
    case("`--lr -1`", [*train, "--lr", "-1", "--out", str(root / "lr")])
    case("`--momentum 1.5`", [*train, "--momentum", "1.5", "--out", str(root / "mom")])
    case("`--model-arg hidden=[-5]`", [*train[:-3], "--model-arg", "hidden=[-5]", "--out", str(root / "h")])
    case("npz: x_train 60 rows, y_train 50", [*train[:4], npz("len", x_train=x, y_train=y[:50]), *train[5:],
                                              "--out", str(root / "n1")])
    case("npz: negative labels", [*train[:4], npz("neg", x_train=x, y_train=y - 1), *train[5:],
                                  "--out", str(root / "n2")])
    case("npz: fractional labels", [*train[:4], npz("frac", x_train=x, y_train=y + 0.5), *train[5:],
                                    "--out", str(root / "n3")])
    bad = x.copy()
    bad[0, 0] = np.nan
    case("npz: NaN in x_train", [*train[:4], npz("nan", x_train=bad, y_train=y), *train[5:], "--out", str(root / "n4")])
    (root / "afile").write_text("x")
    case("`--out` under a file", [*train, "--out", str(root / "afile" / "run")])

    mnt = root / "mnt"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                             capture_output=True).returncode == 0
    if mounted:
        try:
            case("disk full (ENOSPC) while training (256 KiB tmpfs)",
                 [*train[:-3], "--model-arg", "hidden=[256,256]", "--quiet", "--out", str(mnt / "run")])
            left = sorted(p.name for p in (mnt / "run").rglob("*")) if (mnt / "run").exists() else []
            rows[-1] = (*rows[-1][:5], f"left: {', '.join(left[:4]) or 'nothing'} (resumable store)")
            subprocess.run(["rm", "-rf", str(mnt / "run")])
            subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
            case("read-only `--out` (tmpfs remounted ro)", [*train, "--out", str(mnt / "run")])
        finally:
            subprocess.run(["umount", str(mnt)])
    else:
        rows.append(("disk full / read-only `--out`", "skipped", "cannot mount a tmpfs here", False, 0.0, ""))

    env = {"AWS_EC2_METADATA_DISABLED": "true", "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "",
           "GOOGLE_APPLICATION_CREDENTIALS": ""}
    case("`--source s3://` without credentials or network", [*xfer, "--source", "s3://raytraj-nope-x1/src",
                                                            "--out", str(root / "s3")], env=env, timeout=200)
    case("`--source gs://` without credentials or network", [*xfer, "--source", "gs://raytraj-nope-x1/src",
                                                            "--out", str(root / "gs")], env=env, timeout=200)

    s = copy_src("m1")
    edit_manifest(s, lambda m: m.pop("steps"))
    case("trajectory.json without `steps`", [*xfer, "--source", str(s), "--out", str(root / "m1o")])
    s = copy_src("m2")
    edit_manifest(s, lambda m: m["meta"].pop("model"))
    case("trajectory.json without `meta.model`", [*xfer, "--source", str(s), "--out", str(root / "m2o")])
    s = copy_src("m3")
    (s / "trajectory.json").write_bytes(b'{"format": "raytraj-trajectory", "x": "\xff\xfe"}')
    case("trajectory.json with invalid UTF-8", [*xfer, "--source", str(s), "--out", str(root / "m3o")])
    s = copy_src("m4")
    edit_manifest(s, lambda m: m.update(steps=m["steps"][:2]))
    case("complete manifest listing 2 of 4 steps", [*xfer, "--source", str(s), "--out", str(root / "m4o")])
    s = copy_src("f1")
    data = bytearray((s / "steps" / "000003.arrow").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (s / "steps" / "000003.arrow").write_bytes(bytes(data))
    case("one byte flipped in the last step file", [*xfer, "--source", str(s), "--out", str(root / "f1o")])

    def nan_edit(name, values, meta):
        values[0] = np.nan
        return values, {**meta, b"crc32": str(zlib.crc32(values.tobytes())).encode()}

    def inf_edit(name, values, meta):
        values[0] = np.inf
        return values, {**meta, b"crc32": str(zlib.crc32(values.tobytes())).encode()}

    for label, edit, method in (("NaN", nan_edit, "naive"), ("inf", inf_edit, "fgmt")):
        s = copy_src(f"nf-{label}")
        plant(s, 3, edit)
        case(f"{label} in the source's last step (checksum matching), {method}",
             ["transfer", "--target-seed", "5", "--method", method, "--steps", "3", "--quiet", "--source", str(s),
              "--out", str(root / f"nf-{label}o")])
        rows[-1] = (*rows[-1][:5], "no model saved" if not list((root / f"nf-{label}o").glob("*.safetensors"))
                    else "MODEL SAVED")
    def huge(pixels):
        def edit(name, values, meta):  # finite, but large enough to overflow float32 downstream
            values[pixels] = 3e38
            return values, {**meta, b"crc32": str(zlib.crc32(values.tobytes())).encode()}
        return edit

    for label, pixels in (("many huge first-layer weights (activations overflow)", [19, 20, 21, 22, 26, 27, 28, 29,
                                                                                    35, 36, 37]),
                          ("one huge first-layer weight (cost matrix overflows)", [27])):
        s = copy_src(f"ov{len(pixels)}")
        for step in (1, 2, 3):
            plant(s, step, huge(pixels))
        case(f"{label}, finite weights, fgmt", [*xfer, "--source", str(s), "--out", str(root / f"ov{len(pixels)}o")])
        rows[-1] = (*rows[-1][:5], "no model saved" if not list((root / f"ov{len(pixels)}o").glob("*.safetensors"))
                    else "MODEL SAVED")
    s = copy_src("md")
    plant(s, 3, lambda name, values, meta: (values, {**meta, b"shape": b"\xff\xfe"}))
    case("damaged Arrow field metadata (invalid UTF-8)", [*xfer, "--source", str(s), "--out", str(root / "mdo")])

    case("`--target-seed` = the source's `--seed`", ["transfer", "--target-seed", "1", "--method", "naive",
                                                    "--steps", "3", "--source", str(src), "--out", str(root / "same")])
    case("`--target-init SOURCE:0`", ["transfer", "--target-init", f"{src}:0", "--method", "naive", "--steps", "3",
                                      "--source", str(src), "--out", str(root / "same2")])
    case("`sweep --target-seed` = the source's seed", ["sweep", "--source", str(src), "--out", str(root / "sw"),
                                                     "--param", "steps=2,3", "--target-seed", "1"])
    case("`--schedule actual --steps 7` (3 recorded)", [*xfer[:-3], "--schedule", "actual", "--steps", "7",
                                                        "--quiet", "--source", str(src), "--out", str(root / "act")])
    case("`transfer --out` = the source store", [*xfer, "--source", str(src), "--out", str(src)])
    case("`train --out` = a transfer run folder", [*train, "--out", str(root / "act-ok")],
         setup=lambda: run([*xfer, "--source", str(src), "--out", str(root / "act-ok")]))
    case("transfer that failed before its first step (missing `--target-init`) ...",
         ["transfer", "--target-init", str(root / "missing"), "--method", "naive", "--steps", "3", "--quiet",
          "--source", str(src), "--out", str(root / "retry")])
    case("... then the same `--out` with a good target, no `--resume`",
         ["transfer", "--target-seed", "5", "--method", "naive", "--steps", "3", "--quiet", "--source", str(src),
          "--out", str(root / "retry")])

    case("`transfer` without `--steps` (TransferConfig's T=30)",
         ["transfer", "--target-seed", "5", "--method", "naive", "--quiet", "--source", str(src),
          "--out", str(root / "nosteps")])
    with __import__("socket").socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    case("`ensemble --address` nothing listens on", ["ensemble", "--source", str(src), "--members", "1",
                                                     "--out", str(root / "addr"), "--address", f"127.0.0.1:{port}"],
         timeout=120)
    rows[-1] = (*rows[-1][:5], "nothing written" if not (root / "addr").exists() else "FOLDER LEFT")
    case("`ensemble --gpus-per-trial 64` (a local cluster)", ["ensemble", "--source", str(src), "--members", "1",
                                                              "--out", str(root / "gpus"), "--gpus-per-trial", "64"],
         timeout=120)
    case("... then the same command without it, no `--resume`", ["ensemble", "--source", str(src), "--members", "1",
                                                                  "--steps", "3", "--out", str(root / "gpus")])

    # Ctrl-C mid-transfer, then --resume with the source spelled relatively.
    long = ["transfer", "--target-seed", "5", "--method", "fgmt", "--steps", "150", "--eval-every", "0", "--quiet"]
    p = subprocess.Popen([*PY, *long, "--source", str(src), "--out", str(root / "cut")], stderr=subprocess.PIPE,
                         text=True, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    deadline = time.time() + 120
    while time.time() < deadline and not (root / "cut" / "state" / "progress.safetensors").exists():
        time.sleep(0.2)
    time.sleep(1.0)
    p.send_signal(signal.SIGINT)
    err = p.communicate(timeout=60)[1]
    rows.append(("Ctrl-C during a 150-step transfer", p.returncode, first_error(err), "Traceback" in err, 0.0, ""))
    cwd = os.getcwd()
    os.chdir(root)
    try:
        case("... `--resume` with the source spelled relatively", [*long, "--source", "src", "--out", "cut",
                                                                   "--resume"])
    finally:
        os.chdir(cwd)

    lines = [
        "# Robustness: bad inputs and faults, tried through the CLI",
        "",
        "Generated by `python benchmarks/robustness.py` (real subprocess runs of `python -m raytraj` on a 3-epoch",
        "digits MLP source; the disk-full and read-only rows use a tmpfs mounted for the run). Machine: 2-core",
        "shared box, busy with other jobs: seconds include Python, torch and pyarrow start-up, and are only there",
        "to show that nothing hangs. Ray/Tune cases (Ctrl-C during `ensemble`, resume with other settings,",
        "ASHA statuses, `--storage` trust checks) run in `tests/test_tune.py` and are listed below the table.",
        "",
        "| case | exit | what the user sees (last line of stderr) | traceback | s | note |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, code, text, tb, s, note in rows:
        text = text.replace("|", "\\|").replace("`", "'").replace(str(root), "$T")
        text = "ok" if code == 0 and not text.startswith("raytraj ") else text  # a success's last line is Ray's
        lines.append(f"| {name} | {code} | `{text}` | {'yes' if tb else 'no'} | {s:.1f} | {note} |")
    lines += [
        "",
        "Ray and Tune faults, and the one-writer, fingerprint and message cases, run as tests "
        "(`pytest tests/test_tune.py tests/test_ray_backend.py tests/test_writelock.py tests/test_fingerprints.py "
        "tests/test_true_lines.py tests/test_watchdog.py`):",
        "",
        "| case | outcome | test |",
        "| --- | --- | --- |",
        "| Ctrl-C (SIGINT) during `raytraj ensemble` | exit 130, one line: `raytraj ensemble: interrupted; N of 3 "
        "ensemble members did not finish; continue with the same command with --resume`; no traceback (driver's or "
        "forwarded from a trial), no `Tuner.restore` advice; no ensemble.json | "
        "`test_ensemble_interrupted_with_ctrl_c_says_how_to_resume_and_refuses_other_settings` |",
        "| `ensemble --resume` with other `--members`, `--method` or `--steps` | refused before Tune or the run folder "
        "is touched (every file's mtime unchanged); the same settings then finish | same test |",
        "| driver SIGKILLed mid-sweep, then `--resume` | finished trials not redone (mtimes unchanged), all 4 finish | "
        "`test_interrupted_sweep_resumes_without_redoing_finished_trials` |",
        "| trial process SIGKILLed mid-transfer | Tune retries it from its last step; same val curve as a direct run | "
        "`test_ensemble_of_three_survives_a_killed_trial` |",
        "| ASHA with a swept `steps` | each trial `finished` (metrics.json written, all steps) or `stopped early` "
        "(fewer steps, no metrics.json); the first and a longest trial finish | "
        "`test_grid_sweep_with_asha_returns_every_trial` |",
        "| `--resume` from a world-writable `--storage` (or tuner.pkl) | refused before unpickling | "
        "`test_restore_refuses_storage_others_may_write` |",
        "| a 0-GPU trial on a node with GPUs | computes on the CPU (`ray.get_gpu_ids()` is empty) | "
        "`test_tune_trials_default_to_one_gpu_on_a_cluster_with_gpus` |",
        "| `raytraj transfer --backend ray` | no `actor restart will fail` line in its output | "
        "`test_a_ray_transfer_logs_no_actor_restart_error` |",
        "| `ensemble` whose trials all fail inside Ray before a step (user model, no `--py-modules`) | exit 2, one "
        "line naming the root cause (`cannot import byo_userpkg.nets ... --py-modules`), not Ray's wrapper; the "
        "corrected command then runs without `--resume` (the failed start's Tune state is discarded) | "
        "`test_a_start_that_failed_inside_ray_does_not_block_the_retry` |",
        "| a trial no node of a local cluster can hold (`--gpus-per-trial` > the cluster's GPUs) | exit 2 at once "
        "(Tune waited forever before), nothing written; the same command without it then runs | "
        "`test_a_trial_no_node_can_hold_is_refused_at_once` |",
        "| `--address` nothing listens on | exit 2 in seconds (ray.init retried silently for 10+ minutes before), "
        "nothing written | `test_an_unreachable_address_fails_at_once_and_leaves_nothing` |",
        "| an OSError inside a Ray worker (a file where its shard folder goes) | exit 2, one line: the path, "
        "`File exists`, `choose another --out` (Ray's multi-line traceback text before) | "
        "`test_an_os_error_inside_a_ray_worker_is_one_line` |",
        "| Tune's output for a 2-member ensemble | one line per trial start and finish; no status tables, result "
        "dumps, or `Checkpoint successfully created` lines (trials report no Tune checkpoints: the run folder "
        "holds their state) | `test_tune_output_is_one_line_per_trial_event` |",
        *TESTED_ROWS,
    ]
    write_report(str(Path(__file__).resolve().parent / "results" / "robustness.md"), lines)

# Cases checked by tests rather than run here (their outcome is what the named test asserts).
TESTED_ROWS = [
    "| two `train` runs into one `--out` at once (seeds 1 and 7) | the second exits 2 at once: `... is being written by pid N on host H (raytraj train ...); one writer at a time may use a folder: wait for it to end, stop it, or choose another --out`; the store is the first run's alone (seed 1, all steps, every checksum read back), its `log.txt` names only the first command | `test_two_writers_at_once_one_wins_the_other_exits_2_and_the_folder_is_whole` |",
    '| a writer SIGKILLed while holding the lock | the next writer takes the lock over (the kernel released it) | `test_a_dead_holders_lock_is_taken_over` |',
    '| object storage: a live lease, an expired one, a writer that raced and lost | refused naming the holder; taken over; refused | `test_object_storage_lease` |',
    "| `--out ''`, `--out '  '`, `--out /` | exit 2, one line (`--out is empty ...` / `... is the root of the file system ...`); nothing written | `test_an_empty_or_root_out_is_refused` |",
    '| `--overwrite` | starts afresh in a raytraj folder; refused (exit 2) for a folder holding other files or an input of the command | `test_overwrite_starts_afresh_but_never_deletes_inputs_or_foreign_files` |',
    '| SIGTERM during a transfer | exit 143, one line: `raytraj transfer: terminated (SIGTERM); what was done is saved: run the same command with --resume to continue` | `test_sigterm_is_handled_like_ctrl_c` |',
    '| the source retrained (another seed) between a kill and `--resume` | exit 2: `... was started on other inputs: the source changed (digest A -> B, seed 1 -> 7); resuming would mix two transfers ...`; no metrics written | `test_resume_refuses_a_source_retrained_since_the_kill` |',
    "| `--resume` with another `--method` | exit 2 naming it: `other settings (transfer.method 'naive' -> 'fgmt')` | `test_resume_with_another_method_names_the_setting` |",
    "| a data function returning other tensors on each call | `transfer` and `eval` exit 2: `the data ... loaded now differs from what SRC was recorded on (same shapes, other values ...) ... Pass --data explicitly`; with `--data` given it runs, and `finetune` follows the transfer's `--data` | `test_a_data_function_that_changes_between_calls_is_refused` |",
    '| `ensemble`/`sweep` `--cpus-per-trial 0` or `nan`, `--max-concurrent 0`, `--gpus-per-trial -1` | exit 2 before Ray starts, one line naming the option and its range (a traceback, or silently accepted, before) | `test_tune_resources_are_checked_before_ray_starts` |',
    '| `--placement-timeout nan`, `inf`, `0`, `-5` | exit 2, `--placement-timeout must be a finite number > 0` | `test_placement_timeout_must_be_a_positive_number` |',
    '| `train --seed 100000000000000000000`, `--seed -1`, the same `--target-seed` | exit 2, `--seed must be a whole number >= 0 and <= 9223372036854775807` (an overflow traceback before) | `test_seeds_out_of_range` |',
    '| manifest steps out of order / listed twice | exit 2: `... lists its steps out of order ([0, 2, 1, 3])` / `lists steps [1] more than once` (`is missing steps []` before) | `test_manifest_steps_out_of_order_or_twice` |',
    '| an unreadable source, store or `best.safetensors` (EACCES) | `... this user may not read or write it: fix its permissions (chmod) or run as its owner`; `choose an --out you may write to` only for files in `--out` | `test_an_unreadable_input_is_not_blamed_on_out` |',
    '| an unreadable step file | `cannot read step N: permission denied; make the store readable ...` (`truncated or corrupt ... re-record` before) | `test_an_unreadable_step_file_is_not_called_corrupt` |',
    '| `RAYTRAJ_CACHE` pointing at a file | exit 2: `RAYTRAJ_CACHE=...: ... is a file, not a folder; point RAYTRAJ_CACHE at a folder` (`choose another --out` before) | `test_raytraj_cache_pointing_at_a_file` |',
    "| `finetune --from STORE` | exit 2: `--from STORE is a trajectory store, not a transfer run folder; to train on from a store's step use 'raytraj train --init STORE[:STEP] ...'` (a raw errno line before) | `test_finetune_from_a_store_or_an_unfinished_run` |",
    "| `--data nosuch` | exit 2: `unknown data 'nosuch'; choose digits, digits[0-4], mnist1d[:N], npz:PATH, a torchvision dataset ... or your data function package.module:function` | `test_unknown_data_lists_the_valid_names` |",
    '| a store folder named `a:1`; a missing `b:1` | `a:1` is read whole; `b:1` says it `was read as STORE:STEP, step 1 of .../b` | `test_a_store_named_like_store_colon_step` |',
    "| `ensemble --members 5000`, Ctrl-C before Ray started | the targets are checked without building 5000 models (only the source's own seed is built); Ctrl-C says `nothing was saved yet: run the same command again to start` and leaves no folder | `test_many_ensemble_members_check_fast_and_ctrl_c_claims_nothing` |",
    '| the transfer driver SIGKILLed (`--backend ray`, its own local Ray) | its Ray processes (raylet, GCS, workers) are gone from the process table within 60 s (2 stayed before; the test fails without the watchdog) | `test_ray_processes_of_a_sigkilled_driver_are_gone` |',
    "| ASHA trials that ran every step | `finished` with their final val and CPU seconds (the last step's result goes out with the final report, so ASHA cannot stop a trial at its last rung before it) | `test_grid_sweep_with_asha_returns_every_trial` |",
    "| the sweep's `best:` line; an ensemble trial with training after | the table's own row under its header (a raw dict before); `finished: val V% after the training after the transfer (the transfer's best val B% at step S)` | `test_sweep_best_is_a_table_row_and_ensemble_lines_show_the_trained_on_val` |",
    "| `raytraj --version`, `raytraj info PATH`, `log.txt`, `--threads 1`, `--threads 0` | the version; model, data, steps, method, best and fingerprints; the command's output in the run folder; torch at 1 thread; exit 2 | `test_version_info_log_and_threads` |",
    '| the interpolation plot of an MLP | its title no longer claims BatchNorm recalibration (said only for a model with BatchNorm) | `test_self_permuted_has_zero_barrier_after_alignment_only` |',
]


if __name__ == "__main__":
    main()
