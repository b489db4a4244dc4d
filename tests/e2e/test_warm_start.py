"""Warm starts: a function compiled once is loaded from the disk cache by its warm key (computed
from the traced graph, before any pass), skipping passes, codegen and LLVM. Everything that
changes the code changes the key (a stale hit would be a silent wrong answer), a loaded
function inspects and reports errors like a compiled one, and a bad entry is a warned miss."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nnjit
from nnjit.backends import cache
from nnjit.backends.llvm import executable as ex
from nnjit.backends.llvm import target

SRC = str(Path(__file__).resolve().parents[2] / "src")
RNG = np.random.default_rng(0)
W = RNG.standard_normal((8, 4)).astype(np.float32)
X = RNG.standard_normal((5, 8)).astype(np.float32)


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NNJIT_CACHE_DIR", str(tmp_path))
    for var in ("NNJIT_CACHE", "NNJIT_DUMP", "NNJIT_VERIFY", "NNJIT_DEBUG", "NNJIT_DEBUG_BOUNDS",
                "NNJIT_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def layer(x, w):
    return nnjit.relu(x @ w + 0.5).sum(axis=0)


def ref(x, w):
    return np.maximum(x @ w + 0.5, 0).sum(axis=0)


def compiled(fn=layer, *args, **jit_kwargs):
    """A fresh jit (no in-memory cache) of `fn` lowered for `args`, and whether it was warm."""
    cf = nnjit.jit(fn, backend="llvm", **jit_kwargs).lower(*(args or (X, W)))
    return cf, cf._stage_list is None


def test_second_compile_is_warm_and_right():
    cold, warm = compiled()
    assert not warm
    models = ex.compile_stats["model"]
    again, warm = compiled()
    assert warm and ex.compile_stats["model"] == models
    np.testing.assert_allclose(again(X, W), ref(X, W), rtol=1e-5)
    np.testing.assert_array_equal(again(X, W), cold(X, W))


def test_warm_function_inspects_like_the_compiled_one():
    cold, _ = compiled()
    warm_cf, warm = compiled()
    assert warm
    assert warm_cf.stages() == cold.stages()
    assert warm_cf.ir("plan_memory") == cold.ir("plan_memory")
    assert warm_cf.llvm_ir() == cold.llvm_ir() and warm_cf.kernel_ir() == cold.kernel_ir()
    assert warm_cf.memory_plan().total_bytes == cold.memory_plan().total_bytes
    assert warm_cf.executable.extras == cold.executable.extras


def pick(x, i):
    return nnjit.take(x, i, axis=0) * 2.0


def test_warm_function_reports_index_errors_with_the_users_line():
    x, i = np.arange(12, dtype=np.float32).reshape(4, 3), np.array([0, 3])
    compiled(pick, x, i)
    cf, warm = compiled(pick, x, i)
    assert warm
    np.testing.assert_array_equal(cf(x, i), x[i] * 2)
    with pytest.raises(nnjit.IndexOutOfRange, match="test_warm_start.py"):
        cf(x, np.array([0, 9]))


def sgd(w, g):
    return w - 0.1 * g


def test_warm_function_keeps_donation():
    w, g = np.ones(6, np.float32), np.full(6, 2.0, np.float32)
    compiled(sgd, w, g, donate_argnums=(0,))
    cf, warm = compiled(sgd, w.copy(), g, donate_argnums=(0,))
    assert warm and cf.executable.donated == [(0, 0)]
    mine = w.copy()
    out = cf(mine, g)
    assert np.shares_memory(out, mine)
    np.testing.assert_allclose(out, 0.8)
    _, warm = compiled(sgd, w, g)          # not donated: another key
    assert not warm


def scaler(c):
    def scaled(x):
        return x * c          # one source line for every constant: only the value differs
    return scaled


scaled = scaler(3.0)


@pytest.mark.parametrize("change", ["shape", "dtype", "constant", "fuse", "threads", "bounds",
                                    "target", "source", "any_nnjit_env"])
def test_everything_that_changes_the_code_misses(change, monkeypatch):
    x = np.arange(6, dtype=np.float32)
    fn, kwargs = scaled, {}
    compiled(fn, x)
    assert compiled(fn, x)[1]                     # the unchanged compile hits
    if change == "shape":
        x = np.arange(7, dtype=np.float32)
    elif change == "dtype":
        x = np.arange(6, dtype=np.float64)
    elif change == "constant":
        fn = scaler(4.0)
    elif change == "fuse":
        kwargs = {"fuse": False}
    elif change == "threads":
        monkeypatch.setenv("NNJIT_NUM_THREADS", "3")
    elif change == "bounds":
        monkeypatch.setenv("NNJIT_DEBUG_BOUNDS", "1")
    elif change == "target":
        host = target.target_id()
        monkeypatch.setattr(target, "target_id", lambda: host + "|other-cpu")
    elif change == "source":
        monkeypatch.setattr(cache, "package_digest", lambda: "0" * 64)
    else:
        monkeypatch.setenv("NNJIT_SOME_FUTURE_KNOB", "1")
    cf, warm = compiled(fn, x, **kwargs)
    assert not warm, change
    want = x * (4.0 if change == "constant" else 3.0)
    np.testing.assert_allclose(cf(x), want.astype(x.dtype))
    assert compiled(fn, x, **kwargs)[1]           # and the changed compile is stored too


def test_watched_compiles_and_disabled_cache_are_never_warm(monkeypatch, cache_dir):
    compiled()
    monkeypatch.setenv("NNJIT_VERIFY", "1")
    assert not compiled()[1]
    monkeypatch.delenv("NNJIT_VERIFY")
    monkeypatch.setenv("NNJIT_CACHE", "0")
    assert not compiled()[1]


def test_corrupt_entry_is_a_warned_miss(cache_dir):
    compiled()
    for path in cache_dir.rglob("*.obj"):
        data = bytearray(path.read_bytes())
        data[-50] ^= 0xFF
        path.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match="corrupt or truncated"):
        cf, warm = compiled()
    assert not warm
    np.testing.assert_allclose(cf(X, W), ref(X, W), rtol=1e-5)


def test_unreadable_layout_is_a_warned_miss(monkeypatch):
    compiled()

    def unpack(payload):
        raise ValueError("bad layout: test")
    monkeypatch.setattr(ex.Layout, "unpack", staticmethod(unpack))
    with pytest.warns(RuntimeWarning, match="unreadable"):
        cf, warm = compiled()
    assert not warm
    np.testing.assert_allclose(cf(X, W), ref(X, W), rtol=1e-5)


def test_layout_round_trips():
    cf, _ = compiled()
    layout = cf.executable.layout
    assert ex.Layout.unpack(layout.pack(b"obj")) == (layout, b"obj")
    with pytest.raises(ValueError):
        ex.Layout.unpack(layout.pack(b"")[:-3])


_CHILD = """
import json, numpy as np, nnjit
from nnjit.backends.llvm import executable as ex, gemm
x = np.arange(40, dtype=np.float32).reshape(5, 8) / 9
w = np.arange(32, dtype=np.float32).reshape(8, 4) / 7
cf = nnjit.jit(lambda x, w: nnjit.relu(x @ w - 1.0)).lower(x, w)
ok = bool(np.allclose(cf(x, w), np.maximum(x @ w - 1.0, 0), rtol=1e-5))
print(json.dumps({"ok": ok, "warm": cf._stage_list is None, "models": ex.compile_stats["model"],
                  "runtimes": gemm.compile_stats["runtime"]}))
"""


def test_a_new_process_starts_warm(cache_dir):
    env = dict(os.environ, PYTHONPATH=SRC)

    def child():
        res = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True,
                             text=True, check=False)
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout.strip().splitlines()[-1])
    # Two runtime libraries the first time: the thread pool and the float32 GEMM.
    assert child() == {"ok": True, "warm": False, "models": 1, "runtimes": 2}
    assert child() == {"ok": True, "warm": True, "models": 0, "runtimes": 0}
