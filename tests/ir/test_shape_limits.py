"""No silent wrong answers from impossible sizes: a tensor whose element count or byte size
overflows int64, or exceeds the 2**47 bytes one process can address, is a ShapeError at trace
time naming the op and the user's line; parse and verify reject such types; an arena the machine
cannot give is a MemoryError naming the function and the bytes asked for.

Nothing here allocates a large buffer: traced-only graphs never run, and arenas are asked for
more than any address space holds (2**48 bytes), so mmap and numpy refuse at once.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

import nnjit
from nnjit.ir import Builder, DType, Graph, Loc, Node, Op, TensorType, parse, prims, verify
from nnjit.ir.graph import make_input
from nnjit.ir.types import MAX_TENSOR_BYTES

F32, F64 = DType.F32, DType.F64
HUGE = (1 << 62, 4)
THIS_FILE = "test_shape_limits.py"


def test_the_limit_is_the_47_bit_address_space():
    assert MAX_TENSOR_BYTES == 2 ** 47


# -- trace time ----------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,has", [
    ((1 << 40, 1 << 40), "f32[1099511627776,1099511627776] has 2**80 elements (2**82 bytes)"),
    (HUGE, "f32[4611686018427387904,4] has 2**64 elements (2**66 bytes)")])
def test_broadcast_to_beyond_int64_is_a_shape_error_at_trace_time_naming_the_line(shape, has):
    """These used to compile and return 0.0: the element count wrapped in generated code."""
    fn = lambda x: nnjit.broadcast_to(x, shape).sum()  # noqa: E731
    f = nnjit.jit(fn, backend="llvm")
    with pytest.raises(nnjit.ShapeError) as info:
        f(np.float32(1))
    e = info.value
    assert e.op == "broadcast_to"
    assert e.loc.file.endswith(THIS_FILE) and e.loc.line == fn.__code__.co_firstlineno
    assert str(e) == (
        f"broadcast_to: {has}: the element count overflows int64; a tensor can have at most "
        f"2**47 bytes (128 TiB, the x86-64/aarch64 user address space) at {e.loc}")
    with pytest.raises(nnjit.ShapeError, match="^broadcast_to: "):   # tracing alone raises
        nnjit.trace(fn, np.float32(1))


def _broadcast(b):
    return prims.broadcast_to(b.input(TensorType((), F32), "x"), HUGE)


def _reshape_of_empty(b):
    # element count 0, but its other dims (loop bounds, strides) still overflow int64
    return prims.reshape(b.input(TensorType((0,), F32), "x"), HUGE + (0,))


def _reshape(b):
    return prims.reshape(b.input(TensorType((3,), F32), "x"), HUGE)


def _iota(b):
    return prims.iota(b, HUGE, 0)


def _random_uniform(b):
    return prims.random_uniform(b.input(TensorType((), DType.I64), "seed"), HUGE)


def _input(b):
    return b.input(TensorType(HUGE, F32), "x")


def _const_of_a_broadcast_view(b):
    # a legal numpy array (zero strides) that no copy could hold: rejected before copying it
    return b.const(np.broadcast_to(np.float32(1), (1 << 30, 1 << 30)))


@pytest.mark.parametrize("make,op,why", [
    (_broadcast, "broadcast_to", "the element count overflows int64"),
    (_reshape_of_empty, "reshape", r"2\*\*64 elements in its non-zero dims"),
    (_reshape, "reshape", r"cannot reshape \(3,\) into \(4611686018427387904, 4\)"),
    (_iota, "iota", r"i64\[4611686018427387904,4\] has 2\*\*64 elements \(2\*\*67 bytes\)"),
    (_random_uniform, "random_uniform", "the element count overflows int64"),
    (_input, "input %x", "the element count overflows int64"),
    (_const_of_a_broadcast_view, "const", r"f32\[1073741824,1073741824\] has 2\*\*60 elements "
     r"\(2\*\*62 bytes\); a tensor can have at most 2\*\*47 bytes"),
], ids=lambda v: v.__name__.strip("_") if callable(v) else None)
def test_every_source_of_a_huge_shape_is_a_shape_error_at_the_users_line(make, op, why):
    b = Builder("f")
    with pytest.raises(nnjit.ShapeError) as info:
        make(b)
    e = info.value
    assert e.op == op and re.search(why, e.reason), str(e)
    assert e.loc is not None and e.loc.file.endswith(THIS_FILE), str(e)
    assert all(t.oversize_dim() is None for n in b.nodes for t in n.types)   # nothing was added
    assert all(v.type.oversize_dim() is None for v in b.inputs)


def test_a_jit_argument_that_is_a_huge_broadcast_view_is_rejected_by_name():
    x = np.broadcast_to(np.float32(1), (1 << 30, 1 << 30))    # 2**62 bytes, all one element
    with pytest.raises(nnjit.ShapeError, match=r"^input %x: f32\[1073741824,1073741824\] has "
                       r"2\*\*60 elements \(2\*\*62 bytes\); .* at .*test_shape_limits\.py:\d+"):
        nnjit.jit(lambda x: x.sum(), backend="llvm")(x)


def test_f64_whose_element_count_fits_int64_but_byte_size_does_not():
    t = TensorType((1 << 61, 2), F64)
    assert t.size < 2 ** 63 <= t.nbytes
    with pytest.raises(nnjit.ShapeError, match=r"2\*\*62 elements \(2\*\*65 bytes\): the byte "
                       r"size overflows int64"):
        t.check_size()
    seed = Builder("f").input(TensorType((), DType.I64), "seed")
    with pytest.raises(nnjit.ShapeError, match="^random_uniform: f64.*byte size overflows"):
        prims.random_uniform(seed, (1 << 61, 2), dtype=F64)


def test_within_int64_but_beyond_the_address_space():
    with pytest.raises(nnjit.ShapeError) as info:
        TensorType((2 ** 45 + 1,), F32).check_size()
    assert info.value.reason == (
        "f32[35184372088833] has 35184372088833 elements (140737488355332 bytes); a tensor can "
        "have at most 2**47 bytes (128 TiB, the x86-64/aarch64 user address space)")


@pytest.mark.parametrize("shape,dtype", [((2 ** 45,), F32), ((2 ** 44,), F64),
                                         ((2 ** 47,), DType.BOOL), ((2 ** 20, 2 ** 25), F32),
                                         ((0, 2 ** 45), F32), ((2 ** 45, 1, 0), F32)])
def test_shapes_up_to_the_limit_are_accepted_at_trace_time(shape, dtype):
    """Only traced, never run: these are 128 TiB."""
    t = TensorType(shape, dtype)
    assert t.oversize_dim() is None
    t.check_size()
    g = nnjit.trace(lambda x: prims.exp(prims.broadcast_to(x, shape)) if dtype.is_float else
                    prims.broadcast_to(x, shape), np.zeros((), dtype.np))
    assert g.outputs[0].type == t
    verify(g)
    assert parse(str(g)) == g


def test_one_element_over_the_limit_is_rejected():
    for shape, dtype in (((2 ** 45 + 1,), F32), ((2 ** 44 + 1,), F64), ((2 ** 47 + 1,),
                                                                        DType.BOOL)):
        assert TensorType(shape, dtype).oversize_dim() == 0
        with pytest.raises(nnjit.ShapeError, match="^broadcast_to: "):
            nnjit.trace(lambda x: prims.broadcast_to(x, shape), np.zeros((), dtype.np))


def test_sizes_are_exact_python_ints_whatever_ints_the_dims_came_as():
    t = TensorType((np.int64(1 << 62), np.int64(4)), F32)    # numpy would wrap 2**64 to 0
    assert t.size == 2 ** 64 and type(t.size) is int
    assert t.oversize_dim() == 0
    with pytest.raises(nnjit.ShapeError, match=r"2\*\*64 elements"):
        t.check_size()
    assert TensorType((2 ** 20, 2 ** 8, 2 ** 40), F32).oversize_dim() == 2


# -- parse and verify ------------------------------------------------------------------------------

def test_parse_rejects_a_huge_dim_at_the_dim():
    text = ("func @f(%x: f32[3]) -> (f32[3]) {\n"
            "  %0 = broadcast_to(%x) {shape = [4611686018427387904, 3]} : "
            "f32[4611686018427387904,3]\n  return %x\n}")
    with pytest.raises(nnjit.ParseError) as info:
        parse(text)
    e = info.value
    assert (e.line, e.col) == (2, text.splitlines()[1].index("f32[46") + 5)
    assert e.msg.startswith("f32[4611686018427387904,3] has ~2**63.6 elements (~2**65.6 bytes): "
                            "the element count overflows int64")


def test_verify_rejects_huge_inputs_and_nodes_by_name():
    big = TensorType(HUGE, F32)
    x = make_input("x", big, 0, Loc("m.py", 3, "f"))
    with pytest.raises(nnjit.VerifyError, match=r"^@g: input %x: f32\[4611686018427387904,4\] "
                       r"has 2\*\*64 elements .* at m\.py:3 in f$"):
        verify(Graph("g", (x,), (), (x,)))
    y = make_input("y", TensorType((4,), F32), 0)
    n = Node(Op.BROADCAST_TO, (y,), {"shape": HUGE}, (big,), Loc("m.py", 5, "f"))
    with pytest.raises(nnjit.VerifyError, match=r"^@g %0: broadcast_to: f32\[4611686018427387904,"
                       r"4\] has 2\*\*64 elements .*: broadcast_to\(f32\[4\]\) .* at m\.py:5 "
                       r"in f$"):
        verify(Graph("g", (y,), (n,), (n.out,)))


def test_verify_rejects_an_input_without_a_tensor_type():
    x = make_input("x", "f32[3]", 0)
    with pytest.raises(nnjit.VerifyError, match=r"^@g: input %x must have one TensorType, has "
                       r"\('f32\[3\]',\)"):
        verify(Graph("g", (x,), (), (x,)))


# -- arenas ----------------------------------------------------------------------------------------

def two_live_temps(x):
    """Unfused, exp(y) and tanh(y) are 2**47-byte temporaries live at once: a 2**48-byte arena."""
    y = nnjit.broadcast_to(x, (2 ** 45,))
    return (nnjit.exp(y) + nnjit.tanh(y)).sum()


def test_llvm_arena_beyond_the_address_space_is_a_memory_error_naming_the_function():
    f = nnjit.jit(two_live_temps, backend="llvm", fuse=False)
    with pytest.raises(MemoryError) as info:
        f(np.float32(1))
    assert str(info.value).startswith(
        "@two_live_temps: cannot allocate its arena of 281474976710656 bytes (256.0 TiB) for "
        "intermediate values: ")


def test_llvm_alloc_arena_wraps_mmap_and_numpy_failures(monkeypatch):
    from nnjit.backends.llvm import executable

    with pytest.raises(MemoryError, match=r"^@f: cannot allocate its arena of 281474976710656 "
                       r"bytes \(256\.0 TiB\) for intermediate values: \[Errno 12\]"):
        executable._alloc_arena(2 ** 48, "f")                 # the mmap path, really refused
    with pytest.raises(MemoryError, match=r"^@f: .* 18446744073709551616 bytes .*: "):
        executable._alloc_arena(2 ** 64, "f")                 # mmap: OverflowError

    def refuse(*a, **k):
        raise MemoryError("Unable to allocate 1.00 KiB")
    monkeypatch.setattr(executable.np, "empty", refuse)      # the small-arena path
    with pytest.raises(MemoryError, match=r"^@g: cannot allocate its arena of 1024 bytes "
                       r"\(0\.0 GiB\) for intermediate values: Unable to allocate 1\.00 KiB$"):
        executable._alloc_arena(1024, "g")

    def refuse_map(*a, **k):
        raise OSError(12, "Cannot allocate memory")
    from nnjit.backends import buffers                         # large arenas map through it
    monkeypatch.setattr(buffers.mmap, "mmap", refuse_map)      # the large-arena path
    with pytest.raises(MemoryError, match=r"^@h: .* 8388608 bytes .*\[Errno 12\] Cannot"):
        executable._alloc_arena(8 << 20, "h")


def _cuda():
    from numba import cuda
    if not cuda.is_available():
        pytest.skip("no GPU and no CUDA simulator")
    return cuda


def test_cuda_arena_too_large_is_a_memory_error_naming_the_function():
    _cuda()
    f = nnjit.jit(two_live_temps, backend="cuda", fuse=False)
    with pytest.raises(MemoryError, match=r"^@two_live_temps: cannot allocate its device arena "
                       r"of 2814749767\d+ bytes \(256\.0 TiB\) for intermediates, constants and "
                       r"staging: "):
        f(np.float32(1))


def test_cuda_alloc_arena_wraps_only_out_of_memory():
    from nnjit.backends.cuda import executable
    from numba.cuda.cudadrv.driver import CudaAPIError

    class FakeCuda:
        def __init__(self, code):
            self.code = code

        def device_array(self, n, dtype):
            e = CudaAPIError(self.code, "CUDA_ERROR_OUT_OF_MEMORY" if self.code == 2 else "x")
            e.code = self.code      # the simulator's CudaAPIError keeps only args
            raise e
    with pytest.raises(MemoryError, match=r"^@f: cannot allocate its device arena of 4096 "
                       r"bytes .*CUDA_ERROR_OUT_OF_MEMORY'?\)?$"):
        executable._alloc_arena(FakeCuda(2), 4096, "f")
    with pytest.raises(CudaAPIError):                     # other driver errors pass through
        executable._alloc_arena(FakeCuda(700), 4096, "f")
