"""The idx file format of MNIST and Fashion-MNIST, read and checked; gzipped or not.

An idx file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions),
one big-endian uint32 per dimension, then the values in C order. A file that breaks any of this
raises ConfigError naming the file: a truncated download must not turn into a silent reshape.
"""

from __future__ import annotations

import gzip
import struct
import zlib

import numpy as np

from ..config import ConfigError

# type code -> big-endian numpy dtype
_TYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
          0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_GZIP = b"\x1f\x8b"


def parse_idx(data: bytes, name: str) -> np.ndarray:
    """The array an idx file holds (native byte order).

    Args:
        data: the file's bytes, gzipped (told by gzip's magic bytes, not by the name) or not.
        name: names the file in errors.
    """
    if data[:2] == _GZIP:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise ConfigError(f"{name}: damaged gzip data ({e}); fetch the file again") from e
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _TYPES or data[3] == 0:
        raise ConfigError(f"{name}: not an idx file (magic bytes {data[:4].hex() or 'missing'}; expected "
                          "00 00, a type code, a dimension count)")
    dtype, ndim = _TYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ConfigError(f"{name}: truncated idx header ({len(data)} bytes for {ndim} dimensions)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise ConfigError(f"{name}: the header declares shape {dims} ({expected} bytes) but the file has "
                          f"{len(data)} bytes; the file is truncated or damaged, fetch it again")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def idx_bytes(array: np.ndarray) -> bytes:
    """``array`` as an idx file (the inverse of :func:`parse_idx`): to write test data or converted sets."""
    codes = {v: k for k, v in _TYPES.items()}
    dtype = np.dtype(array.dtype).newbyteorder(">") if array.dtype.itemsize > 1 else np.dtype(array.dtype)
    if dtype not in codes:
        raise ConfigError(f"idx has no type for {array.dtype}; use uint8, int8, int16, int32, float32 or float64")
    header = bytes([0, 0, codes[dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=dtype).tobytes()
