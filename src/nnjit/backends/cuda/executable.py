"""The CUDA backend's executable: the rendered kernels loaded into a module (shared by every
executable of the same source, see `kernel_cache`), one device arena per executable, and the
host loop that launches the GPU-form program's kernels in order: a scan looped on the device
is one launch, any other scan launches its body's kernels step by step.

    >>> exe = CudaExecutable(rendered, inputs=[ArgSpec("x", (4, 3), np.float32)], ...)
    >>> [y] = exe([x])              # numpy in -> staged through the arena, numpy out
    >>> [y] = exe([cuda.to_device(x)])   # device arrays in -> used in place, device arrays out
    >>> print(exe.cuda_source())    # also: kernel_ir(), gpu_ir(), memory_plan(), launches()

Arena layout (one `cuda.device_array` of bytes): the program's TEMP region, then every CONST
buffer (uploaded once, scan bodies' included), then one staging slot per input and per output
for calls made with numpy arrays.
"""
from __future__ import annotations

import contextlib
import linecache
import sys
import threading
import time
from typing import Sequence

import numpy as np

from ...ir import DType, IndexOutOfRange
from ...ir.kernel import STATUS_BYTES, BufKind, GpuKernel, Program, ScanKernel
from ..signature import ArgSpec
from . import kernel_cache
from .render import Rendered, function_name
from .scan import scan_params
from .scan import shared_bytes as scan_shared_bytes

ALIGN = 256
# The simulator runs one kernel at a time in the whole process.
_SIM_LOCK = threading.Lock()
_module_count = [0]


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _alloc_arena(cuda, nbytes: int, name: str):
    """The device arena of program `name`: `nbytes` of uint8. MemoryError naming the program and
    the size if the GPU (or, under the simulator, the host) cannot give that much."""
    from numba.cuda.cudadrv.driver import CudaAPIError  # the simulator's, under the simulator

    try:
        return cuda.device_array(nbytes, np.uint8)
    except CudaAPIError as e:
        if getattr(e, "code", None) != 2:        # CUDA_ERROR_OUT_OF_MEMORY
            raise
        why: Exception = e
    except (MemoryError, OverflowError, ValueError) as e:   # the simulator's numpy allocation
        why = e
    size = f"{nbytes / 2**40:.1f} TiB" if nbytes >= 2**40 else f"{nbytes / 2**30:.1f} GiB"
    raise MemoryError(f"@{name}: cannot allocate its device arena of {nbytes} bytes ({size}) for "
                      f"intermediates, constants and staging: {why}") from why


def is_device_array(x) -> bool:
    """A Numba device array (real or simulated) or any object with the CUDA array interface."""
    return bool(getattr(x, "__cuda_ndarray__", False)) or hasattr(x, "__cuda_array_interface__")


def load_module(source: str, name: str) -> dict:
    """Execute our generated source (see `render`'s NOTE) in a fresh namespace; its lines are
    registered with linecache so tracebacks (and the simulator) show them."""
    _module_count[0] += 1
    filename = f"<nnjit-cuda-{_module_count[0]}-{name}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    ns: dict = {"__name__": f"nnjit_cuda_{_module_count[0]}"}
    exec(compile(source, filename, "exec"), ns)  # noqa: S102  (text built from our IR only)
    return ns


class CudaExecutable:
    """A rendered program with its device arena. Calls are serialized (the arena is shared)."""

    def __init__(self, program: Program, rendered: Rendered, inputs: list[ArgSpec],
                 outputs: list[ArgSpec], simulator: bool = False):
        from numba import cuda

        self.cuda = cuda
        self.program = program
        self.rendered = rendered
        self.inputs = inputs
        self.outputs = outputs
        self.simulator = simulator
        self.ns = kernel_cache.module_for(rendered.source, program.name, load_module, simulator)
        self._lock = _SIM_LOCK if simulator else threading.Lock()
        self._consts: list = []
        _collect_consts(rendered.program, self._consts)
        at = _align(program.arena_bytes)
        self._const_at = {}
        for b in self._consts:
            self._const_at[id(b)] = at
            at += _align(b.nbytes)
        self._stage_at = {}
        for name in program.inputs + program.outputs:
            self._stage_at[name] = at
            at += _align(program.buffer(name).nbytes)
        self._status_at = at if program.sites else None
        at += STATUS_BYTES if program.sites else 0
        self.arena_bytes = max(at, 1)
        const_bytes = sum(_align(b.nbytes) for b in self._consts)
        stage = sum(_align(program.buffer(n).nbytes) for n in program.inputs + program.outputs)
        status = STATUS_BYTES if program.sites else 0
        # What the arena holds besides the planned temporaries (the memory plan lists them).
        self.extras = (("constants (uploaded once)", const_bytes),
                       ("staging slots for numpy arguments and results", stage),
                       ("status word (run-time index checks)", status),
                       ("alignment", self.arena_bytes - program.arena_bytes - const_bytes
                        - stage - status))
        # Outputs written over a donated input's device array: (output index, input index).
        self.donated = [(program.outputs.index(b.name), program.inputs.index(b.base))
                        for b in program.buffers if b.kind == BufKind.OUTPUT and b.base]
        self.arena = _alloc_arena(cuda, self.arena_bytes, program.name)
        for b in self._consts:
            off = self._const_at[id(b)]
            value = np.ascontiguousarray(b.value, b.dtype.np).reshape(-1)[:b.size]
            if value.size:
                view = self.arena[off: off + value.nbytes].view(b.dtype.np)
                view.copy_to_device(value)
        self._static = self._frame(rendered.program,
                                   self.arena[:_align(program.arena_bytes) or 1])
        self._scan_frames: dict[int, dict] = {}
        self._timings: list | None = None
        self.launch_count = 0               # kernel launches made so far (all calls)
        self._staged: set[int] = set()      # ids of this call's staging views

    # -- buffers -------------------------------------------------------------------------------
    def _frame(self, p: Program, arena) -> dict:
        """Device views of the buffers of `p` that do not depend on the call."""
        env = {}
        for b in p.buffers:
            if b.kind == BufKind.TEMP:
                env[b.name] = arena[b.offset: b.offset + b.nbytes].view(b.dtype.np)
            elif b.kind == BufKind.CONST:
                off = self._const_at[id(b)]
                env[b.name] = self.arena[off: off + b.nbytes].view(b.dtype.np)
            elif b.kind == BufKind.STATUS:
                env[b.name] = self._status_view()
        _aliases(p, env)
        return env

    def _status_view(self):
        return self.arena[self._status_at: self._status_at + 16].view(np.int64)

    # -- calling -------------------------------------------------------------------------------
    def __call__(self, args: Sequence, outs=None) -> list:
        """Run on `args` (numpy or device arrays, checked against the signature). Results are
        device arrays if any argument was one, else numpy arrays; with `outs` (numpy arrays)
        they are copied into those."""
        results = self._call(args)
        if outs is None:
            return results
        for o, r in zip(outs, results):
            np.copyto(o, r if isinstance(r, np.ndarray) else r.copy_to_host())
        return list(outs)

    def timed(self, args: Sequence) -> tuple[list, list[float]]:
        """The results and each top-level launch's seconds (synchronized after each: for a
        profile, not for speed)."""
        self._timings = []
        try:
            outs = self._call([a.copy() if isinstance(a, np.ndarray) else a for a in args])
            return outs, self._timings
        finally:
            self._timings = None

    def _call(self, args: Sequence) -> list:
        on_device = any(is_device_array(a) for a in args)
        with self._lock, _sim_switching(self.simulator):
            env = dict(self._static)
            self._staged = set()
            for i, (spec, a, name) in enumerate(zip(self.inputs, args, self.program.inputs)):
                env[name] = self._input(i, spec, a, name)
            for spec, name in zip(self.outputs, self.program.outputs):
                buf = self.program.buffer(name)
                if buf.base is not None:          # written into a donated input's array
                    env[name] = env[buf.base]
                elif on_device and spec.size:
                    env[name] = self.cuda.device_array(buf.size, buf.dtype.np)
                else:
                    env[name] = self._staging(name)
            _aliases(self.program, env)
            if self._status_at is not None:
                self._status_view().copy_to_device(np.zeros(2, np.int64))
            self._run(self.rendered.program, env, self._timings)
            if self._status_at is not None:
                site, value = (int(v) for v in self._status_view().copy_to_host())
                if site:
                    raise IndexOutOfRange(self.program.sites[site - 1].message(value))
            return [self._result(spec, env[name], on_device)
                    for spec, name in zip(self.outputs, self.program.outputs)]

    def _staging(self, name: str):
        buf = self.program.buffer(name)
        off = self._stage_at[name]
        view = self.arena[off: off + buf.nbytes].view(buf.dtype.np)
        self._staged.add(id(view))
        return view

    def _input(self, i: int, spec: ArgSpec, a, name: str):
        """Argument `a` (checked by the runtime: the right type, C-contiguous) in device memory:
        a device array as it is, a numpy array copied into its staging slot."""
        if is_device_array(a):
            if not getattr(a, "__cuda_ndarray__", False):
                a = self.cuda.as_cuda_array(a)
            if spec.size == 0:
                return self._staging(name)
            return a.reshape(spec.size)
        stage = self._staging(name)
        if spec.size:
            stage[:spec.size].copy_to_device(a.reshape(-1))
        return stage

    def _result(self, spec: ArgSpec, arr, on_device: bool):
        if on_device:
            if spec.size == 0:
                return self.cuda.device_array(spec.shape, spec.dtype)
            if id(arr) in self._staged:     # the arena's staging slot: the next call reuses it
                fresh = self.cuda.device_array(spec.size, spec.dtype)
                fresh.copy_to_device(arr[:spec.size])
                arr = fresh
            return arr.reshape(spec.shape)
        if spec.size == 0:
            return np.empty(spec.shape, spec.dtype)
        return arr[:spec.size].copy_to_host().reshape(spec.shape)

    # -- the launches ------------------------------------------------------------------------
    def _run(self, p: Program, env: dict, timings: list | None = None) -> None:
        ns = self.ns
        for k in p.kernels:
            t0 = time.perf_counter() if timings is not None else 0.0
            if isinstance(k, GpuKernel):
                args = [env[b] for b in k.params]
                fn = ns[function_name(k)]
                self.launch_count += 1
                if k.shared:
                    fn[k.grid, k.block, 0, k.shared_bytes](*args)
                else:
                    fn[k.grid, k.block](*args)
            elif k.block:
                self._looped_scan(k, env)
            else:
                self._scan(k, env)
            if timings is not None:      # a profile: wait for each launch to finish
                self.cuda.synchronize()
                timings.append(time.perf_counter() - t0)

    def _copy(self, src, dst, n: int) -> None:
        if n:
            self.launch_count += 1
            block = min(256, n)
            self.ns["_copy"][(min(64, -(-n // block)),), (block,)](src, dst, n)

    def _body_frame(self, k: ScanKernel, env: dict) -> dict:
        """The views of scan `k`'s body buffers that are the same at every step."""
        static = self._scan_frames.get(id(k))
        if static is None:
            static = self._scan_frames[id(k)] = self._frame(k.body, env[k.arena_buf].view(
                np.uint8))
        return static

    def _looped_scan(self, k: ScanKernel, env: dict) -> None:
        """The whole scan in one launch of one block (`backends/cuda/scan.py`)."""
        static = self._body_frame(k, env)
        args = [env[n] if role == "outer" else static[n] for role, n in scan_params(k)]
        fn = self.ns[function_name(k)]
        shared = scan_shared_bytes(k)
        self.launch_count += 1
        if shared:
            fn[(1,), (k.block,), 0, shared](*args)
        else:
            fn[(1,), (k.block,)](*args)

    def _scan(self, k: ScanKernel, env: dict) -> None:
        body = k.body
        static = self._body_frame(k, env)
        for src, dst in zip(k.init_bufs, k.carry_bufs):
            self._copy(env[src], env[dst], env[dst].size)
        cur, nxt = [env[c] for c in k.carry_bufs], [env[c] for c in k.next_bufs]
        xs, ys = [env[x] for x in k.xs_bufs], [env[y] for y in k.ys_bufs]
        consts = [env[c] for c in k.const_bufs]
        ins_bufs = [b for b in body.buffers if b.kind == BufKind.INPUT]
        outs_bufs = [b for b in body.buffers if b.kind == BufKind.OUTPUT]
        steps = range(k.length - 1, -1, -1) if k.reverse else range(k.length)
        for t in steps:
            ins = cur + [_step_slice(x, k.length, t) for x in xs] + consts
            outs = nxt + [_step_slice(y, k.length, t) for y in ys]
            sub = dict(static)
            for b in ins_bufs:
                sub[b.name] = _fit(ins[b.index], b)
            for b in outs_bufs:
                sub[b.name] = _fit(outs[b.index], b)
            _aliases(body, sub)
            self._run(body, sub)
            cur, nxt = nxt, cur
        for src, dst in zip(cur, k.final_bufs):
            self._copy(src, env[dst], env[dst].size)

    # -- inspection ----------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.program.name

    def cuda_source(self) -> str:
        """The generated Python source of the Numba CUDA kernels."""
        return self.rendered.source

    def kernel_ir(self) -> str:
        """The kernel-IR program this executable was compiled from."""
        return str(self.program)

    def inspect(self) -> dict:
        return {"kernel_ir": self.kernel_ir, "gpu_ir": self.gpu_ir,
                "cuda_source": self.cuda_source}

    def gpu_ir(self) -> str:
        """The same program in GPU form (launch geometry, thread mapping): what was rendered."""
        return str(self.rendered.program)

    def launches(self) -> list[str]:
        """One line per top-level kernel: a launch's kernel, grid and block; a scan's length
        and how it runs, as one launch that loops over the steps or as a host loop launching
        its body's kernels every step."""
        out = []
        for k in self.rendered.program.kernels:
            if isinstance(k, GpuKernel):
                out.append(f"{function_name(k)}[{k.grid}, {k.block}]")
            elif k.block:
                out.append(f"{function_name(k)}[(1,), ({k.block},)] scan x{k.length} "
                           f"in one launch")
            else:
                out.append(f"scan {k.name} x{k.length}: host loop, {_launches(k.body)} "
                           f"launches a step")
        return out


@contextlib.contextmanager
def _sim_switching(simulator: bool):
    """Under the simulator, switch Python threads often: each simulated kernel's block manager
    busy-polls its GPU threads, and with the default 5 ms interval a launch mostly waits for
    the GIL (about 3x slower)."""
    if not simulator:
        yield
        return
    old = sys.getswitchinterval()
    sys.setswitchinterval(2e-4)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def _launches(p: Program) -> int:
    """Launches one run of `p` makes (a host-looped scan's body run once per step)."""
    return sum(1 if isinstance(k, GpuKernel) or k.block else k.length * _launches(k.body)
               for k in p.kernels)


def _collect_consts(p: Program, out: list) -> None:
    out += [b for b in p.buffers if b.kind == BufKind.CONST]
    for k in p.kernels:
        if isinstance(k, ScanKernel):
            _collect_consts(k.body, out)


def _aliases(p: Program, env: dict) -> None:
    """Add views for ALIAS buffers whose base is in `env` (chains resolved in any order)."""
    pending = [b for b in p.buffers if b.kind == BufKind.ALIAS and b.name not in env]
    while pending:
        left = []
        for b in pending:
            base = env.get(b.base)
            if base is None:
                left.append(b)
                continue
            view = base if base.dtype == b.dtype.np else base.view(b.dtype.np)
            env[b.name] = view[b.offset: b.offset + b.size]
        if len(left) == len(pending):
            return
        pending = left


def _step_slice(buf, length: int, t: int):
    n = buf.size // max(length, 1)
    return buf[t * n:(t + 1) * n]


def _fit(arr, b):
    if arr.dtype != b.dtype.np:
        arr = arr.view(b.dtype.np)
    return arr[:b.size] if arr.size > b.size else arr


__all__ = ["ArgSpec", "CudaExecutable", "is_device_array", "DType"]
