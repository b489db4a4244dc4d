"""Operand inlining (`codegen.inline`): which producer kernels a GEMM can recompute in its loads,
the rewritten Program, and its result against the original in the kernel-IR interpreter."""
from __future__ import annotations

import re

import numpy as np

import nnjit
from nnjit.codegen import lower_graph
from nnjit.codegen.inline import (inline_operands, inlinable_producers, operand_element,
                                  producer_nest)
from nnjit.ir import DType
from nnjit.ir.kernel import (Buffer, BufKind, GemmKernel, InlinedOperand, Let, Load, Loop,
                             LoopKernel, LoopKind, MatView, Program, Store, Var)
from nnjit.ir.kernel_eval import run_program
from tests.helpers import assert_close

F32, I64 = DType.F32, DType.I64


def _conv_program() -> Program:
    x, w = np.zeros((1, 2, 4, 4), np.float32), np.zeros((3, 2, 2, 2), np.float32)
    g = nnjit.compile(lambda x, w: nnjit.conv2d(x, w), x, w, backend="interp").graph
    return lower_graph(g).program


def test_conv2d_im2col_is_inlined_into_its_gemm():
    p = _conv_program()
    assert [k.name for k in p.kernels] == ["k0_conv2d_im2col", "k0_conv2d"]
    found = inlinable_producers(p)
    assert found.skip == {0} and set(found.for_gemm(1)) == {"col1"}
    q = inline_operands(p)
    [g] = q.kernels
    assert isinstance(g, GemmKernel) and g.reads == ("in1", "in0")
    [op] = g.inlined
    assert op.buf == "col1" and op.loops == (("i1", 2), ("i2", 2), ("i3", 2), ("i4", 3),
                                             ("i5", 3))
    text = re.sub(r"  // .*", "", str(q))
    assert ("inlined col1[ravel(i1 < 2, i2 < 2, i3 < 2, i4 < 3, i5 < 3)] = "
            "in0[(((i1 * 16) + ((i4 + i2) * 4)) + (i5 + i3))]") in text
    rng = np.random.default_rng(0)
    args = [rng.standard_normal((1, 2, 4, 4)).astype(np.float32),
            rng.standard_normal((3, 2, 2, 2)).astype(np.float32)]
    assert_close(run_program(q, args)[0], run_program(p, args)[0])


def test_operand_element_unravels_the_flat_index():
    op = InlinedOperand("t", (("a", 2), ("b", 3)), Load("x", Var("b"), F32))
    lets, value = operand_element(op, Var("f"))
    assert [f"{s.var.name} = {s.value}" for s in lets] == ["a = (f / 3)", "b = (f % 3)"]
    assert value == op.value


def _gemm_program(extra_reader: bool = False, overwrite: bool = False) -> Program:
    """t = relayout(x) (2 x 3, transposed), then C = A @ t, optionally with t read again or x
    overwritten in between."""
    i, j = Var("i"), Var("j")
    relayout = Store("t", _ix(i, 3, j), Load("x", _ix(j, 2, i), F32))
    prod = LoopKernel("prod", (Loop("i", 2, (Loop("j", 3, (relayout,)),), LoopKind.PARALLEL),),
                      ("x",), ("t",))
    g = GemmKernel("g", F32, (1,), 1, 3, 2, MatView("a", 0, (0,), 2, 1),
                   MatView("t", 0, (0,), 3, 1), MatView("c", 0, (0,), 3, 1),
                   reads=("a", "t"), writes=("c",))
    kernels = [prod]
    if extra_reader:
        kernels.append(LoopKernel("copy", (Loop("i", 6, (Store("d", i, Load("t", i, F32)),)),),
                                  ("t",), ("d",)))
    if overwrite:
        kernels.append(LoopKernel("clobber", (Loop("i", 6, (Store("x", i, Load("a", Var("i"),
                                                                               F32)),)),),
                                  ("a",), ("x",)))
    bufs = (Buffer("x", F32, 6, BufKind.INPUT, index=0), Buffer("a", F32, 6, BufKind.INPUT,
                                                                  index=1),
            Buffer("t", F32, 6, BufKind.TEMP), Buffer("d", F32, 6, BufKind.TEMP),
            Buffer("c", F32, 3, BufKind.OUTPUT, index=0))
    return Program("p", bufs, tuple(kernels + [g]), ("x", "a"), ("c",), 48)


def _ix(a, n, b):
    from nnjit.codegen import index as ix

    return ix.iadd(ix.imul(a, ix.c64(n)), b)


def test_only_a_sole_reader_with_unchanged_inputs_inlines():
    assert producer_nest(_gemm_program().kernels[0]) is not None
    assert inlinable_producers(_gemm_program()).skip == {0}
    assert inlinable_producers(_gemm_program(extra_reader=True)).skip == set()
    assert inlinable_producers(_gemm_program(overwrite=True)).skip == set()
    p = _gemm_program()
    q = inline_operands(p)
    assert [k.name for k in q.kernels] == ["g"] and q.kernels[0].reads == ("a", "x")
    x, a = np.arange(6, dtype=np.float32), np.arange(6, dtype=np.float32) - 2
    assert_close(run_program(q, [x, a])[0], run_program(p, [x, a])[0])


def test_a_nest_not_in_store_order_is_not_a_producer():
    i, j = Var("i"), Var("j")
    st = Store("t", _ix(j, 2, i), Load("x", _ix(i, 3, j), F32))      # column-major stores
    k = LoopKernel("prod", (Loop("i", 2, (Loop("j", 3, (st,)),)),), ("x",), ("t",))
    assert producer_nest(k) is None
    lets = (Let(Var("v", F32), Load("x", i, F32)), Store("t", i, Var("v", F32)))
    assert producer_nest(LoopKernel("p2", (Loop("i", 6, lets),), ("x",), ("t",))) is None
