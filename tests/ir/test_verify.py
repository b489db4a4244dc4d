"""The verifier rejects hand-broken graphs, and every message names the offending node (op name,
as IR text) and its source location.

Each case starts from a valid graph and breaks one invariant with `Node(...)`,
`node.replace(...)` or `Graph(...)`; the nodes carry distinct locations so the assertion also
checks that the message points at the right node.
"""
from __future__ import annotations

import numpy as np
import pytest

import nnjit
from nnjit.ir import (Builder, DType, Graph, Loc, Node, Op, TensorType, Value, VerifyError,
                      make_input, prims, verify)

F32, F64, I64 = DType.F32, DType.F64, DType.I64
T23 = TensorType((2, 3), F32)


def loc(line: int, func: str = "forward") -> Loc:
    return Loc("model.py", line, func)


def base() -> Graph:
    """x, y: f32[2,3] ->  %0 add (line 11), %1 exp (12), %2 sum (13), %3 pad (14), %4 const (15)."""
    b = Builder("g")
    x = b.input(T23, "x", loc=loc(1))
    y = b.input(T23, "y", loc=loc(2))
    with b.at(loc(11)):
        s = prims.add(x, y)
    with b.at(loc(12)):
        e = prims.exp(s)
    with b.at(loc(13)):
        r = prims.reduce_sum(e, (1,), keepdims=False)
    with b.at(loc(14)):
        p = prims.pad(e, ((0, 0), (1, 1)), 0.0)
    with b.at(loc(15)):
        c = b.const(np.ones(3, np.float32))
    return b.build([r, p, c])


def with_nodes(g: Graph, nodes, outputs=None) -> Graph:
    return Graph(g.name, g.inputs, tuple(nodes), g.outputs if outputs is None else outputs)


def swap_node(g: Graph, i: int, new: Node) -> Graph:
    """`g` with node i replaced by `new`, its uses rewired (so only node i is broken)."""
    env: dict = {}
    nodes = []
    for k, n in enumerate(g.nodes):
        m = new if k == i else n
        srcs = tuple(env.get(s, s) for s in m.srcs)
        m = m if srcs == m.srcs else m.replace(srcs=srcs)
        env.update(zip(n.outs, m.outs))
        nodes.append(m)
    return with_nodes(g, nodes, tuple(env.get(v, v) for v in g.outputs))


def expect(g: Graph, *needles: str) -> str:
    with pytest.raises(VerifyError) as info:
        verify(g)
    msg = str(info.value)
    for s in needles:
        assert s in msg, f"{s!r} not in {msg!r}"
    return msg


def test_base_graph_verifies_and_verify_returns_it():
    g = base()
    assert verify(g) is g
    assert issubclass(VerifyError, nnjit.NnjitError)


# -- types ---------------------------------------------------------------------------------------

def test_wrong_stored_shape():
    g = base()
    bad = swap_node(g, 0, g.nodes[0].replace(types=(TensorType((3, 2), F32),)))
    expect(bad, "stored type f32[3,2] differs from the inferred f32[2,3]", "add(f32[2,3], "
           "f32[2,3])", "at model.py:11 in forward")


def test_wrong_stored_dtype():
    g = base()
    bad = with_nodes(g, (g.nodes[0], g.nodes[1].replace(types=(TensorType((2, 3), F64),)))
                     + g.nodes[2:])
    expect(bad, "exp", "f64[2,3] differs from the inferred f32[2,3]", "model.py:12 in forward")


def test_wrong_number_of_result_types():
    g = base()
    bad = swap_node(g, 1, g.nodes[1].replace(types=(T23, T23)))
    expect(bad, "exp", "model.py:12 in forward", "differs from the inferred")


def test_result_types_must_be_tensor_types():
    g = base()
    bad = swap_node(g, 1, g.nodes[1].replace(types=((2, 3),)))
    expect(bad, "exp", "model.py:12", "TensorType")


def test_operands_the_shape_rule_rejects():
    g = base()
    x, _ = g.inputs
    r = g.nodes[2].out                       # f32[2] does not broadcast against f32[2,3]
    bad = with_nodes(g, g.nodes + (Node(Op.ADD, (x, r), {}, (T23,), loc(16)),))
    expect(bad, "add: shapes do not broadcast", "model.py:16 in forward")


# -- SSA and order --------------------------------------------------------------------------------

def test_use_before_definition():
    g = base()
    add, exp = g.nodes[:2]
    msg = expect(with_nodes(g, (exp, add) + g.nodes[2:]), "operand 0 of %0",
                 "defined later (not in topological order)", "exp(f32[2,3])",
                 "model.py:12 in forward")
    assert "model.py:11" not in msg


def test_operand_from_another_graph():
    g, other = base(), base()
    foreign = other.nodes[0].out             # same op, same type, but not in g
    bad = swap_node(g, 1, g.nodes[1].replace(srcs=(foreign,)))
    expect(bad, "operand 0 of %1 is not defined in the graph", "exp", "model.py:12")


def test_operand_is_another_graphs_input_of_the_same_name():
    g, other = base(), base()
    bad = swap_node(g, 0, g.nodes[0].replace(srcs=(other.inputs[0], g.inputs[1])))
    expect(bad, "operand 0 of %0 is not defined in the graph", "add", "model.py:11")


def test_operand_that_is_not_a_value():
    g = base()
    bad = swap_node(g, 1, g.nodes[1].replace(srcs=(g.nodes[0],)))
    expect(bad, "is a Node, not a Value", "exp", "model.py:12")


def test_operand_result_index_out_of_range():
    g = base()
    bad = swap_node(g, 1, g.nodes[1].replace(srcs=(Value(g.nodes[0], 2),)))
    expect(bad, "refers to result #2 of a node with 1 result", "exp", "model.py:12")


def test_duplicate_node():
    g = base()
    expect(with_nodes(g, g.nodes + (g.nodes[1],)), "node %5 appears twice", "exp",
           "model.py:12 in forward")


def test_node_list_holds_a_non_node():
    g = base()
    expect(with_nodes(g, g.nodes + (g.nodes[1].out,)), "node %5 is a Value, not a Node")


def test_output_not_defined():
    g, other = base(), base()
    bad = with_nodes(g, g.nodes, (g.outputs[0], other.nodes[3].out))
    expect(bad, "output 1 is not defined in the graph", "pad", "model.py:14 in forward")


def test_output_defined_later_in_a_dropped_node():
    g = base()
    bad = with_nodes(g, g.nodes[:3], g.outputs)          # pad and const dropped
    expect(bad, "output 1", "pad", "model.py:14")


def test_output_result_index_out_of_range():
    g = base()
    bad = with_nodes(g, g.nodes, (Value(g.nodes[4], 1),))
    expect(bad, "output 0 refers to result #1", "const", "model.py:15")


# -- inputs ----------------------------------------------------------------------------------------

def test_inputs_out_of_order():
    g = base()
    x, y = g.inputs
    bad = Graph(g.name, (y, x), g.nodes, g.outputs)
    expect(bad, "input 0 is not the input node #0", 'input() {name = "y", index = 1}',
           "model.py:2 in forward")


def test_input_index_attr_wrong():
    g = base()
    x, y = g.inputs
    y2 = make_input("y", T23, 5, loc(2))
    bad = Graph(g.name, (x, y2), g.nodes, g.outputs)
    expect(bad, "input 1 is not the input node #1", "index = 5", "model.py:2")


def test_node_used_as_an_input():
    g = base()
    bad = Graph(g.name, (g.inputs[0], g.nodes[0].out), g.nodes[1:], g.outputs)
    expect(bad, "input 1 is not the input node #1", "add(", "model.py:11")


def test_input_node_in_the_node_list():
    g = base()
    bad = with_nodes(g, (g.inputs[0].node,) + g.nodes)
    expect(bad, "op input is not a registered op", "model.py:1")


def test_duplicate_input_names():
    g = base()
    x = g.inputs[0]
    y = make_input("x", T23, 1, loc(2))
    bad = Graph(g.name, (x, y), (), (x, y))
    expect(bad, "duplicate input names ['x', 'x']")


@pytest.mark.parametrize("name", ["0x", "a b", "α", "", "x-y"])
def test_input_names_must_print(name):
    x = make_input(name, T23, 0, loc(1))
    expect(Graph("g", (x,), (), (x,)), f"input 0 has the name {name!r}", "model.py:1")


@pytest.mark.parametrize("name", ["<lambda>", "my model", "1st", ""])
def test_graph_names_must_print(name):
    x = make_input("x", T23, 0)
    expect(Graph(name, (x,), (), (x,)), f"graph name {name!r} is not an identifier")


# -- arity and attributes -------------------------------------------------------------------------

def test_wrong_arity():
    g = base()
    x, y = g.inputs
    bad = swap_node(g, 1, g.nodes[1].replace(srcs=(g.nodes[0].out, x)))
    expect(bad, "exp takes 1 operands, has 2", "model.py:12 in forward")


def test_variadic_op_with_no_operands():
    g = base()
    bad = with_nodes(g, g.nodes + (Node(Op.CONCAT, (), {"axis": 0}, (T23,), loc(16)),))
    expect(bad, "concat", "needs at least one operand", "model.py:16")


def test_unknown_attribute():
    g = base()
    bad = swap_node(g, 1, g.nodes[1].replace(attrs={"approx": True}))
    expect(bad, "unknown attribute 'approx' (known: none)", "exp", "model.py:12")


def test_missing_required_attribute():
    g = base()
    bad = swap_node(g, 2, g.nodes[2].replace(attrs={"keepdims": False}))
    expect(bad, "missing attribute 'axes'", "sum", "model.py:13 in forward")


def test_missing_attribute_that_has_a_default():
    g = base()
    bad = swap_node(g, 2, g.nodes[2].replace(attrs={"axes": (1,)}))
    expect(bad, "do not match the schema ['axes', 'keepdims']", "sum", "model.py:13")


@pytest.mark.parametrize("node,attrs,needle", [
    (2, {"axes": (1,), "keepdims": 1}, "'keepdims' must be a bool"),
    (2, {"axes": "1", "keepdims": False}, "'axes' must be a sequence of ints"),
    (2, {"axes": (1.0,), "keepdims": False}, "'axes' must be a sequence of ints"),
    (3, {"pads": ((0, 0), (1, 1)), "value": "0"}, "'value' must be a number"),
    (3, {"pads": ((0, 0), (1.5, 1)), "value": 0.0}, "'pads' must be a sequence of (int, int)"),
    (3, {"pads": (0, 1), "value": 0.0}, "'pads' must be a sequence of (int, int)"),
    (4, {"value": [1.0, 1.0, 1.0]}, "'value' must be a numpy array"),
    (4, {"value": np.ones(3, np.float16)}, "unsupported dtype float16"),
], ids=["bool", "ints-str", "ints-float", "float-str", "pairs-float", "pairs-flat",
        "array-list", "array-f16"])
def test_attribute_of_the_wrong_kind(node, attrs, needle):
    g = base()
    n = g.nodes[node]
    expect(swap_node(g, node, n.replace(attrs=attrs)), needle, n.op.value,
           f"model.py:{11 + node} in forward")


@pytest.mark.parametrize("node,attrs,needle", [
    (2, {"axes": (np.int64(1),), "keepdims": False}, "attribute 'axes' holds"),
    (3, {"pads": ((0, 0), (1, 1)), "value": np.float32(0.5)}, "attribute 'value' holds"),
    (3, {"pads": ((0, 0), (1, 1)), "value": 0}, "attribute 'value' holds 0"),
], ids=["np.int64", "np.float32", "int-for-float"])
def test_attribute_not_in_canonical_form(node, attrs, needle):
    """Values the schema would coerce (numpy scalars, ints for floats) are not what the
    builder/parser store; a pass that stores them breaks equality and the text round trip."""
    g = base()
    n = g.nodes[node]
    expect(swap_node(g, node, n.replace(attrs=attrs)), needle, "canonical form",
           f"model.py:{11 + node}")


def test_bad_attribute_value_for_the_shape_rule():
    g = base()
    n = g.nodes[2]
    expect(swap_node(g, 2, n.replace(attrs={"axes": (5,), "keepdims": False})), "sum: axes (5,)",
           "model.py:13")


def test_loc_must_be_a_loc():
    g = base()
    expect(swap_node(g, 1, g.nodes[1].replace(loc=("model.py", 12, "forward"))),
           "loc must be a Loc or None", "exp")


def test_node_without_loc_is_named_by_its_ir_text():
    g = base()
    msg = expect(swap_node(g, 1, g.nodes[1].replace(types=(TensorType((3,), F32),), loc=None)),
                 "@g %1: stored type f32[3]", "exp(f32[2,3]) : f32[3]")
    assert " at " not in msg


# -- scan bodies -----------------------------------------------------------------------------------

def body(name="step", carry=TensorType((3,), F32), x=TensorType((3,), F32), line=21) -> Graph:
    b = Builder(name)
    c = b.input(carry, "c", loc=loc(line - 1, name))
    xt = b.input(x, "xt")
    with b.at(loc(line, name)):
        new = prims.add(c, xt) if carry == x else c
        y = prims.mul(c, c)
    return b.build([new, y])


def scan_graph(bd: Graph, line: int = 30, carry=TensorType((3,), F32), length=4,
               num_carry=1) -> Graph:
    b = Builder("rnn")
    h = b.input(carry, "h")
    xs = b.input(TensorType((length, 3), F32), "xs")
    node = Node(Op.SCAN, (h.value, xs.value),
                {"body": bd, "num_carry": num_carry, "num_consts": 0, "length": length,
                 "reverse": False},
                (carry, TensorType((length,) + bd.output_types[-1].shape, F32)), loc(line, "rnn"))
    return Graph("rnn", tuple(b.inputs), (node,), node.outs)


def test_valid_scan_verifies():
    verify(scan_graph(body()))


def test_scan_body_with_the_wrong_signature():
    bd = body(x=TensorType((4, 3), F32))           # takes the whole sequence, not a slice
    expect(scan_graph(bd), "scan: body inputs (f32[3], f32[4,3]) do not match (carry, x slices, "
           "consts) (f32[3], f32[3])", "model.py:30 in rnn")


def test_scan_body_returning_the_wrong_carry_type():
    b = Builder("step")
    c = b.input(TensorType((3,), F32), "c")
    xt = b.input(TensorType((3,), F32), "xt")
    with b.at(loc(21, "step")):
        s = prims.reduce_sum(c * xt, (0,))
    bd = b.build([s, c])
    expect(scan_graph(bd), "scan: body must return the carry types (f32[3]) first, got (f32[], "
           "f32[3])", "model.py:30 in rnn")


def test_scan_with_a_carry_of_the_wrong_dtype():
    bd = body(carry=TensorType((3,), F64))
    expect(scan_graph(bd), "scan: body inputs (f64[3], f32[3])", "model.py:30")


def test_scan_sequence_length_disagrees():
    g = scan_graph(body())
    n = g.nodes[0]
    bad = with_nodes(g, (n.replace(attrs=dict(n.attrs, length=5)),), ())
    expect(bad, "sequence operand f32[4,3] does not have leading dim 5", "scan", "model.py:30")


def test_scan_num_carry_does_not_fit():
    g = scan_graph(body())
    n = g.nodes[0]
    bad = with_nodes(g, (n.replace(attrs=dict(n.attrs, num_carry=3)),), ())
    expect(bad, "num_consts=0 num_carry=3 do not fit 2 operands", "scan", "model.py:30")


def test_error_inside_a_scan_body_names_both_nodes():
    bd = body()
    bad_body = swap_node(bd, 0, bd.nodes[0].replace(types=(TensorType((2,), F32),)))
    msg = expect(scan_graph(bad_body), "@rnn %0: in the body of scan at model.py:30 in rnn",
                 "@step %0: stored type f32[2]", "add(f32[3], f32[3])",
                 "at model.py:21 in step")
    assert msg.index("model.py:30") < msg.index("model.py:21")


def test_use_before_def_inside_a_scan_body():
    bd = body()
    verify(with_nodes(bd, bd.nodes[::-1]))     # add and mul are independent: any order is fine
    x = bd.inputs[0]
    n0 = Node(Op.NEG, (x,), {}, (TensorType((3,), F32),), loc(22, "step"))
    n1 = Node(Op.EXP, (n0.out,), {}, (TensorType((3,), F32),), loc(23, "step"))
    disordered = Graph(bd.name, bd.inputs, (n1, n0), (n1.out, n0.out))
    expect(scan_graph(disordered), "in the body of scan at model.py:30", "exp(f32[3])",
           "defined later", "model.py:23 in step")


def test_body_capturing_an_outer_value_directly():
    """A body must take outer values as consts, not reference the outer graph's nodes."""
    g = scan_graph(body())
    outer_h = g.inputs[0]
    bd = body()
    leak = swap_node(bd, 1, bd.nodes[1].replace(srcs=(outer_h, outer_h)))
    expect(scan_graph(leak), "in the body of scan", "is not defined in the graph",
           "mul(f32[3], f32[3])", "model.py:21 in step")


def test_error_two_levels_deep():
    inner_bad = body(name="inner", line=41)
    inner_bad = swap_node(inner_bad, 1, inner_bad.nodes[1].replace(attrs={"bogus": 1}))
    mid = Builder("mid")
    c = mid.input(TensorType((3,), F32), "c")
    xt = mid.input(TensorType((3,), F32), "xt")
    seq = prims.broadcast_to(prims.reshape(xt, (1, 3)), (4, 3))
    node = Node(Op.SCAN, (c.value, seq.value),
                {"body": inner_bad, "num_carry": 1, "num_consts": 0, "length": 4,
                 "reverse": False}, (TensorType((3,), F32), TensorType((4, 3), F32)),
                loc(35, "mid"))
    mid_g = Graph("mid", tuple(mid.inputs), tuple(mid.nodes) + (node,), node.outs)
    msg = expect(scan_graph(mid_g), "in the body of scan at model.py:30 in rnn",
                 "in the body of scan at model.py:35 in mid", "unknown attribute 'bogus'",
                 "mul(f32[3], f32[3])", "model.py:41 in inner")
    assert msg.index("model.py:30") < msg.index("model.py:35") < msg.index("model.py:41")


# -- valid graphs from the front end verify --------------------------------------------------------

def test_traced_graphs_verify():
    def f(x, w, seq):
        h = nnjit.tanh(x @ w)
        c, ys = nnjit.scan(lambda c, s: (c * s + h.sum(), c), x[0, :2], seq)
        return nnjit.softmax(h), c, ys, nnjit.dropout(h, 0.5, 3)

    x = np.ones((2, 3), np.float32)
    g = nnjit.trace(f, x, np.ones((3, 4), np.float32), np.ones((5, 2), np.float32))
    assert verify(g) is g
    gg = nnjit.trace(nnjit.grad(lambda x, w: (nnjit.tanh(x @ w) ** 2).sum(), (0, 1)), x,
                     np.ones((3, 4), np.float32))
    verify(gg)


def test_other_exceptions_never_escape():
    """Whatever is stuffed into a Node, the verifier answers with VerifyError."""
    g = base()
    weird = [
        swap_node(g, 1, g.nodes[1].replace(srcs=(None,))),
        swap_node(g, 1, g.nodes[1].replace(srcs=("x",))),
        swap_node(g, 1, g.nodes[1].replace(types=("f32[2,3]",))),
        swap_node(g, 4, g.nodes[4].replace(attrs={"value": object()})),
        with_nodes(g, g.nodes, (None,)),
        Graph(g.name, (None,), (), ()),
        Graph(g.name, (g.nodes[0],), (), ()),
        with_nodes(g, g.nodes + (Node(Op.SCAN, (g.inputs[0],), {"body": "b", "num_carry": 1,
                                                                 "length": 2}, (T23,)),)),
    ]
    for bad in weird:
        with pytest.raises(VerifyError):
            verify(bad)
