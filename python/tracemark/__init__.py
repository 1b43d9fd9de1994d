"""tracemark: forensic watermarking for Python.

Stamp every copy of an image you release with an invisible, per-recipient mark; when a copy
turns up where it should not, name the copy it came from, with a false-attribution
probability. This package is the Rust library itself (not the command-line tools), compiled
with PyO3: arrays go in and out without files, the heavy work runs with the GIL released,
and :func:`scan` spreads many files over a Dask cluster.

>>> import numpy as np, tracemark
>>> key = tracemark.Key.load("org.key")                     # doctest: +SKIP
>>> stamped = tracemark.stamp(image, key, payload="a1b2c3d4e5f60718")  # doctest: +SKIP
>>> tracemark.detect(stamped, key)["payload"]               # doctest: +SKIP
'a1b2c3d4e5f60718'

Errors are :class:`TracemarkError` with the command-line tools' one-line message.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ._native import Examiner, Key, TracemarkError, stamp

__all__ = ["Examiner", "Key", "TracemarkError", "detect", "scan", "stamp"]
__version__ = "0.1.0"

PathLike = Union[str, "os.PathLike[str]"]

_cache_lock = threading.Lock()
_examiners: Dict[Tuple[str, str], Examiner] = {}


def _examiner(key: Key, ledger: Optional[PathLike]) -> Examiner:
    """The examiner for ``key``. Without a ledger one per key in this process (the key's
    patterns and FFT plans are prepared once, not per image); with a ledger a new one each
    time, so that releases recorded since are seen (an examiner keeps the releases it read
    when it was made)."""
    if ledger is not None:
        return Examiner(key, os.fspath(ledger))
    k = (key.key_id, os.fspath(key.path))
    with _cache_lock:
        ex = _examiners.get(k)
    if ex is None:
        ex = Examiner(key)
        with _cache_lock:
            ex = _examiners.setdefault(k, ex)
    return ex


def detect(
    source: Any,
    key: Key,
    ledger: Optional[PathLike] = None,
    original: Union[None, PathLike, Sequence[PathLike]] = None,
) -> Dict[str, Any]:
    """Examine one image: a path (any format the tools read, DICOM included) or a numpy
    array (uint8/uint16, H x W or H x W x C).

    Returns the dict ``tracemark-detect --json`` prints for it: ``verdict``, ``payload``,
    ``p_value``, ``z``, and with a ledger (an SQLite file or a ``postgresql://`` URL, read
    and verified, never written) the release and the recipients ``named``. With
    ``original`` (the released image as you keep it, or several), the copy is also
    examined against it, as ``tracemark-detect --original`` does: ``original`` in the
    result says how. Unlike the command-line tool, the Python API records nothing in the
    ledger's audit trail. The ledger and originals are read at each call; to examine many
    images against one state of them, make an :class:`Examiner` and reuse it.
    """
    if original is not None:
        paths = [original] if isinstance(original, (str, os.PathLike)) else list(original)
        return Examiner(
            key,
            None if ledger is None else os.fspath(ledger),
            originals=[os.fspath(p) for p in paths],
        ).examine(source)
    return _examiner(key, ledger).examine(source)


def _scan_chunk(paths: List[str], key_path: str, ledger: Optional[str]) -> List[Dict[str, Any]]:
    """Runs on a worker: examine ``paths`` with the key file at ``key_path`` (read on the
    worker; the key never travels through the scheduler)."""
    return _examiner(_load_key(key_path), ledger).examine_many(paths)


_keys: Dict[str, Key] = {}


def _load_key(key_path: str) -> Key:
    with _cache_lock:
        key = _keys.get(key_path)
    if key is None:
        key = Key.load(key_path)
        with _cache_lock:
            key = _keys.setdefault(key_path, key)
    return key


def scan(
    paths: Sequence[PathLike],
    key_path: PathLike,
    ledger: Optional[PathLike] = None,
    client: Any = None,
    chunk_size: Optional[int] = None,
) -> List[Dict[str, Any]]:
    """Examine many files; one result dict per path, in input order.

    Without ``client`` the files are examined here, in parallel on every core. Given a
    ``dask.distributed.Client``, they are split into chunks of ``chunk_size`` files (default:
    about four chunks per worker thread, at most 256 files) and examined on its workers; each worker
    loads the key from ``key_path`` itself (so the path must name the key file on every
    worker: the key is never pickled or sent over the network) and reads the files from the
    same paths (shared storage). A file that cannot be examined gives
    ``{"type": "error", "path": ..., "error": ...}`` and does not stop the others.
    """
    names = [os.fspath(p) for p in paths]
    key_path = os.fspath(key_path)
    ledger = None if ledger is None else os.fspath(ledger)
    if client is None:
        return _scan_chunk(names, key_path, ledger)
    if not names:
        return []
    if chunk_size is None:
        # Every worker thread of the cluster (scheduler_info lists only the first few workers
        # in some versions of distributed).
        slots = max(1, sum(client.nthreads().values()))
        chunk_size = max(1, min(256, -(-len(names) // (4 * slots))))
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    chunks = [names[i : i + chunk_size] for i in range(0, len(names), chunk_size)]
    futures = client.map(
        _scan_chunk,
        chunks,
        key_path=key_path,
        ledger=ledger,
        pure=False,
    )
    results: List[Dict[str, Any]] = []
    for part in client.gather(futures):
        results.extend(part)
    return results
