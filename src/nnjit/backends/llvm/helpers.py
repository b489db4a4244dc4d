"""Small IR-building helpers for the LLVM CPU backend, in the style of numba's `cgutils`.

Every helper is a plain `(builder, ...) -> value` function or a context manager that yields
indices; LLVM types are module constants. Pointers are opaque (`ptr`), so loads, stores and GEPs
always name the element type.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import llvmlite.ir as ir

# --- types ------------------------------------------------------------------------------------
VOID = ir.VoidType()
I1 = ir.IntType(1)
I8 = ir.IntType(8)
I16 = ir.IntType(16)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
F16 = ir.HalfType()
F32 = ir.FloatType()
F64 = ir.DoubleType()
PTR = ir.PointerType()  # opaque pointer
VOIDPTR = PTR

#: Fast-math flag sets for `fastmath=` arguments. CONTRACT only lets a*b+c become an FMA;
#: FAST also allows reassociation (use it for reductions whose order does not matter).
CONTRACT = ("contract",)
FAST = ("fast",)


def vector_type(ty: ir.Type, lanes: int) -> ir.VectorType:
    """`<lanes x ty>`, e.g. `vector_type(F32, 16)` is a zmm register of floats."""
    return ir.VectorType(ty, lanes)


def const_int(ty: ir.IntType, value: int) -> ir.Constant:
    return ir.Constant(ty, value)


def const_i32(value: int) -> ir.Constant:
    return ir.Constant(I32, value)


def const_i64(value: int) -> ir.Constant:
    return ir.Constant(I64, value)


def const_float(ty: ir.Type, value: float) -> ir.Constant:
    """A scalar float constant, or a splat when `ty` is a vector type."""
    if isinstance(ty, ir.VectorType):
        return ir.Constant(ty, [ir.Constant(ty.element, value)] * ty.count)
    return ir.Constant(ty, value)


def as_i64(builder: ir.IRBuilder, value: ir.Value | int) -> ir.Value:
    """Widen (sign-extend) an integer value to i64; Python ints become constants."""
    if isinstance(value, int):
        return const_i64(value)
    if value.type.width < 64:
        return builder.sext(value, I64)
    return value


def set_fastmath(instr: ir.Instruction, flags: Sequence[str] = CONTRACT) -> ir.Instruction:
    """Add fast-math flags to an already built float instruction and return it."""
    for flag in flags:
        instr.flags.append(flag)
    return instr


# --- addresses, loads and stores --------------------------------------------------------------
def gep(builder: ir.IRBuilder, ptr: ir.Value, elem_ty: ir.Type, *indices: ir.Value | int,
        inbounds: bool = True, name: str = "") -> ir.Value:
    """Address of `ptr[indices...]` over elements of `elem_ty` (ints become i64 constants)."""
    idx = [as_i64(builder, i) if isinstance(i, int) else i for i in indices]
    return builder.gep(ptr, idx, inbounds=inbounds, name=name, source_etype=elem_ty)


def load(builder: ir.IRBuilder, ptr: ir.Value, ty: ir.Type, align: int | None = None,
         name: str = "") -> ir.Value:
    return builder.load(ptr, name=name, align=align, typ=ty)


def load_vec(builder: ir.IRBuilder, ptr: ir.Value, elem_ty: ir.Type, lanes: int,
             align: int | None = None) -> ir.Value:
    """Load `lanes` consecutive elements at `ptr` as one vector (align=None: element alignment)."""
    vty = vector_type(elem_ty, lanes)
    return builder.load(ptr, align=align or _size(elem_ty), typ=vty)


def store_vec(builder: ir.IRBuilder, value: ir.Value, ptr: ir.Value,
              align: int | None = None) -> ir.Instruction:
    """Store a vector to consecutive elements at `ptr` (align=None: element alignment)."""
    return builder.store(value, ptr, align=align or _size(value.type.element))


def lane_mask(builder: ir.IRBuilder, lanes: int, count: ir.Value) -> ir.Value:
    """`<lanes x i1>`, true for lanes `0 .. count-1` (count: any i64, also < 0 or > lanes)."""
    iota = ir.Constant(vector_type(I64, lanes), [ir.Constant(I64, i) for i in range(lanes)])
    return builder.icmp_signed("<", iota, splat(builder, count, lanes))


def masked_load_vec(builder: ir.IRBuilder, ptr: ir.Value, elem_ty: ir.Type, lanes: int,
                    mask: ir.Value, passthru: ir.Value | None = None) -> ir.Value:
    """Load only the lanes where `mask` is set; others read as `passthru` (default 0).
    Masked-off lanes never touch memory, so this is safe at the end of a buffer."""
    vty = vector_type(elem_ty, lanes)
    fn = intrinsic(builder.module, "llvm.masked.load", vty, [PTR, I32, mask.type, vty],
                   [vty, PTR])
    passthru = passthru if passthru is not None else ir.Constant(vty, None)
    return builder.call(fn, [ptr, const_i32(_size(elem_ty)), mask, passthru])


def masked_store_vec(builder: ir.IRBuilder, value: ir.Value, ptr: ir.Value,
                     mask: ir.Value) -> ir.Instruction:
    """Store only the lanes of `value` where `mask` is set."""
    fn = intrinsic(builder.module, "llvm.masked.store", VOID,
                   [value.type, PTR, I32, mask.type], [value.type, PTR])
    return builder.call(fn, [value, ptr, const_i32(_size(value.type.element)), mask])


def splat(builder: ir.IRBuilder, scalar: ir.Value, lanes: int) -> ir.Value:
    """Broadcast a scalar to all lanes (insertelement + zero shuffle, which LLVM turns into
    `vbroadcastss` or an embedded `{1to16}` memory operand)."""
    vty = vector_type(scalar.type, lanes)
    one = builder.insert_element(ir.Constant(vty, None), scalar, const_i32(0))
    zeros = ir.Constant(vector_type(I32, lanes), None)
    return builder.shuffle_vector(one, ir.Constant(vty, None), zeros)


def transpose_vectors(builder: ir.IRBuilder, rows: Sequence[ir.Value]) -> list[ir.Value]:
    """Transpose an n x n matrix held as n vectors of n lanes (n a power of two): result[l][r]
    is rows[r][l]. log2(n) stages of two-input shuffles (64 for 16 x 16 floats)."""
    n = len(rows)
    if n & (n - 1) or any(r.type.count != n for r in rows):
        raise ValueError("transpose_vectors: need n vectors of n lanes, n a power of two")
    rows = list(rows)
    d = 1
    while d < n:
        # Swap the (row bit d = 0, lane bit d = 1) elements with (row bit d = 1, lane bit d = 0).
        lo_mask = [lane if not lane & d else n + lane - d for lane in range(n)]
        hi_mask = [lane + d if not lane & d else n + lane for lane in range(n)]
        for r in range(n):
            if r & d:
                continue
            a, b = rows[r], rows[r + d]
            rows[r] = builder.shuffle_vector(a, b, _mask(lo_mask))
            rows[r + d] = builder.shuffle_vector(a, b, _mask(hi_mask))
        d *= 2
    return rows


def _mask(indices: Sequence[int]) -> ir.Constant:
    return ir.Constant(vector_type(I32, len(indices)), [const_i32(i) for i in indices])


def _size(ty: ir.Type) -> int:
    if isinstance(ty, ir.IntType):
        return max(1, ty.width // 8)
    return {F16: 2, F32: 4, F64: 8}.get(ty, 8)


# --- functions and intrinsics -----------------------------------------------------------------
def intrinsic(module: ir.Module, name: str, ret: ir.Type, args: Sequence[ir.Type],
              overloads: Sequence[ir.Type] = ()) -> ir.Function:
    """Declare an LLVM intrinsic once. `overloads` are the types its name is mangled with, e.g.
    `intrinsic(m, "llvm.fma", v16f32, [v16f32] * 3, [v16f32])` declares `llvm.fma.v16f32`."""
    mangled = ".".join([name, *(_mangle(t) for t in overloads)])
    return get_or_declare(module, mangled, ir.FunctionType(ret, list(args)))


def _mangle(ty: ir.Type) -> str:
    if isinstance(ty, ir.VectorType):
        return f"v{ty.count}{_mangle(ty.element)}"
    if isinstance(ty, ir.PointerType):
        return "p0"
    return {F16: "f16", F32: "f32", F64: "f64"}.get(ty) or f"i{ty.width}"


def get_or_declare(module: ir.Module, name: str, fnty: ir.FunctionType) -> ir.Function:
    """The function `name` of `module`, declaring it with `fnty` if it does not exist yet."""
    existing = module.globals.get(name)
    if existing is not None:
        if existing.function_type != fnty:
            raise TypeError(f"{name} is already declared as {existing.function_type}, not {fnty}")
        return existing
    return ir.Function(module, fnty, name)


def fma(builder: ir.IRBuilder, a: ir.Value, b: ir.Value, c: ir.Value) -> ir.Value:
    """`a * b + c` rounded once (`llvm.fma`), for scalars or vectors."""
    fn = intrinsic(builder.module, "llvm.fma", a.type, [a.type] * 3, [a.type])
    return builder.call(fn, [a, b, c])


def call_indirect(builder: ir.IRBuilder, fnty: ir.FunctionType, fnptr: ir.Value,
                  args: Sequence[ir.Value]) -> ir.Value:
    """Call through a function pointer held in an opaque `ptr` value."""
    # NOTE: llvmlite needs a callee whose type names the function type; `ptr`-to-`ptr` bitcasts
    # are dropped as no-ops, so round-trip through i64 (LLVM folds it away again).
    callee = builder.inttoptr(builder.ptrtoint(fnptr, I64), ir.PointerType(fnty))
    return builder.call(callee, list(args))


# --- allocas and loops ------------------------------------------------------------------------
def alloca_once(builder: ir.IRBuilder, ty: ir.Type, size: int | ir.Value | None = None,
                align: int | None = None, name: str = "") -> ir.Value:
    """An alloca at the top of the function's entry block, so it is created once per call
    (not per loop iteration) and mem2reg/SROA can promote it. `size` must be a constant."""
    entry = builder.function.entry_basic_block
    with builder.goto_block(entry):
        builder.position_at_start(entry)
        count = as_i64(builder, size) if size is not None else None
        slot = builder.alloca(ty, size=count, name=name)
    slot.type = PTR  # NOTE: llvmlite types allocas as `ty*`; everything here is opaque `ptr`
    if align:
        slot.align = align
    return slot


class DistinctNode(ir.MDValue):
    """A `distinct` metadata node (llvmlite prints uniqued ones only): compared by identity."""

    def __init__(self, module: ir.Module, operands: Sequence[ir.MDValue] = ()):
        super().__init__(module, list(operands), name=str(len(module.metadata)))

    def descr(self, buf):
        buf.append("distinct ")
        super().descr(buf)

    __hash__ = object.__hash__

    def __eq__(self, other):
        return self is other


class LoopID(DistinctNode):
    """A distinct, self-referential `!llvm.loop` node carrying loop hints."""

    def __init__(self, module: ir.Module, hints: Sequence[ir.MDValue]):
        super().__init__(module)
        self.operands = (self, *hints)


class AccessGroup(DistinctNode):
    """A distinct, empty `!llvm.access.group` node: memory accesses tagged with it (see
    `tag_access`) carry no dependence between iterations of a loop whose hints name it."""


def tag_access(inst: ir.Instruction, group: AccessGroup | None) -> ir.Instruction:
    """`inst` (a load or store) as a member of `group` (None: untouched)."""
    if group is not None:
        inst.set_metadata("llvm.access.group", group)
    return inst


def loop_hints(module: ir.Module, vectorize: int | bool | None = None,
               unroll: int | bool | None = None, interleave: int | None = None,
               parallel: AccessGroup | None = None) -> LoopID:
    """Loop metadata: `vectorize=True|False|width`, `unroll=True|False|count`,
    `interleave=count` (independent vector accumulators of a vectorized reduction) and
    `parallel`: the access group whose loads and stores no iteration orders against another's
    (so the vectorizer needs no runtime overlap checks: an update written in place over the
    array it reads, at the same index, vectorizes)."""
    hints = []
    if parallel is not None:
        hints.append(module.add_metadata([ir.MetaDataString(module, "llvm.loop.parallel_accesses"),
                                          parallel]))

    def hint(key: str, value: ir.Value) -> None:
        hints.append(module.add_metadata([ir.MetaDataString(module, key), value]))

    if vectorize is not None:
        hint("llvm.loop.vectorize.enable", ir.Constant(I1, bool(vectorize)))
        if not isinstance(vectorize, bool):
            hint("llvm.loop.vectorize.width", const_i32(vectorize))
    if interleave is not None:
        hint("llvm.loop.interleave.count", const_i32(interleave))
    if unroll is True:
        hints.append(module.add_metadata([ir.MetaDataString(module, "llvm.loop.unroll.full")]))
    elif unroll is False:
        hints.append(module.add_metadata([ir.MetaDataString(module, "llvm.loop.unroll.disable")]))
    elif unroll is not None:
        hint("llvm.loop.unroll.count", const_i32(unroll))
    return LoopID(module, hints)


@contextlib.contextmanager
def for_range(builder: ir.IRBuilder, start: ir.Value | int, stop: ir.Value | int,
              step: int = 1, vectorize: int | bool | None = None,
              unroll: int | bool | None = None, name: str = "i",
              interleave: int | None = None,
              parallel: AccessGroup | None = None) -> Iterator[ir.Value]:
    """`for i in range(start, stop, step)` over i64 (step is a nonzero Python int).

    Yields the index (a phi); the body emitted inside the `with` may create blocks of its own.
    After the `with`, the builder is positioned after the loop. `vectorize`/`unroll` attach
    `!llvm.loop` hints (also `interleave` and `parallel`). Example::

        with for_range(b, 0, n, vectorize=True) as i:
            store(b, gep(b, out, F32, i), ...)
    """
    start, stop = as_i64(builder, start), as_i64(builder, stop)
    pre = builder.block
    head = builder.append_basic_block(f"{name}.head")
    body = builder.append_basic_block(f"{name}.body")
    end = builder.append_basic_block(f"{name}.end")
    builder.branch(head)
    builder.position_at_end(head)
    idx = builder.phi(I64, name=name)
    idx.add_incoming(start, pre)
    cond = builder.icmp_signed("<" if step > 0 else ">", idx, stop)
    builder.cbranch(cond, body, end)
    builder.position_at_end(body)
    yield idx
    nxt = builder.add(idx, const_i64(step), name=f"{name}.next", flags=["nsw"])
    idx.add_incoming(nxt, builder.block)
    latch = builder.branch(head)
    if vectorize is not None or unroll is not None or interleave is not None or \
            parallel is not None:
        latch.set_metadata("llvm.loop", loop_hints(builder.module, vectorize, unroll, interleave,
                                                   parallel))
    builder.position_at_end(end)


def prefetch_range(builder: ir.IRBuilder, start: ir.Value, end: ir.Value,
                   line: int = 64) -> None:
    """Prefetch, for reading into every cache level, each `line` bytes of the integer
    addresses [start, end) (i64). A hint: nothing is loaded and no address faults."""
    fn = intrinsic(builder.module, "llvm.prefetch", ir.VoidType(), [PTR, I32, I32, I32], [PTR])
    with for_range(builder, start, end, step=line, vectorize=False, unroll=False,
                   name="prefetch") as at:
        builder.call(fn, [builder.inttoptr(at, PTR), const_i32(0), const_i32(3), const_i32(1)])


def imin(builder: ir.IRBuilder, a: ir.Value, b: ir.Value) -> ir.Value:
    """Signed integer minimum."""
    return builder.select(builder.icmp_signed("<", a, b), a, b)


def imax(builder: ir.IRBuilder, a: ir.Value, b: ir.Value) -> ir.Value:
    """Signed integer maximum."""
    return builder.select(builder.icmp_signed(">", a, b), a, b)


def ceil_div(builder: ir.IRBuilder, a: ir.Value, b: ir.Value | int) -> ir.Value:
    """`(a + b - 1) // b` for non-negative a and positive b."""
    b = as_i64(builder, b) if isinstance(b, int) else b
    return builder.sdiv(builder.sub(builder.add(a, b), const_i64(1)), b)
