"""Faults from the environment end in one line `raytraj CMD: error: ...`, exit 2, no traceback:
unwritable or impossible --out, a full disk, unreachable object storage."""

import os
import resource
import signal
import subprocess
import sys

import pytest

from raytraj.cli import main

TRAIN = ["train", "--model", "mlp", "--data", "digits", "--epochs", "1", "--model-arg", "hidden=[16]", "--quiet"]


def one_line_error(capsys, command):
    err = capsys.readouterr().err
    assert err.startswith(f"raytraj {command}: error: ") and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_out_under_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main([*TRAIN, "--out", str(tmp_path / "file" / "run")]) == 2
    one_line_error(capsys, "train")


def test_out_on_a_read_only_location(tmp_path, capsys):
    if os.geteuid() == 0:  # root writes through file modes; /sys is read-only for everyone
        if not os.path.isdir("/sys") or os.access("/sys", os.W_OK) and not _sys_refuses():
            pytest.skip("no read-only location for root here")
        out = "/sys/raytraj-test-out"
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        out = str(ro / "run")
    assert main([*TRAIN, "--out", out]) == 2
    one_line_error(capsys, "train")
    assert not os.path.exists(out)


def _sys_refuses() -> bool:
    try:
        os.mkdir("/sys/raytraj-probe")
    except OSError:
        return True
    os.rmdir("/sys/raytraj-probe")
    return False


def _limit_file_size():
    # A full disk, as the process sees it: writes past 64 KiB fail (EFBIG, as ENOSPC would).
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))


def test_a_full_disk_while_training(tmp_path):
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "raytraj", *TRAIN[:-3], "--model-arg", "hidden=[512,512]", "--quiet",
            "--out", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, preexec_fn=_limit_file_size)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.startswith("raytraj train: error: ") and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert str(out) in done.stderr  # names the file it could not write
    assert not list(out.rglob(".tmp-*"))  # no half-written file left behind


@pytest.mark.parametrize("uri", ["s3://raytraj-no-such-bucket-x1/runs/src", "gs://raytraj-no-such-bucket-x1/runs/src"])
def test_unreachable_object_storage_fails_within_seconds(tmp_path, uri):
    env = {**os.environ, "AWS_EC2_METADATA_DISABLED": "true", "GOOGLE_APPLICATION_CREDENTIALS": "",
           "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
    argv = [sys.executable, "-m", "raytraj", "transfer", "--source", uri, "--target-seed", "3", "--method", "naive",
            "--steps", "2", "--out", str(tmp_path / "run"), "--quiet"]
    # gs:// retried for 15 minutes before (killed at 120 s with no output): the timeout is the hang check
    done = subprocess.run(argv, capture_output=True, text=True, timeout=110, env=env)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.startswith(f"raytraj transfer: error: cannot reach {uri}") and "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()
