"""Trace-time errors and node locations point at the user's own source line.

Every error names the op, the shapes involved, this file's basename, the exact line (taken with
`inspect.currentframe().f_lineno`) and the function name. Every node of a traced graph carries
the user's (file, line, function): composites (softmax) point at their call site, autodiff's
backward nodes at the forward op, scan bodies at the body's lines; locs survive print/parse.
"""
from __future__ import annotations

import inspect
import os

import numpy as np
import pytest

import nnjit
from nnjit.ir import Loc, Op, parse

HERE = os.path.basename(__file__)


def next_line() -> int:
    """The line after the caller's current line."""
    return inspect.currentframe().f_back.f_lineno + 1


def f32(*shape):
    return np.ones(shape, np.float32)


def raises_at(fn, *args, op: str | None, needles=(), at: dict, func: str) -> nnjit.ShapeError:
    """Trace fn(*args) expecting a ShapeError at line `at["line"]` (recorded while tracing)."""
    with pytest.raises(nnjit.ShapeError) as info:
        nnjit.trace(fn, *args)
    e = info.value
    line = at["line"]
    msg = str(e)
    if op is not None:
        assert msg.startswith(f"{op}: "), msg
        assert e.op == op
    for s in needles:
        assert s in msg, f"{s!r} not in {msg!r}"
    assert f"{HERE}:{line} in {func}" in msg, f"{HERE}:{line} in {func} not in {msg!r}"
    assert os.path.basename(e.loc.file) == HERE and e.loc.line == line and e.loc.func == func
    return e


# -- shape and dtype errors ------------------------------------------------------------------------

def test_add_shape_mismatch():
    at = {}

    def model(x, y):
        at["line"] = next_line()
        return x + y

    raises_at(model, f32(2, 3), f32(4, 5), op="add", needles=["(2, 3)", "(4, 5)"],
              at=at, func="model")


def test_matmul_inner_dims():
    at = {}

    def forward(x, w):
        h = nnjit.relu(x)
        at["line"] = next_line()
        return h @ w

    e = raises_at(forward, f32(3, 4), f32(5, 6), op="matmul",
                  needles=["inner dims differ", "(3, 4) @ (5, 6)"], at=at,
                  func="forward")
    assert str(e) == f"matmul: inner dims differ, (3, 4) @ (5, 6) at {e.loc}"


def test_matmul_with_a_vector_names_the_users_shapes():
    at = {}

    def mv(x, v):
        at["line"] = next_line()
        return nnjit.matmul(x, v)

    raises_at(mv, f32(2, 3), f32(5), op="matmul", needles=["(2, 3) @ (5,)"], at=at,
              func="mv")


def test_conv2d_channel_mismatch():
    at = {}

    def convnet(x, w):
        at["line"] = next_line()
        return nnjit.conv2d(x, w, padding=1)

    raises_at(convnet, f32(1, 3, 5, 5), f32(2, 4, 3, 3), op="conv2d",
              needles=["channels 3", "in-channels 4", "(1, 3, 5, 5)", "(2, 4, 3, 3)"],
              at=at, func="convnet")


def test_reshape_size_mismatch():
    at = {}

    def flatten(x):
        at["line"] = next_line()
        return x.reshape(5, 2)

    raises_at(flatten, f32(2, 3), op="reshape", needles=["(2, 3)", "(5, 2)"], at=at,
              func="flatten")


def test_reshape_with_minus_one_that_does_not_divide():
    at = {}

    def flatten(x):
        at["line"] = next_line()
        return x.reshape(-1, 4)

    raises_at(flatten, f32(2, 3), op="reshape", needles=["(2, 3)", "(-1, 4)"], at=at,
              func="flatten")


@pytest.mark.parametrize("op,call", [
    ("sum", lambda x: x.sum(axis=3)),
    ("max", lambda x: nnjit.max(x, axis=-3)),
    ("mean", lambda x: nnjit.mean(x, axis=(0, 2))),
    ("argmax", lambda x: x.argmax(axis=2)),
    ("softmax", lambda x: nnjit.softmax(x, axis=2)),
    ("log_softmax", lambda x: nnjit.log_softmax(x, axis=5)),
    ("logsumexp", lambda x: nnjit.logsumexp(x, axis=-4)),
    ("transpose", lambda x: x.transpose(0, 2)),
    ("concat", lambda x: nnjit.concat([x, x], axis=2)),
    ("stack", lambda x: nnjit.stack([x, x], axis=4)),
])
def test_bad_axis(op, call):
    """The user's line here is the lambda's own line (the innermost frame outside nnjit)."""
    def model(x):
        return call(x)

    raises_at(model, f32(2, 3), op=op, needles=["axis", "out of range", "f32[2,3]"],
              at={"line": call.__code__.co_firstlineno}, func="<lambda>")


def test_bad_dtype_exp_of_an_int_tensor():
    at = {}

    def activation(n):
        at["line"] = next_line()
        return nnjit.exp(n)

    raises_at(activation, np.ones((2, 3), np.int32), op="exp",
              needles=["must be f32 or f64", "i32[2,3]"], at=at, func="activation")


def test_one_hot_of_floats():
    at = {}

    def encode(y):
        at["line"] = next_line()
        return nnjit.one_hot(y, 4)

    raises_at(encode, f32(3), op="one_hot", needles=["integers", "f32[3]"], at=at,
              func="encode")


def test_linear_with_the_wrong_weight_layout():
    at = {}

    def layer(x, w):
        at["line"] = next_line()
        return nnjit.linear(x, w)

    raises_at(layer, f32(2, 3), f32(3, 4), op="linear", needles=["(2, 3)", "(3, 4)", "torch"],
              at=at, func="layer")


def test_index_out_of_bounds():
    at = {}

    def pick(x):
        at["line"] = next_line()
        return x[1, 7]

    raises_at(pick, f32(2, 3), op="getitem", needles=["index 7", "size 3", "f32[2,3]"],
              at=at, func="pick")


def test_where_shapes():
    at = {}

    def select(c, x, y):
        at["line"] = next_line()
        return nnjit.where(c > 0, x, y)

    raises_at(select, f32(2, 3), f32(2, 3), f32(4), op="where",
              needles=["(2, 3)", "(4,)"], at=at, func="select")


def test_pool_window_too_large():
    at = {}

    def pool(x):
        at["line"] = next_line()
        return nnjit.max_pool2d(x, 7)

    raises_at(pool, f32(1, 1, 3, 3), op="max_pool2d", needles=["7", "3"], at=at,
              func="pool")


def test_traced_value_in_if():
    at = {}

    def branchy(x):
        at["line"] = next_line()
        if x.sum() > 0:
            return x
        return -x

    e = raises_at(branchy, f32(2), op=None, needles=["Python control flow", "nnjit.where"],
                  at=at, func="branchy")
    assert isinstance(e, nnjit.ShapeError)


def test_scan_carry_type_change():
    at = {}

    def step(c, x):
        return c.sum(), x           # the carry shrinks from f32[3] to f32[]

    def rnn(h, xs):
        at["line"] = next_line()
        return nnjit.scan(step, h, xs)

    raises_at(rnn, f32(3), f32(4, 3), op="scan", needles=["carry 0", "f32[3]", "f32[]"],
              at=at, func="rnn")


def test_scan_carry_dtype_change():
    at = {}

    def rnn(h, xs):
        at["line"] = next_line()
        return nnjit.scan(lambda c, x: (c.astype(np.float64) + x, x), h, xs)

    raises_at(rnn, f32(3), f32(4, 3), op="scan", needles=["f32[3]", "f64[3]"], at=at,
              func="rnn")


def test_error_inside_a_scan_body_points_at_the_body():
    at = {}

    def step(c, x):
        at["line"] = next_line()
        return c @ x, c

    def rnn(h, xs):
        return nnjit.scan(step, h, xs)

    raises_at(rnn, f32(2, 3), f32(4, 2, 3), op="matmul", needles=["(2, 3) @ (2, 3)"],
              at=at, func="step")


def test_error_in_a_user_helper_points_at_the_helper():
    at = {}

    def block(x, w):
        at["line"] = next_line()
        return nnjit.tanh(x @ w)

    def model(x, w1, w2):
        return block(block(x, w1), w2)

    raises_at(model, f32(2, 3), f32(3, 4), f32(5, 6), op="matmul", needles=["(2, 4) @ (5, 6)"],
              at=at, func="block")


def test_errors_under_jit_and_grad_point_at_the_user_line():
    at = {}

    def loss(x, w):
        at["line"] = next_line()
        return (x @ w).sum()

    with pytest.raises(nnjit.ShapeError) as info:
        nnjit.jit(loss)(f32(2, 3), f32(4, 5))
    assert f"{HERE}:{at['line']} in loss" in str(info.value)
    with pytest.raises(nnjit.ShapeError) as info:
        nnjit.grad(loss)(f32(2, 3), f32(4, 5))
    assert f"{HERE}:{at['line']} in loss" in str(info.value)


# -- every node carries the user's loc -------------------------------------------------------------

def locs(g) -> set[Loc]:
    return {n.loc for n in g.walk()}


def assert_user_locs(g, func_lines: dict[str, set[int]]) -> None:
    """Every node (nested bodies included) has a loc in this file, in one of the expected
    functions, on one of that function's expected lines."""
    for n in g.walk():
        assert n.loc is not None, f"{n!r} has no loc"
        assert os.path.basename(n.loc.file) == HERE, n.loc     # not a file inside nnjit
        assert n.loc.func in func_lines, n.loc
        assert n.loc.line in func_lines[n.loc.func], (n, n.loc, func_lines)


def test_every_node_of_a_traced_graph_has_the_users_line():
    lines = {}

    def mlp(x, w1, b1, w2):
        lines["hidden"] = next_line()
        h = nnjit.tanh(x @ w1 + b1)
        lines["logits"] = next_line()
        z = h @ w2 * 2.0 - 1
        lines["out"] = next_line()
        return nnjit.softmax(z), z[0, ::-1].sum()

    g = nnjit.trace(mlp, f32(2, 3), f32(3, 4), f32(4), f32(4, 5))
    assert_user_locs(g, {"mlp": set(lines.values())})
    by_line = {}
    for n in g.nodes:
        by_line.setdefault(n.loc.line, set()).add(n.op)
    assert by_line[lines["hidden"]] == {Op.MATMUL, Op.ADD, Op.TANH}
    assert {Op.MATMUL, Op.MUL, Op.SUB, Op.CONST} <= by_line[lines["logits"]]
    # softmax's max/stop_gradient/sub/exp/sum/div all point at the user's call, not dsl.py
    assert {Op.MAX, Op.STOP_GRADIENT, Op.EXP, Op.SUM, Op.DIV, Op.SLICE} <= by_line[lines["out"]]


def test_composites_point_at_the_call_site():
    lines = {}

    def head(z, y):
        lines["lse"] = next_line()
        a = nnjit.logsumexp(z, axis=1)
        lines["ls"] = next_line()
        b = nnjit.log_softmax(z)
        lines["oh"] = next_line()
        c = nnjit.one_hot(y, 4)
        lines["misc"] = next_line()
        d = nnjit.mean(z) + nnjit.min(z) + nnjit.stack([a, a]).sum() + nnjit.linear(z, z).sum()
        lines["drop"] = next_line()
        e = nnjit.dropout(z, 0.5, seed=3)
        return a, b, c, d, e

    g = nnjit.trace(head, f32(4, 4), np.arange(4))
    assert_user_locs(g, {"head": set(lines.values())})
    assert len({n.loc.line for n in g.nodes}) == len(lines)


def test_scan_body_nodes_point_into_the_body():
    lines = {}

    def cell(h, x):
        lines["cell"] = next_line()
        h = nnjit.tanh(h * x + 1.0)
        return h, h.sum()

    def rnn(h0, xs):
        lines["rnn"] = next_line()
        return nnjit.scan(cell, h0, xs)

    g = nnjit.trace(rnn, f32(3), f32(5, 3))
    assert_user_locs(g, {"cell": {lines["cell"], lines["cell"] + 1}, "rnn": {lines["rnn"]}})
    (scan,) = [n for n in g.nodes if n.op == Op.SCAN]
    assert scan.loc.func == "rnn"
    assert {n.loc.func for n in scan.attrs["body"].nodes} == {"cell"}


def test_backward_nodes_carry_the_forward_ops_loc():
    lines = {}

    def loss(x, w):
        lines["mm"] = next_line()
        h = x @ w
        lines["act"] = next_line()
        a = nnjit.tanh(h)
        lines["sm"] = next_line()
        p = nnjit.softmax(a)
        lines["sum"] = next_line()
        return (p * p).sum()

    args = (f32(2, 3), f32(3, 4))
    fwd = nnjit.trace(loss, *args)
    bwd = nnjit.trace(nnjit.grad(loss, (0, 1)), *args)
    assert_user_locs(bwd, {"loss": set(lines.values())})
    assert locs(bwd) == locs(fwd)
    # matmul's VJP: two transposes and two more matmuls, all at the forward matmul's line
    at_mm = [n.op for n in bwd.nodes if n.loc.line == lines["mm"]]
    assert at_mm.count(Op.MATMUL) == 3 and at_mm.count(Op.TRANSPOSE) == 2
    # the seed cotangent belongs to the loss line
    assert bwd.nodes[0].op == Op.CONST and bwd.nodes[0].loc.line == lines["sum"]


def test_backward_of_a_scan_points_into_the_body():
    lines = {}

    def cell(h, x):
        lines["cell"] = next_line()
        h = nnjit.tanh(h * x)
        return h, h

    def loss(h0, xs):
        lines["scan"] = next_line()
        h, ys = nnjit.scan(cell, h0, xs)
        lines["sum"] = next_line()
        return (ys * ys).sum() + h.sum()

    g = nnjit.trace(nnjit.grad(loss), f32(3), f32(4, 3))
    assert_user_locs(g, {"cell": {lines["cell"]}, "loss": {lines["scan"], lines["sum"]}})
    scans = [n for n in g.nodes if n.op == Op.SCAN]
    assert len(scans) == 2 and all(n.loc.line == lines["scan"] for n in scans)


def test_locs_survive_print_and_parse():
    lines = {}

    def f(x):
        lines["a"] = next_line()
        y = nnjit.softmax(nnjit.scan(lambda c, t: (c + t, c * t), x[0], x)[1])
        return y

    g = nnjit.trace(nnjit.grad(lambda x: f(x).sum()), f32(3, 2))
    text = str(g)
    assert f'{HERE}":{lines["a"]} in "f")' in text
    back = parse(text)
    assert back == g
    assert [n.loc for n in back.walk()] == [n.loc for n in g.walk()]


def test_jit_stages_keep_the_locs():
    lines = {}

    def f(x):
        lines["a"] = next_line()
        return nnjit.relu(x) * 3.0

    cf = nnjit.compile(f, f32(4), backend="interp")
    text = cf.ir("input")
    assert f'":{lines["a"]} in "f")' in text and HERE in text
    for stage in cf.stages():
        for n in parse(cf.ir(stage)).walk():
            assert n.loc is not None and n.loc.func == "f"
