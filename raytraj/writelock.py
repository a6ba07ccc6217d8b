"""One writer per output folder: a lock file on local disk, a lease object on object storage.

Two runs writing into one folder interleave their files into something that reads as whole
(checksums pass, the manifest says complete) and is not. Every command that writes a folder
holds its lock for the whole run; a second writer is refused at once, naming the holder.

Local disk: ``FOLDER/.raytraj-lock`` is ``flock``-ed exclusively. The kernel drops the lock when
its process dies (SIGKILL included), so a dead holder's lock is taken over by the next writer
with no guessing about pids. The file names the holder (pid, host, command) for the message.

Object storage: pyarrow's filesystems offer no conditional put (S3 ``If-None-Match``, GCS
``ifGenerationMatch``), so the lease is built from plain puts and reads, which S3 and GCS both
serve with read-after-write consistency. A writer reads ``FOLDER/.raytraj-lease.json``; a lease
that has not expired refuses it. Otherwise it writes its own (a random token and an expiry),
waits ``SETTLE_S`` and reads it back: a writer that raced it and wrote later replaced the token,
and the earlier one steps back. The holder renews the lease every ``TTL_S / 3`` from a thread;
a dead holder's lease is taken over once it expires (``TTL_S``). Limits: two writers whose reads
and writes fall within one round trip of each other are told apart only if their writes land
within ``SETTLE_S`` of each other (the second write follows its read by one request, far less);
a holder paused for longer than ``TTL_S`` (a frozen VM) can lose its lease without knowing it.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import os
import socket
import sys
import threading
import time
import uuid

from . import fs
from .config import ConfigError

LOCK_FILE = ".raytraj-lock"
LEASE_FILE = ".raytraj-lease.json"
TTL_S = float(os.environ.get("RAYTRAJ_LEASE_TTL_S", "60"))
SETTLE_S = float(os.environ.get("RAYTRAJ_LEASE_SETTLE_S", "2"))
# Files a command leaves in a folder on its own, not the run's: a folder holding only these holds no work.
BOOKKEEPING = (LOCK_FILE, LEASE_FILE, "log.txt")


class FolderLocked(ConfigError):
    """Another live process writes the folder."""


_held: dict[str, list] = {}  # key -> [count, release]: a process may re-enter its own lock
_held_lock = threading.Lock()
_covered: list[str] = []  # folders whose writer holds the lock in another process (see covered_by)


@contextlib.contextmanager
def covered_by(parent: str):
    """For a process that works for the holder of ``parent``'s lock (a Tune trial writing its run
    folder under the experiment's ``--out``): folders under ``parent`` take no lock of their own.
    A trial restarted on another node would otherwise wait out the lease of the one that died."""
    _covered.append(fs.absolute(parent).rstrip("/") + "/")
    try:
        yield
    finally:
        _covered.pop()


def check_out(location: str, option: str = "--out") -> None:
    """An empty or root output location would spill a run's files over the working directory or
    the file system: refuse it."""
    text = str(location).strip() if location is not None else ""
    if not text:
        raise ConfigError(f"{option} is empty; name a folder of its own, e.g. {option} runs/NAME")
    if fs.is_uri(text):
        scheme, _, rest = text.partition("://")
        if not rest.strip("/"):
            raise ConfigError(f"{option} {text} names no bucket; give s3://BUCKET/PREFIX or gs://BUCKET/PREFIX")
        return
    path = os.path.abspath(os.path.expanduser(text))
    if os.path.dirname(path) == path:
        raise ConfigError(f"{option} {text} is the root of the file system; name a folder of its own, e.g. "
                          f"{option} runs/NAME")


def holder_of(location: str) -> dict:
    """The recorded holder of ``location``'s lock or lease ({} when none or unreadable)."""
    name = LEASE_FILE if _remote(location) else LOCK_FILE
    try:
        return json.loads(fs.read_bytes(fs.join(location, name)) or b"{}")
    except (OSError, ValueError):
        return {}


def describe_holder(holder: dict) -> str:
    if not holder:
        return "another process"
    return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"
            + (f" ({holder['command']})" if holder.get("command") else ""))


@contextlib.contextmanager
def writer_lock(location: str, *, what: str = "run"):
    """Hold ``location``'s one-writer lock for the block; raises FolderLocked if another process holds it.

    Re-entrant within a process (the CLI locks ``--out`` and the library locks it again).
    """
    check_out(location)
    key = fs.absolute(location) if not _remote(location) else location.rstrip("/")
    if any(key.startswith(parent) for parent in _covered):
        yield
        return
    with _held_lock:
        if key in _held:
            _held[key][0] += 1
            entered = True
        else:
            entered = False
    if entered:
        try:
            yield
        finally:
            _leave(key)
        return
    created = not fs.exists(location)
    release = _lease(location, what) if _remote(location) else _flock(location, what)

    def release_and_tidy():
        # A run that made the folder and wrote nothing into it (a failed start) leaves no folder behind,
        # so that the same or a corrected command starts there afresh.
        try:
            if created and holds_only_bookkeeping(location):
                fs.remove(location)
        finally:
            release()

    with _held_lock:
        _held[key] = [1, release_and_tidy]
    try:
        yield
    finally:
        _leave(key)


def locks_output(param: str = "out", what: str = "run"):
    """Decorator: hold the one-writer lock of the function's ``param`` argument while it runs."""
    def decorate(fn):
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with writer_lock(signature.bind(*args, **kwargs).arguments[param], what=what):
                return fn(*args, **kwargs)
        return wrapper
    return decorate


def _leave(key: str) -> None:
    with _held_lock:
        entry = _held[key]
        entry[0] -= 1
        if entry[0]:
            return
        del _held[key]
    entry[1]()


def _remote(location: str) -> bool:
    """Object storage takes a lease; so does a shared file system whose flock is not to be trusted
    (some NFS setups): RAYTRAJ_LOCK=lease."""
    return (fs.is_uri(location) and not location.startswith("file://")) or os.environ.get("RAYTRAJ_LOCK") == "lease"


def _me(what: str) -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "what": what,
            "command": " ".join(["raytraj", *sys.argv[1:]])[:200] if sys.argv else "", "since": time.time()}


def _refuse(location: str, holder: dict, what: str):
    raise FolderLocked(f"{location} is being written by {describe_holder(holder)}; one writer at a time may use a "
                       "folder: wait for it to end, stop it, or choose another --out")


def _flock(location: str, what: str):
    import fcntl

    fs.makedirs(location)
    path = os.path.join(fs.absolute(location), LOCK_FILE)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:
                holder = {}
            os.close(fd)
            _refuse(location, holder, what)
        # The file may have been replaced between open and flock (a folder removed and made again):
        # then this lock guards nothing; take the new file's.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(_me(what)).encode(), 0)

    def release():
        # The file stays: removing it would let a waiter lock an unlinked inode while a third
        # process locks a new one. Its content names no holder once the lock is free.
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)

    return release


def _lease(location: str, what: str):
    path = fs.join(location, LEASE_FILE)
    current = _read_lease(path)
    if current and current.get("expires", 0) > time.time():
        _refuse(location, current, what)
    token = uuid.uuid4().hex
    mine = {**_me(what), "token": token}

    def put():
        fs.atomic_write_json(path, {**mine, "expires": time.time() + TTL_S})

    put()
    time.sleep(SETTLE_S)
    back = _read_lease(path)
    if back.get("token") != token:
        _refuse(location, back, what)
    stop = threading.Event()

    def renew():
        while not stop.wait(TTL_S / 3):
            if _read_lease(path).get("token") != token:
                print(f"raytraj: warning: the lease on {location} was taken by "
                      f"{describe_holder(_read_lease(path))}", file=sys.stderr)
                return
            put()

    thread = threading.Thread(target=renew, name="raytraj-lease", daemon=True)
    thread.start()

    def release():
        stop.set()
        thread.join(timeout=5)
        if _read_lease(path).get("token") == token:
            fs.remove(path)

    return release


def _read_lease(path: str) -> dict:
    try:
        lease = json.loads(fs.read_bytes(path))
        return lease if isinstance(lease, dict) else {}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {}


def holds_only_bookkeeping(location: str) -> bool:
    """The folder holds nothing but this module's and the CLI's own files (no work)."""
    return all(name in BOOKKEEPING or name.startswith(".tmp-") for name in fs.listdir(location))
