"""hoist_loop_invariants: Before/Expected hoisting of a scan body's matmul of a sequence slice
with a loop invariant (slice on the left: one GEMM over the stacked rows; on the right: a
matmul batched over the steps), the invariant's own computation copied out and the slices and
consts left unread dropped, reshaped slices,
nested scans, what must stay (recurrences, per-step operands, invariants with more batch
dims), the pass in the pipeline, and its composition with autodiff."""
from __future__ import annotations

import numpy as np

import nnjit
from nnjit.ir import Op
from nnjit.passes.dce import eliminate_dead_code
from nnjit.passes.hoist import hoist_loop_invariants
from nnjit.passes.pipeline import default_pipeline
from tests.gradcheck import check_grads
from tests.helpers import assert_close, run
from tests.passes.test_rewrite import assert_pass, assert_unchanged


def hoist(g):
    return hoist_loop_invariants(g)


def test_slice_times_transposed_weight_becomes_one_gemm_before_the_loop():
    assert_pass(hoist, """
func @f(%h: f32[2,4], %xs: f32[5,2,3], %w: f32[4,3], %u: f32[4,4]) -> (f32[2,4], f32[5,2,4]) {
  %0:2 = scan(%h, %xs, %w, %u) {body = func @body(%c: f32[2,4], %x: f32[2,3], %cw: f32[4,3],
      %cu: f32[4,4]) -> (f32[2,4], f32[2,4]) {
    %0 = transpose(%cw) {perm = [1, 0]} : f32[3,4]
    %1 = matmul(%x, %0) : f32[2,4]
    %2 = matmul(%c, %cu) : f32[2,4]
    %3 = add(%1, %2) : f32[2,4]
    %4 = tanh(%3) : f32[2,4]
    return %4, %4
  }, num_carry = 1, num_consts = 2, length = 5, reverse = false} : (f32[2,4], f32[5,2,4])
  return %0#0, %0#1
}""", """
func @f(%h: f32[2,4], %xs: f32[5,2,3], %w: f32[4,3], %u: f32[4,4]) -> (f32[2,4], f32[5,2,4]) {
  %0 = transpose(%w) {perm = [1, 0]} : f32[3,4]
  %1 = reshape(%xs) {shape = [10, 3]} : f32[10,3]
  %2 = matmul(%1, %0) : f32[10,4]
  %3 = reshape(%2) {shape = [5, 2, 4]} : f32[5,2,4]
  %4:2 = scan(%h, %3, %u) {body = func @body(%c: f32[2,4], %hoisted0: f32[2,4], %cu: f32[4,4])
      -> (f32[2,4], f32[2,4]) {
    %0 = matmul(%c, %cu) : f32[2,4]
    %1 = add(%hoisted0, %0) : f32[2,4]
    %2 = tanh(%1) : f32[2,4]
    return %2, %2
  }, num_carry = 1, num_consts = 1, length = 5, reverse = false} : (f32[2,4], f32[5,2,4])
  return %4#0, %4#1
}""")


def test_weight_times_slice_is_batched_over_the_steps():
    assert_pass(hoist, """
func @f(%h: f32[4,2], %xs: f32[3,3,2], %w: f32[4,3]) -> (f32[4,2], f32[3,4,2]) {
  %0:2 = scan(%h, %xs, %w) {body = func @body(%c: f32[4,2], %x: f32[3,2], %cw: f32[4,3])
      -> (f32[4,2], f32[4,2]) {
    %0 = matmul(%cw, %x) : f32[4,2]
    %1 = mul(%c, %0) : f32[4,2]
    return %1, %0
  }, num_carry = 1, num_consts = 1, length = 3, reverse = true} : (f32[4,2], f32[3,4,2])
  return %0#0, %0#1
}""", """
func @f(%h: f32[4,2], %xs: f32[3,3,2], %w: f32[4,3]) -> (f32[4,2], f32[3,4,2]) {
  %0 = matmul(%w, %xs) : f32[3,4,2]
  %1:2 = scan(%h, %0) {body = func @body(%c: f32[4,2], %hoisted0: f32[4,2])
      -> (f32[4,2], f32[4,2]) {
    %0 = mul(%c, %hoisted0) : f32[4,2]
    return %0, %hoisted0
  }, num_carry = 1, num_consts = 0, length = 3, reverse = true} : (f32[4,2], f32[3,4,2])
  return %1#0, %1#1
}""")


def test_a_reshaped_slice_is_hoisted_with_its_stack_reshaped():
    assert_pass(hoist, """
func @f(%h: f32[2,4], %xs: f32[5,6], %w: f32[3,4]) -> (f32[2,4]) {
  %0:1 = scan(%h, %xs, %w) {body = func @body(%c: f32[2,4], %x: f32[6], %cw: f32[3,4])
      -> (f32[2,4]) {
    %0 = reshape(%x) {shape = [2, 3]} : f32[2,3]
    %1 = matmul(%0, %cw) : f32[2,4]
    %2 = add(%c, %1) : f32[2,4]
    return %2
  }, num_carry = 1, num_consts = 1, length = 5, reverse = false} : (f32[2,4])
  return %0
}""", """
func @f(%h: f32[2,4], %xs: f32[5,6], %w: f32[3,4]) -> (f32[2,4]) {
  %0 = reshape(%xs) {shape = [5, 2, 3]} : f32[5,2,3]
  %1 = reshape(%0) {shape = [10, 3]} : f32[10,3]
  %2 = matmul(%1, %w) : f32[10,4]
  %3 = reshape(%2) {shape = [5, 2, 4]} : f32[5,2,4]
  %4:1 = scan(%h, %3) {body = func @body(%c: f32[2,4], %hoisted0: f32[2,4]) -> (f32[2,4]) {
    %0 = add(%c, %hoisted0) : f32[2,4]
    return %0
  }, num_carry = 1, num_consts = 0, length = 5, reverse = false} : (f32[2,4])
  return %4
}""")


def test_recurrences_per_step_operands_and_wider_invariants_stay():
    # matmul(c, u): the carry; matmul(x, y): both per step; matmul(x, v) with v (2, 3, 4)
    # would broadcast the steps against v's batch dim.
    assert_unchanged(hoist, """
func @f(%h: f32[3,4], %xs: f32[5,3,3], %u: f32[4,4], %v: f32[2,3,4]) -> (f32[3,4]) {
  %0:1 = scan(%h, %xs, %u, %v) {body = func @body(%c: f32[3,4], %x: f32[3,3], %cu: f32[4,4],
      %cv: f32[2,3,4]) -> (f32[3,4]) {
    %0 = matmul(%c, %cu) : f32[3,4]
    %1 = exp(%x) : f32[3,3]
    %2 = matmul(%x, %1) : f32[3,3]
    %3 = matmul(%x, %cv) : f32[2,3,4]
    %4 = sum(%3) {axes = [0], keepdims = false} : f32[3,4]
    %5 = matmul(%2, %c) : f32[3,4]
    %6 = add(%0, %4) : f32[3,4]
    %7 = add(%6, %5) : f32[3,4]
    return %7
  }, num_carry = 1, num_consts = 2, length = 5, reverse = false} : (f32[3,4])
  return %0
}""")


def rnn(h0, xss, wx, wh):
    """Two nested scans; the inner input projection moves out of both loops."""
    def outer(h, xs):
        def inner(g, x):
            g = nnjit.tanh(x @ wx + g @ wh)
            return g, g
        g, gs = nnjit.scan(inner, h, xs)
        return g, gs.sum(axis=0)
    return nnjit.scan(outer, h0, xss)


RNN_ARGS = (np.random.default_rng(0).standard_normal((2, 4)),
            np.random.default_rng(1).standard_normal((3, 2, 2, 3)),
            np.random.default_rng(2).standard_normal((3, 4)) * 0.5,
            np.random.default_rng(3).standard_normal((4, 4)) * 0.5)


def scan_bodies(g):
    for n in g.nodes:
        if n.op == Op.SCAN:
            yield n.attrs["body"]
            yield from scan_bodies(n.attrs["body"])


def test_nested_scans_hoist_the_inner_projection_out_of_both_loops():
    g = eliminate_dead_code(hoist(nnjit.trace(rnn, *RNN_ARGS)))
    assert [n.type.shape for n in g.nodes if n.op == Op.MATMUL] == [(12, 4)]   # 3*2*2 rows
    for body in scan_bodies(g):
        for m in body.nodes:
            if m.op == Op.MATMUL:
                assert m.srcs[0].node.op == Op.INPUT and m.srcs[0] == body.inputs[0]  # carry


def test_the_pipeline_hoists_after_the_cleanup_stages(backend):
    names = [name for name, _ in default_pipeline()]
    assert names.index("hoist_loop_invariants") == names.index("dce") + 1
    got = run(rnn, *RNN_ARGS, backend=backend)
    with np.errstate(all="ignore"):
        want = run(rnn, *RNN_ARGS)
    for a, b in zip(got, want):
        assert_close(a, b)


def test_gradients_of_hoisted_scans_match_finite_differences(backend):
    check_grads(rnn, RNN_ARGS, (0, 1, 2, 3), backend=backend)


def test_grad_differentiates_the_hoisted_projection_outside_the_loop():
    """Every weight gradient and the input projection's input gradient are GEMMs over all
    3 * 2 * 2 steps outside both loops; the only contractions left in the bodies (forward,
    inner backward) are the recurrences g @ wh and dz @ wh^T."""
    g = eliminate_dead_code(nnjit.trace(nnjit.grad(lambda *a: rnn(*a)[1].sum(), (1, 2, 3)),
                                        *RNN_ARGS))
    top = sorted((n.type.shape, tuple(s.type.shape for s in n.srcs))
                 for n in g.nodes if n.op == Op.MATMUL)
    assert top == sorted([((12, 4), ((12, 3), (3, 4))),      # the projection xs @ wx
                          ((12, 3), ((12, 4), (4, 3))),      # d xs
                          ((3, 4), ((3, 12), (12, 4))),      # d wx
                          ((4, 4), ((4, 12), (12, 4)))])     # d wh
    inside = [tuple(s.type.shape for s in m.srcs) for body in scan_bodies(g)
              for m in body.nodes if m.op == Op.MATMUL]
    assert inside == [((2, 4), (4, 4))] * 3
