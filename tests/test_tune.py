"""Ray Tune: ensembles from one trajectory, distillation, sweeps with ASHA, failures and resume."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pyarrow.parquet as pq
import pytest
import ray

from raytraj.checkpoint import load_checkpoint
from raytraj.config import ConfigError
from raytraj.transfer import TransferConfig, transfer
from raytraj.tune import distill, parse_params, run_ensemble, run_sweep

pytestmark = pytest.mark.slow  # Ray Tune: the end-to-end tier


@pytest.fixture(scope="module")
def cluster():
    ray.init(address="local", num_cpus=3, include_dashboard=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def reported_pid(experiment, member, since):
    """The process running a member's trial, as Tune records it with every result: in the driver's
    staging folder at once (the experiment folder gets a copy only when Tune syncs it)."""
    from pathlib import Path

    staging = Path(ray._private.worker._global_node.get_session_dir_path()) / "artifacts"
    paths = [*staging.glob(f"*/{experiment.name}/driver_artifacts/*member={member}_*/result.json"),
             *experiment.glob(f"*member={member}_*/result.json")]
    for path in [p for p in paths if p.stat().st_mtime >= since]:  # not an earlier test's trial
        lines = path.read_text().strip().splitlines()
        if lines:
            return json.loads(lines[-1])["pid"]
    return None


def test_ensemble_of_three_survives_a_killed_trial(cluster, digits_source, tmp_path):
    src = str(digits_source / "source")
    out = tmp_path / "ens"
    cfg = TransferConfig(method="fgmt", steps=12)  # a wide window to kill member 0 in
    killed = []
    started = time.time()

    def kill_member_zero_mid_transfer():
        progress = out / "members" / "member-000" / "state" / "progress.safetensors"
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            try:
                pid = reported_pid(out / "tune" / "ensemble", 0, started)
                if pid and load_checkpoint(str(progress))[1]["step"] >= 2:
                    os.kill(pid, signal.SIGKILL)  # the trial's process crashes; FailureConfig retries it
                    killed.append(pid)
            except Exception:
                pass
            time.sleep(0.02)

    killer = threading.Thread(target=kill_member_zero_mid_transfer)
    killer.start()
    result = run_ensemble(src, str(out), members=3, cfg=cfg, max_concurrent=1)
    killer.join()
    assert killed
    saved = json.loads((out / "ensemble.json").read_text())
    assert saved == json.loads(json.dumps(result))
    for key in ("members", "ensemble_test_acc", "ensemble_acc_by_size", "timing"):
        assert key in saved
    assert {"wall_s", "trial_s_sum", "scratch_s_estimate"} <= set(saved["timing"])
    assert len(saved["members"]) == 3 and len(saved["ensemble_acc_by_size"]) == 3
    assert saved["ensemble_acc_by_size"][0] == saved["members"][0]["test_acc"]
    assert saved["ensemble_test_acc"] >= saved["mean_member_test_acc"]
    assert (out / "ensemble.png").read_bytes()[:4] == b"\x89PNG"
    # the killed-and-retried member equals the same transfer run directly
    direct = transfer(src, str(tmp_path / "direct"), cfg, target_seed=1000, progress=False)
    member = json.loads((out / "members" / "member-000" / "metrics.json").read_text())
    assert member["val_acc"] == direct["val_acc"]

    d = distill(str(out), str(tmp_path / "student"), student_args={"hidden": [64]}, epochs=10, progress=False)
    assert json.loads((tmp_path / "student" / "distill.json").read_text()) == json.loads(json.dumps(d))
    assert d["teacher_test_acc"] == pytest.approx(saved["ensemble_test_acc"])
    assert d["soft_label_student"]["test_acc"] > 50 and d["hard_label_student"]["test_acc"] > 50
    soft = json.loads((tmp_path / "student" / "soft" / "trajectory.json").read_text())
    assert soft["meta"]["soft_targets"]["members"] == 3


def test_grid_sweep_with_asha_returns_every_trial(cluster, digits_source, tmp_path, monkeypatch):
    # steps vary slowest in Tune's grid: the first trial, which meets no competitor at any rung and so
    # always runs to its end, is one of the longest (8 steps, FGMT).
    params = parse_params(["steps=8,4", "method=fgmt,naive"])
    monkeypatch.chdir(tmp_path)  # relative paths, as users type them (Tune runs trials elsewhere)
    rows = run_sweep(os.path.relpath(digits_source / "source"), "sweep", params,
                     base=TransferConfig(steps=4), target={"target_seed": 1000}, scheduler="asha", max_concurrent=1)
    assert len(rows) == 4
    assert sorted((r["steps"], r["method"]) for r in rows) == [(4, "fgmt"), (4, "naive"), (8, "fgmt"), (8, "naive")]
    assert rows[0]["best_val_acc"] == max(r["best_val_acc"] for r in rows)
    for r in rows:  # each trial's status says what happened to it
        wrote_metrics = (tmp_path / "sweep" / "trials" / r["trial_id"] / "metrics.json").exists()
        if r["status"] == "finished":
            assert wrote_metrics and r["steps_run"] == r["steps"] and r["final_val_acc"] is not None, r
        else:
            assert r["status"] == "stopped early" and not wrote_metrics and r["steps_run"] < r["steps"], r
    # The first trial (8 steps) runs to its end: the longest trials are not cut at max_t before
    # their results are written (stop_last_trials=False).
    assert any(r["status"] == "finished" and r["steps"] == 8 and r["method"] == "fgmt" for r in rows)
    assert any(r["status"] == "stopped early" for r in rows)  # Naive is far behind FGMT from here
    table = pq.read_table(tmp_path / "sweep" / "results.parquet")
    assert table.num_rows == 4 and "best_val_acc" in table.column_names
    assert (tmp_path / "sweep" / "results.csv").read_text().count("\n") == 5
    best = json.loads((tmp_path / "sweep" / "best.json").read_text())
    assert best["best_val_acc"] == rows[0]["best_val_acc"] and set(best["config"]) == {"steps", "method"}


def test_interrupted_sweep_resumes_without_redoing_finished_trials(cluster, digits_source, tmp_path):
    out = tmp_path / "sweep"
    argv = [sys.executable, "-m", "raytraj", "sweep", "--source", str(digits_source / "source"), "--out", str(out),
            "--param", "steps=3,4,5,6", "--max-concurrent", "1", "--address", cluster]
    driver = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 180
    done = []
    while time.time() < deadline and driver.poll() is None:
        done = list((out / "trials").glob("*/metrics.json")) if (out / "trials").exists() else []
        if len(done) >= 2:
            break
        time.sleep(0.1)
    assert driver.poll() is None, driver.stderr.read().decode()[-3000:]
    driver.send_signal(signal.SIGKILL)  # the driver dies mid-sweep
    driver.wait()
    finished = {p: p.stat().st_mtime_ns for p in (out / "trials").glob("*/metrics.json")}
    assert 2 <= len(finished) < 4
    with pytest.raises(ConfigError, match="--resume"):
        run_sweep(str(digits_source / "source"), str(out), parse_params(["steps=3,4,5,6"]), base=TransferConfig(),
                  target={"target_seed": 1000})
    rows = run_sweep(str(digits_source / "source"), str(out), parse_params(["steps=3,4,5,6"]), base=TransferConfig(),
                     target={"target_seed": 1000}, resume=True)
    assert sorted(r["steps"] for r in rows) == [3, 4, 5, 6] and all(r["status"] == "finished" for r in rows)
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # finished trials were not redone
    assert len(list((out / "trials").glob("*/metrics.json"))) == 4


def test_bad_input_is_refused_clearly(digits_source, tmp_path):
    with pytest.raises(ConfigError, match="cannot be swept"):
        parse_params(["learning_rate=0.1,0.2"])
    with pytest.raises(ConfigError, match="empty grid"):
        parse_params(["steps="])
    with pytest.raises(ConfigError, match="not a valid int"):
        parse_params(["steps=ten"])
    with pytest.raises(ConfigError, match="unknown method"):
        parse_params(["method=fgmt,magic"])
    with pytest.raises(ConfigError, match="--members must be >= 1"):
        run_ensemble(str(digits_source / "source"), str(tmp_path / "e"), members=0, cfg=TransferConfig())
    with pytest.raises(ConfigError, match="one per member"):
        run_ensemble(str(digits_source / "source"), str(tmp_path / "e"), members=2, cfg=TransferConfig(),
                     targets="a,b,c")
    with pytest.raises(ConfigError, match="no finished ensemble"):
        distill(str(tmp_path / "nothing"), str(tmp_path / "d"))


def test_ensemble_interrupted_with_ctrl_c_says_how_to_resume_and_refuses_other_settings(cluster, digits_source,
                                                                                       tmp_path):
    out = tmp_path / "ens"
    argv = [sys.executable, "-m", "raytraj", "ensemble", "--source", str(digits_source / "source"), "--out", str(out),
            "--members", "3", "--steps", "8", "--max-concurrent", "1", "--address", cluster]
    driver = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while time.time() < deadline and driver.poll() is None:
        if list((out / "members").glob("*/metrics.json")) if (out / "members").exists() else []:
            break
        time.sleep(0.1)
    assert driver.poll() is None, driver.stderr.read()[-3000:]
    driver.send_signal(signal.SIGINT)  # Ctrl-C
    stdout, stderr = driver.communicate(timeout=120)
    assert driver.returncode == 130, stderr[-3000:]
    ours = [line for line in stderr.splitlines() if line.startswith("raytraj ensemble: ")]
    assert len(ours) == 1 and "interrupted" in ours[0] and "--resume" in ours[0], stderr[-3000:]
    # no traceback, neither the driver's nor one Ray forwards from a trial, and no advice to call Tuner.restore
    assert "Traceback" not in stderr and "Tuner.restore" not in stderr, stderr[-3000:]
    assert not (out / "ensemble.json").exists()

    # other settings are refused before Tune or the run folder is touched
    # every file but the one-writer lock, which the refused command held while it checked
    state = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != ".raytraj-lock"}
    for changed in (dict(members=4), dict(cfg=TransferConfig(method="gmt", steps=8)),
                    dict(cfg=TransferConfig(steps=9))):
        kw = {"members": 3, "cfg": TransferConfig(steps=8), **changed}
        with pytest.raises(ConfigError, match="other settings"):
            run_ensemble(str(digits_source / "source"), str(out), resume=True, address=cluster, **kw)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != ".raytraj-lock"} == state

    result = run_ensemble(str(digits_source / "source"), str(out), members=3, cfg=TransferConfig(steps=8),
                          max_concurrent=1, resume=True, address=cluster)
    assert len(result["members"]) == 3 and (out / "ensemble.json").exists()


def test_trials_get_short_configs_and_the_cpu_when_they_hold_no_gpu(cluster, digits_source, tmp_path):
    from raytraj.tune.runner import default_gpus_per_trial

    assert default_gpus_per_trial() == (1.0 if ray.cluster_resources().get("GPU", 0) else 0.0)
    out = tmp_path / "sw"
    rows = run_sweep(str(digits_source / "source"), str(out), parse_params(["steps=2"]), base=TransferConfig(),
                     target={"target_seed": 1000})
    assert rows[0]["status"] == "finished"
    params = json.loads(next((out / "tune" / "sweep").glob("*/params.json")).read_text())
    assert params == {"transfer": {"steps": 2}}  # what Tune prints per trial: the searched values only
    assert "TUNE_GLOBAL_CHECKPOINT_S" not in os.environ


def test_restore_refuses_storage_others_may_write(tmp_path):
    from raytraj.tune.runner import check_trusted_storage

    exp = tmp_path / "tune" / "sweep"
    exp.mkdir(parents=True)
    (exp / "tuner.pkl").write_bytes(b"not read")
    check_trusted_storage(str(exp))
    (exp / "tuner.pkl").chmod(0o666)
    with pytest.raises(ConfigError, match="world-writable"):
        check_trusted_storage(str(exp))
    (exp / "tuner.pkl").chmod(0o644)
    exp.parent.chmod(0o777)
    with pytest.raises(ConfigError, match="world-writable"):
        check_trusted_storage(str(exp))


def test_a_start_that_failed_inside_ray_does_not_block_the_retry(cluster, tmp_path):
    from userpkg import NAME, write_user_package

    root = write_user_package(tmp_path / "outside")
    # The driver imports the user's model through PYTHONPATH; the cluster's workers cannot, as when a
    # user forgets --py-modules: the check before Tune passes, and every trial fails inside Ray.
    env = {**os.environ, "PYTHONPATH": str(root)}
    src = tmp_path / "src"
    subprocess.run([sys.executable, "-c", f"from {NAME}.train import main; main({str(src)!r}, seed=1, epochs=2)"],
                   env=env, check=True, cwd=tmp_path)
    argv = [sys.executable, "-m", "raytraj", "ensemble", "--source", str(src), "--members", "1", "--steps", "2",
            "--out", str(tmp_path / "ens"), "--address", cluster]
    first = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert first.returncode == 2, first.stderr[-3000:]
    last = first.stderr.strip().splitlines()[-1]
    assert last.startswith("raytraj ensemble: error: 1 of 1 ensemble members did not finish (failed: "), last
    assert NAME in last and "no --resume needed" in last, last
    # The same command, corrected, starts afresh: no --resume demanded, none refused.
    second = subprocess.run([*argv, "--py-modules", str(root / NAME)], env=env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert json.loads((tmp_path / "ens" / "ensemble.json").read_text())["members"][0]["test_acc"] > 0


def test_a_trial_no_node_can_hold_is_refused_at_once(cluster, digits_source, tmp_path, capsys):
    from raytraj.cli import main

    out = tmp_path / "ens"
    gpus = ray.cluster_resources().get("GPU", 0) + 1
    argv = ["ensemble", "--source", str(digits_source / "source"), "--members", "1", "--steps", "2", "--out", str(out),
            "--address", cluster]
    assert main([*argv, "--gpus-per-trial", f"{gpus:g}"]) == 2  # Tune would wait for it forever
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no node of this Ray cluster can hold a trial" in err[0], err
    assert not (out / "tune").exists() and not (out / "ensemble-settings.json").exists()
    assert main(argv) == 0, capsys.readouterr().err[-3000:]


def test_tune_output_is_one_line_per_trial_event(cluster, digits_source, tmp_path):
    argv = [sys.executable, "-m", "raytraj", "ensemble", "--source", str(digits_source / "source"), "--members", "2",
            "--steps", "6", "--out", str(tmp_path / "ens"), "--address", cluster]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    text = run.stdout + run.stderr
    assert "Checkpoint successfully created" not in text  # Ray's line for every Tune checkpoint a trial reported
    assert "│" not in text and "config" not in run.stdout  # no status tables, no per-trial config or result dumps
    lines = run.stdout.splitlines()
    assert sum(" started" in line for line in lines) == 2, run.stdout
    finished = [line for line in lines if " finished: best val " in line]
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d"
    assert len(finished) == 2 and all(re.match(rf"{stamp} ensemble: trial ", line) for line in finished), run.stdout
    # each end counts the trials done, with elapsed time, time remaining and rate
    counts = [re.search(r"; trials done (\d)/2 \(\d+%\) \[[\d:]+<[\d:]+, +[\d.]+(s/trial|trial/s)\]$", line)
              for line in finished]
    assert all(counts) and [int(m[1]) for m in counts] == [1, 2], run.stdout
    assert len(lines) <= 8, run.stdout  # 2 started, 2 finished, the summary's 3 lines


def test_an_unreachable_address_fails_at_once_and_leaves_nothing(digits_source, tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ens"
    argv = [sys.executable, "-m", "raytraj", "ensemble", "--source", str(digits_source / "source"), "--members", "1",
            "--out", str(out), "--address", f"127.0.0.1:{port}"]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=120)  # Ray alone retried for many minutes
    assert run.returncode == 2, run.stderr[-3000:]
    assert run.stderr.strip().splitlines()[-1].startswith(f"raytraj ensemble: error: cannot reach a Ray cluster at "
                                                          f"127.0.0.1:{port}"), run.stderr[-3000:]
    assert "Traceback" not in run.stderr and not out.exists()


def test_a_restarted_trial_reports_the_best_of_the_steps_it_does_not_redo(digits_source, tmp_path):
    from raytraj.tune.trial import eval_reporter

    src, run_dir = str(digits_source / "source"), str(tmp_path / "trial")
    cfg = TransferConfig(method="fgmt", steps=6, val_subset=0)
    first: dict[int, float] = {}

    def crash_after_step_4(step, acc):
        first[step] = acc
        if step == 4:
            raise KeyboardInterrupt  # the trial's process dies; Tune restarts it, and it resumes

    with pytest.raises(KeyboardInterrupt):
        transfer(src, run_dir, cfg, target_seed=2, on_eval=crash_after_step_4, progress=False)
    # A redone step scoring below a saved one (accuracy need not rise) reports the saved best.
    late: list[dict] = []
    eval_reporter(run_dir, 6, late.append)(5, 0.0)
    eval_reporter(run_dir, 6, late.append)(6, 0.0)  # the last step goes out with the final report
    reports: list[dict] = []
    metrics = transfer(src, run_dir, cfg, target_seed=2, resume=True, progress=False,
                       on_eval=eval_reporter(run_dir, 6, reports.append))
    redone = [r["step"] for r in reports]
    assert redone and min(redone) > 1  # the steps saved before the crash are not evaluated again
    # Every report's best covers the steps before the crash too, as ASHA must see it.
    for r in reports:
        curve = [metrics["val_acc"][s - 1] for s in range(1, r["step"] + 1)]
        assert r["best_val_acc"] == max(curve)
    # the last step goes out with the trial's final report, so that ASHA cannot stop a trial that ran every step
    assert reports[-1]["step"] == 5
    saved = max(first[s] for s in first if s < min(redone))
    assert late == [{"step": 5, "trajectory_fraction": 5 / 6, "val_acc": 0.0, "best_val_acc": saved}]
    assert saved > 0.0
