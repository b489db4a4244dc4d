"""ONNX nodes -> nnjit IR, through the same DSL functions users call.

`CONVERTERS` maps an op type to a function of a `NodeContext` returning the node's outputs
(one value or a tuple). A value is a traced `Sym`, or a numpy array when it is known at import
time (initializers, Constant, Shape of a static shape, and any node whose inputs are all
known, which is folded through the ops' numpy references). Shape-determining inputs
(Reshape's shape, Slice's starts) must be such known values: `ctx.const(i)` says so by name.

Adding an operator is one entry: `@converter("Op")` on a function of the context, in one of
the ops_* modules.
"""
from __future__ import annotations

import numpy as np

from ...ir import Builder, Loc, NnjitError, Sym, evaluate
from . import ops_math, ops_nn, ops_rnn, ops_shape  # noqa: F401  (they fill CONVERTERS)
from .context import CONVERTERS, NodeContext, Value, compute_dtype  # noqa: F401
from .load import LoadedModel
from .tensors import OnnxError

def unsupported_nodes(m: LoadedModel) -> list[str]:
    """Every node whose op type has no converter, as 'name (OpType)'."""
    bad = []
    for n in m.nodes:
        if n.domain not in ("", "ai.onnx") or n.op_type not in CONVERTERS:
            dom = f"{n.domain}." if n.domain not in ("", "ai.onnx") else ""
            bad.append(f"{n.name or '<unnamed>'!r} ({dom}{n.op_type})")
    return bad


def check_supported(m: LoadedModel) -> None:
    bad = unsupported_nodes(m)
    if bad:
        ops = sorted({b.split("(")[-1].rstrip(")") for b in bad})
        raise OnnxError(f"{m.path}: {len(bad)} node(s) use operators nnjit cannot import "
                        f"({', '.join(ops)}): {', '.join(bad)}")


def convert_nodes(m: LoadedModel, env: dict[str, Value], builder: Builder | None
                  ) -> list[Value]:
    """Run every node's converter over `env` (name -> value, holding the graph inputs and
    initializers); returns the graph outputs' values."""
    consumed = frozenset(i for n in m.nodes for i in n.input if i)
    elem_types = {v.name: v.elem_type for v in m.inputs}
    elem_types.update({t.name: t.data_type for t in m.proto.graph.initializer})
    for k, node in enumerate(m.nodes):
        vals = [env[i] if i else None for i in node.input]
        known = not any(isinstance(v, Sym) for v in vals)
        b = Builder("fold") if known or builder is None else builder
        ctx = NodeContext(node, vals, m.opset, b, m.base_dir, elem_types, consumed)
        if node.op_type == "Cast" and node.output:
            for a in node.attribute:
                if a.name == "to":
                    elem_types[node.output[0]] = a.i
        loc = Loc(m.path, k + 1, node.name or node.op_type)
        with b.at(loc):
            outs = _run(ctx)
        if known:
            outs = _fold(b, outs)
        named = [o for o in node.output]
        if len(outs) < len([o for o in named if o]):
            missing = [named[j] for j in range(len(outs), len(named)) if named[j]]
            raise ctx.error(f"outputs {missing} are not supported")
        for name, v in zip(named, outs):
            if name:
                env[name] = v
    return [env[v.name] for v in m.outputs]


def _run(ctx: NodeContext) -> tuple:
    fn = CONVERTERS[ctx.node.op_type]
    try:
        out = fn(ctx)
    except OnnxError:
        raise
    except NnjitError as e:
        raise ctx.error(str(e)) from None
    except (TypeError, ValueError, IndexError, KeyError, ZeroDivisionError, OverflowError) as e:
        raise ctx.error(f"{type(e).__name__}: {e}") from None
    return out if isinstance(out, tuple) else (out,)


def _fold(b: Builder, outs: tuple) -> tuple:
    """Outputs computed from known values only, evaluated now (by the ops' references)."""
    syms = [o for o in outs if isinstance(o, Sym)]
    if not syms:
        return tuple(None if o is None else np.asarray(o) for o in outs)
    results = iter(evaluate(b.build(syms), []))
    return tuple(next(results) if isinstance(o, Sym) else o for o in outs)
