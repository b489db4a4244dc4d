"""The GEMM runtime libraries' object code lives in the disk cache: a second process loads it
instead of compiling, a corrupt entry is a warned miss (rebuilt, never loaded), and the key
changes with everything the object depends on (target, generator source, config, dtype)
without generating any IR."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nnjit.backends import cache
from nnjit.backends.llvm import gemm, target

SRC = str(Path(__file__).resolve().parents[2] / "src")

_CHILD = """
import json, numpy as np
from nnjit.backends.llvm import gemm
a = np.arange(12, dtype=np.float32).reshape(3, 4)
b = np.arange(20, dtype=np.float32).reshape(4, 5) / 7
assert np.allclose(gemm.matmul(a, b), a @ b, rtol=1e-5)
print(json.dumps({"compiled": gemm.compile_stats["runtime"], "loaded": sorted(gemm._loaded)}))
"""


def _child(cache_dir) -> dict:
    env = dict(os.environ, NNJIT_CACHE_DIR=str(cache_dir), PYTHONPATH=SRC)
    env.pop("NNJIT_CACHE", None)
    res = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True,
                         text=True, check=False)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_second_process_loads_the_cached_object(tmp_path):
    first = _child(tmp_path)
    # The pool and float32 only: no float64 library.
    assert first == {"compiled": 2, "loaded": ["f32", "pool"]}
    assert len(list(tmp_path.rglob("*.obj"))) == 2
    assert _child(tmp_path) == {"compiled": 0, "loaded": ["f32", "pool"]}


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NNJIT_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("NNJIT_CACHE", raising=False)
    return tmp_path


@pytest.fixture
def fake_compile(monkeypatch):
    """compile_library replaced by a counter returning bytes naming what was compiled (the
    cache plumbing without LLVM)."""
    calls = []

    def compile_library(name=None):
        calls.append(name)
        return f"object of {name} for {target.target_id()}".encode()
    monkeypatch.setattr(gemm, "compile_library", compile_library)
    return calls


def test_corrupt_entry_is_a_warned_miss(cache_dir):
    before = gemm.compile_stats["runtime"]
    obj = gemm.cached_library("f32")
    assert gemm.compile_stats["runtime"] == before + 1
    assert gemm.cached_library("f32") == obj and gemm.compile_stats["runtime"] == before + 1
    (path,) = cache_dir.rglob("*.obj")
    data = bytearray(path.read_bytes())
    data[-64] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match="corrupt or truncated"):
        again = gemm.cached_library("f32")
    assert again == obj and gemm.compile_stats["runtime"] == before + 2
    assert target.load_object(again).address("nnjit_gemm_f32")


def test_key_changes_with_the_target(cache_dir, fake_compile, monkeypatch):
    gemm.cached_library("f32")
    assert gemm.cached_library("f32") and fake_compile == ["f32"]
    host = target.target_id()
    key = gemm.runtime_cache_key("f32")
    monkeypatch.setattr(target, "target_id", lambda: host.replace("|", "|other-cpu|", 1))
    assert gemm.runtime_cache_key("f32") != key
    assert b"other-cpu" in gemm.cached_library("f32") and fake_compile == ["f32", "f32"]


def test_key_changes_with_generator_source_config_and_dtype(monkeypatch):
    key = gemm.runtime_cache_key("f32")
    assert gemm.runtime_cache_key("f64") != key and gemm.runtime_cache_key() != key
    monkeypatch.setattr(gemm, "generator_digest", lambda: "0" * 64)
    assert gemm.runtime_cache_key("f32") != key
    monkeypatch.undo()
    tuned = gemm.CONFIGS["f32"].__class__(**{**gemm.CONFIGS["f32"].__dict__, "kc": 128})
    monkeypatch.setitem(gemm.CONFIGS, "f32", tuned)
    assert gemm.runtime_cache_key("f32") != key


def test_generator_digest_covers_its_sources():
    digest = gemm.generator_digest()
    assert len(digest) == 64
    assert set(gemm._GENERATOR_MODULES) >= {"gemm", "helpers", "parallel", "target"}


def test_key_needs_no_generated_ir():
    gemm.library_ir.cache_clear()
    gemm.runtime_cache_key("f32")
    gemm.runtime_cache_key("f64")
    assert gemm.library_ir.cache_info().currsize == 0


def test_cache_disabled_compiles_every_time(cache_dir, fake_compile, monkeypatch):
    monkeypatch.setenv("NNJIT_CACHE", "0")
    gemm.cached_library("f64")
    gemm.cached_library("f64")
    assert fake_compile == ["f64", "f64"] and not list(cache_dir.rglob("*.obj"))
    assert cache.enabled() is False
