"""A scan looped on the device (a ScanKernel with `block` set by `codegen.gpu`) -> one Numba
kernel that runs every step: each step binds the body's inputs and outputs to the carries
(ping-pong: even steps read `carry_bufs` and write `next_bufs`, odd steps the reverse) and to
the step's slices of xs and ys, then runs the body's kernels in order, each rendered as it
would be alone (they are mapped for this one block) with a barrier after each.

    >>> scan_params(k)   # the kernel's arguments: the scan's buffers, then the body's own
    [('outer', 'in0'), ('outer', 'carry2'), ..., ('body', 'acc1')]
"""
from __future__ import annotations

from ...ir import CompileError
from ...ir.kernel import BufKind, GpuKernel, Program, ScanKernel
from . import gemm
from .source import NP_NAME, comment


def scan_params(k: ScanKernel) -> list[tuple[str, str]]:
    """The looped scan kernel's arguments in order: ("outer", name) for the scan's buffers in
    the enclosing program, then ("body", name) for the body's buffers that are the same every
    step (temporaries, constants, the status word, views of them), read from the body's
    frame."""
    outer = dict.fromkeys(k.init_bufs + k.carry_bufs + k.next_bufs + k.final_bufs + k.xs_bufs
                          + k.ys_bufs + k.const_bufs)
    per_step = step_buffers(k.body)
    used = {b for g in k.body.kernels for b in g.params}
    static = [b.name for b in k.body.buffers if b.name in used and b.name not in per_step]
    return [("outer", n) for n in outer] + [("body", n) for n in static]


def step_buffers(body: Program) -> set[str]:
    """The body's inputs and outputs and the views of them: bound anew at every step."""
    own = {b.name: b for b in body.buffers}
    out = set()
    for b in body.buffers:
        root = b
        while root.kind == BufKind.ALIAS and root.base in own:
            root = own[root.base]
        if root.kind in (BufKind.INPUT, BufKind.OUTPUT):
            out.add(b.name)
    return out


def shared_bytes(k: ScanKernel) -> int:
    """Dynamic shared memory of the looped kernel: the largest of its body's kernels (they run
    one after the other, separated by barriers, so they reuse the same bytes)."""
    return max((g.shared_bytes for g in k.body.kernels), default=0)


#: Python names the looped kernel uses besides the renderer's.
RESERVED = ("_t", "_step", "_even", "_j")


def render_scan(k: ScanKernel, name: str, em, sizes: dict[str, int]) -> str:
    """The source of the looped scan kernel `name` (see the module docstring), written with
    `em`, a fresh `render.Emitter` whose names avoid RESERVED; `sizes`: the elements of the
    enclosing program's buffers (a step's slice of xs or ys is 1/length of them)."""
    names, body = em.names, k.body
    params = scan_params(k)
    py = {p: names.fresh("b_" if p[0] == "outer" else "s_", p[1]) for p in params}
    outer = {n: v for (role, n), v in py.items() if role == "outer"}
    bufs = em.bufs
    bufs.update({n: v for (role, n), v in py.items() if role == "body"})
    per_step = step_buffers(body)
    for n in per_step:
        bufs[n] = names.fresh("v_", n)
    em.line("_tid = cuda.threadIdx.x")
    em.line("_nt = cuda.blockDim.x")
    dtypes = dict.fromkeys(b.dtype for g in body.kernels for b in g.shared)
    arrays = {dt: f"_sh_{NP_NAME[dt]}" for dt in dtypes}
    for dt, arr in arrays.items():
        em.line(f"{arr} = cuda.shared.array(0, {NP_NAME[dt]})")
    for src, dst in zip(k.init_bufs, k.carry_bufs):
        _copy(em, outer[src], outer[dst], carry_size(k, body, dst))
    em.line("cuda.syncthreads()")
    em.line(f"for _t in range({k.length}):")
    em.push()
    em.line(f"_step = {k.length - 1} - _t" if k.reverse else "_step = _t")
    em.line("_even = _t % 2 == 0")
    _bind_step(em, k, body, outer, bufs, per_step, sizes)
    for g in body.kernels:
        if not isinstance(g, GpuKernel) or g.tiles is not None:
            raise CompileError(f"{k.name}: body kernel {g.name} cannot run in a looped scan "
                               f"(only untiled GPU launches can)")
        em.line(f"# {g.name}" + (f": {comment(g.src)}" if g.src else ""))
        em.shared = {b.name: (arrays[b.dtype], b.offset // b.dtype.itemsize) for b in g.shared}
        em.vars.append({})          # each body kernel's names and cached values are its own
        em.memo.append({})
        if g.gemm is not None:
            gemm.render(g, em)
        else:
            em.stmts(g.body)
        em.vars.pop()
        em.memo.pop()
        em.line("cuda.syncthreads()")
    em.pop()
    last = k.carry_bufs if k.length % 2 == 0 else k.next_bufs
    for src, dst in zip(last, k.final_bufs):
        _copy(em, outer[src], outer[dst], carry_size(k, body, src))
    head = [f"# {comment(k.src)}"] if k.src else []
    head += ["@cuda.jit", f"def {name}({', '.join(py.values())}):"]
    return "\n".join(head + em.lines) + "\n"


def carry_size(k: ScanKernel, body: Program, buf: str) -> int:
    """Elements of `buf`, one of the scan's init, carry or next buffers: the size of the body
    input it feeds."""
    for names in (k.carry_bufs, k.next_bufs, k.init_bufs):
        if buf in names:
            i = names.index(buf)
            return next(b.size for b in body.buffers if b.kind == BufKind.INPUT and b.index == i)
    raise CompileError(f"{k.name}: {buf} is not one of its carries")


def _copy(em, src: str, dst: str, n: int) -> None:
    if n:
        em.line(f"for _j in range(_tid, {n}, _nt):")
        em.line(f"    {dst}[_j] = {src}[_j]")


def _bind_step(em, k: ScanKernel, body: Program, outer: dict, bufs: dict, per_step: set,
               sizes: dict[str, int]) -> None:
    """This step's views: inputs (carries by parity, xs slices, consts), outputs (next
    carries by parity, ys slices), then the body's views of them."""
    nc = len(k.carry_bufs)
    ins = list(k.xs_bufs) + list(k.const_bufs)
    outs = list(k.ys_bufs)
    for b in body.buffers:
        if b.kind not in (BufKind.INPUT, BufKind.OUTPUT):
            continue
        v, i = bufs[b.name], b.index
        reads = b.kind == BufKind.INPUT
        if i < nc:
            a, z = (k.carry_bufs[i], k.next_bufs[i]) if reads else (k.next_bufs[i],
                                                                    k.carry_bufs[i])
            em.line(f"{v} = ({outer[a]} if _even else {outer[z]})[0:{b.size}]")
            continue
        src = (ins if reads else outs)[i - nc]
        if src in k.xs_bufs or src in k.ys_bufs:
            n = sizes[src] // k.length
            em.line(f"{v} = {outer[src]}[_step * {n}:_step * {n} + {b.size}]")
        else:
            em.line(f"{v} = {outer[src]}[0:{b.size}]")
    pending = [b for b in body.buffers if b.kind == BufKind.ALIAS and b.name in per_step]
    done = {b.name for b in body.buffers if b.kind in (BufKind.INPUT, BufKind.OUTPUT)}
    while pending:
        left = [b for b in pending if b.base not in done]
        for b in pending:
            if b.base in done:
                em.line(f"{bufs[b.name]} = {bufs[b.base]}[{b.offset}:{b.offset + b.size}]")
                done.add(b.name)
        if len(left) == len(pending):
            raise CompileError(f"{k.name}: views {[b.name for b in left]} of the body have no "
                               f"base")
        pending = left
