"""fold_constants: Before/Expected folds of chains, iota and broadcast operands, the size cap (never
a large constant out of small ones), random_uniform's policy, scan (never folded, folded inside),
and the folded const's source location."""
from __future__ import annotations

import numpy as np

from nnjit.ir import Builder, DType, Loc, Op, TensorType, evaluate, prims, verify
from nnjit.passes.fold import FOLD_MAX_ELEMENTS, fold_constants
from tests.passes.test_rewrite import assert_pass, assert_same_bits, assert_unchanged


def test_folds_a_chain_of_constant_ops():
    assert_pass(fold_constants, """
func @f(%x: f32[2]) -> (f32[2]) {
  %0 = const() {value = dense<f32[2], [2.0, -1.0]>} : f32[2]
  %1 = const() {value = dense<f32[], [3.5]>} : f32[]
  %2 = add(%0, %1) : f32[2]
  %3 = neg(%2) : f32[2] loc("m.py":4 in "f")
  %4 = mul(%x, %3) : f32[2]
  return %4
}""", """
func @f(%x: f32[2]) -> (f32[2]) {
  %0 = const() {value = dense<f32[2], [2.0, -1.0]>} : f32[2]
  %1 = const() {value = dense<f32[], [3.5]>} : f32[]
  %2 = const() {value = dense<f32[2], [5.5, 2.5]>} : f32[2]
  %3 = const() {value = dense<f32[2], [-5.5, -2.5]>} : f32[2] loc("m.py":4 in "f")
  %4 = mul(%x, %3) : f32[2]
  return %4
}""")


def test_folds_every_kind_of_op_with_its_reference():
    assert_pass(fold_constants, """
func @f() -> (i64[2], f64[3,2], bool[], f32[2], i32[]) {
  %0 = const() {value = dense<f64[2,3], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]>} : f64[2,3]
  %1 = sum(%0) {axes = [1], keepdims = false} : f64[2]
  %2 = cast(%1) {dtype = i64} : i64[2]
  %3 = transpose(%0) {perm = [1, 0]} : f64[3,2]
  %4 = const() {value = dense<f32[], [nan]>} : f32[]
  %5 = eq(%4, %4) : bool[]
  %6 = reshape(%4) {shape = [1]} : f32[1]
  %7 = pad(%6) {pads = [[1, 0]], value = -0.0} : f32[2]
  %8 = const() {value = dense<f32[], [1.5]>} : f32[]
  %9 = cast(%8) {dtype = i32} : i32[]
  return %2, %3, %5, %7, %9
}""", """
func @f() -> (i64[2], f64[3,2], bool[], f32[2], i32[]) {
  %0 = const() {value = dense<f64[2,3], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]>} : f64[2,3]
  %1 = const() {value = dense<f64[2], [6.0, 15.0]>} : f64[2]
  %2 = const() {value = dense<i64[2], [6, 15]>} : i64[2]
  %3 = const() {value = dense<f64[3,2], [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]>} : f64[3,2]
  %4 = const() {value = dense<f32[], [nan]>} : f32[]
  %5 = const() {value = dense<bool[], [false]>} : bool[]
  %6 = const() {value = dense<f32[1], [nan]>} : f32[1]
  %7 = const() {value = dense<f32[2], [-0.0, nan]>} : f32[2]
  %8 = const() {value = dense<f32[], [1.5]>} : f32[]
  %9 = const() {value = dense<i32[], [1]>} : i32[]
  return %2, %3, %5, %7, %9
}""")


def test_iota_and_broadcast_operands_are_read_but_not_materialized_alone():
    assert_pass(fold_constants, """
func @f() -> (i64[2,3], bool[2,3], f32[2,3]) {
  %0 = iota() {shape = [2, 3], axis = 1, dtype = i64} : i64[2,3]
  %1 = const() {value = dense<i64[2,1], [0, 2]>} : i64[2,1]
  %2 = eq(%0, %1) : bool[2,3]
  %3 = const() {value = dense<f32[], [0.0]>} : f32[]
  %4 = broadcast_to(%3) {shape = [2, 3]} : f32[2,3]
  return %0, %2, %4
}""", """
func @f() -> (i64[2,3], bool[2,3], f32[2,3]) {
  %0 = iota() {shape = [2, 3], axis = 1, dtype = i64} : i64[2,3]
  %1 = const() {value = dense<i64[2,1], [0, 2]>} : i64[2,1]
  %2 = const() {value = dense<bool[2,3], [true, false, false, false, false, true]>} : bool[2,3]
  %3 = const() {value = dense<f32[], [0.0]>} : f32[]
  %4 = broadcast_to(%3) {shape = [2, 3]} : f32[2,3]
  return %0, %2, %4
}""")


def test_nodes_reading_an_input_are_not_folded():
    assert_unchanged(fold_constants, """
func @f(%x: f32[3]) -> (f32[3]) {
  %0 = const() {value = dense<f32[], [2.0]>} : f32[]
  %1 = mul(%x, %0) : f32[3]
  %2 = exp(%1) : f32[3]
  return %2
}""")


def _splat_graph(shape, op="neg"):
    b = Builder("f")
    x = b.input(TensorType((), DType.F32), "x")
    big = prims.broadcast_to(b.const(np.float32(2.0)), shape)
    y = prims.neg(big) if op == "neg" else prims.reduce_sum(big)
    return b.build([y * x])


def test_folding_never_makes_a_large_constant_out_of_a_small_one():
    g = _splat_graph((64, 64))              # 4096 elements: the cap itself
    assert 64 * 64 == FOLD_MAX_ELEMENTS
    assert [n.op for n in fold_constants(g).nodes] == [Op.CONST, Op.BROADCAST_TO, Op.CONST, Op.MUL]
    for shape in [(65, 64), (4096, 4096)]:  # over the cap: not folded (and not evaluated)
        g = _splat_graph(shape)
        assert fold_constants(g) is g
    # a small result of a larger known operand is fine (the broadcast is evaluated to sum it)
    g = _splat_graph((128, 128), op="sum")
    out = fold_constants(g)
    assert [n.op for n in out.nodes] == [Op.CONST, Op.BROADCAST_TO, Op.CONST, Op.MUL]
    assert out.nodes[2].attrs["value"] == np.float32(2.0 * 128 * 128)


def test_a_result_no_larger_than_its_constant_operand_is_folded_whatever_its_size():
    b = Builder("f")
    x = b.input(TensorType((), DType.F64), "x")
    big = b.const(np.arange(10000, dtype=np.float64))
    g = b.build([prims.exp(big) * x, prims.broadcast_to(big, (2, 10000))])
    out = fold_constants(g)
    assert [n.op for n in out.nodes] == [Op.CONST, Op.CONST, Op.MUL, Op.BROADCAST_TO]
    args = [np.float64(0.5)]
    assert_same_bits(evaluate(out, args), evaluate(g, args))


def test_random_uniform_folds_only_with_a_constant_seed_and_a_small_result():
    b = Builder("f")
    seed = b.input(TensorType((), DType.I64), "seed")
    k = b.const(np.int64(42))
    small = prims.random_uniform(k, (4, 5), salt=3)
    large = prims.random_uniform(k, (100, 100), salt=3)
    other = prims.random_uniform(seed, (4, 5), salt=3)
    g = b.build([small, large, other])
    out = fold_constants(g)
    verify(out)
    assert [n.op for n in out.nodes] == [Op.CONST, Op.CONST, Op.RANDOM_UNIFORM,
                                         Op.RANDOM_UNIFORM]
    args = [np.int64(42)]
    got, want = evaluate(out, args), evaluate(g, args)
    assert_same_bits(got, want)
    np.testing.assert_array_equal(got[0], got[2])     # the folded bits are Philox's


def test_scan_is_never_folded_but_its_body_is():
    assert_pass(fold_constants, """
func @f() -> (f32[], f32[2]) {
  %0 = const() {value = dense<f32[], [1.0]>} : f32[]
  %1 = const() {value = dense<f32[2], [1.0, 2.0]>} : f32[2]
  %2:2 = scan(%0, %1) {body = func @body(%c: f32[], %x: f32[]) -> (f32[], f32[]) {
    %0 = const() {value = dense<f32[], [4.0]>} : f32[]
    %1 = sqrt(%0) : f32[]
    %2 = mul(%c, %x) : f32[]
    %3 = neg(%0) : f32[]
    return %2, %3
  }, num_carry = 1, num_consts = 0, length = 2, reverse = false} : (f32[], f32[2])
  return %2#0, %2#1
}""", """
func @f() -> (f32[], f32[2]) {
  %0 = const() {value = dense<f32[], [1.0]>} : f32[]
  %1 = const() {value = dense<f32[2], [1.0, 2.0]>} : f32[2]
  %2:2 = scan(%0, %1) {body = func @body(%c: f32[], %x: f32[]) -> (f32[], f32[]) {
    %0 = const() {value = dense<f32[], [4.0]>} : f32[]
    %1 = const() {value = dense<f32[], [2.0]>} : f32[]
    %2 = mul(%c, %x) : f32[]
    %3 = const() {value = dense<f32[], [-4.0]>} : f32[]
    return %2, %3
  }, num_carry = 1, num_consts = 0, length = 2, reverse = false} : (f32[], f32[2])
  return %2#0, %2#1
}""")


def test_folded_constants_keep_the_source_line():
    b = Builder("f")
    with b.at(Loc("model.py", 12, "forward")):
        y = prims.exp(b.const(np.float32(0.0)))
    out = fold_constants(b.build([y]))
    assert out.outputs[0].node.op == Op.CONST
    assert out.outputs[0].node.loc == Loc("model.py", 12, "forward")


def test_folds_overflow_nan_and_signed_zeros_as_the_reference_does():
    # integers wrap, inf - inf and 0 / 0 are the CPU's default NaN (x86's has the sign bit set),
    # kept bit for bit, -1 * 0 is -0.0, a float cast saturates and maps NaN to 0, and a sum adds
    # to +0.0 (so it gives +0.0 for -0.0)
    with np.errstate(invalid="ignore"):
        nan = "0x" + (np.float32(np.inf) - np.float32(np.inf)).tobytes().hex()
    assert_pass(fold_constants, """
func @f() -> (i32[], i32[], f32[], f32[], f32[], i32[2], f32[]) {
  %0 = const() {value = dense<i32[], [2147483647]>} : i32[]
  %1 = const() {value = dense<i32[], [1]>} : i32[]
  %2 = add(%0, %1) : i32[]
  %3 = neg(%2) : i32[]
  %4 = const() {value = dense<f32[], [inf]>} : f32[]
  %5 = sub(%4, %4) : f32[]
  %6 = const() {value = dense<f32[], [-1.0]>} : f32[]
  %7 = const() {value = dense<f32[], [0.0]>} : f32[]
  %8 = mul(%6, %7) : f32[]
  %9 = div(%7, %7) : f32[]
  %10 = const() {value = dense<f32[2], [nan, 3e+38]>} : f32[2]
  %11 = cast(%10) {dtype = i32} : i32[2]
  %12 = const() {value = dense<f32[1], [-0.0]>} : f32[1]
  %13 = sum(%12) {axes = [0], keepdims = false} : f32[]
  return %2, %3, %5, %8, %9, %11, %13
}""", """
func @f() -> (i32[], i32[], f32[], f32[], f32[], i32[2], f32[]) {
  %0 = const() {value = dense<i32[], [2147483647]>} : i32[]
  %1 = const() {value = dense<i32[], [1]>} : i32[]
  %2 = const() {value = dense<i32[], [-2147483648]>} : i32[]
  %3 = const() {value = dense<i32[], [-2147483648]>} : i32[]
  %4 = const() {value = dense<f32[], [inf]>} : f32[]
  %5 = const() {value = dense<f32[], "NAN">} : f32[]
  %6 = const() {value = dense<f32[], [-1.0]>} : f32[]
  %7 = const() {value = dense<f32[], [0.0]>} : f32[]
  %8 = const() {value = dense<f32[], [-0.0]>} : f32[]
  %9 = const() {value = dense<f32[], "NAN">} : f32[]
  %10 = const() {value = dense<f32[2], [nan, 3e+38]>} : f32[2]
  %11 = const() {value = dense<i32[2], [0, 2147483647]>} : i32[2]
  %12 = const() {value = dense<f32[1], [-0.0]>} : f32[1]
  %13 = const() {value = dense<f32[], [0.0]>} : f32[]
  return %2, %3, %5, %8, %9, %11, %13
}""".replace("NAN", nan))
