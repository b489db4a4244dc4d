"""The op registry and the forward case table walk each other: every op has an OpDef, every
registered op (but plumbing) has forward cases, each case really emits its op, and every case is
run by a forward test. A new op without forward tests fails here."""
import importlib

import numpy as np
import pytest

import nnjit
from nnjit.ir import OPDEFS, Op
from tests.op_cases import ALL, CASES, COVERED_OPS, FAMILIES, PLUMBING, case_params, ids

# The test module that runs each family's `test_forward*` over `case_params(family)`.
FORWARD_TESTS = {
    "elementwise": ("tests.ir.test_ops_elementwise", "test_forward"),
    "reduce": ("tests.ir.test_ops_reduce", "test_forward"),
    "contraction": ("tests.ir.test_ops_contraction", "test_forward"),
    "window": ("tests.ir.test_ops_window", "test_forward"),
    "movement": ("tests.ir.test_ops_movement", "test_forward"),
    "source": ("tests.ir.test_ops_source", "test_forward"),
    "control": ("tests.frontend.test_dsl", "test_forward_control"),
    "collective": ("tests.ir.test_ops_collective", "test_forward"),
}


@pytest.mark.parametrize("op", [op for op in Op if op != Op.INPUT], ids=lambda o: o.value)
def test_every_op_has_an_opdef(op):
    assert op in OPDEFS, f"{op!r} has no OpDef"
    assert OPDEFS[op].op == op and OPDEFS[op].name == op.value


def test_every_registered_op_has_forward_cases():
    want = set(OPDEFS) - PLUMBING
    missing = sorted(op.value for op in want - COVERED_OPS)
    extra = sorted(op.value for op in COVERED_OPS - want)
    assert not missing, f"ops without a forward case in tests/op_cases.py: {missing}"
    assert not extra, f"cases for plumbing or unregistered ops: {extra}"


def _parametrized_case_names(fn) -> set[str]:
    names = set()
    for mark in getattr(fn, "pytestmark", []):
        if mark.name == "parametrize" and mark.args[0] == "case,dtype":
            names |= {p.values[0].name for p in mark.args[1]}
    return names


def test_every_case_is_run_by_a_forward_test():
    assert set(FAMILIES) == set(FORWARD_TESTS), "a case family has no forward test module"
    run_names = set()
    for family, (module, test) in FORWARD_TESTS.items():
        fn = getattr(importlib.import_module(module), test)
        names = _parametrized_case_names(fn)
        assert names == {p.values[0].name for p in case_params(family)}, (module, test)
        run_names |= names
    assert run_names == {c.name for c in CASES}


def _walk_ops(graph) -> set[Op]:
    return {n.op for n in graph.walk()}


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_case_emits_its_op(case):
    """Tracing the case's DSL function (no compilation) produces a node of the op it covers."""
    args = case.make_inputs(np.random.default_rng(0), case.dtypes[0])
    graph = nnjit.trace(case.fn, *args)
    assert case.op in _walk_ops(graph), f"{case.name} does not emit {case.op.value}:\n{graph}"


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_case_table_is_consistent(case):
    """Inputs come out as declared, and the flags a gradient check relies on make sense."""
    assert case.dtypes and set(case.dtypes) <= set(ALL)
    for dtype in case.dtypes:
        args = case.make_inputs(np.random.default_rng(1), dtype)
        assert len(args) == len(case.args)
        for a, spec in zip(args, case.args):
            assert a.shape == spec.shape
            assert a.dtype == np.dtype(spec.dtype if spec.dtype is not None else dtype)
    assert set(case.diff_inputs) <= set(range(len(case.args)))
    assert not set(case.diff_inputs) & set(case.int_inputs)
    fixed = {i for i, a in enumerate(case.args) if a.dtype is not None}
    assert not set(case.diff_inputs) & fixed, "differentiable inputs take the case's dtype"
    if case.differentiable:
        assert any(np.dtype(d).kind == "f" for d in case.dtypes)
    assert case.op not in PLUMBING


def test_case_names_are_unique():
    names = [c.name for c in CASES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("op", [op for op in Op if op != Op.INPUT], ids=lambda o: o.value)
def test_every_op_has_a_scalar_rule_or_a_lowering(op):
    """The registry is the one place an op's codegen lives: an elementwise op has a scalar rule
    in kernel-IR calls, every other op a lowering hook of the shape its kind asks for
    (coordinate rule, accumulation, kernel template, node hook). Nothing else dispatches on
    ops, so a missing hook is a missing lowering."""
    import nnjit.codegen  # noqa: F401  (registers the codegen hooks)
    from nnjit.ir.kernel import Accumulation
    from nnjit.ir.ops import Kind

    d = OPDEFS[op]
    assert d.scalar is not None or d.lower is not None, f"{op.value} has neither"
    if d.kind == Kind.REDUCE:
        assert isinstance(d.lower, Accumulation), op
    if d.scalar is not None:
        assert d.kind == Kind.ELEMENTWISE and d.lower is None, op


def test_op_groups_come_from_the_registry():
    """Fusion and codegen read op groups derived from each OpDef's kind and scalar rule."""
    from nnjit.ir import groups
    from nnjit.ir.ops import Kind

    assert groups.POINTWISE == {op for op, d in OPDEFS.items() if d.scalar is not None}
    assert groups.VIEW == {Op.RESHAPE, Op.TRANSPOSE, Op.BROADCAST_TO, Op.SLICE}
    assert groups.REDUCE == {op for op, d in OPDEFS.items() if d.kind == Kind.REDUCE}
    assert {Op.EXP, Op.LOG, Op.TANH, Op.SIGMOID, Op.POW, Op.SQRT,
            Op.RANDOM_UNIFORM} <= groups.EXPENSIVE
    assert not {Op.ADD, Op.MUL, Op.RELU, Op.WHERE, Op.CAST} & groups.EXPENSIVE
