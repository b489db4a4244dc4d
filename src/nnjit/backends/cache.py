"""The disk cache of compiled object code: one file per key, written atomically, checked on read.

    NNJIT_CACHE_DIR   where entries live (default $XDG_CACHE_HOME/nnjit or ~/.cache/nnjit)
    NNJIT_CACHE=0     disables it

An entry is a header (magic, format version, payload length, sha256 of the payload) followed by
the payload. A truncated or corrupt entry is reported with a warning, deleted and treated as a
miss, never loaded. Writers use a temporary file in the same directory and `os.replace`, so
readers see either no entry or a whole one, however many processes write the same key.
No pickle: payloads are opaque bytes (object files).

    >>> key = cache_key(llvm_ir_text, target_id, nnjit_version)
    >>> obj = load(key)              # None: missing, disabled, or corrupt (warned, deleted)
    >>> if obj is None:
    ...     obj = compile_object(llvm_ir_text)
    ...     store(key, obj)
"""
from __future__ import annotations

import functools
import hashlib
import os
import struct
import tempfile
import threading
import warnings
from pathlib import Path

MAGIC = b"NNJITOBJ"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sIQ32s")  # magic, format version, payload length, sha256(payload)

#: Counters for tests and NNJIT_DEBUG=1 output: hits, misses, stores, corrupt entries.
stats = {"hits": 0, "misses": 0, "stores": 0, "corrupt": 0}
_lock = threading.Lock()


def enabled() -> bool:
    return os.environ.get("NNJIT_CACHE", "1").strip() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    env = os.environ.get("NNJIT_CACHE_DIR", "").strip()
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg) if xdg else Path.home() / ".cache") / "nnjit"


def cache_key(*parts: str) -> str:
    """sha256 over the parts (length-prefixed, so ("ab", "c") != ("a", "bc"))."""
    h = hashlib.sha256()
    for p in parts:
        data = p.encode() if isinstance(p, str) else bytes(p)
        h.update(struct.pack("<Q", len(data)))
        h.update(data)
    return h.hexdigest()


@functools.cache
def package_digest() -> str:
    """sha256 over every nnjit source file's path, size and modification time: part of keys
    computed from what the compiler is given rather than what it made (a warm-start key), so
    that any edit to the compiler, or another checkout of it, misses instead of hitting."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for where, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(f for f in files if f.endswith(".py")):
            st = os.stat(os.path.join(where, name))
            rel = os.path.relpath(os.path.join(where, name), root)
            h.update(f"{rel}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()


def entry_path(key: str) -> Path:
    return cache_dir() / key[:2] / f"{key}.obj"


def load(key: str) -> bytes | None:
    """The payload stored under `key`, or None (disabled, missing, or corrupt: then deleted)."""
    if not enabled():
        return None
    path = entry_path(key)
    try:
        data = path.read_bytes()
    except OSError:
        _count("misses")
        return None
    payload = _decode(data)
    if payload is None:
        warnings.warn(f"nnjit: cache entry {path} is corrupt or truncated; deleting it and "
                      f"recompiling", RuntimeWarning, stacklevel=2)
        _count("corrupt")
        _count("misses")
        try:
            path.unlink()
        except OSError:
            pass
        return None
    _count("hits")
    return payload


def store(key: str, payload: bytes) -> None:
    """Write `payload` under `key` atomically (errors only warn: the cache is an optimization)."""
    if not enabled():
        return
    path = entry_path(key)
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, len(payload), hashlib.sha256(payload).digest())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(header)
                f.write(payload)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except OSError as e:
        warnings.warn(f"nnjit: cannot write cache entry {path}: {e}", RuntimeWarning,
                      stacklevel=2)
        return
    _count("stores")


def _decode(data: bytes) -> bytes | None:
    if len(data) < _HEADER.size:
        return None
    magic, version, length, digest = _HEADER.unpack_from(data)
    payload = data[_HEADER.size:]
    if magic != MAGIC or version != FORMAT_VERSION or length != len(payload):
        return None
    if hashlib.sha256(payload).digest() != digest:
        return None
    return payload


def _count(name: str) -> None:
    with _lock:
        stats[name] += 1
