"""The IR text format: an MLIR-like printer and a hand-written parser (no eval).

    func @mlp(%x: f32[128,784], %w1: f32[784,512], %b1: f32[512]) -> (f32[128,512]) {
      %0 = matmul(%x, %w1) : f32[128,512] loc("mlp.py":5 in "mlp")
      %1 = add(%0, %b1) : f32[128,512] loc("mlp.py":5 in "mlp")
      %2 = relu(%1) : f32[128,512] loc("mlp.py":6 in "mlp")
      return %2
    }

Multi-result nodes print as `%3:2 = scan(...) : (f32[4], f32[8,4])` and are used as `%3#0`.
Attributes: ints, floats (always with a `.`/exponent, or inf/nan), true/false, "strings", dtypes,
[lists], `dense<f32[2], [1.0, 2.0]>` (or a hex byte string for large arrays), and nested graphs.
`parse(print_graph(g)) == g` for every graph; parse errors carry line:col and what was expected.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .errors import ParseError, ShapeError
from .graph import Graph, Node, Value, make_input
from .opdef import OPDEFS, coerce_attr
from .ops import Op
from .types import DType, Loc, TensorType

_DENSE_INLINE_MAX = 16
# Attribute lists and nested graphs deeper than this are a ParseError (not a RecursionError).
_MAX_NESTING = 64

# -- printer ------------------------------------------------------------------------------------


def print_graph(g: Graph, indent: str = "", labels: Mapping[Node, str] | None = None) -> str:
    """`g` as IR text. Values are numbered %0, %1, ... in order, or named by `labels` (node ->
    label: the dumps keep a node's name from stage to stage); either way it parses back."""
    names: dict[Value, str] = {}
    params = []
    for v in g.inputs:
        names[v] = "%" + v.node.attrs["name"]
        params.append(f"{names[v]}: {v.type}{_loc(v.node.loc)}")
    rets = ", ".join(str(t) for t in g.output_types)
    lines = [f"func @{g.name}({', '.join(params)}) -> ({rets}) {{"]
    inner = indent + "  "
    for i, n in enumerate(g.nodes):
        label = labels.get(n, str(i)) if labels else str(i)
        if len(n.types) == 1:
            names[n.out] = f"%{label}"
            lhs, ty = f"%{label}", str(n.types[0])
        else:
            for v in n.outs:
                names[v] = f"%{label}#{v.index}"
            lhs, ty = f"%{label}:{len(n.types)}", "(" + ", ".join(map(str, n.types)) + ")"
        args = ", ".join(_ref(names, s) for s in n.srcs)
        attrs = _attrs(n.attrs, inner)
        lines.append(f"{inner}{lhs} = {n.op.value}({args}){attrs} : {ty}{_loc(n.loc)}")
    lines.append(f"{inner}return " + ", ".join(_ref(names, v) for v in g.outputs))
    lines.append(indent + "}")
    return "\n".join(lines)


def _ref(names: dict[Value, str], v: Value) -> str:
    return names.get(v, f"%<undefined {v.node.op.value}>")


def _loc(loc: Loc | None) -> str:
    if loc is None:
        return ""
    scope = f" scope {json.dumps(loc.scope)}" if loc.scope else ""
    return f" loc({json.dumps(loc.file)}:{loc.line} in {json.dumps(loc.func)}{scope})"


def _attrs(attrs, indent: str) -> str:
    if not attrs:
        return ""
    return " {" + ", ".join(f"{k} = {format_attr(v, indent)}" for k, v in attrs.items()) + "}"


def _float(x: float) -> str:
    if x != x:
        return "nan"
    if x in (float("inf"), float("-inf")):
        return "inf" if x > 0 else "-inf"
    return repr(float(x))


def _scalar(x) -> str:
    if isinstance(x, (bool, np.bool_)):
        return "true" if x else "false"
    if isinstance(x, (float, np.floating)):
        return _float(float(x))
    return str(int(x))


def _inline_exact(v: np.ndarray) -> bool:
    """Whether a decimal list reproduces `v` bit for bit: NaNs other than the canonical one
    (e.g. -nan from 0 * -inf) all print as `nan`, so such arrays are printed as hex."""
    if v.dtype.kind != "f":
        return True
    nans = v[np.isnan(v)]
    return bool((nans.tobytes() == np.full(nans.shape, np.nan, v.dtype).tobytes()))


def format_attr(v: Any, indent: str = "") -> str:
    if isinstance(v, Graph):
        return print_graph(v, indent)
    if isinstance(v, DType):
        return v.value
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(format_attr(x, indent) for x in v) + "]"
    if isinstance(v, np.ndarray):
        t = TensorType(v.shape, DType.from_numpy(v.dtype))
        if v.size <= _DENSE_INLINE_MAX and _inline_exact(v):
            return f"dense<{t}, [" + ", ".join(_scalar(x) for x in v.reshape(-1)) + "]>"
        data = np.ascontiguousarray(v).astype(v.dtype.newbyteorder("<"), copy=False).tobytes()
        return f'dense<{t}, "0x{data.hex()}">'
    return _scalar(v)


# -- lexer -----------------------------------------------------------------------------------------

_TOKEN = re.compile(r"""
    (?P<ws>[ \t\r]+|//[^\n]*)
  | (?P<nl>\n)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<value>%[A-Za-z0-9_]+)
  | (?P<symbol>@[A-Za-z_][A-Za-z0-9_]*)
  | (?P<number>-?(?:\d+\.\d*(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+|\d+|inf)(?![A-Za-z0-9_]))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<arrow>->)
  | (?P<punct>[(){}\[\]<>,:=\#])
""", re.VERBOSE)


@dataclass
class Tok:
    kind: str
    text: str
    line: int
    col: int


def tokenize(text: str) -> list[Tok]:
    toks, line, line_start, pos = [], 1, 0, 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            msg = (f"unexpected character {text[pos]!r}" if text[pos] != '"' else
                   "unterminated string (expected a closing '\"' on the same line)")
            raise ParseError(msg, line, pos - line_start + 1, _line_text(text, line))
        kind = m.lastgroup
        if kind == "nl":
            line, line_start = line + 1, m.end()
        elif kind != "ws":
            toks.append(Tok(kind, m.group(), line, pos - line_start + 1))
        pos = m.end()
    toks.append(Tok("eof", "", line, pos - line_start + 1))
    return toks


def _line_text(text: str, line: int) -> str:
    lines = text.split("\n")
    return lines[line - 1] if 0 < line <= len(lines) else ""


# -- parser ----------------------------------------------------------------------------------------

_DTYPES = {d.value: d for d in DType}
_OPS = {op.value: op for op in Op}


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.toks = tokenize(text)
        self.i = 0
        self.depth = 0

    # token helpers
    @property
    def tok(self) -> Tok:
        return self.toks[self.i]

    def error(self, msg: str, tok: Tok | None = None) -> ParseError:
        tok = tok or self.tok
        return ParseError(msg, tok.line, tok.col, _line_text(self.text, tok.line))

    def _describe(self, tok: Tok) -> str:
        return "end of input" if tok.kind == "eof" else repr(tok.text)

    def expect(self, text: str) -> Tok:
        if self.tok.text != text or self.tok.kind == "string":
            raise self.error(f"expected '{text}', found {self._describe(self.tok)}")
        t = self.tok
        self.i += 1
        return t

    def expect_kind(self, kind: str, what: str) -> Tok:
        if self.tok.kind != kind:
            raise self.error(f"expected {what}, found {self._describe(self.tok)}")
        t = self.tok
        self.i += 1
        return t

    def accept(self, text: str) -> bool:
        if self.tok.text == text and self.tok.kind != "string":
            self.i += 1
            return True
        return False

    def integer(self, what: str = "an integer") -> int:
        t = self.expect_kind("number", what)
        if not re.fullmatch(r"-?\d+", t.text):
            raise self.error(f"expected {what}, found {t.text!r}", t)
        return self.int_literal(t)

    def int_literal(self, t: Tok) -> int:
        try:
            return int(t.text)
        except ValueError:  # longer than Python converts (sys.get_int_max_str_digits())
            raise self.error(f"an integer literal of {len(t.text)} digits is too long", t) from None

    # grammar
    def graph(self) -> Graph:
        self.expect("func")
        name = self.expect_kind("symbol", "a function name like @main").text[1:]
        scope: dict[str, Value] = {}
        inputs: list[Value] = []
        self.expect("(")
        if not self.accept(")"):
            while True:
                t = self.expect_kind("value", "a parameter like %x")
                pname = t.text[1:]
                if pname in scope:
                    raise self.error(f"parameter %{pname} is defined twice", t)
                if pname[0].isdigit():
                    raise self.error(f"parameter names must not start with a digit: %{pname}", t)
                self.expect(":")
                ty = self.type_()
                loc = self.loc()
                v = make_input(pname, ty, len(inputs), loc)
                scope[pname] = v
                inputs.append(v)
                if self.accept(")"):
                    break
                self.expect(",")
        self.expect("->")
        ret_types = self.type_list()
        self.expect("{")
        nodes: list[Node] = []
        while self.tok.text != "return":
            if self.tok.kind == "eof" or self.tok.text == "}":
                raise self.error(f"expected a node or 'return', found {self._describe(self.tok)}")
            nodes.append(self.node(scope, len(nodes)))
        ret_tok = self.expect("return")
        outputs: list[Value] = []
        if self.tok.text != "}":
            outputs.append(self.ref(scope))
            while self.accept(","):
                outputs.append(self.ref(scope))
        self.expect("}")
        have = tuple(v.type for v in outputs)
        if have != tuple(ret_types):
            raise self.error(f"return types ({', '.join(map(str, have))}) do not match the "
                             f"signature ({', '.join(map(str, ret_types))})", ret_tok)
        return Graph(name, tuple(inputs), tuple(nodes), tuple(outputs))

    def type_list(self) -> list[TensorType]:
        self.expect("(")
        out = []
        if not self.accept(")"):
            out.append(self.type_())
            while self.accept(","):
                out.append(self.type_())
            self.expect(")")
        return out

    def type_(self) -> TensorType:
        t = self.expect_kind("ident", "a type like f32[2,3]")
        if t.text not in _DTYPES:
            raise self.error(f"unknown dtype {t.text!r} (expected one of "
                             f"{', '.join(_DTYPES)})", t)
        self.expect("[")
        dims, dim_toks = [], []
        if not self.accept("]"):
            while True:
                dim_toks.append(self.tok)
                dims.append(self.integer("a dimension"))
                if not self.accept(","):
                    break
            self.expect("]")
        if any(d < 0 for d in dims):
            raise self.error(f"negative dimension in {t.text}{dims}", t)
        ty = TensorType(tuple(dims), _DTYPES[t.text])
        try:
            ty.check_size()
        except ShapeError as e:     # point at the dim that makes it too large
            raise self.error(e.reason, dim_toks[ty.oversize_dim()]) from None
        return ty

    def loc(self) -> Loc | None:
        if not self.accept("loc"):
            return None
        self.expect("(")
        file = self.string()
        self.expect(":")
        line = self.integer("a line number")
        self.expect("in")
        func = self.string()
        scope = self.string() if self.accept("scope") else ""
        self.expect(")")
        return Loc(file, line, func, scope)

    def string(self) -> str:
        t = self.expect_kind("string", "a quoted string")
        try:
            return json.loads(t.text)
        except ValueError:
            raise self.error(f"bad string literal {t.text}", t) from None

    def ref(self, scope: dict[str, Any]) -> Value:
        t = self.expect_kind("value", "a value like %0")
        name = t.text[1:]
        if name not in scope:
            raise self.error(f"use of undefined value %{name}", t)
        entry = scope[name]
        if isinstance(entry, _MultiRef):
            n = len(entry.node.types)
            if not self.accept("#"):
                raise self.error(f"%{name} has {n} results: use %{name}#0 .. %{name}#{n - 1}", t)
            k = self.integer("a result index")
            if not 0 <= k < n:
                raise self.error(f"%{name} has no result #{k} (it has {n})", t)
            return Value(entry.node, k)
        if self.tok.text == "#":
            raise self.error(f"%{name} has a single result: drop the '#'", t)
        return entry

    def node(self, scope: dict[str, Any], index: int) -> Node:
        t = self.expect_kind("value", "a result like %0")
        name = t.text[1:]
        if name in scope:
            raise self.error(f"value %{name} is defined twice", t)
        n_results = 1
        if self.accept(":"):
            n_results = self.integer("a result count")
            if n_results < 1:
                raise self.error("a node has at least one result", t)
        self.expect("=")
        op_tok = self.expect_kind("ident", "an op name")
        if op_tok.text not in _OPS or _OPS[op_tok.text] not in OPDEFS:
            raise self.error(f"unknown op {op_tok.text!r}", op_tok)
        op = _OPS[op_tok.text]
        self.expect("(")
        srcs = []
        if not self.accept(")"):
            srcs.append(self.ref(scope))
            while self.accept(","):
                srcs.append(self.ref(scope))
            self.expect(")")
        raw_attrs: dict[str, tuple[Tok, Any]] = {}
        if self.accept("{"):
            if not self.accept("}"):
                while True:
                    key = self.expect_kind("ident", "an attribute name")
                    if key.text in raw_attrs:
                        raise self.error(f"attribute {key.text!r} given twice", key)
                    self.expect("=")
                    raw_attrs[key.text] = (key, self.attr_value())
                    if self.accept("}"):
                        break
                    self.expect(",")
        self.expect(":")
        if n_results == 1 and self.tok.text != "(":
            types = (self.type_(),)
        else:
            types = tuple(self.type_list())
        loc = self.loc()
        if len(types) != n_results:
            raise self.error(f"{n_results} results declared but {len(types)} types given", t)
        node = Node(op, tuple(srcs), self.check_attrs(op, raw_attrs, op_tok), types, loc)
        self.check_types(node, op_tok)
        scope[name] = node.out if n_results == 1 else _MultiRef(node)
        return node

    def check_attrs(self, op: Op, raw: dict[str, tuple[Tok, Any]], op_tok: Tok) -> dict:
        d = OPDEFS[op]
        spec = {a.name: a for a in d.attrs}
        out = {}
        for k, (tok, v) in raw.items():
            if k not in spec:
                raise self.error(f"{op.value} has no attribute {k!r} (known: "
                                 f"{', '.join(spec) or 'none'})", tok)
            try:
                out[k] = coerce_attr(spec[k], _convert(spec[k].kind, v))
            except (ShapeError, TypeError, ValueError) as e:
                raise self.error(f"bad value for attribute {k!r}: {e}", tok) from None
        try:
            return d.normalize_attrs(out)
        except ShapeError as e:
            raise self.error(f"{op.value}: {e}", op_tok) from None

    def check_types(self, node: Node, op_tok: Tok) -> None:
        d = OPDEFS[node.op]
        try:
            if d.arity is not None and len(node.srcs) != d.arity:
                raise ShapeError(f"takes {d.arity} operands, got {len(node.srcs)}")
            want = d.shape([s.type for s in node.srcs], dict(node.attrs))
        except ShapeError as e:
            raise self.error(f"{node.op.value}: {e.reason}", op_tok) from None
        want = want if isinstance(want, tuple) else (want,)
        if tuple(want) != node.types:
            raise self.error(f"{node.op.value} gives type {', '.join(map(str, want))}, but "
                             f"{', '.join(map(str, node.types))} is declared", op_tok)

    def attr_value(self) -> Any:
        if self.depth >= _MAX_NESTING:
            raise self.error(f"attribute values nest deeper than {_MAX_NESTING} levels")
        self.depth += 1
        try:
            return self._attr_value()
        finally:
            self.depth -= 1

    def _attr_value(self) -> Any:
        t = self.tok
        if t.kind == "number":
            self.i += 1
            return float(t.text) if re.search(r"[.eEn]", t.text) else self.int_literal(t)
        if t.kind == "string":
            return _Str(self.string())
        if t.text == "[":
            self.i += 1
            items = []
            if not self.accept("]"):
                items.append(self.attr_value())
                while self.accept(","):
                    items.append(self.attr_value())
                self.expect("]")
            return items
        if t.text == "func":
            return self.graph()
        if t.text == "dense":
            return self.dense()
        if t.kind == "ident":
            self.i += 1
            if t.text in ("true", "false"):
                return t.text == "true"
            if t.text == "nan":
                return float("nan")
            if t.text in _DTYPES:
                return _DTYPES[t.text]
        raise self.error(f"expected an attribute value, found {self._describe(t)}", t)

    def dense(self) -> np.ndarray:
        self.expect("dense")
        self.expect("<")
        ty_tok = self.tok
        ty = self.type_()
        self.expect(",")
        dt = ty.dtype.np
        if self.tok.kind == "string":
            s_tok = self.tok
            s = self.string()
            if not s.startswith("0x"):
                raise self.error("expected a hex string like \"0x0000803f\"", s_tok)
            try:
                data = bytes.fromhex(s[2:])
            except ValueError:
                raise self.error("bad hex data", s_tok) from None
            if len(data) != ty.nbytes:
                raise self.error(f"{len(data)} bytes given for {ty} ({ty.nbytes} bytes)", s_tok)
            if ty.dtype == DType.BOOL and any(b > 1 for b in data):
                raise self.error("bool data bytes must be 00 or 01", s_tok)
            arr = np.frombuffer(data, dtype=dt.newbyteorder("<")).astype(dt).reshape(ty.shape)
        else:
            if self.tok.text != "[" or self.tok.kind == "string":
                raise self.error(f"expected a list of values or a hex string, found "
                                 f"{self._describe(self.tok)}")
            vals = self.dense_values(ty.dtype)
            if len(vals) != ty.size:
                raise self.error(f"{len(vals)} values given for {ty} ({ty.size} elements)", ty_tok)
            arr = np.array(vals, dtype=dt).reshape(ty.shape)
        self.expect(">")
        return arr

    def dense_values(self, dtype: DType) -> list:
        """`[v, ...]` where every v is a literal of `dtype`: float literals (or inf/nan) for
        floats, in-range integer literals for ints, true/false for bool."""
        self.expect("[")
        vals: list = []
        if self.accept("]"):
            return vals
        while True:
            t = self.tok
            v = self.attr_value()
            vals.append(_dense_scalar(dtype, v, lambda msg: self.error(msg, t)))
            if self.accept("]"):
                return vals
            self.expect(",")


def _dense_scalar(dtype: DType, v: Any, error) -> Any:
    """A dense literal checked against its element type; `error(msg)` makes the ParseError."""
    if dtype == DType.BOOL:
        if not isinstance(v, bool):
            raise error(f"expected true or false for a bool element, found {format_attr(v)}")
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise error(f"expected a number for a {dtype} element, found {format_attr(v)}")
    if dtype.is_float:
        if isinstance(v, int):
            raise error(f"expected a float literal like {v}.0 for a {dtype} element, found {v}")
        return v
    if isinstance(v, float):
        raise error(f"expected an integer for a {dtype} element, found {format_attr(v)}")
    info = np.iinfo(dtype.np)
    if not info.min <= v <= info.max:
        raise error(f"{v} is out of range for {dtype} ([{info.min}, {info.max}])")
    return v


class _Str(str):
    """A parsed string literal (kept apart from identifiers such as dtype names)."""


class _MultiRef:
    """Scope entry for a multi-result node: only `%n#i` references are allowed."""

    def __init__(self, node: Node):
        self.node = node


def _convert(kind: str, v: Any) -> Any:
    """Parsed attribute literal -> the Python value `coerce_attr` expects for `kind`."""
    if kind == "float" and isinstance(v, int) and not isinstance(v, bool):
        raise ValueError(f"expected a float literal like {v}.0, got {v}")
    if kind == "str":
        if not isinstance(v, _Str):
            raise ValueError("expected a quoted string")
        return str(v)
    if kind == "pairs" and isinstance(v, list):
        if not all(isinstance(p, list) and len(p) == 2 for p in v):
            raise ValueError("expected a list of [lo, hi] pairs")
        return [tuple(p) for p in v]
    if kind == "ints" and isinstance(v, list):
        return tuple(v)
    if kind == "dtype" and isinstance(v, _Str):
        raise ValueError("expected a dtype name, not a string")
    return v


def parse(text: str) -> Graph:
    """Parse IR text (one `func`) into a Graph. Raises ParseError with line:col on bad input.

        >>> g = parse(str(graph)); assert g == graph
    """
    if not isinstance(text, str):
        hint = ": decode bytes first" if isinstance(text, (bytes, bytearray)) else ""
        raise TypeError(f"parse takes IR text (a str), got {type(text).__name__}{hint}")
    p = _Parser(text)
    g = p.graph()
    if p.tok.kind != "eof":
        raise p.error(f"unexpected {p._describe(p.tok)} after the end of the function")
    return g
