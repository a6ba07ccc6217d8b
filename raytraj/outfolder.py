"""What the CLI does around a command that writes a folder: the folder's one-writer lock (held
before any work, so a second writer is refused at once), ``--overwrite``, and ``log.txt``, a copy
of everything the command prints."""

from __future__ import annotations

import contextlib
import datetime
import io
import os
import sys

from . import fs
from .config import ConfigError
from .runfolder import CONFIG
from .trajectory.store import MANIFEST, is_store
from .writelock import LEASE_FILE, LOCK_FILE, writer_lock

LOG = "log.txt"
# Files only raytraj writes: a folder holding one of them may be emptied by --overwrite.
OWN_MARKERS = (MANIFEST, CONFIG, "ensemble-settings.json",
               "sweep-settings.json", LOG)
# Arguments naming inputs, which --overwrite must never delete.
INPUTS = ("source", "init", "target_init", "oracle_target", "run", "ensemble", "a", "b", "c", "runs", "target",
          "targets")


def inputs_of(args) -> list[str]:
    """The input paths among a command's parsed arguments (lists and comma-separated lists flattened)."""
    found = []
    for name in INPUTS:
        value = getattr(args, name, None)
        for item in [value] if isinstance(value, str) else value or []:
            found += [v for v in item.split(",") if v]
    return found


@contextlib.contextmanager
def output_folder(out: str, argv: list[str], *, overwrite: bool = False, inputs: list[str] = (), what: str = "run"):
    """Lock ``out`` for the command, empty it first with ``overwrite``, and copy stdout and stderr to
    ``out/log.txt`` (appended: a resumed run's log follows the first attempt's)."""
    if what != "train" and is_store(out):  # refused before its lock or log touch it
        raise ConfigError(f"--out {out} is a trajectory store; a {what} needs a folder of its own")
    with writer_lock(out, what=what):
        if overwrite:
            _empty(out, inputs)
        with _tee(fs.join(out, LOG), argv):
            yield


def _empty(out: str, inputs) -> None:
    from .trajectory.store import parse_ref

    here = fs.absolute(out).rstrip("/")
    for given in inputs:
        other = fs.absolute(parse_ref(given)[0]).rstrip("/")
        if other == here or other.startswith(here + "/"):
            raise ConfigError(f"--overwrite would delete {given}, an input of this command inside --out {out}; "
                              "choose another --out")
    names = [n for n in fs.listdir(out) if n not in (LOCK_FILE, LEASE_FILE)]  # this process's lock stays
    if names and not any(n in OWN_MARKERS for n in names):
        raise ConfigError(f"--overwrite: {out} holds files raytraj did not write ({', '.join(names[:3])}); delete "
                          "them yourself or choose another --out")
    for name in names:
        fs.remove(fs.join(out, name))


class _Tee(io.TextIOBase):
    """Writes to the stream and to the log; everything else (isatty, fileno) is the stream's."""

    def __init__(self, stream, log):
        self._stream, self._log = stream, log

    def write(self, text):
        self._log.write(text)
        return self._stream.write(text)

    def flush(self):
        self._log.flush()
        self._stream.flush()

    def __getattr__(self, name):
        return getattr(self._stream, name)

    def isatty(self):
        return self._stream.isatty()

    def fileno(self):
        return self._stream.fileno()


@contextlib.contextmanager
def _tee(path: str, argv: list[str]):
    header = f"# {datetime.datetime.now().isoformat(timespec='seconds')} raytraj {' '.join(argv)}\n"
    remote = fs.is_uri(path)
    log = io.StringIO() if remote else open(path, "a", encoding="utf-8", buffering=1)
    if remote and fs.exists(path):  # object stores cannot append: read, add, rewrite at the end
        log.write(fs.read_bytes(path).decode("utf-8", "replace"))
    log.write(header)
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Tee(out, log), _Tee(err, log)
    try:
        yield
    except BaseException as e:  # the CLI's one-line message is printed after this block: log it here
        log.write(f"# ended by {type(e).__name__}: {e}\n")
        raise
    finally:
        sys.stdout, sys.stderr = out, err
        if remote:
            with contextlib.suppress(OSError):
                fs.atomic_write_bytes(path, log.getvalue().encode())
        else:
            log.close()


def default_threads() -> int:
    """Torch threads that keep a shared machine fast: the CPUs this process may use, less those the
    load average says are busy (at least one). Torch's default (every CPU) spins threads that wait
    for each other on a busy machine; see the README's measurement."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        busy = int(os.getloadavg()[0])
    except OSError:
        busy = 0
    return max(1, min(cpus, cpus - busy))
