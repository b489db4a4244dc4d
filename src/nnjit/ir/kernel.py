"""The kernel IR: what a group of graph nodes becomes before any backend sees it.

Native backends (LLVM, CUDA) render this IR and nothing else; lowering from graph ops happens
once, in `nnjit.codegen`. A `Program` is a list of buffers and a sequence of kernels:

- `LoopKernel`: a loop nest over an index space with scalar statements (loads, arithmetic,
  stores, accumulators). The outermost loop may be `parallel`; loops marked `reduce` fold into
  accumulators declared just before them (softmax-style rows: reduce, reduce, map).
- `GemmKernel`: C = A @ B over strided views, with a batch loop and an optional elementwise
  epilogue applied to each finished C block (bias, activation, residual add).
- `ScanKernel`: a native loop over steps running a nested `Program` (the scan body), with
  double-buffered carries and xs/ys sliced in place.
- `GpuKernel`: one GPU launch in explicit GPU form (written by `codegen.gpu.map_to_gpu`): loops
  mapped to the grid, to blocks or to a block's threads, barriers, shared scratch, block
  reductions and atomic adds are statements of the IR, so a GPU renderer only renders.

Scalars are typed expressions (`Const`, `Var`, `Load`, `Call`); indices are i64 expressions of
loop variables. Everything is a frozen dataclass, so identical subexpressions hash equal and a
renderer can compute each once.

    kernel k2_relu(in0: f32[4096], out0: f32[4096]):
      parallel for i0 in [0, 4096):
        out0[i0] = relu(in0[i0])
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Iterator, Union

import numpy as np

from .types import DType


class KOp(enum.Enum):
    """Scalar operations. Float semantics follow numpy (NaN propagates through MAX/MIN/RELU)."""

    ADD = "add"
    SUB = "sub"
    MUL = "mul"
    DIV = "div"          # floats: true division; ints: floor division (index math)
    MOD = "mod"          # ints: floor modulo (index math)
    NEG = "neg"
    ABS = "abs"
    EXP = "exp"
    LOG = "log"
    SQRT = "sqrt"
    TANH = "tanh"
    SIGMOID = "sigmoid"
    RELU = "relu"
    POW = "pow"
    MAX = "max"
    MIN = "min"
    LT = "lt"
    LE = "le"
    GT = "gt"
    GE = "ge"
    EQ = "eq"
    NE = "ne"
    AND = "and"
    OR = "or"
    NOT = "not"
    ISNAN = "isnan"
    WHERE = "where"      # (cond, a, b)
    CAST = "cast"        # float->int truncates, saturates, NaN -> 0
    RAND = "rand"        # (seed i64, index i64) -> uniform [0, 1): Philox, attrs salt
    # -- math functions (issue 12) --
    SIN = "sin"
    COS = "cos"
    ERF = "erf"
    EXPM1 = "expm1"
    LOG1P = "log1p"
    FLOOR = "floor"
    CEIL = "ceil"
    ROUND = "round"      # to nearest, ties to even (numpy's round / rint)


COMPARE = {KOp.LT, KOp.LE, KOp.GT, KOp.GE, KOp.EQ, KOp.NE}
#: Calls that cost tens of instructions (polynomials, Philox): worth not computing twice.
EXPENSIVE_KOPS = {KOp.EXP, KOp.LOG, KOp.SQRT, KOp.TANH, KOp.SIGMOID, KOp.POW, KOp.RAND,
                  KOp.SIN, KOp.COS, KOp.ERF, KOp.EXPM1, KOp.LOG1P}


@dataclass(frozen=True)
class Accumulation:
    """How a reduction folds its terms (its OpDef's `lower`): `op` (ADD, MUL, MAX or MIN) from
    `identity(op, dtype)`; `index`: keep the position of the first best term (argmax)."""

    op: KOp
    index: bool = False


def identity(op: KOp, dtype: DType):
    """The neutral start of an accumulation with `op` (ADD, MUL, MAX or MIN) in `dtype`."""
    if op == KOp.MUL:
        return 1.0 if dtype.is_float else (True if dtype == DType.BOOL else 1)
    if op == KOp.ADD:
        return 0.0 if dtype.is_float else (False if dtype == DType.BOOL else 0)
    if dtype == DType.BOOL:
        return op == KOp.MIN
    if dtype.is_float:
        return -np.inf if op == KOp.MAX else np.inf
    info = np.iinfo(dtype.np)
    return int(info.min if op == KOp.MAX else info.max)


# -- expressions ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Const:
    value: Union[int, float, bool]
    dtype: DType

    def __str__(self) -> str:
        if self.dtype == DType.BOOL:
            return "true" if self.value else "false"
        if self.dtype.is_float:
            v = float(self.value)
            return repr(v) if v == v and abs(v) != float("inf") else str(v)
        return str(int(self.value))


@dataclass(frozen=True)
class Var:
    """A loop index (i64), an accumulator, or a let-bound scalar."""

    name: str
    dtype: DType = DType.I64

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Load:
    """buffer[index]; `index` is an i64 expression in elements. Lowering guarantees it is in
    bounds for every iteration (clamped where data decides it)."""

    buf: str
    index: "Expr"
    dtype: DType

    def __str__(self) -> str:
        return f"{self.buf}[{self.index}]"


@dataclass(frozen=True)
class Call:
    op: KOp
    args: tuple["Expr", ...]
    dtype: DType
    salt: int = 0            # RAND only

    def __str__(self) -> str:
        if self.op in _INFIX:
            a, b = self.args
            return f"({a} {_INFIX[self.op]} {b})"
        if self.op == KOp.CAST:
            return f"{self.dtype.value}({self.args[0]})"
        extra = f", salt={self.salt}" if self.op == KOp.RAND else ""
        return f"{self.op.value}({', '.join(map(str, self.args))}{extra})"


_INFIX = {KOp.ADD: "+", KOp.SUB: "-", KOp.MUL: "*", KOp.DIV: "/", KOp.MOD: "%", KOp.LT: "<",
          KOp.LE: "<=", KOp.GT: ">", KOp.GE: ">=", KOp.EQ: "==", KOp.NE: "!=", KOp.AND: "&&",
          KOp.OR: "||"}

Expr = Union[Const, Var, Load, Call]


def children(e: Expr) -> tuple[Expr, ...]:
    if isinstance(e, Load):
        return (e.index,)
    if isinstance(e, Call):
        return e.args
    return ()


# -- statements -----------------------------------------------------------------------------------

class LoopKind(enum.Enum):
    SERIAL = "for"
    PARALLEL = "parallel for"    # iterations independent: split across threads / GPU blocks
    # Only updates accumulators declared before it (scalars, or a vector of column sums) and
    # stores results each iteration owns: its order may change the rounding, nothing else.
    REDUCE = "reduce for"
    # GPU form (inside a GpuKernel). Each thread runs the iterations it is given:
    GRID = "grid for"            # i = global thread id, then += threads in the grid
    BLOCKS = "block for"         # i = block id, then += blocks (all threads of a block run it)
    THREADS = "thread for"       # i = thread id in the block, then += threads in the block;
    #                              with extent 1 it is the "only thread 0" guard


@dataclass(frozen=True)
class Loop:
    var: str
    extent: int
    body: tuple["Stmt", ...]
    kind: LoopKind = LoopKind.SERIAL


@dataclass(frozen=True)
class Store:
    buf: str
    index: Expr
    value: Expr


@dataclass(frozen=True)
class Let:
    """Declare scalar `var` = value (a new name, visible to the following statements)."""

    var: Var
    value: Expr


@dataclass(frozen=True)
class Assign:
    """Update an accumulator declared by `Let` in an enclosing scope: var = value."""

    var: Var
    value: Expr


@dataclass(frozen=True)
class If:
    """Run `body` when `cond` (bool) holds. Its lets are local to it."""

    cond: Expr
    body: tuple["Stmt", ...]


@dataclass(frozen=True)
class AtomicAdd:
    """buf[index] += value as one indivisible update (GPU form: concurrent threads may add to
    the same element)."""

    buf: str
    index: Expr
    value: Expr


@dataclass(frozen=True)
class Barrier:
    """GPU form: the block's threads wait until all arrive; stores before it (to buffers and
    to shared scratch) are visible to every thread of the block after it."""


@dataclass(frozen=True)
class BlockReduce:
    """GPU form: every thread of the block holds a value of `var`; afterwards each holds the
    `op` (ADD, MAX or MIN) of all of them, combined in a tree in the shared buffer `scratch`
    (one element per thread; the block size must be a power of two). It includes the
    barriers it needs, so all threads of the block must reach it."""

    var: Var
    op: KOp
    scratch: str


Stmt = Union[Loop, Store, Let, Assign, If, AtomicAdd, Barrier, BlockReduce]


# -- buffers and kernels -----------------------------------------------------------------------

class BufKind(enum.Enum):
    INPUT = "input"      # caller's argument
    OUTPUT = "output"    # a result handed back to the caller
    TEMP = "temp"        # lives in the arena at `offset`
    CONST = "const"      # baked into the compiled code
    ALIAS = "alias"      # same memory as `base` (a reshape), at `offset` elements into it
    STATUS = "status"    # the call's error word (i64[2]: site + 1, bad value), shared by scans
    SHARED = "shared"    # GPU form: a block's scratch in its shared memory, at byte `offset`


#: The kinds of buffer a GEMM's pre-packed operand may be: a whole one, never an alias (a
#: view into packed panels would not be panels of a matrix).
PACKED_KINDS = frozenset({BufKind.CONST, BufKind.INPUT, BufKind.TEMP})


@dataclass(frozen=True)
class Buffer:
    name: str
    dtype: DType
    size: int                         # elements
    kind: BufKind
    offset: int = 0                   # TEMP: byte offset in the arena; ALIAS: element offset
    base: str | None = None           # ALIAS: the buffer this one views
    value: np.ndarray | None = field(default=None, compare=False, hash=False)  # CONST data
    index: int = -1                   # INPUT/OUTPUT: position in the signature

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __str__(self) -> str:
        extra = {BufKind.TEMP: f" @ arena+{self.offset}", BufKind.ALIAS: f" = {self.base}"
                 f"+{self.offset}", BufKind.INPUT: f" = arg{self.index}",
                 BufKind.SHARED: f" @ smem+{self.offset}",
                 BufKind.OUTPUT: f" = result{self.index}"}.get(self.kind, "")
        return f"{self.name}: {self.dtype.value}[{self.size}] {self.kind.value}{extra}"


@dataclass(frozen=True)
class LoopKernel:
    name: str
    body: tuple[Stmt, ...]
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    cost: int = 0                # rough work estimate (elements touched), for thread decisions
    src: str = ""                # the graph node(s) it came from, for printing and bisect

    def loops(self) -> Iterator[Loop]:
        yield from _loops(self.body)


def _loops(stmts) -> Iterator[Loop]:
    for s in stmts:
        if isinstance(s, Loop):
            yield s
        if isinstance(s, (Loop, If)):
            yield from _loops(s.body)


@dataclass(frozen=True)
class MatView:
    """A (batched) matrix inside a buffer: element (b..., r, c) is at
    offset + sum(b_i * batch_strides_i) + r * row_stride + c * col_stride."""

    buf: str
    offset: int
    batch_strides: tuple[int, ...]
    row_stride: int
    col_stride: int

    def __str__(self) -> str:
        bs = ",".join(map(str, self.batch_strides))
        return (f"{self.buf}[+{self.offset}; batch*({bs}) + r*{self.row_stride} + "
                f"c*{self.col_stride}]")


@dataclass(frozen=True)
class InlinedOperand:
    """An operand buffer of a GEMM that is never stored: element f of `buf` is `value` with the
    loop variables `loops` ((name, extent), outermost first) at the row-major coordinates of f
    (conv2d's im2col columns computed inside the GEMM's loads; see `codegen.inline`)."""

    buf: str
    loops: tuple[tuple[str, int], ...]
    value: Expr


@dataclass(frozen=True)
class Panels:
    """A GEMM operand stored pre-packed (a constant packed once at compile time, so no call
    re-packs it; a scan's loop-invariant operand packed once per call, so no step does).
    The operand is seen as a K x W matrix X (B itself; A transposed, W = M) and
    stored as consecutive blocks of `kc` rows of K (the last may be shorter), each block as
    ceil(W / width) panels of its rows x `width` columns, k-major within a panel and
    zero-padded to `width`: the layout the CPU GEMM packs into its workspace.

        >>> Panels(kc=2, width=2).pack(np.arange(6.0).reshape(3, 2))   # K = 3, W = 2
        array([0., 1., 2., 3., 4., 5.])
    """

    kc: int
    width: int

    def padded(self, w: int) -> int:
        """W rounded up to whole panels: the pitch of one packed row of K."""
        return -(-w // self.width) * self.width

    def size(self, k: int, w: int) -> int:
        """Elements of a packed K x W operand."""
        return k * self.padded(w)

    def pack(self, x: np.ndarray) -> np.ndarray:
        """The flat packed form of the K x W matrix `x`."""
        k, w = x.shape
        wp = self.padded(w)
        full = np.zeros((k, wp), x.dtype)
        full[:, :w] = x
        blocks = [full[k0:k0 + self.kc].reshape(-1, wp // self.width, self.width)
                  .transpose(1, 0, 2).reshape(-1) for k0 in range(0, k, self.kc)]
        return np.concatenate(blocks) if blocks else np.zeros(0, x.dtype)

    def unpack(self, flat: np.ndarray, k: int, w: int) -> np.ndarray:
        """The K x W matrix whose packed form starts `flat` (the inverse of `pack`)."""
        wp = self.padded(w)
        rows = []
        for k0 in range(0, k, self.kc):
            kb = min(self.kc, k - k0)
            blk = flat[k0 * wp:(k0 + kb) * wp].reshape(wp // self.width, kb, self.width)
            rows.append(blk.transpose(1, 0, 2).reshape(kb, wp)[:, :w])
        return np.concatenate(rows) if rows else np.zeros((0, w), flat.dtype)

    def __str__(self) -> str:
        return f"packed(kc={self.kc}, width={self.width})"


@dataclass(frozen=True)
class GemmKernel:
    """C[b] (=|+=) A[b] @ B[b] for each batch index b (row-major C with leading dim `ldc`).

    `accumulate_batches`: every batch adds into the same C (conv2d's weight gradient sums over
    images); then C is initialised by the first batch and accumulated by the rest.
    `epilogue`: statements run for every element of C once it is final, with Var "acc" bound to
    its value and Vars "row", "col" (and "b0".. for batch coordinates) to its position; they
    store the fused result (e.g. relu(acc + bias[col]) into the output). When present, C is
    scratch space and only the epilogue's stores are results.
    `inlined`: operands that are not materialized (see `InlinedOperand`); `reads` then names
    what their expressions load instead.
    `a_packed` / `b_packed`: that operand is stored pre-packed (see `Panels`) in its view's
    whole buffer, shared by every batch: a constant packed at compile time, or a scan body's
    input that its enclosing program packs before the loop (one of `PACKED_KINDS`); the
    view's offset and strides are then unused (all 0)."""

    name: str
    dtype: DType
    batch: tuple[int, ...]
    m: int
    n: int
    k: int
    a: MatView
    b: MatView
    c: MatView
    accumulate_batches: bool = False
    epilogue: tuple[Stmt, ...] = ()
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    src: str = ""
    inlined: tuple["InlinedOperand", ...] = ()
    a_packed: Panels | None = None
    b_packed: Panels | None = None

    def inlined_operand(self, buf: str) -> "InlinedOperand | None":
        for op in self.inlined:
            if op.buf == buf:
                return op
        return None

    @property
    def flops(self) -> int:
        n = 1
        for d in self.batch:
            n *= d
        return 2 * n * self.m * self.n * self.k


@dataclass(frozen=True)
class ScanKernel:
    """for t in (reversed) range(length): body(carry, xs[t], consts) -> (carry', ys[t]).

    `body` is a Program whose inputs are (carry..., x slices..., consts...) and whose outputs
    are (carry'..., y slices...). Before the loop `carry_bufs` are initialised from `init_bufs`;
    each step reads the carries from one of (`carry_bufs`, `next_bufs`) and writes them to the
    other (a renderer swaps the two pointer sets instead of copying), and after the loop the
    last carries are copied to `final_bufs`. xs and ys are sliced in place: step t reads
    xs[t * slice] and writes ys[t * slice]. The body's own temporaries live in `arena_buf`.

    GPU form (`codegen.gpu`): `block` 0, the host launches the body's kernels step by step;
    `block` n > 0, the whole loop is one launch of one block of n threads, running the body's
    kernels (each mapped for that single block) in order with a barrier after each."""

    name: str
    length: int
    reverse: bool
    body: "Program"
    init_bufs: tuple[str, ...]
    carry_bufs: tuple[str, ...]
    next_bufs: tuple[str, ...]
    final_bufs: tuple[str, ...]
    xs_bufs: tuple[str, ...]
    ys_bufs: tuple[str, ...]
    const_bufs: tuple[str, ...]
    arena_buf: str
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    src: str = ""
    block: int = 0


@dataclass(frozen=True)
class CopyKernel:
    """dst[0:size] = src[0:size] (results that alias inputs or constants are copied out)."""

    name: str
    src_buf: str
    dst_buf: str
    size: int
    dtype: DType
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    src: str = ""


@dataclass(frozen=True)
class Tiles:
    """A GPU GEMM tiling: a block of tx x ty threads computes (ty*tm) x (tx*tn) of C, k in
    steps of bk, through shared-memory tiles."""

    tx: int
    ty: int
    tm: int
    tn: int
    bk: int

    @property
    def bm(self) -> int:
        return self.ty * self.tm

    @property
    def bn(self) -> int:
        return self.tx * self.tn

    def __str__(self) -> str:
        return f"tiles tx={self.tx} ty={self.ty} tm={self.tm} tn={self.tn} bk={self.bk}"


@dataclass(frozen=True)
class GpuKernel:
    """One GPU launch, `kernel[grid, block, 0, shared_bytes](*params)`: every thread of every
    block runs `body`, whose GRID / BLOCKS / THREADS loops give each thread its iterations.
    A mapped kernel computes the same for any grid and any power-of-two block (`grid` and
    `block` only choose the parallelism), so one block of one thread is a valid run.

    `shared`: this kernel's SHARED buffers (scratch in dynamic shared memory). A GEMM launch
    has no statements: `gemm` is the contraction (with its inlined operands), run with
    `tiles` (shared-memory tiles, on a 2-d block and a 3-d grid), or with one thread per
    element of C in a grid-stride loop when `tiles` is None. `reads`/`writes` are exactly
    the buffers it touches; `params` is their order as arguments."""

    name: str                    # unique in the program tree, [A-Za-z0-9_]
    grid: tuple[int, ...]
    block: tuple[int, ...]
    body: tuple[Stmt, ...]
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    shared: tuple[Buffer, ...] = ()
    gemm: GemmKernel | None = None
    tiles: Tiles | None = None
    src: str = ""

    @property
    def params(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.reads + self.writes))

    @property
    def shared_bytes(self) -> int:
        return max((b.offset + b.nbytes for b in self.shared), default=0)


@dataclass(frozen=True)
class HostKernel:
    """A step the runtime runs on the host between native kernels: a collective over the
    process group (issue 15; run by `nnjit.backends.collective.HostSteps`).

    `op` is `all_reduce_start` / `all_reduce_wait` (a pair sharing attr `slot`: the transfer
    runs while the kernels between them do, see `codegen.overlap`), `all_gather`,
    `reduce_scatter`, `broadcast` or `axis_index`; `attrs` are the graph op's attributes as
    sorted (name, value) pairs; `srcs` and `dsts` its buffers, whose `shapes` (srcs first) it
    sees them with. A wait lists the pair's buffers as reads only: the start writes `dst`, so
    the planner keeps both alive (and apart) until the wait."""

    name: str
    op: str
    attrs: tuple[tuple[str, object], ...]
    srcs: tuple[str, ...]
    dsts: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    src: str = ""

    def attr(self, name: str):
        return dict(self.attrs)[name]


Kernel = Union[LoopKernel, GemmKernel, ScanKernel, CopyKernel, GpuKernel, HostKernel]


STATUS_BUFFER = "status"
#: Bytes the runtime reserves for the status buffer (a cache line of its own).
STATUS_BYTES = 64


@dataclass(frozen=True)
class IndexSite:
    """A run-time index check: kernels that find an index outside [lo, size) (and not one of
    `ignore`) store site number + 1 and the index into the status buffer; the runtime raises
    `IndexOutOfRange` with this description."""

    what: str                   # e.g. "take: axis 0 of f32[5,3]"
    size: int
    lo: int                     # -size where negative indices wrap once, else 0
    ignore: tuple[int, ...]
    loc: str

    def message(self, value: int) -> str:
        valid = f"[{self.lo}, {self.size})" if self.size else "none (the axis is empty)"
        skip = f" (or {', '.join(map(str, self.ignore))})" if self.ignore else ""
        at = f" at {self.loc}" if self.loc else ""
        return f"{self.what}: index {value} is out of range; valid: {valid}{skip}{at}"


@dataclass(frozen=True)
class Program:
    """Buffers and the kernels that run over them, in order. Inputs and outputs are buffer
    names in signature order; `arena_bytes` is the size of the TEMP region. `sites` describe
    the run-time index checks (shared with scan bodies, numbered from 1 in the status word)."""

    name: str
    buffers: tuple[Buffer, ...]
    kernels: tuple[Kernel, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    arena_bytes: int
    sites: tuple[IndexSite, ...] = ()
    plan: object = field(default=None, compare=False, hash=False)   # the MemoryPlan, once placed

    def buffer(self, name: str) -> Buffer:
        for b in self.buffers:
            if b.name == name:
                return b
        raise KeyError(name)

    def __str__(self) -> str:
        return print_program(self)


# -- printing -------------------------------------------------------------------------------------

def print_program(p: Program, indent: str = "") -> str:
    lines = [f"{indent}program {p.name}({', '.join(p.inputs)}) -> ({', '.join(p.outputs)}) "
             f"arena={p.arena_bytes}B {{"]
    for b in p.buffers:
        lines.append(f"{indent}  buffer {b}")
    for k in p.kernels:
        lines.append(print_kernel(k, indent + "  "))
    lines.append(indent + "}")
    return "\n".join(lines)


def _operand(v: MatView, packed: Panels | None) -> str:
    return str(v) if packed is None else f"{v.buf} {packed}"


def print_kernel(k: Kernel, indent: str = "") -> str:
    src = f"  // {k.src}" if k.src else ""
    head = f"{indent}kernel {k.name}(reads {', '.join(k.reads)}; writes {', '.join(k.writes)})"
    if isinstance(k, LoopKernel):
        return "\n".join([head + ":" + src] + _stmts(k.body, indent + "  "))
    if isinstance(k, GemmKernel):
        acc = " accumulate-batches" if k.accumulate_batches else ""
        lines = [head + ":" + src,
                 f"{indent}  gemm {k.dtype.value} batch={list(k.batch)} m={k.m} n={k.n} "
                 f"k={k.k}{acc}",
                 f"{indent}    A = {_operand(k.a, k.a_packed)}",
                 f"{indent}    B = {_operand(k.b, k.b_packed)}", f"{indent}    C = {k.c}"]
        for op in k.inlined:
            at = ", ".join(f"{v} < {n}" for v, n in op.loops)
            lines.append(f"{indent}    inlined {op.buf}[ravel({at})] = {op.value}")
        if k.epilogue:
            lines.append(f"{indent}    epilogue(acc, row, col):")
            lines += _stmts(k.epilogue, indent + "      ")
        return "\n".join(lines)
    if isinstance(k, GpuKernel):
        shared = f", shared {k.shared_bytes}B" if k.shared else ""
        lines = [f"{head} on grid {k.grid} x block {k.block}{shared}:{src}"]
        lines += [f"{indent}  {b}" for b in k.shared]
        if k.gemm is not None:
            lines.append(f"{indent}  {k.tiles or 'one thread per element of C'}")
            lines.append(print_kernel(k.gemm, indent + "  "))
        return "\n".join(lines + _stmts(k.body, indent + "  "))
    if isinstance(k, ScanKernel):
        order = "reversed " if k.reverse else ""
        launch = f" in one launch, block ({k.block},)" if k.block else ""
        lines = [head + launch + ":" + src,
                 f"{indent}  scan {order}t in [0, {k.length}): carry ({', '.join(k.carry_bufs)} "
                 f"<-> {', '.join(k.next_bufs)}) "
                 f"from ({', '.join(k.init_bufs)}) to ({', '.join(k.final_bufs)}); "
                 f"xs ({', '.join(k.xs_bufs)}); ys ({', '.join(k.ys_bufs)}); "
                 f"consts ({', '.join(k.const_bufs)})",
                 print_program(k.body, indent + "  ")]
        return "\n".join(lines)
    if isinstance(k, HostKernel):
        attrs = ", ".join(f"{a}={v}" for a, v in k.attrs)
        shapes = iter(k.shapes)
        typed = lambda names: ", ".join(f"{n}: {list(next(shapes))}" for n in names)  # noqa
        return f"{head}: host {k.op}({attrs}) ({typed(k.srcs)}) -> ({typed(k.dsts)}){src}"
    return f"{head}: copy {k.size} x {k.dtype.value}{src}"


def _stmts(stmts, indent: str) -> list[str]:
    out = []
    for s in stmts:
        if isinstance(s, Loop):
            out.append(f"{indent}{s.kind.value} {s.var} in [0, {s.extent}):")
            out += _stmts(s.body, indent + "  ")
        elif isinstance(s, If):
            out.append(f"{indent}if {s.cond}:")
            out += _stmts(s.body, indent + "  ")
        elif isinstance(s, Store):
            out.append(f"{indent}{s.buf}[{s.index}] = {s.value}")
        elif isinstance(s, AtomicAdd):
            out.append(f"{indent}atomic {s.buf}[{s.index}] += {s.value}")
        elif isinstance(s, Let):
            out.append(f"{indent}let {s.var.name}: {s.var.dtype.value} = {s.value}")
        elif isinstance(s, Barrier):
            out.append(f"{indent}barrier")
        elif isinstance(s, BlockReduce):
            out.append(f"{indent}block_reduce {s.op.value} {s.var.name} via {s.scratch}")
        else:
            out.append(f"{indent}{s.var.name} = {s.value}")
    return out
