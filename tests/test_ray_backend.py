"""The Ray backend on a real local Ray cluster (one per module): same answer as local, logical GPUs,
a busy rank is not lost, rank kill (group restarted, shards restored), driver kill and resume."""

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import ray
import torch

from raytraj.checkpoint import load_checkpoint
from raytraj.ray_config import RayConfig
from raytraj.config import ConfigError
from raytraj.transfer import TransferConfig, prepare, transfer

pytestmark = pytest.mark.slow  # Ray clusters: the end-to-end tier


@pytest.fixture(scope="module")
def cluster():
    ray.init(address="local", num_cpus=4, num_gpus=2, include_dashboard=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def run_pair(src, tmp_path, cfg, name, **ray_options):
    local = transfer(src, str(tmp_path / f"{name}-local"), cfg, target_seed=2, progress=False)
    remote = transfer(src, str(tmp_path / f"{name}-ray"), cfg, target_seed=2, backend="ray",
                      ray_config=RayConfig(workers=2, **ray_options), progress=False)
    return local, remote


def perms(run_dir):
    return json.loads((run_dir / "perm.json").read_text())


@pytest.mark.parametrize("method", ["gmt", "fgmt"])
def test_same_seed_same_answer_as_the_local_backend(cluster, digits_source, tmp_path, method):
    # 3 batches per gradient: split data-parallel over the 2 workers while a step has fewer pairs
    cfg = TransferConfig(method=method, steps=5, grad_batches=3, seed=11)
    local, remote = run_pair(str(digits_source / "source"), tmp_path, cfg, method)
    assert remote["backend"] == "ray"
    assert remote["val_acc"] == local["val_acc"] and remote["test_acc"] == local["test_acc"]
    assert perms(tmp_path / f"{method}-ray") == perms(tmp_path / f"{method}-local")
    a = load_checkpoint(str(tmp_path / f"{method}-ray" / "final.safetensors"))[0]
    b = load_checkpoint(str(tmp_path / f"{method}-local" / "final.safetensors"))[0]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_logical_gpus_are_scheduled_and_threads_follow_cpus(cluster, digits_source, tmp_path):
    from raytraj.distributed import RayBackend

    cfg = TransferConfig(method="fgmt", steps=2)
    problem = prepare(str(digits_source / "source"), cfg, target_seed=2)
    backend = RayBackend(problem, cfg, RayConfig(workers=2, cpus_per_worker=2, gpus_per_worker=1))
    try:
        placed = backend.describe()
    finally:
        backend.close()
    assert sorted(p["gpu_ids"][0] for p in placed) == ["0", "1"]  # one logical GPU each
    assert all(p["threads"] == 2 for p in placed)  # not Ray's OMP_NUM_THREADS=1
    assert all(p["device"] == ("cuda" if torch.cuda.is_available() else "cpu") for p in placed)
    assert all(p["backend"] == ("nccl" if torch.cuda.is_available() else "gloo") for p in placed)  # the process group


def test_unplaceable_workers_fail_clearly(cluster, digits_source):
    from raytraj.distributed import RayBackend

    cfg = TransferConfig(steps=2)
    problem = prepare(str(digits_source / "source"), cfg, target_seed=2)
    with pytest.raises(ConfigError, match="place 9 workers"):
        RayBackend(problem, cfg, RayConfig(workers=9, placement_timeout_s=3))
    assert ray.available_resources().get("CPU") == 4  # nothing left reserved


def test_a_busy_rank_is_not_taken_for_lost(cluster, digits_source):
    # Liveness is asked of each rank in a thread of its own: a rank deep in a long step still answers.
    from raytraj.distributed import RayBackend

    cfg = TransferConfig(method="fgmt", steps=2, batch_size=256)
    backend = RayBackend(prepare(str(digits_source / "source"), cfg, target_seed=2), cfg, RayConfig(workers=2))
    backend.group.ping_timeout_s = 1.0
    args = {"s": 1, "ts": [0], "count": 2400, "diff": {}, "fresh": False, "warm": True,
            "options": {"max_sweeps": 1, "tol": 0.0, "rtol": 0.0, "seed": 0}, "persist": None}
    try:
        pids = [p["pid"] for p in backend.describe()]
        with ThreadPoolExecutor(1) as pool:
            step = pool.submit(backend.group.command, "step", args)
            time.sleep(0.3)
            t0 = time.monotonic()
            lost = backend.group.lost()
            answered_s = time.monotonic() - t0
            busy = not step.done()
            step.result()
        assert [p["pid"] for p in backend.describe()] == pids  # the same ranks finished the step
    finally:
        backend.close()
    assert busy, "the step ended before the ranks were pinged; give it more batches"
    assert lost == [] and answered_s < 1.0


def test_a_killed_worker_restarts_and_the_result_is_unchanged(cluster, digits_source, tmp_path):
    src = str(digits_source / "source")
    cfg = TransferConfig(method="fgmt", steps=6, grad_batches=2, seed=2)
    undisturbed = transfer(src, str(tmp_path / "calm"), cfg, target_seed=2, progress=False)
    killed = []

    def kill_a_worker(step, acc):
        if step == 2 and not killed:
            names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                     if a["name"].startswith("raytraj-") and a["name"].endswith("rank-1")]
            ray.kill(ray.get_actor(names[-1]), no_restart=False)
            killed.append(names[-1])

    disturbed = transfer(src, str(tmp_path / "kill"), cfg, target_seed=2, backend="ray",
                         ray_config=RayConfig(workers=2), on_eval=kill_a_worker, progress=False)
    assert killed and disturbed["traffic"]["recoveries"] >= 1  # the group restarted, its shards restored from state/
    assert disturbed["val_acc"] == undisturbed["val_acc"]
    assert perms(tmp_path / "kill") == perms(tmp_path / "calm")


def test_a_killed_driver_resumes_to_the_same_result(cluster, digits_source, tmp_path):
    src = str(digits_source / "source")
    cfg = TransferConfig(method="fgmt", steps=30, seed=4)  # a wide window to kill the driver in
    undisturbed = transfer(src, str(tmp_path / "calm"), cfg, target_seed=3, progress=False)
    out = tmp_path / "cut"
    argv = [sys.executable, "-m", "raytraj", "transfer", "--source", src, "--target-seed", "3", "--method", "fgmt",
            "--steps", "30", "--seed", "4", "--out", str(out), "--backend", "ray", "--address", cluster,
            "--workers", "2", "--quiet"]
    driver = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    progress = out / "state" / "progress.safetensors"
    deadline = time.time() + 120
    while time.time() < deadline and driver.poll() is None:
        if progress.exists() and load_checkpoint(str(progress))[1]["step"] >= 3:
            break
        time.sleep(0.02)
    assert driver.poll() is None, driver.stderr.read().decode()[-2000:]
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    stopped_at = load_checkpoint(str(progress))[1]["step"]
    assert 3 <= stopped_at < 30 and not (out / "metrics.json").exists()
    resumed = transfer(src, str(out), cfg, target_seed=3, backend="ray", ray_config=RayConfig(workers=2),
                       resume=True, progress=False)
    assert resumed["val_acc"] == undisturbed["val_acc"]
    assert perms(out) == perms(tmp_path / "calm")


def test_a_ray_transfer_logs_no_actor_restart_error(cluster, digits_source, tmp_path):
    """Ray printed `E ... core_worker ... actor restart will fail` on every run: the actors took
    object-store refs as top-level constructor arguments."""
    argv = [sys.executable, "-m", "raytraj", "transfer", "--source", str(digits_source / "source"), "--target-seed",
            "2", "--method", "fgmt", "--steps", "2", "--out", str(tmp_path / "run"), "--backend", "ray",
            "--workers", "1", "--address", cluster, "--quiet"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "restart will fail" not in done.stderr and "restart will fail" not in done.stdout, done.stderr[-3000:]


def test_tune_trials_default_to_one_gpu_on_a_cluster_with_gpus(cluster):
    from raytraj.tune.runner import default_gpus_per_trial
    from raytraj.tune.trial import trial_device

    assert default_gpus_per_trial() == 1.0  # this module's cluster has 2 (logical) GPUs

    @ray.remote(num_gpus=0)
    def device_without_gpu():
        return trial_device(), ray.get_gpu_ids()

    # Ray 2.60 no longer hides GPUs from tasks that asked for none: the trial must still use the CPU.
    assert ray.get(device_without_gpu.remote()) == ("cpu", [])


def test_an_os_error_inside_a_ray_worker_is_one_line(cluster, digits_source, tmp_path, capsys):
    from raytraj.cli import main

    out = tmp_path / "run"
    (out / "state").mkdir(parents=True)
    (out / "state" / "shards").write_text("")  # a file where the workers keep their shards: only they see it
    code = main(["transfer", "--source", str(digits_source / "source"), "--target-seed", "5", "--method", "fgmt",
                 "--steps", "2", "--out", str(out), "--backend", "ray", "--workers", "1", "--address", cluster,
                 "--quiet"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("raytraj transfer:")]
    assert code == 2 and len(err) == 1, err
    # the worker's OSError as the driver's own would read: the path and the cause, not Ray's traceback
    assert f"{out}/state/shards" in err[0] and "File exists" in err[0] and "choose another --out" in err[0], err
    assert "ray::" not in err[0] and "File \"" not in err[0], err
