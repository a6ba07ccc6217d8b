"""Progress in logs: when stderr is not a terminal, timestamped lines at a bounded rate, each with
the count, the value of the step counted, elapsed time, time remaining and rate."""

import io
import json
import os
import re
import subprocess
import sys

import pytest

from raytraj.progress import LogProgress
from raytraj.runfolder import RunFolder
from raytraj.trajectory import TrajectoryStore

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d"
# 2026-12-04T15:40:02+00:00 transfer fgmt: 12/30 (40%) [00:09<00:13, 1.33step/s, val_acc=88.15]
LINE = re.compile(rf"^({STAMP}) (?P<desc>.+): (?P<n>\d+)/(?P<total>\d+) \(\d+%\) "
                  r"\[(?P<elapsed>[\d:]+)<(?P<eta>[\d:]+|\?), +(?P<rate>[\d.?]+\S*/s|[\d.]+s/\S+)(?P<post>, .*)?\]$")


def progress_lines(text: str, desc: str) -> list[dict]:
    """The progress lines of ``desc`` in a log, parsed; any other line of ``desc`` fails the test."""
    found = []
    for line in text.splitlines():
        if f" {desc}: " not in line:
            continue
        m = LINE.match(line)
        assert m, f"not a progress line: {line!r}"
        post = dict(kv.split("=", 1) for kv in (m["post"] or "").lstrip(", ").split(", ") if kv)
        found.append({**m.groupdict(), "n": int(m["n"]), "post": post})
    return found


def test_log_lines_come_at_a_bounded_rate_with_a_timestamp_rate_and_eta():
    out = io.StringIO()
    bar = LogProgress(total=5, desc="transfer fgmt", interval=3600, file=out, unit="step")
    for i in range(5):
        bar.set_postfix(val_acc=f"{i}.00")  # a value goes out beside the count it belongs to
        bar.update(1)
    bar.close()
    lines = progress_lines(out.getvalue(), "transfer fgmt")
    assert [(x["n"], x["post"]) for x in lines] == [(0, {}), (5, {"val_acc": "4.00"})]  # the first and the last
    assert lines[-1]["eta"] == "00:00" and lines[-1]["rate"].endswith("step/s")

    out = io.StringIO()
    bar = LogProgress(total=4, initial=1, desc="train x", interval=0, file=out)
    for _ in range(3):
        bar.update(1)
    bar.close()
    assert [x["n"] for x in progress_lines(out.getvalue(), "train x")] == [1, 2, 3, 4]  # once each, the last too


def test_a_progress_interval_that_is_not_a_number_is_one_line(tmp_path):
    for bad in ("ten", "nan", "-1"):
        done = subprocess.run([sys.executable, "-m", "raytraj", "plot", str(tmp_path), "--out", "x.png"],
                              capture_output=True, text=True, timeout=120, env={**os.environ, "RAYTRAJ_PROGRESS_S": bad})
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().splitlines() == [
            f"raytraj plot: error: RAYTRAJ_PROGRESS_S={bad!r} is not a number of seconds >= 0; set it to e.g. 10, "
            "or unset it for the default"]


def run(argv, tmp_path):
    done = subprocess.run([sys.executable, "-m", "raytraj", *argv], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "RAYTRAJ_PROGRESS_S": "0"}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stderr


@pytest.fixture(scope="module")
def logged_source(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("progress")
    log = run(["train", "--model", "mlp", "--data", "digits", "--epochs", "3", "--model-arg", "hidden=[16]",
               "--lr", "0.1", "--out", "src"], tmp)
    return tmp, log


def test_train_in_a_log_prints_each_recorded_step_with_its_val(logged_source):
    tmp, log = logged_source
    lines = progress_lines(log, "train src")
    assert len(lines) > 3 and lines[-1]["n"] == int(lines[-1]["total"]), log[-2000:]
    assert all(x["rate"].endswith("it/s") or "s/it" in x["rate"] for x in lines[1:])
    recorded = [s["val_acc"] for s in TrajectoryStore(str(tmp / "src")).manifest["steps"][1:]]
    shown = {int(x["post"]["step"]): x["post"]["val_acc"] for x in lines if "step" in x["post"]}
    assert sorted(shown) == [1, 2, 3]
    assert all(shown[k] == f"{recorded[k - 1]:.2f}" for k in shown)


@pytest.mark.parametrize("method", ["naive", "fgmt"])
def test_transfer_in_a_log_prints_each_step_with_its_own_val(logged_source, method):
    tmp, _ = logged_source
    log = run(["transfer", "--source", "src", "--target-seed", "2", "--method", method, "--steps", "6",
               "--eval-every", "2", "--out", method], tmp)
    lines = progress_lines(log, f"transfer {method}")
    assert [x["n"] for x in lines] == list(range(7)), log[-2000:]  # every step once, in order (interval 0)
    assert all(x["eta"] != "?" for x in lines[1:])
    val = json.loads(open(RunFolder(str(tmp / method)).metrics_path).read())["val_acc"]  # steps 1..T
    shown = [x["post"].get("val_acc") for x in lines[1:]]
    assert shown == [None if v is None else f"{v:.2f}" for v in val]  # the val of that very step, not an earlier one
    assert shown[-1] is not None and shown[1] is not None and shown[0] is None


def test_without_progress_each_step_is_evaluated_once_in_order(logged_source):
    # progress=False (Tune trials, the Python API) counts steps without a bar; on_eval sees every step in order
    from raytraj.transfer import TransferConfig, transfer

    tmp, _ = logged_source
    seen = []
    m = transfer(str(tmp / "src"), str(tmp / "quiet"), TransferConfig(method="fgmt", steps=4), target_seed=3,
                 on_eval=lambda s, acc: seen.append((s, acc)), progress=False)
    assert seen == list(enumerate(m["val_acc"], start=1))
