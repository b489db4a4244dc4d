"""eliminate_dead_code: Before/Expected removal of unreachable nodes, scan pruning (unused ys,
carries no live result depends on, unread sequences and consts, renumbered users), whole dead
scans, nested bodies, fusion bodies (signature kept), and autodiff's LSTM backward body."""
from __future__ import annotations

import numpy as np

import nnjit
from nnjit.frontend.pytree import flatten
from nnjit.ir import Graph, Op, evaluate, parse, subgraphs
from nnjit.passes.dce import eliminate_dead_code as dce
from tests.passes.test_rewrite import assert_pass, assert_same_bits


def test_removes_what_the_outputs_do_not_read():
    assert_pass(dce, """
func @f(%x: f32[3], %y: f32[3]) -> (f32[3]) {
  %0 = exp(%x) : f32[3]
  %1 = neg(%y) : f32[3]
  %2 = add(%0, %x) : f32[3]
  %3 = mul(%1, %1) : f32[3]
  return %2
}""", """
func @f(%x: f32[3], %y: f32[3]) -> (f32[3]) {
  %0 = exp(%x) : f32[3]
  %1 = add(%0, %x) : f32[3]
  return %1
}""")


def test_inputs_and_outputs_stay_even_when_unused_or_repeated():
    assert_pass(dce, """
func @f(%x: f32[3], %unused: i32[2]) -> (f32[3], f32[3], f32[3]) {
  %0 = const() {value = dense<f32[], [1.0]>} : f32[]
  return %x, %x, %x
}""", """
func @f(%x: f32[3], %unused: i32[2]) -> (f32[3], f32[3], f32[3]) {
  return %x, %x, %x
}""")


SCAN = """
func @f(%h: f32[3], %k: f32[3], %xs: f32[2,3], %w: f32[3], %u: f32[3]) -> ({outs}) {{
  %0:4 = scan(%h, %k, %xs, %w, %u) {{body = func @body(%c: f32[3], %d: f32[3], %x: f32[3],
      %cw: f32[3], %cu: f32[3]) -> (f32[3], f32[3], f32[3], f32[3]) {{
    %0 = mul(%c, %cw) : f32[3]
    %1 = add(%d, %cu) : f32[3]
    %2 = add(%c, %x) : f32[3]
    %3 = mul(%1, %x) : f32[3]
    return %0, %1, %2, %3
  }}, num_carry = 2, num_consts = 2, length = 2, reverse = false}}
    : (f32[3], f32[3], f32[2,3], f32[2,3])
  %1 = neg(%0#2) : f32[2,3]
  return {ret}
}}"""


def test_scan_drops_unused_ys_dead_carries_and_unread_operands():
    # carry d and ys#1 feed nothing live; const u is then unread
    assert_pass(dce, SCAN.format(outs="f32[3], f32[2,3]", ret="%0#0, %1"), """
func @f(%h: f32[3], %k: f32[3], %xs: f32[2,3], %w: f32[3], %u: f32[3]) -> (f32[3], f32[2,3]) {
  %0:2 = scan(%h, %xs, %w) {body = func @body(%c: f32[3], %x: f32[3], %cw: f32[3])
      -> (f32[3], f32[3]) {
    %0 = mul(%c, %cw) : f32[3]
    %1 = add(%c, %x) : f32[3]
    return %0, %1
  }, num_carry = 1, num_consts = 1, length = 2, reverse = false} : (f32[3], f32[2,3])
  %1 = neg(%0#1) : f32[2,3]
  return %0#0, %1
}""")


def test_scan_keeps_a_carry_that_a_live_output_reads():
    # only ys#0 is used, but it reads carry c, whose update reads const w
    assert_pass(dce, SCAN.format(outs="f32[2,3]", ret="%1"), """
func @f(%h: f32[3], %k: f32[3], %xs: f32[2,3], %w: f32[3], %u: f32[3]) -> (f32[2,3]) {
  %0:2 = scan(%h, %xs, %w) {body = func @body(%c: f32[3], %x: f32[3], %cw: f32[3])
      -> (f32[3], f32[3]) {
    %0 = mul(%c, %cw) : f32[3]
    %1 = add(%c, %x) : f32[3]
    return %0, %1
  }, num_carry = 1, num_consts = 1, length = 2, reverse = false} : (f32[3], f32[2,3])
  %1 = neg(%0#1) : f32[2,3]
  return %1
}""")


def test_scan_that_feeds_nothing_is_removed():
    assert_pass(dce, SCAN.format(outs="f32[3]", ret="%w"), """
func @f(%h: f32[3], %k: f32[3], %xs: f32[2,3], %w: f32[3], %u: f32[3]) -> (f32[3]) {
  return %w
}""")


def test_a_graph_without_dead_code_is_returned_as_is():
    g = parse(SCAN.format(outs="f32[3], f32[3], f32[2,3], f32[2,3]", ret="%0#0, %0#1, %1, %0#3"))
    assert dce(g) is g


def test_nested_scans_are_pruned_inside_bodies():
    assert_pass(dce, """
func @f(%h: f32[3], %xss: f32[2,4,3]) -> (f32[3]) {
  %0:2 = scan(%h, %xss) {body = func @outer(%g: f32[3], %xs: f32[4,3]) -> (f32[3], f32[3]) {
    %0 = exp(%g) : f32[3]
    %1:2 = scan(%g, %xs) {body = func @inner(%a: f32[3], %x: f32[3]) -> (f32[3], f32[3]) {
      %0 = add(%a, %x) : f32[3]
      %1 = mul(%a, %x) : f32[3]
      return %0, %1
    }, num_carry = 1, num_consts = 0, length = 4, reverse = false} : (f32[3], f32[4,3])
    return %1#0, %0
  }, num_carry = 1, num_consts = 0, length = 2, reverse = false} : (f32[3], f32[2,3])
  return %0#0
}""", """
func @f(%h: f32[3], %xss: f32[2,4,3]) -> (f32[3]) {
  %0 = scan(%h, %xss) {body = func @outer(%g: f32[3], %xs: f32[4,3]) -> (f32[3]) {
    %0 = scan(%g, %xs) {body = func @inner(%a: f32[3], %x: f32[3]) -> (f32[3]) {
      %0 = add(%a, %x) : f32[3]
      return %0
    }, num_carry = 1, num_consts = 0, length = 4, reverse = false} : f32[3]
    return %0
  }, num_carry = 1, num_consts = 0, length = 2, reverse = false} : f32[3]
  return %0
}""")


def test_fusion_bodies_are_cleaned_with_their_signature_kept():
    assert_pass(dce, """
func @f(%x: f32[3], %y: f32[3]) -> (f32[3]) {
  %0 = fusion(%x, %y) {body = func @k(%a: f32[3], %b: f32[3]) -> (f32[3]) {
    %0 = exp(%b) : f32[3]
    %1 = neg(%a) : f32[3]
    return %1
  }, kind = "loop"} : f32[3]
  return %0
}""", """
func @f(%x: f32[3], %y: f32[3]) -> (f32[3]) {
  %0 = fusion(%x, %y) {body = func @k(%a: f32[3], %b: f32[3]) -> (f32[3]) {
    %0 = neg(%a) : f32[3]
    return %0
  }, kind = "loop"} : f32[3]
  return %0
}""")


def _all_nodes_are_live(g: Graph) -> bool:
    read = {s.node for n in g.nodes for s in n.srcs} | {v.node for v in g.outputs}
    return all(n in read for n in g.nodes) and all(
        _all_nodes_are_live(sub) for n in g.nodes for sub in subgraphs(n))


def test_lstm_gradient_bodies_lose_their_dead_forward_recomputation():
    from tests.passes.test_autodiff import lstm, lstm_args

    args = lstm_args()
    loss = lambda p, xs, h0, c0: lstm(p, xs, h0, c0)[1].sum()   # noqa: E731  (final h only)
    g = nnjit.trace(nnjit.value_and_grad(loss, (0, 2, 3)), *args)
    out = dce(g)
    assert _all_nodes_are_live(out) and not _all_nodes_are_live(g)
    scans = [n for n in out.nodes if n.op == Op.SCAN]
    before = [n for n in g.nodes if n.op == Op.SCAN]
    # the forward scan no longer stacks the hidden states nobody reads
    assert len(scans[0].types) < len(before[0].types)
    leaves = [np.asarray(x) for x in flatten(tuple(args))[0]]
    assert_same_bits(evaluate(out, leaves), evaluate(g, leaves))
