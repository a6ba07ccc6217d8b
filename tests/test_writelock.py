"""One writer per output folder: a second writer is refused (exit 2, naming the holder), a dead
holder's lock is taken over, and the folder the winner writes is whole. Also the --out paths that
are refused outright, --overwrite, log.txt and SIGTERM."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from raytraj.cli import main
from raytraj.trajectory import TrajectoryStore
from raytraj.writelock import LEASE_FILE, LOCK_FILE, FolderLocked, writer_lock

PY = [sys.executable, "-m", "raytraj"]
TRAIN = ["train", "--model", "mlp", "--data", "digits", "--model-arg", "hidden=[16]", "--quiet"]
ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}


def _wait_for(predicate, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _holder_written(folder):
    try:
        return json.loads((folder / LOCK_FILE).read_text() or "{}").get("pid") is not None
    except (OSError, ValueError):
        return False


def test_two_writers_at_once_one_wins_the_other_exits_2_and_the_folder_is_whole(tmp_path):
    out = tmp_path / "s"
    first = subprocess.Popen([*PY, *TRAIN, "--epochs", "40", "--seed", "1", "--out", str(out)], env=ENV,
                             stderr=subprocess.PIPE, text=True)
    assert _wait_for(lambda: _holder_written(out))
    second = subprocess.run([*PY, *TRAIN, "--epochs", "3", "--seed", "7", "--out", str(out)], env=ENV,
                            capture_output=True, text=True, timeout=300)
    assert first.poll() is None, "the first writer should still be running"
    assert second.returncode == 2, second.stderr
    line = second.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line, line
    assert f"pid {first.pid} on host " in line and "choose another --out" in line
    assert first.wait(timeout=300) == 0, first.stderr.read()
    store = TrajectoryStore(str(out))
    assert store.complete and store.meta["seed"] == 1 and store.num_steps == 41
    store.verify()
    log = (out / "log.txt").read_text()
    assert "--seed 1" in log and "--seed 7" not in log  # the refused writer wrote nothing, its log included


def test_a_dead_holders_lock_is_taken_over(tmp_path):
    out = tmp_path / "s"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom raytraj.writelock import writer_lock\n"
                               f"with writer_lock({str(out)!r}):\n    print('held', flush=True)\n    time.sleep(600)"],
                              stdout=subprocess.PIPE, text=True, env=ENV)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(FolderLocked, match=f"pid {holder.pid} "):
        with writer_lock(str(out)):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert main([*TRAIN, "--epochs", "1", "--out", str(out)]) == 0
    assert TrajectoryStore(str(out)).complete


def test_the_lock_is_reentrant_in_one_process_and_released_after(tmp_path):
    out = str(tmp_path / "s")
    with writer_lock(out):
        with writer_lock(out):  # the CLI holds it, the library takes it again
            pass
        assert (tmp_path / "s" / LOCK_FILE).read_text()
    assert not (tmp_path / "s").exists()  # made by the lock and left empty: tidied away
    with writer_lock(out):
        pass


def test_object_storage_lease(tmp_path, monkeypatch):
    """The lease (object storage's lock), run here on a local folder: a live lease refuses, a lease that
    expired (its holder died) is taken over, a writer that raced and lost steps back."""
    import raytraj.writelock as wl

    monkeypatch.setenv("RAYTRAJ_LOCK", "lease")
    monkeypatch.setattr(wl, "SETTLE_S", 0.05)
    out = tmp_path / "s"
    out.mkdir()
    live = {"pid": 4242, "host": "node-7", "token": "x", "expires": time.time() + 60}
    (out / LEASE_FILE).write_text(json.dumps(live))
    with pytest.raises(FolderLocked, match="pid 4242 on host node-7"):
        with writer_lock(str(out)):
            pass
    (out / LEASE_FILE).write_text(json.dumps({**live, "expires": time.time() - 1}))
    with writer_lock(str(out)):
        mine = json.loads((out / LEASE_FILE).read_text())
        assert mine["pid"] == os.getpid() and mine["expires"] > time.time()
    assert not (out / LEASE_FILE).exists()

    real_sleep = time.sleep

    def rival_writes(seconds):  # another writer's put lands while this one settles
        (out / LEASE_FILE).write_text(json.dumps({**live, "token": "rival"}))
        real_sleep(seconds)

    monkeypatch.setattr(wl.time, "sleep", rival_writes)
    with pytest.raises(FolderLocked, match="node-7"):
        with writer_lock(str(out)):
            pass


@pytest.mark.parametrize("out", ["", "  ", "/"])
def test_an_empty_or_root_out_is_refused(out, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([*TRAIN, "--epochs", "1", "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.startswith("raytraj train: error: --out ") and len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


def test_overwrite_starts_afresh_but_never_deletes_inputs_or_foreign_files(tmp_path, capsys):
    out = str(tmp_path / "s")
    assert main([*TRAIN, "--epochs", "1", "--seed", "1", "--out", out]) == 0
    assert main([*TRAIN, "--epochs", "1", "--seed", "3", "--out", out]) == 2
    assert main([*TRAIN, "--epochs", "2", "--seed", "3", "--out", out, "--overwrite"]) == 0
    store = TrajectoryStore(out)
    assert store.meta["seed"] == 3 and store.num_steps == 3
    capsys.readouterr()
    assert main([*TRAIN, "--epochs", "1", "--init", f"{out}/sub", "--out", str(tmp_path), "--overwrite"]) == 2
    assert "an input of this command" in capsys.readouterr().err and TrajectoryStore(out).complete
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("x")
    assert main([*TRAIN, "--epochs", "1", "--out", str(mine), "--overwrite"]) == 2
    assert "holds files raytraj did not write" in capsys.readouterr().err and (mine / "thesis.tex").exists()


def test_sigterm_is_handled_like_ctrl_c(digits_source, tmp_path):
    out = tmp_path / "run"
    argv = [*PY, "transfer", "--source", str(digits_source / "source"), "--target-seed", "5", "--method", "fgmt",
            "--steps", "200", "--eval-every", "0", "--quiet", "--out", str(out)]
    p = subprocess.Popen(argv, env=ENV, stderr=subprocess.PIPE, text=True)
    assert _wait_for(lambda: (out / "state" / "progress.safetensors").exists())
    p.send_signal(signal.SIGTERM)
    err = p.communicate(timeout=120)[1]
    assert p.returncode == 143, err
    assert err.strip().splitlines()[-1] == ("raytraj transfer: terminated (SIGTERM); what was done is saved: run the "
                                            "same command with --resume to continue"), err
    assert "Traceback" not in err
    assert "terminated" in (out / "log.txt").read_text() or "KeyboardInterrupt" in (out / "log.txt").read_text()
