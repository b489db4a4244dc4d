"""eliminate_common_subexpressions: Before/Expected merges of duplicate nodes and chains of them,
constants compared by bytes, commutative operands, random_uniform, nested bodies (merged inside
and compared structurally), and what must stay apart."""
from __future__ import annotations

from nnjit.ir import Loc, parse
from nnjit.passes.cse import eliminate_common_subexpressions as cse
from tests.passes.test_rewrite import assert_pass, assert_unchanged


def test_merges_duplicates_and_then_their_users():
    assert_pass(cse, """
func @f(%x: f32[3], %y: f32[3]) -> (f32[3], f32[3]) {
  %0 = exp(%x) : f32[3] loc("a.py":1 in "f")
  %1 = exp(%x) : f32[3] loc("a.py":2 in "f")
  %2 = sub(%0, %y) : f32[3]
  %3 = sub(%1, %y) : f32[3]
  return %2, %3
}""", """
func @f(%x: f32[3], %y: f32[3]) -> (f32[3], f32[3]) {
  %0 = exp(%x) : f32[3] loc("a.py":1 in "f")
  %1 = sub(%0, %y) : f32[3]
  return %1, %1
}""")


def test_constants_merge_by_dtype_shape_and_bytes():
    assert_pass(cse, """
func @f() -> (f32[], f32[], f32[], f64[], f32[1], f32[], f32[]) {
  %0 = const() {value = dense<f32[], [1.0]>} : f32[]
  %1 = const() {value = dense<f32[], [1.0]>} : f32[]
  %2 = const() {value = dense<f32[], [0.0]>} : f32[]
  %3 = const() {value = dense<f64[], [1.0]>} : f64[]
  %4 = const() {value = dense<f32[1], [1.0]>} : f32[1]
  %5 = const() {value = dense<f32[], [-0.0]>} : f32[]
  %6 = const() {value = dense<f32[], [0.0]>} : f32[]
  return %0, %1, %2, %3, %4, %5, %6
}""", """
func @f() -> (f32[], f32[], f32[], f64[], f32[1], f32[], f32[]) {
  %0 = const() {value = dense<f32[], [1.0]>} : f32[]
  %1 = const() {value = dense<f32[], [0.0]>} : f32[]
  %2 = const() {value = dense<f64[], [1.0]>} : f64[]
  %3 = const() {value = dense<f32[1], [1.0]>} : f32[1]
  %4 = const() {value = dense<f32[], [-0.0]>} : f32[]
  return %0, %0, %1, %2, %3, %4, %1
}""")


def test_attributes_and_operand_order_keep_nodes_apart():
    assert_unchanged(cse, """
func @f(%x: f32[2,3], %y: f32[2,3]) -> (f32[3], f32[2], f32[2,3], f32[2,3], f32[2,3], f32[2,3]) {
  %0 = sum(%x) {axes = [0], keepdims = false} : f32[3]
  %1 = sum(%x) {axes = [1], keepdims = false} : f32[2]
  %2 = sub(%x, %y) : f32[2,3]
  %3 = sub(%y, %x) : f32[2,3]
  %4 = maximum(%x, %y) : f32[2,3]
  %5 = maximum(%y, %x) : f32[2,3]
  return %0, %1, %2, %3, %4, %5
}""")


def test_commutative_operands_merge_in_either_order():
    assert_pass(cse, """
func @f(%x: f32[3], %y: f32[3], %b: bool[3]) -> (f32[3], f32[3], bool[3], bool[3], f32[3]) {
  %0 = add(%x, %y) : f32[3]
  %1 = add(%y, %x) : f32[3]
  %2 = logical_and(%b, %b) : bool[3]
  %3 = eq(%y, %x) : bool[3]
  %4 = eq(%x, %y) : bool[3]
  %5 = mul(%y, %x) : f32[3]
  %6 = mul(%x, %y) : f32[3]
  return %0, %1, %3, %4, %6
}""", """
func @f(%x: f32[3], %y: f32[3], %b: bool[3]) -> (f32[3], f32[3], bool[3], bool[3], f32[3]) {
  %0 = add(%x, %y) : f32[3]
  %1 = logical_and(%b, %b) : bool[3]
  %2 = eq(%y, %x) : bool[3]
  %3 = mul(%y, %x) : f32[3]
  return %0, %0, %2, %2, %3
}""")


def test_random_uniform_with_the_same_seed_and_salt_merges():
    assert_pass(cse, """
func @f(%s: i64[], %t: i64[]) -> (f32[4], f32[4], f32[4], f32[4]) {
  %0 = random_uniform(%s) {shape = [4], salt = 1, dtype = f32} : f32[4]
  %1 = random_uniform(%s) {shape = [4], salt = 1, dtype = f32} : f32[4]
  %2 = random_uniform(%s) {shape = [4], salt = 2, dtype = f32} : f32[4]
  %3 = random_uniform(%t) {shape = [4], salt = 1, dtype = f32} : f32[4]
  return %0, %1, %2, %3
}""", """
func @f(%s: i64[], %t: i64[]) -> (f32[4], f32[4], f32[4], f32[4]) {
  %0 = random_uniform(%s) {shape = [4], salt = 1, dtype = f32} : f32[4]
  %1 = random_uniform(%s) {shape = [4], salt = 2, dtype = f32} : f32[4]
  %2 = random_uniform(%t) {shape = [4], salt = 1, dtype = f32} : f32[4]
  return %0, %0, %1, %2
}""")


BODY = """func @{name}(%c{tag}: f32[3], %x: f32[3]) -> (f32[3], f32[3]) {{
    %0 = mul(%c{tag}, %x) : f32[3] {loc}
    %1 = mul(%c{tag}, %x) : f32[3]
    %2 = add(%0, %1) : f32[3]
    return %2, %0
  }}"""


def test_scans_with_structurally_equal_bodies_merge_and_bodies_are_cleaned():
    first = BODY.format(name="body", tag="", loc='loc("a.py":1 in "f")')
    # same computation, other names and locations
    second = BODY.format(name="other", tag="arry", loc='loc("b.py":9 in "g")')
    assert_pass(cse, f"""
func @f(%h: f32[3], %xs: f32[2,3]) -> (f32[3], f32[2,3], f32[3]) {{
  %0:2 = scan(%h, %xs) {{body = {first},
    num_carry = 1, num_consts = 0, length = 2, reverse = false}} : (f32[3], f32[2,3])
  %1:2 = scan(%h, %xs) {{body = {second},
    num_carry = 1, num_consts = 0, length = 2, reverse = false}} : (f32[3], f32[2,3])
  %2:2 = scan(%h, %xs) {{body = {first},
    num_carry = 1, num_consts = 0, length = 2, reverse = true}} : (f32[3], f32[2,3])
  return %0#0, %1#1, %2#0
}}""", """
func @f(%h: f32[3], %xs: f32[2,3]) -> (f32[3], f32[2,3], f32[3]) {
  %0:2 = scan(%h, %xs) {body = func @body(%c: f32[3], %x: f32[3]) -> (f32[3], f32[3]) {
    %0 = mul(%c, %x) : f32[3] loc("a.py":1 in "f")
    %1 = add(%0, %0) : f32[3]
    return %1, %0
  }, num_carry = 1, num_consts = 0, length = 2, reverse = false} : (f32[3], f32[2,3])
  %1:2 = scan(%h, %xs) {body = func @body(%c: f32[3], %x: f32[3]) -> (f32[3], f32[3]) {
    %0 = mul(%c, %x) : f32[3] loc("a.py":1 in "f")
    %1 = add(%0, %0) : f32[3]
    return %1, %0
  }, num_carry = 1, num_consts = 0, length = 2, reverse = true} : (f32[3], f32[2,3])
  return %0#0, %0#1, %1#0
}""")


def test_the_first_nodes_location_is_kept():
    g = cse(parse("""
func @f(%x: f32[3]) -> (f32[3]) {
  %0 = tanh(%x) : f32[3] loc("a.py":5 in "f")
  %1 = tanh(%x) : f32[3] loc("a.py":6 in "f")
  %2 = add(%0, %1) : f32[3]
  return %2
}"""))
    assert [n.loc for n in g.nodes] == [Loc("a.py", 5, "f"), None]


def test_a_graph_without_duplicates_is_returned_as_is():
    g = parse("func @f(%x: f32[3]) -> (f32[3]) {\n  %0 = exp(%x) : f32[3]\n  return %0\n}")
    assert cse(g) is g


def test_float_attributes_and_nan_constants_compare_by_bits():
    # pads with +0.0 and -0.0 differ (observable through 1/x); identical NaN constants merge
    assert_pass(cse, """
func @f(%x: f32[2]) -> (f32[3], f32[3], f32[], f32[]) {
  %0 = pad(%x) {pads = [[1, 0]], value = 0.0} : f32[3]
  %1 = pad(%x) {pads = [[1, 0]], value = -0.0} : f32[3]
  %2 = const() {value = dense<f32[], [nan]>} : f32[]
  %3 = const() {value = dense<f32[], [nan]>} : f32[]
  return %0, %1, %2, %3
}""", """
func @f(%x: f32[2]) -> (f32[3], f32[3], f32[], f32[]) {
  %0 = pad(%x) {pads = [[1, 0]], value = 0.0} : f32[3]
  %1 = pad(%x) {pads = [[1, 0]], value = -0.0} : f32[3]
  %2 = const() {value = dense<f32[], [nan]>} : f32[]
  return %0, %1, %2, %2
}""")
