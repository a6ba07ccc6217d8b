"""CPU seconds of the CLI's start-up: ``raytraj --help``, a subcommand's help, an argument error,
and, for scale, ``import torch`` alone and the first import of a command's work.

    python benchmarks/bench_startup.py [--repeats 5]

Each case runs in a fresh process; its CPU time (user + sys) is read from the kernel's
accounting of the finished child (``os.wait4``), a meter outside raytraj. The median of the
repeats is printed, with the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

CASES = {
    "raytraj --help": ["-m", "raytraj", "--help"],
    "raytraj transfer --help": ["-m", "raytraj", "transfer", "--help"],
    "raytraj transfer (missing options)": ["-m", "raytraj", "transfer"],
    "raytraj analyze interpolate --help": ["-m", "raytraj", "analyze", "interpolate", "--help"],
    "import torch (for scale)": ["-c", "import torch"],
    "import raytraj.transfer.run (a transfer's work)": ["-c", "import raytraj.transfer.run"],
}


def cpu_seconds(argv: list[str]) -> tuple[float, int]:
    """User + sys CPU seconds of one child process, and its exit code."""
    proc = subprocess.Popen([sys.executable, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime, proc.returncode


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}; median of {args.repeats} runs")
    print("| command | CPU s (user+sys) | exit code |\n|---|---|---|")
    for name, argv in CASES.items():
        runs = [cpu_seconds(argv) for _ in range(args.repeats)]
        print(f"| `{name}` | {statistics.median(t for t, _ in runs):.3f} | {runs[0][1]} |", flush=True)


if __name__ == "__main__":
    main()
