"""The machine and the environment as bad input: a device this machine lacks, a Ray address that is
no address, a model larger than the memory, each one line and exit 2 (no traceback)."""

import math

import pytest
import torch

from raytraj.cli import main, out_of_memory
from raytraj.config import ConfigError
from raytraj.runtime import available_memory, resolve_device


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    out = tmp_path_factory.mktemp("env") / "src"
    assert main(["train", "--model", "mlp", "--data", "digits", "--epochs", "1", "--model-arg", "hidden=[16]",
                 "--out", str(out), "--quiet"]) == 0
    return str(out)


def one_line(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"raytraj {command}: error: "), err
    return err[0]


TRANSFER = ["transfer", "--source", "never-read", "--target-seed", "2", "--method", "naive", "--out", "never-written"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda_is_one_line(capsys, tmp_path):
    assert main([*TRANSFER, "--device", "cuda"]) == 2  # refused before the source is even read
    line = one_line(capsys, "transfer")
    assert "--device cuda: " in line and "use --device cpu" in line, line
    assert main(["analyze", "interpolate", "a", "b", "--out", str(tmp_path), "--device", "cuda:1"]) == 2
    assert "--device cuda:1" in one_line(capsys, "analyze")


def test_a_device_torch_does_not_know_is_one_line(capsys):
    assert main([*TRANSFER, "--device", "garbage"]) == 2
    line = one_line(capsys, "transfer")
    assert "--device 'garbage' is not a torch device" in line and "use cpu or cuda" in line


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu") and resolve_device(None).type in ("cpu", "cuda")
    with pytest.raises(ConfigError, match="numbered from 0|has no CUDA|no CUDA GPU"):
        resolve_device(f"cuda:{torch.cuda.device_count() + 3}")


@pytest.mark.parametrize("command", ["transfer", "ensemble"])
def test_a_ray_address_that_is_no_address_is_one_line(source, tmp_path, capsys, monkeypatch, command):
    argv = {"transfer": ["transfer", "--source", source, "--target-seed", "2", "--method", "naive", "--steps", "2",
                         "--backend", "ray", "--out", str(tmp_path / "x")],
            "ensemble": ["ensemble", "--source", source, "--members", "1", "--steps", "2", "--out", str(tmp_path / "x")]}
    monkeypatch.setenv("RAY_ADDRESS", "garbage:xyz")
    assert main(argv[command]) == 2
    line = one_line(capsys, command)
    assert "RAY_ADDRESS 'garbage:xyz' is not a Ray address" in line and "unset RAY_ADDRESS" in line, line
    monkeypatch.delenv("RAY_ADDRESS")
    assert main([*argv[command], "--address", "host:port"]) == 2
    assert "--address 'host:port' is not a Ray address" in one_line(capsys, command)
    assert not (tmp_path / "x" / "metrics.json").exists()


def test_a_model_larger_than_the_memory_is_refused_before_allocating(tmp_path, capsys):
    free = available_memory()
    width = math.isqrt(free // 4) + 1  # one width x width float32 matrix is already more than is free
    out = tmp_path / "big"
    assert main(["train", "--model", "mlp", "--data", "digits", "--epochs", "1", "--model-arg",
                 f"hidden=[{width},{width}]", "--out", str(out), "--quiet"]) == 2
    line = one_line(capsys, "train")
    need = (64 * width + width * width + width * 10 + 2 * width + 10) * 4 / 2**30
    assert f"needs {need:.1f} GiB for its " in line and "of memory free here" in line, line


def test_an_allocator_error_names_the_size_it_tried():
    try:
        torch.empty(2**50, dtype=torch.uint8)  # 1 PiB: no machine has it
    except RuntimeError as e:
        error = e
    assert out_of_memory(error).startswith("out of memory: could not allocate 1048576.0 GiB; ")
    assert out_of_memory(RuntimeError("shapes do not match")) is None
