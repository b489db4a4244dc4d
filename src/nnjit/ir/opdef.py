"""`OpDef`: everything about one op in one declaration, and the registry of all of them.

An OpDef holds the op's arity and attribute schema, its shape/dtype rule, its numpy reference,
its kind for fusion and codegen, its VJP rule (autodiff), and its lowering hooks (kernel IR).
Rule functions follow JAX's naming: `_<op>_shape`, `_<op>_ref`, `_<op>_vjp`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from .errors import ShapeError
from .ops import Kind, Op
from .types import DType, TensorType

REQUIRED = object()  # sentinel default: the attribute must be given

# Attribute kinds and the Python values they hold.
ATTR_KINDS = ("int", "float", "bool", "str", "dtype", "ints", "pairs", "graph", "array")


@dataclass(frozen=True)
class AttrSpec:
    name: str
    kind: str
    default: Any = REQUIRED

    def __post_init__(self):
        assert self.kind in ATTR_KINDS, self.kind


@dataclass(frozen=True)
class OpDef:
    """The single declaration of an op.

    shape(in_types, attrs) -> TensorType | tuple[TensorType, ...]
        raises ShapeError(reason) on bad operands; the builder adds the op name and user line.
    ref(inputs: list[np.ndarray], attrs) -> np.ndarray | tuple[np.ndarray, ...]
        the numpy reference: ground truth for every backend.
    vjp(primals, outs, cts, attrs) -> list[Sym | None]
        reverse-mode rule written with builder ops on `Sym`s: one cotangent per input, None for
        inputs that are not differentiable. `cts` has None for outputs with no cotangent.
    scalar(args, dtype, attrs) -> kernel-IR expression: an elementwise op's value from its
        operands' scalars (built from `KOp` calls), which is all the native backends need.
    lower: the codegen hook, by kind (registered from nnjit.codegen with `set_rule`, as JAX's
        `register_lowering`):
        ELEMENTWISE sources, VIEW, INJECTIVE: lower(group, node, coords) -> expression of the
            element at `coords` (coordinate arithmetic down to operand elements);
        REDUCE: an `Accumulation` (the combining KOp);
        CONTRACTION, WINDOW: lower(lowering, anchor, others, roots, name, src) -> kernels, a
            template that computes `others` (fused producers and consumers) inline;
        OPAQUE: lower(lowering, node) -> None, emitting the node's kernels and buffers.
    batch(builder, node, srcs, batched, size) -> list[Sym]: the vmap rule (registered from
        nnjit.frontend.vmap): the node's results with a leading batch axis of `size`, given
        operands of which those flagged in `batched` carry that axis first. Elementwise ops
        need none (operands broadcast).
    """

    op: Op
    kind: Kind
    arity: int | None          # None: variadic
    shape: Callable
    ref: Callable
    attrs: tuple[AttrSpec, ...] = ()
    vjp: Callable | None = None
    scalar: Callable | None = None
    lower: Callable | None = None
    batch: Callable | None = None
    nondiff_inputs: frozenset[int] = frozenset()  # inputs never differentiated (indices, seeds)
    doc: str = ""
    expensive: bool | None = None  # None: expensive iff the scalar rule calls a transcendental
    _attr_index: Mapping[str, AttrSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_attr_index", {a.name: a for a in self.attrs})

    @property
    def name(self) -> str:
        return self.op.value

    def normalize_attrs(self, attrs: Mapping[str, Any]) -> dict[str, Any]:
        """Attributes with defaults filled in and values coerced to their canonical Python form.
        Raises ShapeError naming an unknown, missing or ill-typed attribute."""
        out: dict[str, Any] = {}
        for k in attrs:
            if k not in self._attr_index:
                known = ", ".join(self._attr_index) or "none"
                raise ShapeError(f"unknown attribute '{k}' (known: {known})")
        for spec in self.attrs:
            if spec.name in attrs:
                out[spec.name] = coerce_attr(spec, attrs[spec.name])
            elif spec.default is REQUIRED:
                raise ShapeError(f"missing attribute '{spec.name}'")
            else:
                out[spec.name] = spec.default
        return out


def coerce_attr(spec: AttrSpec, v: Any) -> Any:
    """`v` in the canonical form of `spec.kind` (tuples not lists, Python not numpy scalars)."""
    from .graph import Graph

    def bad(want: str):
        return ShapeError(f"attribute '{spec.name}' must be {want}, got {v!r}")

    k = spec.kind
    if k == "int":
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise bad("an int")
        return int(v)
    if k == "float":
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise bad("a number")
        return float(v)
    if k == "bool":
        if not isinstance(v, (bool, np.bool_)):
            raise bad("a bool")
        return bool(v)
    if k == "str":
        if not isinstance(v, str):
            raise bad("a string")
        return v
    if k == "dtype":
        if isinstance(v, DType):
            return v
        try:
            return DType.from_numpy(v)
        except TypeError:
            raise bad("a dtype") from None
    if k == "ints":
        if not isinstance(v, (tuple, list)) or not all(
                isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_)) for x in v):
            raise bad("a sequence of ints")
        return tuple(int(x) for x in v)
    if k == "pairs":
        # NOTE: no int() on arbitrary values: 1.5, True or "1" must not pass as 1.
        seq = (tuple, list, np.ndarray)
        if not isinstance(v, seq) or not all(
                isinstance(p, seq) and len(p) == 2 and all(
                    isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))
                    for x in p) for p in v):
            raise bad("a sequence of (int, int) pairs")
        return tuple((int(a), int(b)) for a, b in v)
    if k == "graph":
        if not isinstance(v, Graph):
            raise bad("a graph")
        return v
    if k == "array":
        if not isinstance(v, np.ndarray):
            raise bad("a numpy array")
        try:
            t = TensorType(v.shape, DType.from_numpy(v.dtype))
        except TypeError as e:
            raise ShapeError(f"attribute '{spec.name}': {e}") from None
        t.check_size()      # NOTE: before the copy, which a huge broadcast view would not survive
        v = np.array(v, copy=True, order="C")
        v.setflags(write=False)
        return v
    raise AssertionError(k)


OPDEFS: dict[Op, OpDef] = {}


def register(*defs: OpDef) -> None:
    for d in defs:
        if d.op in OPDEFS:
            raise RuntimeError(f"op {d.op} registered twice")
        OPDEFS[d.op] = d


def opdef(op: Op) -> OpDef:
    try:
        return OPDEFS[op]
    except KeyError:
        raise KeyError(f"op {op} has no OpDef (is nnjit.ir.defs imported?)") from None


def set_rule(op: Op, **rules) -> None:
    """Attach rules declared below an op's definition (e.g. the lowering hooks of a backend-shared
    kernel library) without a second registry: the OpDef stays the one place for the op."""
    OPDEFS[op] = dataclasses.replace(OPDEFS[op], **rules)


def ops_of_kind(*kinds: Kind) -> frozenset[Op]:
    """The registered ops of these kinds (how fusion and lowering tell ops apart)."""
    return frozenset(op for op, d in OPDEFS.items() if d.kind in kinds)


def kind_of(op: Op) -> Kind:
    return opdef(op).kind
