"""Files on local disk or object storage, through pyarrow filesystems, written atomically.

A location is a local path or a URI that ``pyarrow.fs.FileSystem.from_uri`` understands
(``s3://bucket/prefix``, ``gs://bucket/prefix``, ``file:///abs/path``). Local writes go to a
temporary file that is renamed into place, so a reader never sees half a file. Object stores
publish an object only when its upload completes, which gives the same guarantee.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import uuid

import pyarrow as pa
import pyarrow.fs as pafs


class StorageError(OSError):
    """Object storage that cannot be reached: no credentials, no network, no such bucket."""


# Seconds a first contact with an object store may retry before it counts as unreachable. Later
# calls keep pyarrow's own (long) retries, which ride out transient errors in a long run.
PROBE_S = float(os.environ.get("RAYTRAJ_STORAGE_PROBE_S", "5"))
_reached: set[tuple[str, str]] = set()


def is_uri(location: str) -> bool:
    return "://" in location


def resolve(location: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or URI.

    The first use of each bucket is probed with short retries, so that missing credentials or
    network fail within seconds, naming the URI (GCS otherwise retries for 15 minutes).
    """
    if not is_uri(location):
        return pafs.LocalFileSystem(), os.path.abspath(location)
    try:
        filesystem, path = pafs.FileSystem.from_uri(location)
        key = (filesystem.type_name, path.split("/", 1)[0])
        if key not in _reached and filesystem.type_name in ("gcs", "s3"):
            probe = filesystem
            if filesystem.type_name == "gcs" and "?" not in location:
                import datetime

                probe = pafs.GcsFileSystem(retry_time_limit=datetime.timedelta(seconds=PROBE_S))
            probe.get_file_info(path)
            _reached.add(key)
    except StorageError:
        raise
    except (OSError, pa.ArrowException) as e:
        cause = " ".join(str(e).split())[:300]
        raise StorageError(f"cannot reach {location}: {cause}. Check the credentials (AWS_* / "
                           "GOOGLE_APPLICATION_CREDENTIALS), the network, and the bucket name") from e
    return filesystem, path


def absolute(location: str) -> str:
    """A local path made absolute (URIs unchanged): Tune runs trials in their own working directory."""
    return location if is_uri(location) else os.path.abspath(location)


def join(location: str, *parts: str) -> str:
    return posixpath.join(location, *parts) if is_uri(location) else os.path.join(location, *parts)


def exists(location: str) -> bool:
    fs, path = resolve(location)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def makedirs(location: str) -> None:
    fs, path = resolve(location)
    fs.create_dir(path, recursive=True)


def read_bytes(location: str) -> bytes:
    fs, path = resolve(location)
    with fs.open_input_stream(path) as f:
        return f.read()


@contextlib.contextmanager
def atomic_output(location: str):
    """A writable pyarrow stream that appears at ``location`` only if the block completes.

    OSErrors (a full or read-only disk) name ``location``: pyarrow's own messages do not."""
    try:
        with _atomic_output(location) as f:
            yield f
    except StorageError:
        raise
    except OSError as e:
        if getattr(e, "filename", None):
            raise
        text = " ".join(str(e).split())
        raise OSError(e.errno, text.split("] ", 1)[1] if text.startswith("[Errno ") else text, location) from e


@contextlib.contextmanager
def _atomic_output(location: str):
    fs, path = resolve(location)
    parent = posixpath.dirname(path) if is_uri(location) else os.path.dirname(path)
    fs.create_dir(parent, recursive=True)
    if not isinstance(fs, pafs.LocalFileSystem):
        with fs.open_output_stream(path) as f:
            yield f
        return
    tmp = os.path.join(parent, f".tmp-{uuid.uuid4().hex}-{os.path.basename(path)}")
    try:
        with pa.OSFile(tmp, "wb") as f:
            yield f
        with open(tmp, "rb+") as raw:
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_bytes(location: str, data: bytes) -> None:
    with atomic_output(location) as f:
        f.write(data)


def atomic_write_json(location: str, obj) -> None:
    atomic_write_bytes(location, (json.dumps(obj, indent=1) + "\n").encode())


def read_json(location: str):
    """The JSON document at ``location``; a damaged one (bad JSON or UTF-8) raises ConfigError naming it."""
    from .config import ConfigError

    try:
        return json.loads(read_bytes(location))
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        raise ConfigError(f"{location} is damaged ({e})") from e


def listdir(location: str) -> list[str]:
    """Base names directly under ``location`` (empty if it does not exist)."""
    fs, path = resolve(location)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return []
    return sorted(posixpath.basename(i.path) for i in fs.get_file_info(pafs.FileSelector(path)))


def remove(location: str) -> None:
    fs, path = resolve(location)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        fs.delete_dir(path)
    elif info.type == pafs.FileType.File:
        fs.delete_file(path)
