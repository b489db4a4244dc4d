"""The disk cache of compiled objects: hits skip LLVM, corrupt or truncated entries are reported,
deleted and rebuilt (never loaded), concurrent writers never leave a torn entry, NNJIT_CACHE=0
disables it, and the GEMM runtime library is cached the same way."""
from __future__ import annotations

import multiprocessing
import os
import warnings

import numpy as np
import pytest

from nnjit.backends.llvm import executable as ex
from nnjit.backends.llvm.executable import compile_program
from nnjit.backends import cache
from tests.backends.kernel_programs import F32, c, inp, ld, map_kernel, mul, out, program


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NNJIT_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("NNJIT_CACHE", raising=False)
    return tmp_path


def scale_program(factor: float):
    n = 16
    return program([map_kernel(n, lambda i: mul(ld("a", i), c(factor)))],
                   [inp("a", F32, n, 0), out("out0", F32, n, 0)], name="scale")


def entries(root):
    return sorted(p for p in root.rglob("*.obj"))


def check(exe, factor):
    a = np.arange(16, dtype=np.float32)
    np.testing.assert_array_equal(exe([a])[0], a * np.float32(factor))


def test_second_compile_is_a_cache_hit(cache_dir):
    before = ex.compile_stats["model"]
    check(compile_program(scale_program(1.25)), 1.25)
    assert ex.compile_stats["model"] == before + 1
    assert len(entries(cache_dir)) == 1
    hits = cache.stats["hits"]
    exe = compile_program(scale_program(1.25))   # a fresh executable: loaded from disk
    check(exe, 1.25)
    assert ex.compile_stats["model"] == before + 1 and cache.stats["hits"] == hits + 1
    check(compile_program(scale_program(3.0)), 3.0)  # different IR, different entry
    assert ex.compile_stats["model"] == before + 2 and len(entries(cache_dir)) == 2


@pytest.mark.parametrize("damage", ["truncate", "flip_payload", "flip_header", "garbage",
                                    "empty"])
def test_corrupt_entry_warns_is_rebuilt_and_never_loaded(cache_dir, damage):
    compile_program(scale_program(0.5))
    (path,) = entries(cache_dir)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[:len(data) // 2]
    elif damage == "flip_payload":
        data[-100] ^= 0xFF
    elif damage == "flip_header":
        data[12] ^= 0x01  # the length field
    elif damage == "garbage":
        data = bytearray(os.urandom(len(data)))
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    before = ex.compile_stats["model"]
    with pytest.warns(RuntimeWarning, match="corrupt or truncated"):
        exe = compile_program(scale_program(0.5))
    check(exe, 0.5)
    assert ex.compile_stats["model"] == before + 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")           # the rebuilt entry is whole again
        check(compile_program(scale_program(0.5)), 0.5)
    assert ex.compile_stats["model"] == before + 1


def test_cache_disabled_writes_nothing(cache_dir, monkeypatch):
    monkeypatch.setenv("NNJIT_CACHE", "0")
    before = ex.compile_stats["model"]
    compile_program(scale_program(7.0))
    compile_program(scale_program(7.0))
    assert ex.compile_stats["model"] == before + 2 and not entries(cache_dir)


def test_default_location_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("NNJIT_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache.cache_dir() == tmp_path / "nnjit"


def test_keys_are_length_prefixed_and_distinct():
    assert cache.cache_key("ab", "c") != cache.cache_key("a", "bc")
    assert len(cache.cache_key("x")) == 64


# --- concurrent writers -----------------------------------------------------------------------
def _hammer(args):
    root, key, seed, rounds = args
    os.environ["NNJIT_CACHE_DIR"] = root
    rng = np.random.default_rng(seed)
    seen = set()
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # any corrupt read fails the worker
        for _ in range(rounds):
            size = int(rng.integers(1, 1 << 18))
            cache.store(key, bytes([seed]) * size)
            got = cache.load(key)
            assert got is not None and len(set(got)) == 1, "torn entry"
            seen.add(got[0])
    return seen


def test_concurrent_writers_never_leave_a_torn_entry(tmp_path):
    key = cache.cache_key("concurrent")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        seen = pool.map(_hammer, [(str(tmp_path), key, s, 60) for s in range(1, 5)])
    assert set().union(*seen) <= {1, 2, 3, 4}
    (path,) = entries(tmp_path)
    assert not list(tmp_path.rglob("*.tmp"))      # temporaries are renamed or removed
    payload = cache._decode(path.read_bytes())
    assert payload is not None and len(set(payload)) == 1
