"""The processes a run started die with it, even when it is SIGKILLed.

A local Ray instance that a command starts (``ray.init`` without an address) runs as children of
that command: GCS, raylet, and the raylet's workers. Ray ends them when the driver exits; a
driver killed with SIGKILL cannot, and some of them stay (Tune trial workers, Ray's agents).
``watch(pid)`` starts a small process in its own session that notes the driver's descendants
twice a second and, once the driver is gone, ends those still alive (SIGTERM, then SIGKILL).
A process is identified by its pid and start time, so a reused pid is never touched. Linux only
(it reads /proc); elsewhere it does nothing.

    python raytraj/watchdog.py DRIVER_PID
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

POLL_S = 0.5
GRACE_S = 3.0


def watch(pid: int | None = None) -> subprocess.Popen | None:
    """Start a watchdog for ``pid`` (default: this process); None where /proc is missing."""
    if not os.path.isdir("/proc/self"):
        return None
    # run as a plain script: no package import, so it watches within a fraction of a second
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), str(pid or os.getpid())],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, close_fds=True)


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) of ``pid``, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[1]), fields[0], int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """{pid: start time} of every live descendant of ``root``."""
    children: dict[int, list[tuple[int, int]]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st and st[1] != "Z":
                children.setdefault(st[0], []).append((int(name), st[2]))
    found, todo = {}, [root]
    while todo:
        for pid, start in children.get(todo.pop(), []):
            if pid not in found:
                found[pid] = start
                todo.append(pid)
    return found


def _alive(pid: int, start: int) -> bool:
    st = _stat(pid)
    return st is not None and st[2] == start and st[1] != "Z"


def run(driver: int) -> None:
    st = _stat(driver)
    if st is None:
        return
    driver_start, seen = st[2], {}
    me = os.getpid()  # a child of the driver too
    while _alive(driver, driver_start):
        seen.update({p: s for p, s in descendants(driver).items() if p != me})
        seen = {p: s for p, s in seen.items() if _alive(p, s)}
        time.sleep(POLL_S)
    # The driver is gone: its orphans (reparented, so found by the record) and their children.
    for pid, start in list(seen.items()):
        seen.update({p: s for p, s in descendants(pid).items() if p != me})
    for sig, wait in ((signal.SIGTERM, GRACE_S), (signal.SIGKILL, 0.0)):
        for pid, start in seen.items():
            if _alive(pid, start):
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(_alive(p, s) for p, s in seen.items()):
            time.sleep(0.1)


if __name__ == "__main__":
    run(int(sys.argv[1]))
