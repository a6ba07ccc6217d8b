"""Progress in logs: when stderr is not a terminal, plain lines at a bounded rate instead of a bar
that draws nothing."""

import io
import os
import subprocess
import sys

from raytraj.progress import LineProgress


def test_line_progress_prints_at_a_bounded_rate_and_always_the_end():
    out = io.StringIO()
    bar = LineProgress(total=5, desc="transfer fgmt", interval=3600, file=out)
    for _ in range(5):
        bar.update(1)
    bar.set_postfix(val_acc="91.2")
    bar.close()
    assert out.getvalue().splitlines() == ["transfer fgmt: 5/5 (100%) val_acc=91.2"]  # one line, not five

    out = io.StringIO()
    bar = LineProgress(total=4, initial=1, desc="train x", interval=0, file=out)
    for _ in range(3):
        bar.update(1)
    bar.close()
    assert out.getvalue().splitlines() == ["train x: 2/4 (50%)", "train x: 3/4 (75%)", "train x: 4/4 (100%)"]


def test_train_in_a_log_prints_progress_lines(tmp_path):
    argv = [sys.executable, "-m", "raytraj", "train", "--model", "mlp", "--data", "digits", "--epochs", "2",
            "--model-arg", "hidden=[16]", "--out", str(tmp_path / "s")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "RAYTRAJ_PROGRESS_S": "0"})
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith(f"train {tmp_path / 's'}: ")]
    assert len(lines) > 2 and "(100%)" in lines[-1], done.stderr[-2000:]
