"""Compiled CUDA kernels, kept per process and on disk, so a program is compiled by Numba once.

Per process: the loaded module of a rendered source (its `@cuda.jit` dispatchers, each holding
the kernels Numba compiled for it) is kept under `module_key(source)`: the sha256 of the source,
the numba and numba-cuda versions and the device (its compute capability, or "sim"). A second
executable of the same program reuses those dispatchers, so Numba compiles nothing again. This
layer works the same under the simulator, where "compiling" is executing the source.

On disk (a real GPU only): each kernel's cubin, under `kernel_key(module key, function, argument
types)`, in `backends/cache.py`'s atomic, checksummed entries (the LLVM backend's cache:
NNJIT_CACHE_DIR, NNJIT_CACHE=0). The payload is ours, not a pickle: `encode_entry` writes a magic
line, a JSON header (entry symbol, compute capability) and the cubin. Numba's dispatcher asks its
`_cache` for an overload before compiling and hands it every kernel it compiles;
`DiskKernels` is that object, and rebuilds a kernel from a cubin the way numba-cuda's own cache
does (`CUDACodeLibrary._rebuild`, `_Kernel._rebuild`). Under the simulator there is no PTX or
cubin (kernels run as Python), so `attach_disk_cache` does nothing there.

NNJIT_CACHE=0 turns both layers off (every executable execs its source, every kernel compiles).

    >>> a = module_for(source, "f", load_module, simulator=False)   # exec'd, Numba compiles
    >>> b = module_for(source, "f", load_module, simulator=False)   # the same dispatchers
    >>> a is b, stats["modules"], stats["module_hits"]
    (True, 1, 1)
"""
from __future__ import annotations

import json
import struct
import threading
import warnings
from collections import OrderedDict
from typing import Callable

from .. import cache

#: Counters for tests and benchmarks: sources exec'd ("modules") and reused ("module_hits");
#: kernels Numba compiled ("kernel_compiles") and loaded from disk ("disk_hits"); entries that
#: decoded to nothing usable ("bad_entries").
stats = {"modules": 0, "module_hits": 0, "kernel_compiles": 0, "disk_hits": 0,
         "bad_entries": 0}

#: Loaded modules kept per process (least recently used dropped first): each holds its
#: kernels' device code.
MAX_MODULES = 256

ENTRY_MAGIC = b"NNJITCUBIN\n"
ENTRY_VERSION = 1
_LEN = struct.Struct("<I")

_lock = threading.Lock()
_modules: OrderedDict[str, dict] = OrderedDict()


# -- keys -----------------------------------------------------------------------------------------
def toolchain() -> str:
    """The compiler versions a cached kernel depends on."""
    import numba  # noqa: PLC0415
    import numba_cuda  # noqa: PLC0415

    return f"numba {numba.__version__}; numba-cuda {numba_cuda.__version__}"


def device_id(simulator: bool) -> str:
    """What compiled code depends on about the device: "sim", or its compute capability."""
    if simulator:
        return "sim"
    from numba import cuda  # noqa: PLC0415

    major, minor = cuda.get_current_device().compute_capability
    return f"sm_{major}{minor}"


def module_key(source: str, device: str, tools: str | None = None) -> str:
    return cache.cache_key("cuda-module", source, tools or toolchain(), device)


def kernel_key(module: str, function: str, argtypes: tuple) -> str:
    """The disk key of one kernel: its module's key, its Python name, its Numba argument types."""
    return cache.cache_key("cuda-kernel", module, function, ", ".join(map(str, argtypes)))


# -- the per-process layer ----------------------------------------------------------------------
def module_for(source: str, name: str, load: Callable[[str, str], dict], simulator: bool) -> dict:
    """The namespace of `source` loaded by `load(source, name)`, shared by every executable of
    the same source in this process (unless NNJIT_CACHE=0); on a GPU its dispatchers get the
    disk layer."""
    if not cache.enabled():
        with _lock:
            stats["modules"] += 1
        return load(source, name)
    key = module_key(source, device_id(simulator))
    with _lock:
        ns = _modules.get(key)
        if ns is not None:
            _modules.move_to_end(key)
            stats["module_hits"] += 1
            return ns
    ns = load(source, name)
    if not simulator:
        attach_disk_cache(ns, key)
    with _lock:
        # Two threads may have loaded the same source at once: keep the first.
        ns = _modules.setdefault(key, ns)
        _modules.move_to_end(key)
        stats["modules"] += 1
        while len(_modules) > MAX_MODULES:
            _modules.popitem(last=False)
    return ns


def clear() -> None:
    """Forget the modules kept in this process (tests; the disk entries stay)."""
    with _lock:
        _modules.clear()


# -- the disk layer -----------------------------------------------------------------------------
def encode_entry(entry_name: str, cc: tuple, cubin: bytes) -> bytes:
    """One kernel's disk payload: magic, JSON header length and header, then the cubin."""
    header = json.dumps({"version": ENTRY_VERSION, "entry_name": entry_name,
                         "cc": [int(cc[0]), int(cc[1]), str(cc[2]) if len(cc) > 2 else ""],
                         "cubin_bytes": len(cubin)}, sort_keys=True).encode()
    return ENTRY_MAGIC + _LEN.pack(len(header)) + header + bytes(cubin)


def decode_entry(payload: bytes) -> tuple[str, tuple, bytes] | None:
    """(entry symbol, compute capability, cubin) from `encode_entry`'s bytes, or None when they
    are not a whole entry of this version."""
    head = len(ENTRY_MAGIC) + _LEN.size
    if len(payload) < head or not payload.startswith(ENTRY_MAGIC):
        return None
    (n,) = _LEN.unpack_from(payload, len(ENTRY_MAGIC))
    try:
        meta = json.loads(payload[head: head + n].decode())
    except (UnicodeDecodeError, ValueError):
        return None
    cubin = payload[head + n:]
    if not isinstance(meta, dict) or meta.get("version") != ENTRY_VERSION:
        return None
    name, cc = meta.get("entry_name"), meta.get("cc")
    if not (isinstance(name, str) and name and isinstance(cc, list) and len(cc) == 3
            and isinstance(cc[0], int) and isinstance(cc[1], int) and isinstance(cc[2], str)
            and meta.get("cubin_bytes") == len(cubin) and cubin):
        return None
    return name, (cc[0], cc[1], cc[2]), cubin


class DiskKernels:
    """A Numba dispatcher's `_cache` (numba-cuda's `Cache` interface): `load_overload` returns
    the kernel rebuilt from its cubin on disk or None (Numba then compiles it and calls
    `save_overload`, which stores the cubin). Any trouble is a warning and a compile."""

    def __init__(self, module: str, function: str):
        self.module, self.function = module, function

    cache_path = None

    def key(self, sig) -> str:
        return kernel_key(self.module, self.function, _argtypes(sig))

    def load_overload(self, sig, target_context):
        payload = cache.load(self.key(sig))
        if payload is None:
            return None
        entry = decode_entry(payload)
        if entry is None:
            _count("bad_entries")
            warnings.warn(f"nnjit: the cached CUDA kernel {self.function} is not a valid entry; "
                          f"recompiling", RuntimeWarning, stacklevel=2)
            return None
        try:
            kernel = rebuild_kernel(entry, _argtypes(sig))
        except Exception as e:  # noqa: BLE001 (a stale or foreign cubin: compile instead)
            _count("bad_entries")
            warnings.warn(f"nnjit: cannot load the cached CUDA kernel {self.function} ({e}); "
                          f"recompiling", RuntimeWarning, stacklevel=2)
            return None
        _count("disk_hits")
        return kernel

    def save_overload(self, sig, kernel) -> None:
        _count("kernel_compiles")
        if not cache.enabled():
            return
        try:
            entry = kernel_entry(kernel)
        except Exception as e:  # noqa: BLE001 (the cache is an optimization)
            warnings.warn(f"nnjit: cannot cache the CUDA kernel {self.function}: {e}",
                          RuntimeWarning, stacklevel=2)
            return
        if entry is not None:
            cache.store(self.key(sig), encode_entry(*entry))

    def enable(self) -> None:
        pass

    def disable(self) -> None:
        pass

    def flush(self) -> None:
        pass


def attach_disk_cache(ns: dict, module: str) -> None:
    """Give every kernel dispatcher of a loaded module (not the simulator's) a `DiskKernels`."""
    try:
        from numba.cuda.dispatcher import CUDADispatcher  # noqa: PLC0415
    except ImportError:
        return
    for name, obj in ns.items():
        if isinstance(obj, CUDADispatcher) and not obj.targetoptions.get("device"):
            obj._cache = DiskKernels(module, name)


def kernel_entry(kernel) -> tuple[str, tuple, bytes] | None:
    """(entry symbol, compute capability, cubin) of a compiled numba-cuda `_Kernel`, or None if
    it cannot be rebuilt from its cubin alone (cooperative, linked files, captured objects)."""
    lib = kernel._codelibrary
    if (kernel.cooperative or lib._linking_files or lib.referenced_objects
            or getattr(kernel, "launch_config_sensitive", False)):
        return None
    cc = lib._ensure_cc(None)
    return lib._entry_name, tuple(cc), lib.get_cubin(cc)


def rebuild_kernel(entry: tuple[str, tuple, bytes], argtypes: tuple):
    """A launchable numba-cuda `_Kernel` from a cubin, bound to the current context (what
    numba-cuda's own cache does with its pickled states, without the pickle)."""
    kernel = unbound_kernel(entry, argtypes)
    current = tuple(kernel._codelibrary._ensure_cc(None))
    if current != tuple(entry[1]):
        raise ValueError(f"it was built for {entry[1]}, this device is {current}")
    kernel.bind()
    return kernel


def unbound_kernel(entry: tuple[str, tuple, bytes], argtypes: tuple):
    """The `_Kernel` of a cubin before it is loaded (needs numba-cuda, not a device)."""
    from numba.cuda import types  # noqa: PLC0415
    from numba.cuda.codegen import CUDACodeLibrary  # noqa: PLC0415
    from numba.cuda.dispatcher import _Kernel  # noqa: PLC0415
    from numba.cuda.typing import signature  # noqa: PLC0415

    name, cc, cubin = entry
    lib = CUDACodeLibrary._rebuild(
        codegen=None, name=name, entry_name=name, llvm_strs=[], ptx_cache={},
        cubin_cache={cc: cubin}, linkerinfo_cache={cc: ""}, max_registers=None,
        nvvm_options={}, needs_cudadevrt=False, nrt=False, use_cooperative=False, lto=False)
    return _Kernel._rebuild(cooperative=False, name=name,
                            signature=signature(types.void, *argtypes), codelibrary=lib,
                            debug=False, lineinfo=False, call_helper=None, extensions=[])


def _argtypes(sig) -> tuple:
    from numba.cuda.core import sigutils  # noqa: PLC0415

    return tuple(sigutils.normalize_signature(sig)[0])


def _count(name: str) -> None:
    with _lock:
        stats[name] += 1


__all__ = ["DiskKernels", "decode_entry", "encode_entry", "kernel_key", "module_for",
           "module_key", "stats"]
