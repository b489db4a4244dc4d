"""The CUDA kernel cache: a second executable of the same program in one process reuses the loaded
kernels (no second exec, so no second Numba compile), NNJIT_CACHE=0 turns it off, and the disk
layer's keys and entries (cubins, used on real GPUs only) round-trip, with a damaged entry a
miss and a warning. The simulator has no cubins, so the disk layer is checked with a stand-in
for numba-cuda's compiled kernel object."""
from __future__ import annotations

import os
import subprocess
import sys
import warnings
from types import SimpleNamespace

import numpy as np
import pytest

import nnjit
from nnjit.backends import cache
from nnjit.backends.cuda import kernel_cache as kc

cuda = pytest.importorskip("numba.cuda")
pytestmark = pytest.mark.skipif(not cuda.is_available(), reason="no GPU and no CUDA simulator")


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NNJIT_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("NNJIT_CACHE", raising=False)
    kc.clear()
    return tmp_path


def affine(x, w):
    return nnjit.tanh(x @ w + 1.0).sum(axis=1)


def args():
    rng = np.random.default_rng(0)
    return rng.standard_normal((3, 4), np.float32), rng.standard_normal((4, 5), np.float32)


def test_second_compile_in_one_process_reuses_the_kernels(cache_dir):
    before = dict(kc.stats)
    f1 = nnjit.jit(affine, backend="cuda")
    r1 = f1(*args())
    assert kc.stats["modules"] == before["modules"] + 1
    f2 = nnjit.jit(affine, backend="cuda")      # a new function object: compiled again ...
    r2 = f2(*args())
    assert kc.stats["modules"] == before["modules"] + 1          # ... but nothing exec'd
    assert kc.stats["module_hits"] == before["module_hits"] + 1
    np.testing.assert_array_equal(r1, r2)
    x, w = args()
    np.testing.assert_allclose(r2, np.tanh(x @ w + 1).sum(1), rtol=1e-5, atol=1e-5)


def test_a_different_program_is_a_different_module(cache_dir):
    before = kc.stats["modules"]
    nnjit.jit(affine, backend="cuda")(*args())
    nnjit.jit(lambda x, w: nnjit.exp(x @ w).sum(axis=0), backend="cuda")(*args())
    assert kc.stats["modules"] == before + 2


def test_nnjit_cache_0_compiles_every_time(cache_dir, monkeypatch):
    monkeypatch.setenv("NNJIT_CACHE", "0")
    before = dict(kc.stats)
    for _ in range(2):
        nnjit.jit(affine, backend="cuda")(*args())
    assert kc.stats["modules"] == before["modules"] + 2
    assert kc.stats["module_hits"] == before["module_hits"]


def test_module_keys_depend_on_source_device_and_toolchain():
    k = kc.module_key("src", "sm_90", "numba 1; numba-cuda 2")
    assert k == kc.module_key("src", "sm_90", "numba 1; numba-cuda 2")
    assert k != kc.module_key("src2", "sm_90", "numba 1; numba-cuda 2")
    assert k != kc.module_key("src", "sm_80", "numba 1; numba-cuda 2")
    assert k != kc.module_key("src", "sm_90", "numba 1; numba-cuda 3")
    assert kc.kernel_key(k, "k_a", ("array(float32, 1d, C)",)) != \
        kc.kernel_key(k, "k_a", ("array(float64, 1d, C)",))
    assert kc.kernel_key(k, "k_a", ()) != kc.kernel_key(k, "k_b", ())


def test_entries_round_trip():
    cubin = bytes(range(256)) * 3
    entry = kc.decode_entry(kc.encode_entry("_Z3k_a", (9, 0, "a"), cubin))
    assert entry == ("_Z3k_a", (9, 0, "a"), cubin)


@pytest.mark.parametrize("damage", ["truncate", "magic", "header", "version", "empty_cubin"])
def test_malformed_entries_decode_to_none(damage):
    good = kc.encode_entry("_Z3k_a", (8, 0, ""), b"\x7fELF" + b"x" * 64)
    head = len(kc.ENTRY_MAGIC) + 4
    bad = {"truncate": good[:-5], "magic": b"X" + good[1:],
           "header": good[:head] + b"\xff" + good[head + 1:],
           "version": good.replace(b'"version": 1', b'"version": 9'),
           "empty_cubin": kc.encode_entry("_Z3k_a", (8, 0, ""), b"")}[damage]
    assert kc.decode_entry(bad) is None


def fake_kernel(cubin: bytes, cc=(8, 6, "")):
    """What `kernel_entry` reads of a numba-cuda `_Kernel` (the simulator has none)."""
    lib = SimpleNamespace(_linking_files=set(), referenced_objects={}, _entry_name="_Z3k_a",
                          _ensure_cc=lambda _: cc, get_cubin=lambda c: cubin)
    return SimpleNamespace(cooperative=False, launch_config_sensitive=False, _codelibrary=lib)


SIG = ("array(float32, 1d, C)", "array(int64, 1d, C)")


@pytest.fixture
def argtypes_as_given(monkeypatch):
    """Signatures here are plain strings (no numba types needed for keys)."""
    monkeypatch.setattr(kc, "_argtypes", tuple)


def test_disk_layer_stores_a_compiled_kernel_and_rebuilds_it(cache_dir, argtypes_as_given,
                                                             monkeypatch):
    rebuilt = []
    monkeypatch.setattr(kc, "rebuild_kernel", lambda entry, at: rebuilt.append((entry, at)) or
                        "kernel")
    disk = kc.DiskKernels("module-key", "k_a")
    assert disk.load_overload(SIG, None) is None          # nothing there yet
    compiles = kc.stats["kernel_compiles"]
    disk.save_overload(SIG, fake_kernel(b"CUBIN" * 10))
    assert kc.stats["kernel_compiles"] == compiles + 1
    assert len(list(cache_dir.rglob("*.obj"))) == 1
    hits = kc.stats["disk_hits"]
    assert kc.DiskKernels("module-key", "k_a").load_overload(SIG, None) == "kernel"
    assert kc.stats["disk_hits"] == hits + 1
    assert rebuilt == [(("_Z3k_a", (8, 6, ""), b"CUBIN" * 10), SIG)]
    # Another function, module or signature: another key.
    assert kc.DiskKernels("module-key", "k_b").load_overload(SIG, None) is None
    assert kc.DiskKernels("other", "k_a").load_overload(SIG, None) is None
    assert kc.DiskKernels("module-key", "k_a").load_overload(SIG[:1], None) is None


def test_disk_layer_off_with_nnjit_cache_0(cache_dir, argtypes_as_given, monkeypatch):
    monkeypatch.setenv("NNJIT_CACHE", "0")
    disk = kc.DiskKernels("module-key", "k_a")
    disk.save_overload(SIG, fake_kernel(b"CUBIN"))
    assert not list(cache_dir.rglob("*.obj"))
    assert disk.load_overload(SIG, None) is None


def test_uncachable_kernels_are_not_stored(cache_dir, argtypes_as_given):
    k = fake_kernel(b"CUBIN")
    k.cooperative = True
    kc.DiskKernels("m", "k_a").save_overload(SIG, k)
    assert not list(cache_dir.rglob("*.obj"))


@pytest.mark.parametrize("damage", ["checksum", "structure", "rebuild"])
def test_a_damaged_entry_is_a_miss_with_a_warning(cache_dir, argtypes_as_given, monkeypatch,
                                                  damage):
    disk = kc.DiskKernels("module-key", "k_a")
    disk.save_overload(SIG, fake_kernel(b"CUBIN" * 10))
    (path,) = cache_dir.rglob("*.obj")
    if damage == "checksum":            # bytes flipped on disk: backends/cache.py's check
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "structure":         # a whole, checksummed entry that is not ours
        cache.store(disk.key(SIG), b"not a cubin entry")
    else:                               # a cubin the driver refuses
        def refuse(entry, argtypes):
            raise RuntimeError("CUDA_ERROR_INVALID_IMAGE")
        monkeypatch.setattr(kc, "rebuild_kernel", refuse)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert disk.load_overload(SIG, None) is None
    assert any("corrupt" in str(w.message) or "recompiling" in str(w.message) for w in caught)


def test_simulator_modules_get_no_disk_layer(cache_dir):
    """Under the simulator the per-process layer works and nothing is written to disk."""
    if not _simulating():
        pytest.skip("a real GPU: the disk layer is in use")
    nnjit.jit(affine, backend="cuda")(*args())
    assert not list(cache_dir.rglob("*.obj"))


def _simulating() -> bool:
    from nnjit.backends.cuda import simulating

    return simulating()


REBUILD = """
from numba.cuda import types
from nnjit.backends.cuda import kernel_cache as kc
entry = kc.decode_entry(kc.encode_entry("_Z3k_a", (9, 0, "a"), b"CUBIN"))
k = kc.unbound_kernel(entry, (types.float32[::1], types.int64[::1]))
assert [str(t) for t in k.argument_types] == ["array(float32, 1d, C)", "array(int64, 1d, C)"]
assert k.entry_name == "_Z3k_a" and not k.cooperative
assert k._codelibrary.get_cubin((9, 0, "a")) == b"CUBIN"
print("ok")
"""


def test_a_cubin_entry_rebuilds_numba_cudas_kernel_object():
    """numba-cuda's real classes (outside the simulator, no device needed until it is bound)
    accept what `unbound_kernel` gives them: the API this version of numba-cuda has."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["PYTHONPATH"] = os.path.join(root, "src")
    r = subprocess.run([sys.executable, "-c", REBUILD], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr
