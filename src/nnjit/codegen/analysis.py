"""What a piece of kernel IR touches, computed once: the one analysis every consumer uses (the
lowering's read/write sets, the memory planner's in-place pairs, the renderers' parameter
lists and invalidation, GPU mapping's independence tests, operand inlining's affine indices).

Statement facts are memoized per statement tuple (by identity, with the tuple kept alive), and
expression walks visit each node of a shared DAG once: kernel expressions are DAGs whose
trees can be exponentially larger than they are.

    >>> f = facts(kernel.body)
    >>> f.reads, f.writes, f.assigned, f.cost
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

from ..ir.kernel import (
    Assign,
    AtomicAdd,
    Barrier,
    BlockReduce,
    BufKind,
    Call,
    Const,
    Expr,
    GemmKernel,
    If,
    KOp,
    Let,
    Load,
    Loop,
    LoopKernel,
    Program,
    ScanKernel,
    Stmt,
    Store,
    Var,
    children,
)


@dataclass(frozen=True)
class Facts:
    """Everything a statement list touches, recursively."""

    used: tuple[str, ...]        # buffers loaded or stored, in first-use order
    reads: tuple[str, ...]       # buffers loaded (first-use order)
    writes: tuple[str, ...]      # buffers stored (first-use order)
    assigned: frozenset[str]     # accumulators updated by Assign (or BlockReduce)
    declared: frozenset[str]     # names introduced: Let variables and loop variables
    cost: int                    # statements executed (a work estimate)

    @property
    def effects(self) -> frozenset:
        """("v", name) of every Let/Assign and ("b", buf) of every Store or atomic add (for
        invalidation)."""
        return frozenset({("b", b) for b in self.writes} | {("v", v) for v in self.assigned}
                         | {("v", v) for v in self._lets})

    _lets: frozenset[str] = frozenset()


_CACHE: dict[int, tuple[object, Facts]] = {}
_CACHE_LIMIT = 1 << 14


def facts(stmts: Iterable[Stmt]) -> Facts:
    """The `Facts` of `stmts` (memoized for tuples)."""
    key = id(stmts)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is stmts:
        return hit[1]
    out = _compute(tuple(stmts))
    if isinstance(stmts, tuple):
        if len(_CACHE) >= _CACHE_LIMIT:
            _CACHE.clear()
        _CACHE[key] = (stmts, out)
    return out


def _compute(stmts: tuple[Stmt, ...]) -> Facts:
    used: dict[str, None] = {}
    reads: dict[str, None] = {}
    writes: dict[str, None] = {}
    assigned: set[str] = set()
    lets: set[str] = set()
    loops: set[str] = set()
    seen: set[int] = set()
    keep: list = []

    def expr(e: Expr) -> None:
        if id(e) in seen:
            return
        seen.add(id(e))
        keep.append(e)
        if isinstance(e, Load):
            used.setdefault(e.buf)
            reads.setdefault(e.buf)
        for c in children(e):
            expr(c)

    def walk(body, trip: int) -> int:
        cost = 0
        for s in body:
            if isinstance(s, Loop):
                loops.add(s.var)
                cost += walk(s.body, trip * s.extent)
                continue
            if isinstance(s, If):
                expr(s.cond)
                cost += trip + walk(s.body, trip)
                continue
            if isinstance(s, AtomicAdd):     # read-modify-write
                used.setdefault(s.buf)
                reads.setdefault(s.buf)
            if isinstance(s, (Store, AtomicAdd)):
                used.setdefault(s.buf)
                writes.setdefault(s.buf)
                expr(s.index)
            elif isinstance(s, (Assign, BlockReduce)):
                assigned.add(s.var.name)
            elif isinstance(s, Let):
                lets.add(s.var.name)
            if not isinstance(s, (Barrier, BlockReduce)):
                expr(s.value)
            cost += trip
        return cost

    cost = walk(stmts, 1)
    return Facts(tuple(used), tuple(reads), tuple(writes), frozenset(assigned),
                 frozenset(lets | loops), cost, frozenset(lets))


def accesses(stmts) -> tuple[tuple[str, ...], tuple[str, ...], int]:
    """(buffers read, buffers written, statements executed) of a statement list."""
    f = facts(stmts)
    return f.reads, f.writes, f.cost


def trip_count(stmts) -> int:
    """Statement executions of a loop nest (a work estimate when a kernel has no `cost`)."""
    n = 0
    for s in stmts:
        if isinstance(s, Loop):
            n += s.extent * max(1, trip_count(s.body))
        else:
            n += 1 + (trip_count(s.body) if isinstance(s, If) else 0)
    return n


def loops_in(stmts) -> Iterator[Loop]:
    """Every loop of `stmts`, outermost first."""
    for s in stmts:
        if isinstance(s, Loop):
            yield s
        if isinstance(s, (Loop, If)):
            yield from loops_in(s.body)


def perfect_nest(loop: Loop) -> tuple[list[Loop], tuple[Stmt, ...]]:
    """`loop` and the loops nested alone in it, outermost first, and the innermost body."""
    loops, body = [loop], loop.body
    while len(body) == 1 and isinstance(body[0], Loop):
        loops.append(body[0])
        body = body[0].body
    return loops, body


def independent(loop: Loop) -> bool:
    """Iterations of `loop` touch disjoint state: no accumulator of an enclosing scope is
    updated, and every buffer stored inside is only accessed in a slab of its own per
    iteration (`slabbed`: e.g. a pooling gradient's image planes). Stores at data-dependent
    indices (a scatter's `out[idx[u]] = v`) are not: two iterations may write one element."""
    f = facts(loop.body)
    outer_vars = {v for k, v in f.effects if k == "v"} - f.declared
    return not outer_vars and all(slabbed(loop, b) for b in set(f.writes))


def slabbed(loop: Loop, buf: str) -> bool:
    """Every index of `buf` in the body is c * loop.var + rest, one c > 0 for all, with every
    rest (over the body's own loops; variables of enclosing loops are fixed) inside a window
    narrower than c: so iteration v only touches [c*v + lo, c*v + hi] and the slabs are
    disjoint."""
    ranges = {lp.var: lp.extent for lp in loops_in(loop.body)}
    lo = hi = coef = None
    for idx in loads_of(loop.body, buf):
        terms = affine_terms(idx)
        if terms is None:
            return False
        c = terms.pop(loop.var, 0)
        r_lo = r_hi = 0
        for key, k in terms.items():
            if isinstance(key, str) and key not in ranges:
                continue            # a variable of an enclosing loop: fixed per iteration
            t_lo, t_hi = (0, ranges[key] - 1) if isinstance(key, str) else interval(key, ranges)
            r_lo, r_hi = r_lo + min(k * t_lo, k * t_hi), r_hi + max(k * t_lo, k * t_hi)
        if coef is None:
            coef = c
        if c != coef or c <= 0:
            return False
        lo, hi = (r_lo, r_hi) if lo is None else (min(lo, r_lo), max(hi, r_hi))
    return coef is not None and hi - lo < coef


# -- expressions ----------------------------------------------------------------------------------

def deps(e: Expr, memo: dict) -> frozenset:
    """The Vars ("v", name) and buffers ("b", name) that `e` reads (`memo` is shared by one
    walk: id(e) -> (e, deps), e kept so its id stays unique)."""
    hit = memo.get(id(e))
    if hit is not None:
        return hit[1]
    own = {("v", e.name)} if isinstance(e, Var) else (
        {("b", e.buf)} if isinstance(e, Load) else set())
    for c in children(e):
        own |= deps(c, memo)
    d = frozenset(own)
    memo[id(e)] = (e, d)
    return d


def expressions(stmts) -> Iterator[Expr]:
    """The root expression of every statement in `stmts`, nested bodies included (an If's
    condition, a store's index and value, a let's value)."""
    for s in stmts:
        if isinstance(s, If):
            yield s.cond
        if isinstance(s, (Loop, If)):
            yield from expressions(s.body)
            continue
        if isinstance(s, (Store, AtomicAdd)):
            yield s.index
        if not isinstance(s, (Barrier, BlockReduce)):
            yield s.value


def loads_of(stmts, buf: str) -> list[Expr]:
    """The index of every load and store of `buf` in `stmts` (stores included)."""
    out: list[Expr] = []
    seen: set[int] = set()
    keep: list = []

    def expr(e):
        if id(e) in seen:
            return
        seen.add(id(e))
        keep.append(e)
        if isinstance(e, Load) and e.buf == buf:
            out.append(e.index)
        for c in children(e):
            expr(c)

    def stores(body):
        for s in body:
            if isinstance(s, (Loop, If)):
                stores(s.body)
            elif isinstance(s, (Store, AtomicAdd)) and s.buf == buf:
                out.append(s.index)

    stores(stmts)
    for e in expressions(stmts):
        expr(e)
    return out


def affine(e: Expr) -> dict | None:
    """An i64 index as {var name or 1: coefficient}, or None if it is not affine in variables."""
    terms = affine_terms(e)
    if terms is None or any(not isinstance(k, (str, int)) for k in terms):
        return None
    return terms


def affine_terms(e: Expr) -> dict | None:
    """An i64 index as {var name | opaque subexpression | 1: coefficient}: sums and constant
    multiples are split, anything else is a term of its own."""
    if isinstance(e, Const):
        return {1: int(e.value)}
    if isinstance(e, Var):
        return {e.name: 1}
    if isinstance(e, Call) and e.op in (KOp.ADD, KOp.SUB):
        a, b = affine_terms(e.args[0]), affine_terms(e.args[1])
        if a is None or b is None:
            return None
        sign = 1 if e.op == KOp.ADD else -1
        for key, k in b.items():
            a[key] = a.get(key, 0) + sign * k
        return a
    if isinstance(e, Call) and e.op == KOp.MUL:
        for x, y in (e.args, tuple(reversed(e.args))):
            if isinstance(y, Const):
                inner = affine_terms(x)
                return None if inner is None else {k: v * int(y.value) for k, v in
                                                   inner.items()}
    return {e: 1}


def interval(e: Expr, ranges: dict[str, int]) -> tuple[float, float]:
    """Bounds of an integer expression with each loop variable in `ranges` over [0, extent)
    (anything else unbounded)."""
    inf = float("inf")
    if isinstance(e, Const):
        return int(e.value), int(e.value)
    if isinstance(e, Var):
        return (0, ranges[e.name] - 1) if e.name in ranges else (-inf, inf)
    if isinstance(e, Call) and e.op in (KOp.ADD, KOp.SUB, KOp.MUL, KOp.MIN, KOp.MAX):
        (a, b), (c, d) = interval(e.args[0], ranges), interval(e.args[1], ranges)
        if e.op == KOp.ADD:
            return a + c, b + d
        if e.op == KOp.SUB:
            return a - d, b - c
        if e.op == KOp.MIN:
            return min(a, c), min(b, d)
        if e.op == KOp.MAX:
            return max(a, c), max(b, d)
        if inf in (abs(a), abs(b), abs(c), abs(d)):
            return -inf, inf
        ps = (a * c, a * d, b * c, b * d)
        return min(ps), max(ps)
    if isinstance(e, Call) and e.op == KOp.WHERE:
        (a, b), (c, d) = interval(e.args[1], ranges), interval(e.args[2], ranges)
        return min(a, c), max(b, d)
    if isinstance(e, Call) and e.op in (KOp.DIV, KOp.MOD) and isinstance(e.args[1], Const) \
            and int(e.args[1].value) > 0:
        # Index arithmetic divides non-negative values only (ix.idiv / ix.imod); a range
        # reaching below 0 is left unbounded rather than guessing the rounding.
        a, b = interval(e.args[0], ranges)
        n = int(e.args[1].value)
        if a < 0:
            return -inf, inf
        if e.op == KOp.DIV:
            return a // n, b // n if b != inf else inf
        return (a % n, b % n) if b != inf and a // n == b // n else (0, n - 1)
    return -inf, inf


def flops(stmts) -> int:
    """Floating-point operations a statement list executes (each float call counts one, a
    transcendental too: a rough figure for a profile's GFLOP/s, not a cost model)."""
    total = 0

    def per_pass(body, trip: int) -> None:
        nonlocal total
        seen: set[int] = set()
        keep: list = []

        def count(e) -> int:
            if id(e) in seen:
                return 0
            seen.add(id(e))
            keep.append(e)
            n = int(isinstance(e, Call) and e.dtype.is_float and e.op not in (KOp.CAST,))
            return n + sum(count(c) for c in children(e))

        for s in body:
            if isinstance(s, Loop):
                per_pass(s.body, trip * s.extent)
            elif isinstance(s, (Store, Let, Assign)):
                total += trip * count(s.value)

    per_pass(tuple(stmts), 1)
    return total


def kernel_flops(k) -> int:
    """`flops` of any kernel: a GEMM's 2*m*n*k (and its epilogue), a scan's body per step."""
    if isinstance(k, GemmKernel):
        return k.flops + flops(k.epilogue) * max(1, k.m * k.n)
    if isinstance(k, ScanKernel):
        return k.length * sum(kernel_flops(b) for b in k.body.kernels)
    return flops(k.body) if isinstance(k, LoopKernel) else 0


def kernel_bytes(program: Program, k) -> int:
    """Bytes a kernel reads and writes, counting each buffer it touches once, whole (a rough
    traffic figure: bench's 'bytes moved', a profile's bandwidth)."""
    size = {b.name: b.nbytes for b in program.buffers}
    return sum(size.get(b, 0) for b in set(k.reads) | set(k.writes))


# -- buffers ------------------------------------------------------------------------------------

def root_buffer(program: Program, name: str) -> str:
    """The buffer whose memory `name` is (following ALIAS bases)."""
    b = program.buffer(name)
    while b.kind == BufKind.ALIAS:
        b = program.buffer(b.base)
    return b.name


def memory_region(buffers: dict, name: str) -> tuple[str, int, int]:
    """(memory, first byte, end byte) of buffer `name`: the memory is "arena" for temporaries
    (at their planned offsets), the donated input for an output written over one, and the
    buffer itself otherwise; aliases resolve to their base's memory."""
    b = buffers[name]
    if b.kind == BufKind.ALIAS:
        root, lo, _ = memory_region(buffers, b.base)
        lo += b.offset * b.dtype.itemsize
        return root, lo, lo + b.nbytes
    if b.kind == BufKind.TEMP:
        return "arena", b.offset, b.offset + b.nbytes
    if b.kind == BufKind.OUTPUT and b.base:
        return memory_region(buffers, b.base)
    return name, 0, b.nbytes


def may_overlap(buffers: dict, x: str, y: str) -> bool:
    """Whether buffers `x` and `y` may share bytes (two inputs may: a caller can pass one array
    twice)."""
    (r1, a1, b1), (r2, a2, b2) = memory_region(buffers, x), memory_region(buffers, y)
    if r1 != r2:
        return buffers[r1].kind == buffers[r2].kind == BufKind.INPUT if (
            r1 in buffers and r2 in buffers) else False
    return a1 < b2 and a2 < b1


__all__ = ["Facts", "accesses", "affine", "affine_terms", "deps", "facts", "flops",
           "independent", "kernel_bytes", "kernel_flops",
           "interval", "loads_of", "loops_in", "may_overlap", "memory_region", "perfect_nest",
           "root_buffer", "slabbed", "trip_count"]
