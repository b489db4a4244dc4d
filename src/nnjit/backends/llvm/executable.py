"""The LLVM backend's executable: a JIT-loaded program with its arena, called with one native call.

    >>> exe = compile_program(program, inputs=[ArgSpec("x", (4, 3), np.float32)], ...)
    >>> [y] = exe([x])                      # validates x, allocates y, one ctypes call
    >>> print(exe.llvm_ir(optimized=True))  # also: kernel_ir(), asm(), export("model.so")
"""
from __future__ import annotations

import ctypes
import dataclasses
import json
import math
import os
import struct
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import llvmlite
import numpy as np

from ...ir import CompileError, DType, IndexOutOfRange
from ...ir.kernel import BufKind, HostKernel, Program
from .. import cache
from ..buffers import OUTPUTS, huge_mapping
from ..collective import HostSteps
from ..signature import ArgSpec
from . import gemm, target
from .render import Rendered, render

#: Arenas at least this large are mmap-ed (2 MiB aligned) and advised onto transparent huge
#: pages. An executable allocates its arena once and reuses it for every call.
HUGE_ARENA_BYTES = 4 << 20

#: LLVM compilations of models done in this process (a test hook: cache hits do not count;
#: the GEMM runtime's are `gemm.compile_stats`).
compile_stats = {"model": 0}


def debug_bounds() -> bool:
    return os.environ.get("NNJIT_DEBUG_BOUNDS", "").strip() not in ("", "0")


def _nnjit_version() -> str:
    import nnjit  # noqa: PLC0415  (the package is fully imported by the time anything compiles)

    return nnjit.__version__


def object_for(text: str) -> bytes:
    """Object code for LLVM IR `text`, from the disk cache or compiled (and then cached)."""
    key = cache.cache_key("model", text, target.target_id(), target.pipeline_id(),
                          _nnjit_version(), llvmlite.__version__)
    obj = cache.load(key)
    if obj is None:
        t0 = time.perf_counter()
        obj, _ = target.compile_object(text)
        compile_stats["model"] += 1
        if target.debug_level() >= 1:
            print(f"nnjit: llvm compile {time.perf_counter() - t0:.3f}s", file=sys.stderr)
        cache.store(key, obj)
    return obj


def compile_program(program: Program, inputs: Sequence[ArgSpec] | None = None,
                    outputs: Sequence[ArgSpec] | None = None,
                    nthreads: int | None = None, profile: bool = False,
                    warm_key: str | None = None) -> "LLVMExecutable":
    """Render, compile (or fetch from the cache) and load `program`. Without `inputs`/`outputs`
    every argument is the flat buffer (shape `(size,)`). `profile`: the instrumented build
    that `timed` runs (timestamps at kernel boundaries). `warm_key`: also store the object
    with its `Layout` under this key, for `load_warm` (see `runtime.compiled.warm_key`)."""
    bounds = debug_bounds()
    rendered = render(program, nthreads, bounds=bounds, profile=profile)
    if target.debug_level() >= 2:
        print(f"--- nnjit kernel IR ---\n{program}\n--- nnjit LLVM IR ---\n{rendered.text}",
              file=sys.stderr)
    gemm.ensure_runtime_loaded(rendered.gemm_dtypes)
    obj = object_for(rendered.text)
    library = target.load_object(obj)
    flat = lambda names: [ArgSpec(n, (program.buffer(n).size,),  # noqa: E731
                                  program.buffer(n).dtype.np) for n in names]
    inputs = list(inputs) if inputs is not None else flat(program.inputs)
    outputs = list(outputs) if outputs is not None else flat(program.outputs)
    layout = Layout.of(program, rendered, bounds)
    # NOTE: programs with host steps (collectives) need their Program to run: not stored.
    if warm_key is not None and not profile and layout.host_offset is None:
        cache.store(warm_key, layout.pack(obj))
    return LLVMExecutable(layout, library, inputs, outputs, program=program, rendered=rendered)


def load_warm(warm_key: str, inputs: Sequence[ArgSpec], outputs: Sequence[ArgSpec],
              rebuild: Callable[[], Program]) -> "LLVMExecutable | None":
    """The executable stored under `warm_key` by `compile_program`, loaded without its Program
    or LLVM text (`rebuild` makes the Program when inspection or an error message needs it),
    or None: no entry, or one that does not fit this signature."""
    payload = cache.load(warm_key)
    if payload is None:
        return None
    try:
        layout, obj = Layout.unpack(payload)
    except ValueError as e:
        warnings.warn(f"nnjit: warm-start cache entry {warm_key[:16]}... is unreadable ({e}); "
                      "recompiling", RuntimeWarning, stacklevel=2)
        return None
    if layout.nargs != len(inputs) + len(outputs) or layout.host_offset is not None:
        return None
    gemm.ensure_runtime_loaded(layout.gemm_dtypes)
    return LLVMExecutable(layout, target.load_object(obj), list(inputs), list(outputs),
                          rebuild=rebuild)


@dataclass(frozen=True)
class Layout:
    """What running a compiled program needs besides its machine code. Stored beside the object
    under a warm-start key, so a warm start needs neither the Program nor its LLVM text."""

    name: str                           # the program's
    entry: str                          # the exported symbol
    nargs: int                          # inputs + outputs
    arena_bytes: int
    status_offset: int | None
    profile_offset: int | None
    host_offset: int | None
    kernels: int                        # top-level kernels (profile builds: one stamp each)
    donated: tuple[tuple[int, int], ...]  # (output index, input index) computed in place
    extras: tuple[tuple[str, int], ...]   # what the arena holds besides the temporaries
    gemm_dtypes: tuple[str, ...]
    nthreads: int
    bounds: bool                        # rendered with NNJIT_DEBUG_BOUNDS traps

    @staticmethod
    def of(program: Program, rendered: Rendered, bounds: bool) -> "Layout":
        donated = tuple((program.outputs.index(b.name), program.inputs.index(b.base))
                        for b in program.buffers if b.kind == BufKind.OUTPUT and b.base)
        extras = (("status word (run-time index checks)", rendered.status_bytes),
                  (f"GEMM packing workspace ({rendered.nthreads} thread(s))",
                   rendered.workspace_bytes),
                  ("alignment", rendered.temp_bytes - program.arena_bytes))
        return Layout(program.name, rendered.entry, len(program.inputs) + len(program.outputs),
                      rendered.arena_bytes, rendered.status_offset, rendered.profile_offset,
                      rendered.host_offset, len(program.kernels), donated, extras,
                      tuple(rendered.gemm_dtypes), rendered.nthreads, bounds)

    _HEAD = struct.Struct("<Q")   # the JSON's length, then the JSON, then the object file

    def pack(self, obj: bytes) -> bytes:
        text = json.dumps(dataclasses.asdict(self), sort_keys=True).encode()
        return self._HEAD.pack(len(text)) + text + obj

    @staticmethod
    def unpack(payload: bytes) -> tuple["Layout", bytes]:
        """(layout, object bytes); ValueError for anything malformed."""
        head = Layout._HEAD
        if len(payload) < head.size:
            raise ValueError("too short")
        (n,) = head.unpack_from(payload)
        try:
            fields = json.loads(payload[head.size:head.size + n])
            layout = Layout(**{**fields,
                               "donated": tuple(tuple(p) for p in fields["donated"]),
                               "extras": tuple(tuple(e) for e in fields["extras"]),
                               "gemm_dtypes": tuple(fields["gemm_dtypes"])})
        except (TypeError, KeyError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"bad layout: {e}") from None
        obj = payload[head.size + n:]
        if not obj:
            raise ValueError("no object code")
        return layout, obj


class LLVMExecutable:
    """A compiled program. Calls are serialized (the arena is shared by all calls). Loaded from
    a warm-start entry it has no `program`/`rendered` until asked: `rebuild` makes the Program
    again (the same passes on the same graph), and it is rendered again from that."""

    def __init__(self, layout: Layout, library: target.JitLibrary,
                 inputs: list[ArgSpec], outputs: list[ArgSpec], program: Program | None = None,
                 rendered: Rendered | None = None,
                 rebuild: Callable[[], Program] | None = None):
        if program is None and rebuild is None:
            raise ValueError("LLVMExecutable needs its program or a way to rebuild it")
        self.layout = layout
        self._program, self._rendered, self._rebuild = program, rendered, rebuild
        self.extras = layout.extras
        self.library = library
        self.inputs = inputs
        self.outputs = outputs
        if program is not None:
            _check_specs(program, inputs, outputs)
        self.donated = [tuple(p) for p in layout.donated]
        into = dict(self.donated)
        # (donated input or None, shape, dtype, bytes): small fresh results skip the pool
        self._results = [(into.get(j), s.shape, np.dtype(s.dtype),
                          math.prod(s.shape) * np.dtype(s.dtype).itemsize)
                         for j, s in enumerate(outputs)]
        nargs = len(inputs) + len(outputs) + 1
        self._entry = library.function(layout.entry, None, *[ctypes.c_void_p] * nargs)
        self._arena, self._arena_keep = _alloc_arena(layout.arena_bytes, layout.name)
        self._arena_ptr = self._arena.ctypes.data
        at = layout.status_offset
        self._status = None if at is None else self._arena[at:at + 16].view(np.int64)
        at = layout.profile_offset
        self._stamps = None if at is None else \
            self._arena[at:at + 8 * (layout.kernels + 1)].view(np.int64)
        self._instrumented: LLVMExecutable | None = None
        self._lock = threading.Lock()
        self._host = _HostCallback(self.program if layout.host_offset is not None else None,
                                   self._arena, layout.host_offset)

    @property
    def program(self) -> Program:
        if self._program is None:
            program = self._rebuild()
            _check_specs(program, self.inputs, self.outputs)
            self._program = program
        return self._program

    @property
    def rendered(self) -> Rendered:
        if self._rendered is None:
            rendered = render(self.program, self.layout.nthreads, bounds=self.layout.bounds)
            if Layout.of(self.program, rendered, self.layout.bounds) != self.layout:
                raise CompileError(f"@{self.layout.name}: the program rebuilt for inspection "
                                   "differs from the cached one it should reproduce (a "
                                   "nondeterministic pass?); clear the nnjit cache")
            self._rendered = rendered
        return self._rendered

    @property
    def name(self) -> str:
        return self.layout.name

    def __call__(self, args: Sequence[np.ndarray],
                 outs: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
        """Run on `args` (C-contiguous, aligned arrays of the signature: the runtime checks);
        results go to fresh arrays, or to `outs` (writable, not overlapping any argument).
        Large fresh results come from `buffers.OUTPUTS`: memory of earlier results that the
        caller has dropped, so they do not pay page faults again."""
        if outs is None:
            # A donated input is consumed: its result is written into it and it is returned
            # (itself, or a view with the result's own shape: the planner only donates equal
            # byte sizes of one dtype); the other results get fresh arrays.
            outs = [(np.empty(shape, dt) if nbytes < OUTPUTS.min_bytes else
                     OUTPUTS.empty(shape, dt)) if i is None else
                    args[i] if args[i].shape == shape else args[i].reshape(shape)
                    for i, shape, dt, nbytes in self._results]
        ptrs = [_address(a) for a in args] + [_address(o) for o in outs]
        with self._lock:
            if self._host.steps is None:
                self._entry(*ptrs, self._arena_ptr)
            else:
                self._host.call(self._entry, *ptrs, self._arena_ptr)
            if self._status is not None and self._status[0]:
                site, value = (int(v) for v in self._status)
                raise IndexOutOfRange(self.program.sites[site - 1].message(value))
        return outs

    def timed(self, args: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[float]]:
        """Run the instrumented build of this program (compiled on first use; this build has no
        timing code) and return the results and each top-level kernel's seconds."""
        if self._instrumented is None:
            self._instrumented = compile_program(self.program, self.inputs, self.outputs,
                                                 self.layout.nthreads, profile=True)
        exe = self._instrumented
        outs = exe([np.array(a) if i in {i for _, i in self.donated} else a
                    for i, a in enumerate(args)])
        return outs, [float(d) * 1e-9 for d in np.diff(exe._stamps)]

    # -- inspection ----------------------------------------------------------------------------
    def inspect(self) -> dict:
        return {"kernel_ir": self.kernel_ir, "llvm_ir": self.llvm_ir,
                "llvm_ir_optimized": lambda: self.llvm_ir(optimized=True), "asm": self.asm}

    def kernel_ir(self) -> str:
        """The kernel-IR program this executable was rendered from."""
        return str(self.program)

    def llvm_ir(self, optimized: bool = False) -> str:
        """The module's LLVM IR, as rendered or after the optimization pipeline."""
        if not optimized:
            return self.rendered.text
        return str(target.optimize(target.prepare_module(self.rendered.text)))

    def asm(self) -> str:
        """Host assembly of the module."""
        return target.emit_assembly(self.rendered.text)

    @property
    def arena_bytes(self) -> int:
        return self.layout.arena_bytes

    def export(self, path: str | os.PathLike) -> list[str]:
        """Write `path` (.o object or .so shared library) and `<stem>.h`; see `aot.export`."""
        from . import aot  # noqa: PLC0415

        return aot.export(self, path)


def _check_specs(program: Program, inputs: list[ArgSpec], outputs: list[ArgSpec]) -> None:
    for specs, names in ((inputs, program.inputs), (outputs, program.outputs)):
        for spec, name in zip(specs, names, strict=True):
            buf = program.buffer(name)
            # NOTE: the lowering gives empty tensors one-element buffers.
            if max(spec.size, 1) != max(buf.size, 1) or \
                    DType.from_numpy(spec.dtype) != buf.dtype:
                raise ValueError(f"argument {spec.name} ({spec}) does not match buffer {buf}")


def _address(a: np.ndarray) -> int:
    """The data pointer of `a`: through its buffer (a third of `a.ctypes.data`'s cost, which
    builds a ctypes object per call), or `a.ctypes.data` for read-only and empty arrays."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(a))
    except (TypeError, ValueError):
        return a.ctypes.data


#: The host callback's C type: int32 host(int64 step, void **buffers); nonzero: it failed.
HOST_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_int64, ctypes.POINTER(ctypes.c_void_p))


class _HostCallback:
    """The Python side of a program's host steps (collectives): native code calls back into
    `HostSteps` between kernels through a pointer stored in the arena. An exception there is
    kept, the native entry returns, and `call` raises it."""

    def __init__(self, program: Program | None, arena: np.ndarray, offset: int | None):
        hosts = [k for k in program.kernels if isinstance(k, HostKernel)] if program else []
        self.steps = None
        if not hosts:
            return
        bufs = {b.name: b for b in program.buffers}
        self.steps = HostSteps(program.name, hosts,
                               {n: bufs[n].dtype.value for k in hosts for n in k.srcs + k.dsts})
        self.views = [[(bufs[n].dtype.np, shape) for n, shape in zip(k.srcs + k.dsts, k.shapes)]
                      for k in hosts]
        self.errors: list[BaseException] = []
        self.fn = HOST_CALLBACK(self._step)    # NOTE: kept alive as long as the executable
        arena[offset:offset + 8].view(np.uint64)[0] = ctypes.cast(self.fn, ctypes.c_void_p).value

    def _step(self, index: int, ptrs) -> int:
        try:
            arrays = []
            for j, (dtype, shape) in enumerate(self.views[index]):
                count = int(np.prod(shape, dtype=np.int64))
                raw = (ctypes.c_char * (count * dtype.itemsize)).from_address(ptrs[j])
                arrays.append(np.frombuffer(raw, dtype, count).reshape(shape))
            self.steps.run(index, arrays)
            return 0
        except BaseException as e:   # noqa: BLE001  (raised again by `call`, after the entry)
            self.errors.append(e)
            return 1

    def call(self, entry, *args) -> None:
        self.steps.begin()
        entry(*args)
        if self.errors or self.steps.pending:
            self.steps.drain()
        if self.errors:
            err, self.errors = self.errors[0], []
            raise err


def _alloc_arena(nbytes: int, name: str) -> tuple[np.ndarray, object]:
    """A 64-byte aligned uint8 buffer (if large, a 2 MiB aligned mapping with MADV_HUGEPAGE);
    returns it and the object owning the memory. MemoryError names program `name` and the size
    if the machine cannot give that much (mmap: OSError/OverflowError; numpy: MemoryError or
    ValueError)."""
    try:
        return _map_arena(nbytes)
    except (MemoryError, OSError, OverflowError, ValueError) as e:
        size = f"{nbytes / 2**40:.1f} TiB" if nbytes >= 2**40 else f"{nbytes / 2**30:.1f} GiB"
        raise MemoryError(f"@{name}: cannot allocate its arena of {nbytes} bytes ({size}) for "
                          f"intermediate values: {e}") from e


def _map_arena(nbytes: int) -> tuple[np.ndarray, object]:
    if nbytes >= HUGE_ARENA_BYTES:
        mm, offset = huge_mapping(nbytes)
        return np.frombuffer(mm, np.uint8, count=nbytes, offset=offset), mm
    raw = np.empty(max(nbytes, 1) + 64, np.uint8)
    off = (-raw.ctypes.data) % 64
    return raw[off:off + nbytes], raw
