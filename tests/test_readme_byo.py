"""The README's "Your own model" section, run as written: its package files, its training loop,
its CLI commands and its Python API snippet (the Ray Train command runs in test_byo_ray.py)."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RAYTRAJ = str(Path(sys.executable).parent / "raytraj")


def section_blocks():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Your own model", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(python|bash)\n(.*?)\n```", section, flags=re.S)


def commands(block: str) -> list[str]:
    return [c.strip() for c in block.replace("\\\n", " ").splitlines() if c.strip() and not c.startswith("#")]


def run(args, cwd):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the user's folder is the cwd
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    r = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{args}\n{r.stderr[-3000:]}"
    return r.stdout


@pytest.mark.slow  # trains, transfers and runs a Tune ensemble, as the README does
def test_readme_your_own_model_runs_as_written(tmp_path):
    blocks = section_blocks()
    assert [lang for lang, _ in blocks] == ["python", "python", "python", "bash", "python", "bash"]
    files = {}
    for lang, code in blocks[:3]:
        name = code.splitlines()[0].removeprefix("# ").split(":")[0]
        files[name] = code
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(code + "\n")
    assert set(files) == {"mypkg/nets.py", "mypkg/data.py", "train.py"}
    run([sys.executable, "train.py"], tmp_path)
    for cmd in commands(blocks[3][1]):
        argv = shlex.split(cmd)
        assert argv[0] == "raytraj"
        run([RAYTRAJ, *argv[1:]], tmp_path)
    assert (tmp_path / "runs" / "mine-fgmt" / "metrics.json").exists()
    assert (tmp_path / "runs" / "mine-ens" / "ensemble.json").exists()
    out = run([sys.executable, "-c", blocks[4][1]], tmp_path)
    assert re.search(r"^test \d+\.\d%", out, flags=re.M) and "Sequential" in out
    assert commands(blocks[5][1])[0].startswith("python examples/ray_train_record.py")
