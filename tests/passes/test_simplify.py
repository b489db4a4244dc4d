"""simplify: one Before/Expected test per rule of SIMPLIFY, and the cases where a rule must not
fire (float identities that would change a NaN, an infinity or the sign of a zero; rewrites that
would change a shape). Every case also checks the same bits on NaN/inf/signed-zero inputs."""
from __future__ import annotations

import numpy as np
import pytest

from nnjit.ir import Loc, Op, evaluate, parse
from nnjit.passes.simplify import SIMPLIFY, simplify
from tests.passes.test_rewrite import assert_pass, assert_same_bits, assert_unchanged


def fn(sig: str, body: str, ret: str) -> str:
    return f"func @f({sig}) -> ({ret}) {{\n{body}\n}}"


def C(k: int, dtype: str, value: str, shape: str = "") -> str:
    """`%k = const` of `value` (one element, or a dense list for `shape`)."""
    return f"  %{k} = const() {{value = dense<{dtype}[{shape}], [{value}]>}} : {dtype}[{shape}]"


# -- arithmetic identities ------------------------------------------------------------------------

@pytest.mark.parametrize("dt,zero", [("i32", "0"), ("i64", "0"), ("f32", "-0.0"),
                                     ("f64", "-0.0")])
@pytest.mark.parametrize("order", ["x+0", "0+x"])
def test_add_zero(dt, zero, order):
    add = "add(%x, %0)" if order == "x+0" else "add(%0, %x)"
    assert_pass(simplify, fn(f"%x: {dt}[3]", f"{C(0, dt, zero)}\n  %1 = {add} : {dt}[3]\n"
                             f"  return %1", f"{dt}[3]"),
                fn(f"%x: {dt}[3]", f"{C(0, dt, zero)}\n  return %x", f"{dt}[3]"))


@pytest.mark.parametrize("order", ["x+0", "0+x"])
def test_add_positive_zero_to_a_float_is_kept(order):
    # -0.0 + 0.0 = +0.0: dropping the add would return -0.0.
    add = "add(%x, %0)" if order == "x+0" else "add(%0, %x)"
    assert_unchanged(simplify, fn("%x: f32[3]", f"{C(0, 'f32', '0.0')}\n  %1 = {add} : f32[3]\n"
                                  "  return %1", "f32[3]"))


def test_add_zero_that_broadcasts_x_is_kept():
    assert_unchanged(simplify, fn("%x: i32[3]", f"{C(0, 'i32', '0, 0, 0, 0, 0, 0', '2,3')}\n"
                                  "  %1 = add(%x, %0) : i32[2,3]\n  return %1", "i32[2,3]"))


@pytest.mark.parametrize("dt,zero", [("i64", "0"), ("f32", "0.0")])
def test_sub_zero(dt, zero):
    assert_pass(simplify, fn(f"%x: {dt}[3]", f"{C(0, dt, zero)}\n  %1 = sub(%x, %0) : {dt}[3]\n"
                             "  return %1", f"{dt}[3]"),
                fn(f"%x: {dt}[3]", f"{C(0, dt, zero)}\n  return %x", f"{dt}[3]"))


def test_sub_negative_zero_from_a_float_is_kept():
    assert_unchanged(simplify, fn("%x: f64[3]", f"{C(0, 'f64', '-0.0')}\n"
                                  "  %1 = sub(%x, %0) : f64[3]\n  return %1", "f64[3]"))


def test_zero_minus_x_is_kept():
    assert_unchanged(simplify, fn("%x: i32[3]", f"{C(0, 'i32', '0')}\n"
                                  "  %1 = sub(%0, %x) : i32[3]\n  return %1", "i32[3]"))


@pytest.mark.parametrize("dt,one", [("i32", "1"), ("f32", "1.0"), ("f64", "1.0")])
@pytest.mark.parametrize("order", ["x*1", "1*x"])
def test_mul_one(dt, one, order):
    mul = "mul(%x, %0)" if order == "x*1" else "mul(%0, %x)"
    assert_pass(simplify, fn(f"%x: {dt}[2,3]", f"{C(0, dt, one)}\n  %1 = {mul} : {dt}[2,3]\n"
                             "  return %1", f"{dt}[2,3]"),
                fn(f"%x: {dt}[2,3]", f"{C(0, dt, one)}\n  return %x", f"{dt}[2,3]"))


@pytest.mark.parametrize("order", ["x*0", "0*x"])
def test_mul_zero_on_integers(order):
    mul = "mul(%x, %0)" if order == "x*0" else "mul(%0, %x)"
    assert_pass(simplify, fn("%x: i64[2,3]", f"{C(0, 'i64', '0')}\n  %1 = {mul} : i64[2,3]\n"
                             "  return %1", "i64[2,3]"),
                fn("%x: i64[2,3]", f"{C(0, 'i64', '0')}\n"
                   "  %1 = broadcast_to(%0) {shape = [2, 3]} : i64[2,3]\n  return %1", "i64[2,3]"))
    # a zero of the full shape is the result itself
    assert_pass(simplify, fn("%x: i32[2]", f"{C(0, 'i32', '0, 0', '2')}\n"
                             f"  %1 = {mul} : i32[2]\n  return %1", "i32[2]"),
                fn("%x: i32[2]", f"{C(0, 'i32', '0, 0', '2')}\n  return %0", "i32[2]"))


@pytest.mark.parametrize("zero", ["0.0", "-0.0"])
def test_mul_zero_on_floats_is_kept(zero):
    # inf * 0 = NaN, NaN * 0 = NaN, -1 * 0 = -0.0: x*0 is not 0 for floats.
    assert_unchanged(simplify, fn("%x: f32[3]", f"{C(0, 'f32', zero)}\n"
                                  "  %1 = mul(%x, %0) : f32[3]\n  return %1", "f32[3]"))


def test_div_one():
    assert_pass(simplify, fn("%x: f32[3]", f"{C(0, 'f32', '1.0')}\n  %1 = div(%x, %0) : f32[3]\n"
                             "  return %1", "f32[3]"),
                fn("%x: f32[3]", f"{C(0, 'f32', '1.0')}\n  return %x", "f32[3]"))


def test_one_over_x_is_kept():
    assert_unchanged(simplify, fn("%x: f32[3]", f"{C(0, 'f32', '1.0')}\n"
                                  "  %1 = div(%0, %x) : f32[3]\n  return %1", "f32[3]"))


@pytest.mark.parametrize("dt", ["f32", "i32"])
def test_neg_neg(dt):
    assert_pass(simplify, fn(f"%x: {dt}[3]", f"  %0 = neg(%x) : {dt}[3]\n"
                             f"  %1 = neg(%0) : {dt}[3]\n  return %1", f"{dt}[3]"),
                fn(f"%x: {dt}[3]", f"  %0 = neg(%x) : {dt}[3]\n  return %x", f"{dt}[3]"))


@pytest.mark.parametrize("order", ["x+(-y)", "(-y)+x"])
def test_add_neg_is_sub(order):
    add = "add(%x, %0)" if order == "x+(-y)" else "add(%0, %x)"
    assert_pass(simplify, fn("%x: f32[2,3], %y: f32[3]", f"  %0 = neg(%y) : f32[3]\n"
                             f"  %1 = {add} : f32[2,3]\n  return %1", "f32[2,3]"),
                fn("%x: f32[2,3], %y: f32[3]", "  %0 = neg(%y) : f32[3]\n"
                   "  %1 = sub(%x, %y) : f32[2,3]\n  return %1", "f32[2,3]"))


def test_sub_neg_is_add():
    assert_pass(simplify, fn("%x: i32[3], %y: i32[3]", "  %0 = neg(%y) : i32[3]\n"
                             "  %1 = sub(%x, %0) : i32[3]\n  return %1", "i32[3]"),
                fn("%x: i32[3], %y: i32[3]", "  %0 = neg(%y) : i32[3]\n"
                   "  %1 = add(%x, %y) : i32[3]\n  return %1", "i32[3]"))


def test_neg_minus_y_is_kept():
    # -x - y has no cheaper exact form here
    assert_unchanged(simplify, fn("%x: f32[3], %y: f32[3]", "  %0 = neg(%x) : f32[3]\n"
                                  "  %1 = sub(%0, %y) : f32[3]\n  return %1", "f32[3]"))


@pytest.mark.parametrize("dt", ["f32", "f64"])
def test_x_minus_x_on_floats_is_kept(dt):
    # inf - inf = NaN - NaN = NaN
    assert_unchanged(simplify, fn(f"%x: {dt}[3]", f"  %0 = sub(%x, %x) : {dt}[3]\n  return %0",
                                  f"{dt}[3]"))


def test_x_plus_neg_x_on_floats_is_only_x_minus_x():
    # the regression of `mean(-v + v)` over an inf: NaN, never 0
    assert_pass(simplify, fn("%x: f32[3]", "  %0 = neg(%x) : f32[3]\n  %1 = add(%0, %x) : f32[3]\n"
                             "  return %1", "f32[3]"),
                fn("%x: f32[3]", "  %0 = neg(%x) : f32[3]\n  %1 = sub(%x, %x) : f32[3]\n"
                   "  return %1", "f32[3]"))


def test_not_not():
    assert_pass(simplify, fn("%x: bool[3]", "  %0 = logical_not(%x) : bool[3]\n"
                             "  %1 = logical_not(%0) : bool[3]\n  return %1", "bool[3]"),
                fn("%x: bool[3]", "  %0 = logical_not(%x) : bool[3]\n  return %x", "bool[3]"))


def test_stop_gradient():
    assert_pass(simplify, fn("%x: f32[3]", "  %0 = stop_gradient(%x) : f32[3]\n"
                             "  %1 = exp(%0) : f32[3]\n  return %1", "f32[3]"),
                fn("%x: f32[3]", "  %0 = exp(%x) : f32[3]\n  return %0", "f32[3]"))


def test_cast_to_the_same_dtype():
    assert_pass(simplify, fn("%x: i32[3]", "  %0 = cast(%x) {dtype = i32} : i32[3]\n"
                             "  return %0", "i32[3]"),
                fn("%x: i32[3]", "  return %x", "i32[3]"))


def test_cast_to_another_dtype_is_kept():
    assert_unchanged(simplify, fn("%x: f32[3]", "  %0 = cast(%x) {dtype = f64} : f64[3]\n"
                                  "  %1 = cast(%0) {dtype = f32} : f32[3]\n  return %1", "f32[3]"))


# -- selects, reductions, concat -------------------------------------------------------------------

def test_where_true():
    assert_pass(simplify, fn("%x: f32[3], %y: f32[3]", f"{C(0, 'bool', 'true')}\n"
                             "  %1 = where(%0, %x, %y) : f32[3]\n  return %1", "f32[3]"),
                fn("%x: f32[3], %y: f32[3]", f"{C(0, 'bool', 'true')}\n  return %x", "f32[3]"))


def test_where_false():
    assert_pass(simplify, fn("%x: f32[3], %y: f32[3]", f"{C(0, 'bool', 'false, false, false', '3')}"
                             "\n  %1 = where(%0, %x, %y) : f32[3]\n  return %1", "f32[3]"),
                fn("%x: f32[3], %y: f32[3]", f"{C(0, 'bool', 'false, false, false', '3')}\n"
                   "  return %y", "f32[3]"))


def test_where_same_branches():
    assert_pass(simplify, fn("%c: bool[3], %x: f32[3]", "  %0 = where(%c, %x, %x) : f32[3]\n"
                             "  return %0", "f32[3]"),
                fn("%c: bool[3], %x: f32[3]", "  return %x", "f32[3]"))


def test_where_that_broadcasts_or_mixes_is_kept():
    assert_unchanged(simplify, fn("%x: f32[1], %y: f32[3]", f"{C(0, 'bool', 'true')}\n"
                                  "  %1 = where(%0, %x, %y) : f32[3]\n  return %1", "f32[3]"))
    assert_unchanged(simplify, fn("%x: f32[2], %y: f32[2]", f"{C(0, 'bool', 'true, false', '2')}\n"
                                  "  %1 = where(%0, %x, %y) : f32[2]\n  return %1", "f32[2]"))


@pytest.mark.parametrize("op,dt", [("sum", "i32"), ("sum", "i64"), ("max", "f32"), ("max", "i64")])
@pytest.mark.parametrize("keepdims", ["true", "false"])
def test_reduce_over_no_axes(op, dt, keepdims):
    assert_pass(simplify, fn(f"%x: {dt}[2,3]", f"  %0 = {op}(%x) {{axes = [], keepdims = "
                             f"{keepdims}}} : {dt}[2,3]\n  return %0", f"{dt}[2,3]"),
                fn(f"%x: {dt}[2,3]", "  return %x", f"{dt}[2,3]"))


def test_float_sum_over_no_axes_is_kept():
    # the sum starts from +0.0, so it maps -0.0 to +0.0 even over no axes
    assert_unchanged(simplify, fn("%x: f32[2,3]", "  %0 = sum(%x) {axes = [], keepdims = false}"
                                  " : f32[2,3]\n  return %0", "f32[2,3]"))


def test_reduce_over_a_unit_axis_is_kept():
    # sum of one element is exact in numpy but a backend may add it to +0.0 (-0.0 -> +0.0)
    assert_unchanged(simplify, fn("%x: f32[1,3]", "  %0 = sum(%x) {axes = [0], keepdims = true}"
                                  " : f32[1,3]\n  return %0", "f32[1,3]"))


def test_concat_of_one_operand():
    assert_pass(simplify, fn("%x: f32[2,3]", "  %0 = concat(%x) {axis = 1} : f32[2,3]\n"
                             "  return %0", "f32[2,3]"),
                fn("%x: f32[2,3]", "  return %x", "f32[2,3]"))


# -- an operand with itself ------------------------------------------------------------------------

@pytest.mark.parametrize("op,dt", [("maximum", "f32"), ("minimum", "f64"), ("maximum", "i32"),
                                   ("logical_and", "bool"), ("logical_or", "bool")])
def test_op_of_x_with_itself_is_x(op, dt):
    # exact for NaN (NaN) and for -0.0 (max(-0.0, -0.0) = -0.0)
    assert_pass(simplify, fn(f"%x: {dt}[2,3]", f"  %0 = {op}(%x, %x) : {dt}[2,3]\n  return %0",
                             f"{dt}[2,3]"),
                fn(f"%x: {dt}[2,3]", "  return %x", f"{dt}[2,3]"))


def test_op_of_two_different_operands_is_kept():
    assert_unchanged(simplify, fn("%x: i32[3], %y: i32[3], %a: bool[3], %b: bool[3]",
                                  "  %0 = maximum(%x, %y) : i32[3]\n"
                                  "  %1 = logical_and(%a, %b) : bool[3]\n  return %0, %1",
                                  "i32[3], bool[3]"))


# -- unsafe float forms no rule may rewrite --------------------------------------------------------

# Each with the input that tells it apart from the "obvious" simplification (%0 is +0.0, %1 -0.0).
UNSAFE_FLOAT_FORMS = {
    "x*0": ("mul(%x, %0)", "inf * 0 = NaN; -1 * 0 = -0.0"),
    "0*x": ("mul(%0, %x)", "NaN * 0 = NaN"),
    "0/x": ("div(%0, %x)", "0 / 0 = NaN; 0 / -1 = -0.0"),
    "x/x": ("div(%x, %x)", "0 / 0 = inf / inf = NaN"),
    "x-x": ("sub(%x, %x)", "inf - inf = NaN"),
    "x+0.0": ("add(%x, %0)", "-0.0 + 0.0 = +0.0"),
    "0.0+x": ("add(%0, %x)", "0.0 + -0.0 = +0.0"),
    "0-x": ("sub(%0, %x)", "0.0 - 0.0 = +0.0, but neg(0.0) = -0.0"),
    "x-(-0.0)": ("sub(%x, %1)", "-0.0 - (-0.0) = +0.0"),
    "x*(-0.0)": ("mul(%x, %1)", "1 * -0.0 = -0.0, -1 * -0.0 = +0.0"),
    "x==x": ("eq(%x, %x)", "NaN == NaN is false"),
    "x!=x": ("ne(%x, %x)", "NaN != NaN is true"),
    "x<=x": ("le(%x, %x)", "NaN <= NaN is false"),
    "x>=x": ("ge(%x, %x)", "NaN >= NaN is false"),
    "sum(x, [])": ("sum(%x) {axes = [], keepdims = false}", "sum(-0.0) = +0.0"),
    "sum(x, unit)": ("sum(%x) {axes = [0], keepdims = true}", "sum([-0.0]) = +0.0"),
}


@pytest.mark.parametrize("form", sorted(UNSAFE_FLOAT_FORMS))
@pytest.mark.parametrize("dt", ["f32", "f64"])
def test_unsafe_float_forms_are_kept(form, dt):
    expr, _why = UNSAFE_FLOAT_FORMS[form]
    out = "bool" if expr[:2] in ("eq", "ne", "le", "ge") else dt
    shape = "1,3" if form.startswith("sum") else "3"
    body = f"{C(0, dt, '0.0')}\n{C(1, dt, '-0.0')}\n  %2 = {expr} : {out}[{shape}]\n  return %2"
    assert_unchanged(simplify, fn(f"%x: {dt}[{shape}]", body, f"{out}[{shape}]"))


# -- data movement ---------------------------------------------------------------------------------

def test_reshape_to_the_same_shape():
    assert_pass(simplify, fn("%x: f32[2,3]", "  %0 = reshape(%x) {shape = [2, 3]} : f32[2,3]\n"
                             "  return %0", "f32[2,3]"),
                fn("%x: f32[2,3]", "  return %x", "f32[2,3]"))


def test_reshape_of_reshape():
    assert_pass(simplify, fn("%x: f32[2,3]", "  %0 = reshape(%x) {shape = [6]} : f32[6]\n"
                             "  %1 = reshape(%0) {shape = [3, 2]} : f32[3,2]\n  return %1",
                             "f32[3,2]"),
                fn("%x: f32[2,3]", "  %0 = reshape(%x) {shape = [6]} : f32[6]\n"
                   "  %1 = reshape(%x) {shape = [3, 2]} : f32[3,2]\n  return %1", "f32[3,2]"))
    # ... and back to where it started: nothing at all
    assert_pass(simplify, fn("%x: f32[2,3]", "  %0 = reshape(%x) {shape = [6]} : f32[6]\n"
                             "  %1 = reshape(%0) {shape = [2, 3]} : f32[2,3]\n  return %1",
                             "f32[2,3]"),
                fn("%x: f32[2,3]", "  %0 = reshape(%x) {shape = [6]} : f32[6]\n  return %x",
                   "f32[2,3]"))


def test_transpose_identity():
    assert_pass(simplify, fn("%x: f32[2,3]", "  %0 = transpose(%x) {perm = [0, 1]} : f32[2,3]\n"
                             "  return %0", "f32[2,3]"),
                fn("%x: f32[2,3]", "  return %x", "f32[2,3]"))


def test_square_transpose_is_kept():
    assert_unchanged(simplify, fn("%x: f32[3,3]", "  %0 = transpose(%x) {perm = [1, 0]} : f32[3,3]"
                                  "\n  return %0", "f32[3,3]"))


def test_transpose_of_transpose():
    # (2,3,4) -[1,2,0]-> (3,4,2) -[2,0,1]-> (2,3,4): the identity
    assert_pass(simplify, fn("%x: f32[2,3,4]", "  %0 = transpose(%x) {perm = [1, 2, 0]} : "
                             "f32[3,4,2]\n  %1 = transpose(%0) {perm = [2, 0, 1]} : f32[2,3,4]\n"
                             "  return %1",
                             "f32[2,3,4]"),
                fn("%x: f32[2,3,4]", "  %0 = transpose(%x) {perm = [1, 2, 0]} : f32[3,4,2]\n"
                   "  return %x", "f32[2,3,4]"))
    # (2,3,4) -[1,2,0]-> (3,4,2) -[1,0,2]-> (4,3,2) = transpose(x, [2,1,0])
    assert_pass(simplify, fn("%x: f32[2,3,4]", "  %0 = transpose(%x) {perm = [1, 2, 0]} : "
                             "f32[3,4,2]\n  %1 = transpose(%0) {perm = [1, 0, 2]} : f32[4,3,2]\n"
                             "  return %1",
                             "f32[4,3,2]"),
                fn("%x: f32[2,3,4]", "  %0 = transpose(%x) {perm = [1, 2, 0]} : f32[3,4,2]\n"
                   "  %1 = transpose(%x) {perm = [2, 1, 0]} : f32[4,3,2]\n  return %1",
                   "f32[4,3,2]"))


def test_transpose_that_moves_only_unit_dims_is_a_reshape():
    assert_pass(simplify, fn("%x: f32[3,1,2]", "  %0 = transpose(%x) {perm = [1, 0, 2]} : "
                             "f32[1,3,2]\n  return %0", "f32[1,3,2]"),
                fn("%x: f32[3,1,2]", "  %0 = reshape(%x) {shape = [1, 3, 2]} : f32[1,3,2]\n"
                   "  return %0", "f32[1,3,2]"))


def test_broadcast_to_the_same_shape():
    assert_pass(simplify, fn("%x: f32[2,3]", "  %0 = broadcast_to(%x) {shape = [2, 3]} : f32[2,3]"
                             "\n  return %0", "f32[2,3]"),
                fn("%x: f32[2,3]", "  return %x", "f32[2,3]"))


def test_broadcast_of_broadcast():
    assert_pass(simplify, fn("%x: f32[3]", "  %0 = broadcast_to(%x) {shape = [1, 3]} : f32[1,3]\n"
                             "  %1 = broadcast_to(%0) {shape = [4, 2, 3]} : f32[4,2,3]\n"
                             "  return %1", "f32[4,2,3]"),
                fn("%x: f32[3]", "  %0 = broadcast_to(%x) {shape = [1, 3]} : f32[1,3]\n"
                   "  %1 = broadcast_to(%x) {shape = [4, 2, 3]} : f32[4,2,3]\n  return %1",
                   "f32[4,2,3]"))


def test_slice_of_everything():
    assert_pass(simplify, fn("%x: f32[2,3]", "  %0 = slice(%x) {starts = [0, 0], stops = [2, 3], "
                             "steps = [1, 1]} : f32[2,3]\n  return %0", "f32[2,3]"),
                fn("%x: f32[2,3]", "  return %x", "f32[2,3]"))


def test_reversing_slice_is_kept():
    assert_unchanged(simplify, fn("%x: f32[2,3]", "  %0 = slice(%x) {starts = [0, 2], stops = "
                                  "[2, -1], steps = [1, -1]} : f32[2,3]\n  return %0", "f32[2,3]"))


def test_pad_with_no_padding():
    assert_pass(simplify, fn("%x: f32[2,3]", "  %0 = pad(%x) {pads = [[0, 0], [0, 0]], value = 1.0}"
                             " : f32[2,3]\n  return %0", "f32[2,3]"),
                fn("%x: f32[2,3]", "  return %x", "f32[2,3]"))


def test_pad_with_padding_is_kept():
    assert_unchanged(simplify, fn("%x: f32[2,3]", "  %0 = pad(%x) {pads = [[0, 0], [0, 1]], value ="
                                  " 0.0} : f32[2,4]\n  return %0", "f32[2,4]"))


def test_elementwise_ops_broadcast_their_operands_themselves():
    # mul(x, broadcast_to(c)) -> mul(x, c): the scalar constant stays a scalar
    assert_pass(simplify, fn("%x: f32[2,3]", f"{C(0, 'f32', '2.0')}\n"
                             "  %1 = broadcast_to(%0) {shape = [2, 3]} : f32[2,3]\n"
                             "  %2 = mul(%x, %1) : f32[2,3]\n  return %2", "f32[2,3]"),
                fn("%x: f32[2,3]", f"{C(0, 'f32', '2.0')}\n"
                   "  %1 = broadcast_to(%0) {shape = [2, 3]} : f32[2,3]\n"
                   "  %2 = mul(%x, %0) : f32[2,3]\n  return %2", "f32[2,3]"))
    # where: condition and branches alike; one broadcast must stay to give the result its shape
    assert_pass(simplify, fn("%c: bool[3], %x: f32[1,1], %y: f32[2,3]",
                             "  %0 = broadcast_to(%c) {shape = [2, 3]} : bool[2,3]\n"
                             "  %1 = broadcast_to(%x) {shape = [2, 3]} : f32[2,3]\n"
                             "  %2 = where(%0, %1, %y) : f32[2,3]\n  return %2", "f32[2,3]"),
                fn("%c: bool[3], %x: f32[1,1], %y: f32[2,3]",
                   "  %0 = broadcast_to(%c) {shape = [2, 3]} : bool[2,3]\n"
                   "  %1 = broadcast_to(%x) {shape = [2, 3]} : f32[2,3]\n"
                   "  %2 = where(%c, %x, %y) : f32[2,3]\n  return %2", "f32[2,3]"))


@pytest.mark.parametrize("exponent", ["2.0", "0.5", "-1.0"])
def test_pow_keeps_its_broadcast_exponent(exponent):
    # numpy's power computes a one-element exponent of 2, 0.5 or -1 as x*x, sqrt(x) or 1/x, and
    # a full-shape one with its general pow: pow(-inf, 0.5) is NaN one way and +inf the other,
    # pow(-0.0, 0.5) is -0.0 or +0.0, and x = 1.5184396505355835 rounds 1 ulp apart (on SIMD
    # builds). Dropping the broadcast would change the result.
    before = fn("%x: f32[5]", f"{C(0, 'f32', exponent)}\n"
                "  %1 = broadcast_to(%0) {shape = [5]} : f32[5]\n"
                "  %2 = pow(%x, %1) : f32[5]\n  return %2", "f32[5]")
    assert_unchanged(simplify, before)
    g = parse(before)
    x = np.array([-np.inf, -0.0, 1.5184396505355835, 590.4349365234375, 1683.814453125],
                 np.float32)
    with np.errstate(all="ignore"):
        assert_same_bits(evaluate(simplify(g), [x]), evaluate(g, [x]))


def test_a_broadcast_that_gives_the_result_its_shape_is_kept():
    assert_unchanged(simplify, fn("%x: f32[3], %y: f32[3]",
                                  "  %0 = broadcast_to(%x) {shape = [2, 3]} : f32[2,3]\n"
                                  "  %1 = add(%0, %y) : f32[2,3]\n  return %1", "f32[2,3]"))


# -- the rules together ----------------------------------------------------------------------------

def test_a_new_rule_comes_with_a_test_above():
    assert len(SIMPLIFY.rules) == 28, "add a Before/Expected test for the new rule, then bump this"


def test_rules_chain_to_a_fixpoint_in_scan_bodies_and_keep_locations():
    loc = 'loc("m.py":3 in "step")'
    before = f"""
func @f(%h0: f32[3], %xs: f32[2,3]) -> (f32[3], f32[2,3]) {{
  %0:2 = scan(%h0, %xs) {{body = func @body(%h: f32[3], %x: f32[3]) -> (f32[3], f32[3]) {{
    %0 = stop_gradient(%h) : f32[3]
    %1 = const() {{value = dense<f32[], [1.0]>}} : f32[]
    %2 = mul(%0, %1) : f32[3]
    %3 = neg(%x) : f32[3]
    %4 = add(%2, %3) : f32[3] {loc}
    %5 = reshape(%4) {{shape = [3, 1]}} : f32[3,1]
    %6 = transpose(%5) {{perm = [1, 0]}} : f32[1,3]
    %7 = reshape(%6) {{shape = [3]}} : f32[3]
    return %4, %7
  }}, num_carry = 1, num_consts = 0, length = 2, reverse = false}} : (f32[3], f32[2,3])
  return %0#0, %0#1
}}"""
    got = assert_pass(simplify, before, f"""
func @f(%h0: f32[3], %xs: f32[2,3]) -> (f32[3], f32[2,3]) {{
  %0:2 = scan(%h0, %xs) {{body = func @body(%h: f32[3], %x: f32[3]) -> (f32[3], f32[3]) {{
    %0 = const() {{value = dense<f32[], [1.0]>}} : f32[]
    %1 = neg(%x) : f32[3]
    %2 = sub(%h, %x) : f32[3] {loc}
    %3 = reshape(%2) {{shape = [3, 1]}} : f32[3,1]
    %4 = reshape(%2) {{shape = [1, 3]}} : f32[1,3]
    return %2, %2
  }}, num_carry = 1, num_consts = 0, length = 2, reverse = false}} : (f32[3], f32[2,3])
  return %0#0, %0#1
}}""")
    body = got.nodes[0].attrs["body"]
    assert body.nodes[2].op == Op.SUB and body.nodes[2].loc == Loc("m.py", 3, "step")


def test_simplify_is_idempotent_and_leaves_a_clean_graph_alone():
    g = parse(fn("%x: f32[3]", "  %0 = exp(%x) : f32[3]\n  return %0", "f32[3]"))
    assert simplify(g) is g
