"""The rewrite engine: Pat matching (ops, predicates, captures, commutative operands, consts),
PatternMatcher indexing, `+` and first-match order, the fixpoint driver (chains, emitted nodes
rewritten in turn, the loop cap and its error), nested bodies, source locations, recorded rule
sites and the NNJIT_DEBUG=rewrite trace. Also the Before/Expected helper the pass tests share."""
from __future__ import annotations

import inspect

import numpy as np
import pytest

from nnjit.ir import CompileError, DType, Graph, Loc, Op, evaluate, parse, verify
from nnjit.passes.rewrite import Pat, PatternMatcher, const_equals, graph_rewrite

# -- shared helpers for the pass tests -------------------------------------------------------------

SPECIAL_FLOATS = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 2.5, -3.25, 1e-300, 7.0]
SPECIAL_INTS = [0, 1, -1, 2, -7, 100]


def special_args(g: Graph, seed: int = 0) -> list[np.ndarray]:
    """Inputs of `g`'s types drawn from values where identities break: NaN, infinities, signed
    zeros, the largest and smallest (normal and subnormal) floats, extreme integers."""
    rng = np.random.default_rng(seed)
    out = []
    for t in g.input_types:
        if t.dtype.is_float:
            fi = np.finfo(t.dtype.np)
            vals = np.array(SPECIAL_FLOATS + [fi.max, -fi.max, fi.tiny, fi.smallest_subnormal],
                            t.dtype.np)
        elif t.dtype.is_int:
            info = np.iinfo(t.dtype.np)
            vals = np.array(SPECIAL_INTS + [info.min, info.max], t.dtype.np)
        else:
            vals = np.array([True, False])
        out.append(rng.choice(vals, size=t.shape))
    return out


def assert_same_bits(got, want) -> None:
    """Equal shapes, dtypes and bits (any NaN matches any NaN; 0.0 and -0.0 differ)."""
    for a, b in zip(got, want, strict=True):
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, a.shape, b.dtype, b.shape)
        if a.dtype.kind == "f":
            nan = np.isnan(b)
            np.testing.assert_array_equal(np.isnan(a), nan)
            np.testing.assert_array_equal(a[~nan], b[~nan])
            np.testing.assert_array_equal(np.signbit(a[~nan]), np.signbit(b[~nan]))
        else:
            np.testing.assert_array_equal(a, b)


def assert_pass(pass_fn, before: str, expected: str) -> Graph:
    """Before/Expected: `pass_fn(parse(before))` is structurally `parse(expected)`, verifies,
    round-trips, leaves its input alone, and computes the same bits on special inputs."""
    g = parse(before)
    text = str(g)
    got = pass_fn(g)
    assert str(g) == text, "the pass changed its input graph"
    verify(got)
    assert parse(str(got)) == got
    want = parse(expected)
    assert got == want, f"\ngot:\n{got}\nexpected:\n{want}"
    for seed in range(3):
        args = special_args(g, seed)
        with np.errstate(all="ignore"):     # inf - inf in a reference is the point here
            assert_same_bits(evaluate(got, args), evaluate(g, args))
    return got


def assert_unchanged(pass_fn, before: str) -> None:
    """The pass leaves `before` as it is (a rule that must NOT fire)."""
    assert_pass(pass_fn, before, before)


# -- the engine ------------------------------------------------------------------------------------

X, Y = Pat.var("x"), Pat.var("y")

NEG4 = """
func @f(%x: f32[3]) -> (f32[3]) {
  %0 = neg(%x) : f32[3]
  %1 = neg(%0) : f32[3]
  %2 = neg(%1) : f32[3]
  %3 = neg(%2) : f32[3]
  return %3
}"""


def _line() -> int:
    return inspect.currentframe().f_back.f_lineno


def test_chained_rewrites_reach_a_fixpoint():
    pm = PatternMatcher([(Pat(Op.NEG, (Pat(Op.NEG, (X,)),)), lambda ctx, x: x)])
    assert_pass(lambda g: graph_rewrite(g, pm), NEG4, """
func @f(%x: f32[3]) -> (f32[3]) {
  %0 = neg(%x) : f32[3]
  %1 = neg(%x) : f32[3]
  return %x
}""")


def test_rules_are_indexed_by_op():
    calls = []

    def seen(ctx, **_):
        calls.append(ctx.node.op)
        return None
    pm = PatternMatcher([(Pat(Op.EXP), seen), (Pat({Op.NEG, Op.ADD}), seen), (Pat(), seen)])
    assert [r.pat.ops for r in pm.rules_for(Op.NEG)] == [frozenset({Op.NEG, Op.ADD}), None]
    assert len(pm.rules_for(Op.EXP)) == 2 and len(pm.rules_for(Op.SUB)) == 1
    graph_rewrite(parse(NEG4), pm)
    assert calls == [Op.NEG] * 8      # two applicable rules per node, the exp rule never tried


def test_first_matching_rule_wins_and_a_declining_rule_passes_its_turn():
    g = parse("func @f(%x: f32[3]) -> (f32[3]) {\n  %0 = exp(%x) : f32[3]\n  return %0\n}")
    to_neg = (Pat(Op.EXP, (X,)), lambda ctx, x: ctx.emit(Op.NEG, [x]))
    to_tanh = (Pat(Op.EXP, (X,)), lambda ctx, x: ctx.emit(Op.TANH, [x]))
    decline = (Pat(Op.EXP, (X,)), lambda ctx, x: None)
    first = graph_rewrite(g, PatternMatcher([to_neg, to_tanh]))
    assert [n.op for n in first.nodes] == [Op.NEG]
    second = graph_rewrite(g, PatternMatcher([decline, to_tanh]))
    assert [n.op for n in second.nodes] == [Op.TANH]


def test_plus_combines_tables_in_order():
    a = PatternMatcher([(Pat(Op.EXP, (X,)), lambda ctx, x: ctx.emit(Op.NEG, [x]))])
    b = PatternMatcher([(Pat(Op.EXP, (X,)), lambda ctx, x: ctx.emit(Op.TANH, [x])),
                        (Pat(Op.LOG, (X,)), lambda ctx, x: x)])
    ab, ba = a + b, b + a
    assert len(ab) == 3 and ab.rules[0] is a.rules[0] and ab.rules[1:] == b.rules
    g = parse("func @f(%x: f32[3]) -> (f32[3], f32[3]) {\n  %0 = exp(%x) : f32[3]\n"
              "  %1 = log(%x) : f32[3]\n  return %0, %1\n}")
    assert [n.op for n in graph_rewrite(g, ab).nodes] == [Op.NEG]
    assert [n.op for n in graph_rewrite(g, ba).nodes] == [Op.TANH]
    assert graph_rewrite(g, ab).outputs[1] == g.inputs[0]


def test_emitted_nodes_are_rewritten_too():
    # sqrt(x) -> reshape(reshape(exp(neg(neg(x))))): the emitted chain collapses by other rules
    # as it is emitted; the reshape left unused stays for DCE.
    pm = PatternMatcher([
        (Pat(Op.RESHAPE, (X,)), lambda ctx, x: x if x.type == ctx.type else None),
        (Pat(Op.RESHAPE, (Pat(Op.RESHAPE, (X,)),)),
         lambda ctx, x: ctx.emit(Op.RESHAPE, [x], {"shape": ctx.type.shape})),
        (Pat(Op.SQRT, (X,)),
         lambda ctx, x: ctx.emit(Op.RESHAPE, [ctx.emit(Op.RESHAPE, [
             ctx.emit(Op.EXP, [ctx.emit(Op.NEG, [ctx.emit(Op.NEG, [x])])])], {"shape": (3, 1)})],
             {"shape": (3,)})),
        (Pat(Op.NEG, (Pat(Op.NEG, (X,)),)), lambda ctx, x: x),
    ])
    out = graph_rewrite(parse("func @f(%x: f32[3]) -> (f32[3]) {\n  %0 = sqrt(%x) : f32[3]\n"
                              "  return %0\n}"), pm)
    assert out == parse("""func @f(%x: f32[3]) -> (f32[3]) {
  %0 = neg(%x) : f32[3]
  %1 = exp(%x) : f32[3]
  %2 = reshape(%1) {shape = [3, 1]} : f32[3,1]
  return %1
}""")


def test_a_looping_rule_is_an_error_naming_it():
    line = _line() + 1
    swap = (Pat(Op.ADD, (X, Y)), lambda ctx, x, y: ctx.emit(Op.ADD, [y, x]))
    g = parse("func @f(%a: f32[3], %b: f32[3]) -> (f32[3]) {\n  %0 = add(%a, %b) : f32[3]\n"
              "  return %0\n}")
    with pytest.raises(CompileError, match=rf"more than 10 rewrites at @f %0 add: a rule loops;"
                                           rf" recent firings: rule at test_rewrite.py:{line}"):
        graph_rewrite(g, PatternMatcher([swap]), max_rewrites_per_node=10)


def test_a_graph_still_changing_after_the_sweep_cap_is_an_error():
    # A rule that only sees operands is at its fixpoint after one sweep; a stateful one (here it
    # fires on every other call, so once per sweep) is what the sweep cap guards against.
    calls = [0]

    def every_other_call(ctx, x):
        calls[0] += 1
        return ctx.rebuild() if calls[0] % 2 else None
    line = _line() + 1
    pm = PatternMatcher([(Pat(Op.EXP, (X,)), every_other_call)])
    g = parse("func @f(%x: f32[3]) -> (f32[3]) {\n  %0 = exp(%x) : f32[3]\n  return %0\n}")
    with pytest.raises(CompileError, match=rf"@f still changing after 3 sweeps; rules firing in "
                                           rf"the last sweep: rule at test_rewrite.py:{line}"):
        graph_rewrite(g, pm, max_sweeps=3)


def test_rules_record_the_file_and_line_they_are_written_on():
    line = _line() + 2
    pm = PatternMatcher([
        (Pat(Op.NEG, (X,)), lambda ctx, x: None),
        (Pat(Op.EXP, (X,)),
         lambda ctx, x: None),
    ])
    assert [r.site for r in pm.rules] == [f"test_rewrite.py:{line}", f"test_rewrite.py:{line + 1}"]
    assert str(pm.rules[0]) == f"rule at test_rewrite.py:{line}"
    assert pm.rules[0].file == __file__


def test_trace_logs_each_firing(capsys, monkeypatch):
    line = _line() + 1
    pm = PatternMatcher([(Pat(Op.NEG, (Pat(Op.NEG, (X,)),)), lambda ctx, x: x)])
    graph_rewrite(parse(NEG4), pm, trace=True)
    err = capsys.readouterr().err.splitlines()
    assert err == [f"rule at test_rewrite.py:{line} rewrote %1 neg -> %x : f32[3] (in @f)",
                   f"rule at test_rewrite.py:{line} rewrote %3 neg -> %x : f32[3] (in @f)"]
    monkeypatch.setenv("NNJIT_DEBUG", "2,rewrite")
    graph_rewrite(parse(NEG4), pm)
    assert len(capsys.readouterr().err.splitlines()) == 2
    monkeypatch.setenv("NNJIT_DEBUG", "1")
    graph_rewrite(parse(NEG4), pm)
    assert capsys.readouterr().err == ""


SCAN = """
func @f(%h0: f32[3], %xs: f32[2,3]) -> (f32[3], f32[2,3]) {
  %0:2 = scan(%h0, %xs) {body = func @body(%carry0: f32[3], %x0: f32[3]) -> (f32[3], f32[3]) {
    %0 = neg(%x0) : f32[3]
    %1 = neg(%0) : f32[3] loc("m.py":5 in "body")
    %2 = add(%carry0, %1) : f32[3]
    return %2, %1
  }, num_carry = 1, num_consts = 0, length = 2, reverse = false} : (f32[3], f32[2,3])
  %1 = neg(%0#1) : f32[2,3]
  %2 = neg(%1) : f32[2,3]
  return %0#0, %2
}"""


def test_nested_bodies_are_rewritten():
    pm = PatternMatcher([(Pat(Op.NEG, (Pat(Op.NEG, (X,)),)), lambda ctx, x: x)])
    assert_pass(lambda g: graph_rewrite(g, pm), SCAN, """
func @f(%h0: f32[3], %xs: f32[2,3]) -> (f32[3], f32[2,3]) {
  %0:2 = scan(%h0, %xs) {body = func @body(%carry0: f32[3], %x0: f32[3]) -> (f32[3], f32[3]) {
    %0 = neg(%x0) : f32[3]
    %1 = add(%carry0, %x0) : f32[3]
    return %1, %x0
  }, num_carry = 1, num_consts = 0, length = 2, reverse = false} : (f32[3], f32[2,3])
  %1 = neg(%0#1) : f32[2,3]
  return %0#0, %0#1
}""")
    flat = graph_rewrite(parse(SCAN), pm, recurse=False)
    assert flat.nodes[0].attrs["body"] == parse(SCAN).nodes[0].attrs["body"]   # not entered


def test_emitted_nodes_keep_the_matched_nodes_location():
    pm = PatternMatcher([(Pat(Op.SUB, (X, Y)), lambda ctx, x, y: ctx.emit(
        Op.ADD, [x, ctx.emit(Op.NEG, [y])]))])
    g = graph_rewrite(parse("""func @f(%a: f32[3], %b: f32[3]) -> (f32[3]) {
  %0 = sub(%a, %b) : f32[3] loc("model.py":7 in "fwd")
  return %0
}"""), pm)
    assert [(n.op, n.loc) for n in g.nodes] == [(Op.NEG, Loc("model.py", 7, "fwd")),
                                                 (Op.ADD, Loc("model.py", 7, "fwd"))]


def test_a_declined_rule_leaves_nothing_behind():
    def emit_then_decline(ctx, x):
        ctx.emit(Op.NEG, [x])
        return None
    g = parse("func @f(%x: f32[3]) -> (f32[3]) {\n  %0 = exp(%x) : f32[3]\n  return %0\n}")
    out = graph_rewrite(g, PatternMatcher([(Pat(Op.EXP, (X,)), emit_then_decline)]))
    assert out is g


def test_a_replacement_of_another_type_is_an_error_naming_the_rule():
    line = _line() + 1
    pm = PatternMatcher([(Pat(Op.SUM, (X,)), lambda ctx, x: x)])
    g = parse("func @f(%x: f32[3]) -> (f32[]) {\n  %0 = sum(%x) {axes = [0], keepdims = false}"
              " : f32[]\n  return %0\n}")
    with pytest.raises(CompileError, match=rf"rule at test_rewrite.py:{line} replaced sum : f32\[\]"
                                           rf" with values of type f32\[3\]"):
        graph_rewrite(g, pm)
    bad = PatternMatcher([(Pat(Op.SUM, (X,)), lambda ctx, x: ctx.emit(Op.RESHAPE, [x],
                                                                        {"shape": (2,)}))])
    with pytest.raises(CompileError, match="emitted an ill-typed reshape: .*cannot reshape"):
        graph_rewrite(g, bad)


def test_nothing_to_do_returns_the_input_graph():
    g = parse(NEG4)
    assert graph_rewrite(g, PatternMatcher([(Pat(Op.EXP), lambda ctx: None)])) is g


# -- patterns --------------------------------------------------------------------------------------

PAT_GRAPH = """
func @f(%a: f32[2,3], %b: f32[3], %i: i32[3]) -> (f32[2,3], f32[3], f32[2,3], i32[3]) {
  %0 = add(%a, %b) : f32[2,3]
  %1 = add(%b, %b) : f32[3]
  %2 = transpose(%a) {perm = [1, 0]} : f32[3,2]
  %3 = const() {value = dense<f32[], [-0.0]>} : f32[]
  %4 = mul(%3, %a) : f32[2,3]
  %5 = neg(%i) : i32[3]
  return %0, %1, %4, %5
}"""


def _matches(pat: Pat) -> list[tuple[int, dict]]:
    g = parse(PAT_GRAPH)
    names = {v: v.node.attrs["name"] for v in g.inputs}
    names.update({n.out: f"%{k}" for k, n in enumerate(g.nodes)})
    out = []
    for k, n in enumerate(g.nodes):
        caps: dict = {}
        if pat.match(n.out, caps):
            out.append((k, {c: names[v] for c, v in caps.items()}))
    return out


def test_pattern_ops_dtypes_shapes_and_attrs():
    assert [k for k, _ in _matches(Pat(Op.ADD))] == [0, 1]
    assert [k for k, _ in _matches(Pat({Op.ADD, Op.NEG}))] == [0, 1, 5]
    assert [k for k, _ in _matches(Pat(dtype=DType.I32))] == [5]
    assert [k for k, _ in _matches(Pat(dtype={DType.F32}, shape=(3,)))] == [1]
    assert [k for k, _ in _matches(Pat(shape=lambda s: len(s) == 0))] == [3]
    assert [k for k, _ in _matches(Pat(attrs={"perm": (1, 0)}))] == [2]
    assert [k for k, _ in _matches(Pat(attrs={"perm": lambda p: p[0] == 0}))] == []
    assert [k for k, _ in _matches(Pat(where=lambda v: v.node.srcs and
                                       v.node.srcs[0].node.op == Op.CONST))] == [4]


def test_pattern_captures_operands_and_repeated_names_must_agree():
    assert _matches(Pat(Op.ADD, (X, Y), "root")) == [
        (0, {"root": "%0", "x": "a", "y": "b"}), (1, {"root": "%1", "x": "b", "y": "b"})]
    assert _matches(Pat(Op.ADD, (X, X))) == [(1, {"x": "b"})]
    assert _matches(Pat(Op.ADD, (X, Pat.var("y", shape=(2, 3))))) == []
    assert _matches(Pat(Op.ADD, (X,))) == []          # arity must match


def test_commutative_patterns_try_both_operand_orders():
    zero_first = Pat(Op.MUL, (Pat.const(name="c"), X))
    zero_second = Pat(Op.MUL, (X, Pat.const(name="c")))
    both = Pat(Op.MUL, (X, Pat.const(name="c")), commutative=True)
    assert _matches(zero_first) == [(4, {"c": "%3", "x": "a"})]
    assert _matches(zero_second) == []
    assert _matches(both) == [(4, {"x": "a", "c": "%3"})]
    with pytest.raises(ValueError, match="exactly two"):
        Pat(Op.WHERE, (X, X, X), commutative=True)


@pytest.mark.parametrize("value,array,want", [
    (0, np.zeros(3, np.int32), True),
    (0, np.float32(0.0), True),
    (0.0, np.float32(-0.0), False),         # zeros compare with their sign
    (-0.0, np.float32(-0.0), True),
    (-0.0, np.array([-0.0, 0.0]), False),
    (1, np.array([1.0, 1.0]), True),
    (1, np.array([1.0, 2.0]), False),
    (True, np.array([True, True]), True),
    (float("nan"), np.array([np.nan, np.nan]), True),
    (float("nan"), np.array([np.nan, 1.0]), False),
])
def test_const_pattern_compares_every_element(value, array, want):
    from nnjit.ir import Builder
    b = Builder("f")
    c = b.const(array)
    g = b.build([c])
    assert const_equals(g.outputs[0], value) is want
    assert Pat.const(value).match(g.outputs[0], {}) is want
