"""The raw files' formats, parsed safely: CIFAR's pickled batches inside a tar.gz (unpickling
containers and numpy arrays only) and the IDX files of (Fashion-)MNIST. Every problem raises a
:class:`DataError` naming the file (and member).
"""

from __future__ import annotations

import gzip
import io
import math
import pickle
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np

from pipeline.errors import DataError

# --------------------------------------------------------------------------- CIFAR


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles containers and numpy arrays only, so a tampered archive cannot run code."""

    _ALLOWED = frozenset(
        {
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy.core.numeric", "_frombuffer"),
            ("numpy._core.numeric", "_frombuffer"),
            ("_codecs", "encode"),  # how Python 3 protocol-2 pickles spell bytes
            ("__builtin__", "bytes"),  # ... and empty bytes (b"", e.g. an empty array's data)
        }
    )

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return super().find_class(module, name)


def read_tar_members(path: Path, wanted: set[str]) -> dict[str, bytes]:
    """Bytes of the members whose base name is in ``wanted``, streamed (nothing written to disk)."""
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, mode="r|gz") as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base in wanted:
                    f = tar.extractfile(member)
                    assert f is not None  # regular files always have content
                    found[base] = f.read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DataError(
            f"corrupt or truncated archive {path} ({type(exc).__name__}: {exc})"
        ) from exc
    missing = sorted(wanted - found.keys())
    if missing:
        raise DataError(f"archive {path} has no member(s) {', '.join(missing)}")
    return found


def unpickle(data: bytes, source: str) -> dict:
    try:
        obj = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as exc:  # garbage can fail in many ways; all mean "not a valid member"
        raise DataError(f"{source}: cannot unpickle ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{source}: expected a pickled dict, got {type(obj).__name__}")
    return obj


def parse_cifar_batch(batch: dict, labels_key: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    """``{b"data": (N, 3072) uint8 rows of R, G, B planes, labels_key: [N ints]}`` ->
    ``(N, 32, 32, 3)`` uint8 images and ``(N,)`` int64 labels."""
    for key in (b"data", labels_key):
        if key not in batch:
            raise DataError(f"{source}: missing key {key!r} (keys: {sorted(batch, key=repr)})")
    data = np.asarray(batch[b"data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{source}: b'data' must be uint8 (N, 3072), got {data.dtype} {data.shape}")
    try:
        labels = np.asarray(batch[labels_key])
        if labels.size and labels.dtype.kind not in "iu":  # floats would be truncated silently
            raise TypeError(f"got {labels.dtype} values")
        labels = labels.astype(np.int64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise DataError(f"{source}: {labels_key!r} is not a list of integers ({exc})") from exc
    if labels.shape != (len(data),):
        raise DataError(f"{source}: {labels.shape} labels for {len(data)} images")
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, labels


def decode_names(meta: dict, key: bytes, source: str) -> list[str]:
    names = meta.get(key)
    if not isinstance(names, list) or not names:
        raise DataError(f"{source}: missing or empty {key!r}")
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


# --------------------------------------------------------------------------- IDX (Fashion-MNIST)


def parse_idx(buf: bytes, ndim: int, source: str) -> np.ndarray:
    """Parse an unsigned-byte IDX file (magic ``0x000008<ndim>``, big-endian uint32 dims)."""
    expected_magic = 0x0800 | ndim
    if len(buf) < 4:
        raise DataError(f"{source}: {len(buf)} bytes is too short for an IDX header")
    magic = int.from_bytes(buf[:4], "big")
    if magic != expected_magic:
        raise DataError(
            f"{source}: bad IDX magic number 0x{magic:08x}, expected 0x{expected_magic:08x} "
            f"(unsigned bytes, {ndim} dimension(s))"
        )
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise DataError(f"{source}: truncated IDX header: expected {header} bytes, got {len(buf)}")
    dims = struct.unpack(f">{ndim}I", buf[4:header])
    expected = header + math.prod(dims)  # Python ints: huge header dims cannot overflow
    if len(buf) != expected:
        kind = "truncated" if len(buf) < expected else "has trailing bytes"
        raise DataError(
            f"{source}: IDX file {kind}: header dims {dims} mean {expected} bytes, got {len(buf)}"
        )
    return np.frombuffer(buf, dtype=np.uint8, offset=header).reshape(dims)


def gunzip(path: Path) -> bytes:
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise DataError(f"cannot decompress {path} ({type(exc).__name__}: {exc})") from exc
