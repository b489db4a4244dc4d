"""Random nnjit programs for differential testing: graphs over every op family (scans with
captured consts, index ops fed out-of-range indices) and inputs full of awkward values.

One op menu serves two drivers. `random_graphs` is a hypothesis strategy (the text round-trip
tests use it, and failures shrink); `generate_case(seed)` makes the same kind of graph from a
seeded numpy generator, plus its inputs, deterministically per seed and without hypothesis
machinery, for the fuzzer (`tests/fuzz/run.py`, `tests/fuzz/test_fuzz.py`):

    >>> case = generate_case(7)
    >>> print(case.graph); case.inputs         # the program and its arguments
    >>> case.hints                              # index inputs: which range is valid for each

A case is "plain" (ordinary values), "special" (a share of inf, NaN, -0.0, 1e30, 1e-30,
subnormals, float max, int extremes; see values.py) or "smooth" (mostly float64, inputs away
from kinks, no stop_gradient: the gradient cases). Index ops (take in every mode, integer-array
getitem, one_hot, cross_entropy) get fresh index inputs with a hint of their valid range, fed
out-of-range values now and then; their checks are always live (the interpreter runs dead code,
compiled programs do not). An op whose shape rule refuses its operands is rolled back.
"""
from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import nnjit
from nnjit.ir import Builder, DType, Graph, Loc, Op, ShapeError, Sym, TensorType, prims
from tests.fuzz.values import IndexHint, make_inputs, values

F32, F64, I32, I64, BOOL = DType.F32, DType.F64, DType.I32, DType.I64, DType.BOOL

#: Bumped when the generator changes, so a seed names one program per version.
GENERATOR_VERSION = 4     # 2: optimization_barrier (issue 12); 3: collectives (issue 15);
#                           4: scatter (issue 12)


# -- the choices a generator makes -----------------------------------------------------------------

class Chooser(abc.ABC):
    """Random choices, drawn either through hypothesis (`HypothesisChooser`) or from a seeded
    numpy generator (`RngChooser`)."""

    @abc.abstractmethod
    def int(self, lo: int, hi: int) -> int:        # lo <= k <= hi
        raise NotImplementedError

    @abc.abstractmethod
    def bool(self) -> bool:
        raise NotImplementedError

    @abc.abstractmethod
    def pick(self, seq):
        raise NotImplementedError

    @abc.abstractmethod
    def picks(self, seq, min_size: int = 0, max_size: int = 2) -> list:
        """A list of elements of `seq`, with repeats."""
        raise NotImplementedError

    @abc.abstractmethod
    def axes(self, ndim: int) -> tuple[int, ...]:
        """Distinct axes in [0, ndim), in drawn order."""
        raise NotImplementedError

    @abc.abstractmethod
    def perm(self, n: int) -> tuple[int, ...]:
        raise NotImplementedError

    @abc.abstractmethod
    def real(self, lo: float, hi: float) -> float:
        raise NotImplementedError

    @abc.abstractmethod
    def shape(self) -> tuple[int, ...]:
        """Up to 3 dims of 0..3 (0 and 1 on purpose: empty and broadcastable dims)."""
        raise NotImplementedError

    def operand(self, pool: list):
        """The value the next op applies to: half the time one of the newest values, so ops
        chain into deeper expressions (and a scan's results get used)."""
        return self.pick(pool[-3:] if self.bool() else pool)

    def outputs(self, pool: list) -> list:
        """The newest value, and values nothing uses (the ends of the expressions built)."""
        used = {v for n in pool[0].builder.nodes for v in n.srcs}
        sinks = [s for s in pool if s.value not in used and s.value.node.op != Op.INPUT]
        return [pool[-1]] + self.picks(sinks or pool, 0, 3)

    @abc.abstractmethod
    def array(self, dtype: DType, shape: tuple[int, ...]) -> np.ndarray:
        raise NotImplementedError

    @abc.abstractmethod
    def name(self) -> str:
        raise NotImplementedError

    @abc.abstractmethod
    def loc(self) -> Loc | None:
        raise NotImplementedError


IDENT = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True)
SHAPES = st.lists(st.integers(0, 3), min_size=0, max_size=3).map(tuple)
LOCS = st.builds(Loc, st.text(max_size=12), st.integers(0, 2 ** 40), st.text(max_size=8))


class HypothesisChooser(Chooser):
    def __init__(self, draw):
        self.draw = draw

    def int(self, lo, hi):
        return self.draw(st.integers(lo, hi))

    def bool(self):
        return self.draw(st.booleans())

    def pick(self, seq):
        return self.draw(st.sampled_from(list(seq)))

    def picks(self, seq, min_size=0, max_size=2):
        return self.draw(st.lists(st.sampled_from(list(seq)), min_size=min_size,
                                  max_size=max_size))

    def axes(self, ndim):
        return tuple(self.draw(st.lists(st.integers(0, max(ndim - 1, 0)), unique=True,
                                        max_size=ndim)))

    def perm(self, n):
        return tuple(self.draw(st.permutations(range(n))))

    def real(self, lo, hi):
        return self.draw(st.floats(lo, hi))

    def shape(self):
        return self.draw(SHAPES)

    def array(self, dtype, shape):
        return self.draw(hnp.arrays(dtype.np, shape))

    def name(self):
        return self.draw(IDENT)

    def loc(self):
        return self.draw(st.one_of(st.none(), LOCS))


class RngChooser(Chooser):
    """Choices from `np.random.default_rng(seed)`: the same seed gives the same program."""

    def __init__(self, rng: np.random.Generator, special: float = 0.3, large: float = 0.0):
        self.rng = rng
        self.special = special        # the share of special values in constants
        self.large = large            # the share of shapes big enough for threaded kernels

    def int(self, lo, hi):
        return int(self.rng.integers(lo, hi + 1))

    def bool(self):
        return bool(self.rng.integers(2))

    def pick(self, seq):
        seq = list(seq)
        return seq[int(self.rng.integers(len(seq)))]

    def picks(self, seq, min_size=0, max_size=2):
        return [self.pick(seq) for _ in range(self.int(min_size, max_size))]

    def axes(self, ndim):
        k = self.int(0, ndim)
        return tuple(int(a) for a in self.rng.permutation(ndim)[:k])

    def perm(self, n):
        return tuple(int(a) for a in self.rng.permutation(n))

    def real(self, lo, hi):
        return float(self.rng.uniform(lo, hi))

    def shape(self):
        # Mostly 1..3, sometimes an empty dim, now and then a long one: vector loops with
        # tails, GEMM tiles with edges.
        def side():
            return self.pick([8, 16, 17, 33, 64]) if self.rng.random() < 0.05 else \
                self.pick([0, 1, 1, 2, 2, 3, 3, 3, 4, 5])
        if self.rng.random() < self.large:       # over MIN_PARALLEL_WORK elements
            return (self.pick([257, 1031]), self.pick([64, 65, 128]))
        return tuple(side() for _ in range(self.int(0, 3)))

    def array(self, dtype, shape):
        return values(self.rng, dtype, shape, self.special)

    def name(self):
        letters = "abcdefghijklmnopqrstuvwxyz"
        return "".join(self.pick(letters) for _ in range(self.int(1, 4)))

    def loc(self):
        return None if self.int(0, 2) else Loc("fuzz_model.py", self.int(1, 999), "forward")


# -- the op menu ----------------------------------------------------------------------------------

UNARY = {F32: [prims.exp, prims.log, prims.sqrt, prims.tanh, prims.sigmoid, prims.neg,
               prims.abs, prims.relu, prims.softplus, prims.stop_gradient],
         I32: [prims.neg, prims.abs, prims.relu], BOOL: [prims.logical_not]}
BINARY = [prims.add, prims.sub, prims.mul, prims.div, prims.pow, prims.maximum, prims.minimum,
          prims.eq, prims.ne, prims.lt, prims.le, prims.gt, prims.ge, prims.logical_and,
          prims.logical_or, prims.remainder]
COMPOSITE = [nnjit.softmax, nnjit.log_softmax, nnjit.logsumexp, nnjit.min, nnjit.mean]
# -- math ops (issue 12) --
UNARY[F32] += [prims.sin, prims.cos, prims.erf, prims.expm1, prims.log1p, prims.floor,
               prims.ceil, prims.round]
BINARY += [prims.floor_divide]
# Piecewise constant: finite differences across a jump are not a gradient.
NOT_IN_GRAD_CASES = {prims.stop_gradient, prims.floor, prims.ceil, prims.round,
                     prims.floor_divide}
TAKE_MODES = ["raise", "raise", "clip", "wrap", "fill", "promise_in_bounds"]
# Half the draws come from the original menu (so the text round-trip tests keep its mix of
# scans, multi-result nodes and large constants), half from the op families the fuzzer added.
# Hypothesis favours the first entries in small examples: scans and constants come first.
BASE_KINDS = ["scan", "const", "unary", "binary", "scalar", "reduce", "argmax", "reshape",
              "transpose", "slice", "concat", "where", "cast", "matmul", "iota"]
MORE_KINDS = ["scan", "unary", "binary", "const", "dot", "broadcast", "pad", "take", "one_hot",
              "cross_entropy", "composite", "conv", "pool", "window_grad", "scatter_add", "random",
              "getitem_array", "barrier", "collective", "scatter"]


@dataclass
class Gen:
    """Generator state: the chooser, the root builder (fresh inputs are made there and captured
    into bodies), the index hints by root input position, values that must stay live, and the
    dtypes this case may use."""

    ch: Chooser
    root: Builder
    hints: dict[int, IndexHint] = field(default_factory=dict)
    live: dict[int, list] = field(default_factory=dict)       # id(builder) -> values
    dtypes: tuple[DType, ...] = tuple(DType)
    grad: bool = False

    def fresh_input(self, t: TensorType, name: str, hint: IndexHint | None = None) -> Sym:
        s = self.root.input(t, name)
        if hint is not None:
            self.hints[len(self.root.inputs) - 1] = hint
        return s

    def keep(self, b: Builder, s: Sym) -> None:
        """`s` must reach the outputs of `b`'s graph (an index check must not be dead code:
        dead code is removed, and a removed check does not raise)."""
        self.live.setdefault(id(b), []).append(s)

    def float_dtype(self) -> DType:
        return self.ch.pick([d for d in self.dtypes if d.is_float])

    def int_dtype(self) -> DType:
        return self.ch.pick([I32, I64])


def _same_type(pool, t):
    return [s for s in pool if s.type == t]


def _broadcastable(pool, x) -> list:
    """The values of `pool` that broadcast with `x` (numpy rules), or all of them if none."""
    def ok(a, b):
        return all(p == q or p == 1 or q == 1 for p, q in zip(a[::-1], b[::-1]))
    return [s for s in pool if ok(s.shape, x.shape)] or pool


def _step(gen: Gen, b: Builder, pool: list, depth: int) -> None:
    """Append one random op applied to values of `pool` (skipped if its shape rule says no)."""
    ch = gen.ch
    kind = ch.pick(ch.pick([BASE_KINDS, MORE_KINDS]))
    x = ch.operand(pool)
    loc = ch.loc() if ch.int(0, 4) == 0 else None
    saved = _savepoint(gen, b)
    try:
        with b.at(loc):
            out = _apply(gen, b, kind, x, pool, depth)
    except ShapeError:
        # Roll back what the op emitted before its shape rule refused: a check_index left
        # behind would be dead code, which the interpreter runs (and raises) but DCE removes.
        _rollback(gen, saved)
        return
    pool.extend(out if isinstance(out, (tuple, list)) else [out])


def _savepoint(gen: Gen, b: Builder) -> tuple:
    """The state of `b` and of every builder around it (an op in a body may emit into them:
    a check on an outer index input, a fresh input captured into the body)."""
    chain = []
    while b is not None:
        chain.append((b, len(b.nodes), len(b.inputs), len(b.captures), dict(b._scalar_consts)))
        b = b.parent
    return chain, dict(gen.hints)


def _rollback(gen: Gen, saved: tuple) -> None:
    chain, hints = saved
    for b, n_nodes, n_inputs, n_captures, scalars in chain:
        del b.nodes[n_nodes:], b.inputs[n_inputs:], b.captures[n_captures:]
        b._scalar_consts = scalars
    gen.hints = hints


def _apply(gen: Gen, b: Builder, kind: str, x: Sym, pool: list, depth: int):
    ch = gen.ch
    fam = F32 if x.dtype.is_float else I32 if x.dtype.is_int else BOOL
    if kind == "unary":
        # No stop_gradient in gradient cases: finite differences see through it.
        return ch.pick([f for f in UNARY[fam] if not (gen.grad and f in NOT_IN_GRAD_CASES)])(x)
    if kind == "binary":
        return ch.pick([f for f in BINARY if not (gen.grad and f in NOT_IN_GRAD_CASES)])(
            x, ch.pick(_broadcastable(pool, x)))
    if kind == "scalar":
        v = ch.pick([ch.int(-3, 3), ch.real(-2, 2), ch.bool()])
        return ch.pick([prims.add, prims.mul, prims.maximum])(x, v)
    if kind == "const":
        dt = ch.pick(gen.dtypes)
        arr = ch.array(dt, ch.shape() + ch.pick([(), (20,), (20,)]))
        return b.const(arr)
    if kind == "reduce":
        axes = ch.axes(x.ndim)
        fn = ch.pick([prims.reduce_sum, prims.reduce_max, prims.mean, prims.reduce_prod])
        return fn(x, tuple(axes) if x.ndim else None, ch.bool())
    if kind == "argmax":
        return prims.argmax(x, ch.int(-x.ndim, max(x.ndim - 1, 0)), ch.bool())
    if kind == "reshape":
        shape = ch.pick([(x.size,), x.shape[::-1], (1,) + x.shape, (-1,)])
        return prims.reshape(x, shape)
    if kind == "transpose":
        return b.emit(Op.TRANSPOSE, (x,), {"perm": ch.perm(x.ndim)})
    if kind == "slice":
        def bound():
            return None if ch.int(0, 1) else ch.int(-4, 4)
        idx = tuple(slice(bound(), bound(), ch.pick([None, 1, 2, -1, -2]))
                    for _ in range(x.ndim))
        return prims.getitem(x, idx)
    if kind == "concat":
        others = [s for s in pool if s.ndim == x.ndim and s.ndim > 0]
        ys = ch.picks(others, 1, 2) if others else []
        return prims.concat([x] + ys, ch.int(0, max(x.ndim - 1, 0)))
    if kind == "where":
        cond = prims.gt(x, 0) if x.dtype != BOOL else x
        return prims.where(cond, x, ch.pick(_broadcastable(pool, x)))
    if kind == "cast":
        return prims.cast(x, ch.pick(gen.dtypes))
    if kind == "matmul":
        if x.ndim >= 2:
            return prims.matmul(x, prims.transpose(x, tuple(range(x.ndim - 2)) +
                                                   (x.ndim - 1, x.ndim - 2)))
        return prims.matmul(x, x)
    if kind == "iota":
        shape = ch.shape()
        if not shape:
            raise ShapeError("iota needs a dim")
        return prims.iota(b, shape, ch.int(0, len(shape) - 1),
                          ch.pick([d for d in (I32, I64, F32, F64) if d in gen.dtypes]))
    if kind == "scan" and depth > 0:
        seqs = [s for s in pool if s.ndim >= 1]      # a scalar cannot be scanned over
        if x.ndim == 0 and seqs:
            x = ch.pick(seqs)
        return _random_scan(gen, b, x, pool, depth) if x.ndim >= 1 else []
    if kind in MENU:
        return MENU[kind](gen, b, x, pool)
    return []


def _random_scan(gen: Gen, b: Builder, x: Sym, pool: list, depth: int):
    ch = gen.ch
    t = TensorType(x.shape[1:], x.dtype)
    child = Builder(ch.name(), parent=b)
    body_pool = [child.input(t, "c"), child.input(t, "xt")]
    for outer in ch.picks(pool, 0, 2):
        body_pool.append(child.wrap(child.value_of(outer)))     # a const captured from outside
    for _ in range(ch.int(0, 4)):
        _step(gen, child, body_pool, depth - 1)
    new_c = ch.pick(_same_type(body_pool, t))
    ys = ch.picks(body_pool, 0 if ch.int(0, 3) == 0 else 1, 2)    # mostly some stacked ys
    must = gen.live.pop(id(child), [])
    body = child.build([new_c] + ys + must)
    inits = _same_type(pool, t)
    init = ch.pick(inits) if inits else b.const(np.zeros(t.shape, t.dtype.np))
    consts = [outer for outer, _ in child.captures]
    out = prims.scan(body, [init], [x], consts, x.shape[0], ch.bool())
    for s in out[len(out) - len(must):] if must else ():
        gen.keep(b, s)
    return out[:len(out) - len(must)]


# -- the op families added for the fuzzer --------------------------------------------------------

def _float_operand(gen: Gen, pool: list, x: Sym, ndim: int | None = None) -> Sym:
    """A float value of the pool (x if it fits) with `ndim` dims, or a fresh input."""
    fits = [s for s in [x] + pool if s.dtype.is_float and (ndim is None or s.ndim == ndim)]
    if fits and gen.ch.int(0, 3):
        return fits[0] if fits[0] is x else gen.ch.pick(fits)
    shape = gen.ch.shape() if ndim is None else tuple(gen.ch.int(1, 4) for _ in range(ndim))
    return gen.fresh_input(TensorType(shape, gen.float_dtype()), "f")


def _index_operand(gen: Gen, b: Builder, pool: list, n: int, hint: IndexHint,
                   shape=None) -> Sym:
    """Indices into an axis of `n`: usually a fresh input (with its hint), sometimes an int
    value computed in the graph (whatever it holds: often out of range)."""
    ints = [s for s in pool if s.dtype.is_int]
    if shape is None and ints and not hint.strict and gen.ch.int(0, 5) == 0:
        return gen.ch.pick(ints)
    t = TensorType(gen.ch.shape() if shape is None else tuple(shape), gen.int_dtype())
    return gen.fresh_input(t, "idx", hint)


def _dot(gen: Gen, b, x, pool):
    """x @ w for a fresh w: any inner and outer sizes (the matmul kind only does x @ x.T)."""
    x = _float_operand(gen, pool, x) if not x.dtype.is_float else x
    if x.ndim == 0:
        raise ShapeError("matmul needs a dim")
    m = gen.ch.pick([1, 2, 3, 5, 8, 17, 33])
    lead = x.shape[:-2] if x.ndim > 2 and gen.ch.bool() else ()
    k = x.shape[-1]
    w = gen.fresh_input(TensorType(lead + ((k, m) if x.ndim > 1 else (k,)), x.dtype), "w")
    return prims.matmul(x, w)


def _broadcast(gen: Gen, b, x, pool):
    ch = gen.ch
    lead = tuple(ch.int(0, 3) for _ in range(ch.int(0, 2)))
    shape = lead + tuple(ch.int(0, 3) if d == 1 else d for d in x.shape)
    return prims.broadcast_to(x, shape)


def _pad(gen: Gen, b, x, pool):
    ch = gen.ch
    pads = tuple((ch.int(0, 2), ch.int(0, 2)) for _ in range(x.ndim))
    value = ch.pick([0.0, -0.0, 1.5, math.nan, -math.inf, 1e30]) if x.dtype.is_float else \
        float(ch.int(-2, 2))
    return prims.pad(x, pads, value)


def _take(gen: Gen, b, x, pool):
    ch = gen.ch
    if x.ndim == 0:
        raise ShapeError("take needs a dim")
    axis = ch.int(-x.ndim, x.ndim - 1)
    n = x.shape[axis]
    mode = ch.pick(TAKE_MODES)
    hint = IndexHint(n, strict=mode == "promise_in_bounds")
    idx = _index_operand(gen, b, pool, n, hint)
    fill = ch.pick([None, 0.0, -1.0]) if mode == "fill" else None
    out = nnjit.take(x, idx, axis, mode=mode, fill_value=fill)
    if mode == "raise":
        gen.keep(b, out)
    return out


def _getitem_array(gen: Gen, b, x, pool):
    """x[..., idx, ...] with an integer-tensor index (a take in raise mode underneath)."""
    if x.ndim == 0:
        raise ShapeError("needs a dim")
    axis = gen.ch.int(0, x.ndim - 1)
    idx = _index_operand(gen, b, pool, x.shape[axis], IndexHint(x.shape[axis]))
    out = prims.getitem(x, (slice(None),) * axis + (idx,))
    gen.keep(b, out)
    return out


def _one_hot(gen: Gen, b, x, pool):
    n = gen.ch.int(0, 4)
    idx = _index_operand(gen, b, pool, n, IndexHint(n, "class"))
    out = nnjit.one_hot(idx, n, gen.ch.pick(gen.dtypes).np)
    gen.keep(b, out)
    return out


def _cross_entropy(gen: Gen, b, x, pool):
    logits = _float_operand(gen, pool, x)
    if logits.ndim == 0:
        raise ShapeError("needs a class dim")
    c = logits.shape[-1]
    ignore = gen.ch.pick([-100, -100, 0, 2])
    idx = _index_operand(gen, b, pool, c, IndexHint(c, "label", ignore), logits.shape[:-1])
    out = nnjit.nn.cross_entropy(logits, idx, ignore_index=ignore)
    gen.keep(b, out)
    return out


def _composite(gen: Gen, b, x, pool):
    fn = gen.ch.pick(COMPOSITE)
    if fn in (nnjit.min, nnjit.mean):
        return fn(x, gen.ch.axes(x.ndim) or None, gen.ch.bool())
    return fn(x, gen.ch.int(-x.ndim, max(x.ndim - 1, 0)))


def _nchw(gen: Gen, x, pool) -> Sym:
    return x if x.ndim == 4 and x.dtype.is_float else _float_operand(gen, pool, x, 4)


def _conv(gen: Gen, b, x, pool):
    ch = gen.ch
    x = _nchw(gen, x, pool)
    kh, kw = ch.int(1, 3), ch.int(1, 3)
    w = gen.fresh_input(TensorType((ch.int(1, 3), x.shape[1], kh, kw), x.dtype), "w")
    pads = ((ch.int(0, 1), ch.int(0, 1)), (ch.int(0, 1), ch.int(0, 1)))
    return prims.conv2d(x, w, (ch.int(1, 2), ch.int(1, 2)), pads, (ch.int(1, 2), ch.int(1, 2)))


def _pool_attrs(ch: Chooser):
    k = (ch.int(1, 3), ch.int(1, 3))
    pads = tuple((ch.int(0, kk // 2), ch.int(0, kk // 2)) for kk in k)
    return k, (ch.int(1, 2), ch.int(1, 2)), pads


def _pool(gen: Gen, b, x, pool):
    x = _nchw(gen, x, pool)
    k, s, p = _pool_attrs(gen.ch)
    if gen.ch.bool():
        return prims.max_pool2d(x, k, s, p)
    return prims.avg_pool2d(x, k, s, p, gen.ch.bool())


def _window_grad(gen: Gen, b, x, pool):
    """The gradient primitives as forward ops: dy is the forward result (or one of its type)."""
    ch = gen.ch
    x = _nchw(gen, x, pool)
    which = ch.pick(["avg", "conv_input", "conv_weight"] + ([] if gen.grad else ["max"]))
    if which in ("avg", "max"):
        k, s, p = _pool_attrs(ch)
        y = prims.avg_pool2d(x, k, s, p) if which == "avg" else prims.max_pool2d(x, k, s, p)
        dy = ch.pick(_same_type(pool, y.type) + [y])
        if which == "max":
            return prims.max_pool2d_grad(x, dy, k, s, p)
        return prims.avg_pool2d_grad(dy, x.shape, k, s, p, ch.bool())
    kh, kw = ch.int(1, 3), ch.int(1, 3)
    w = gen.fresh_input(TensorType((ch.int(1, 3), x.shape[1], kh, kw), x.dtype), "w")
    st_, dil = (ch.int(1, 2), ch.int(1, 2)), (ch.int(1, 2), ch.int(1, 2))
    pads = ((ch.int(0, 1), ch.int(0, 1)), (ch.int(0, 1), ch.int(0, 1)))
    y = prims.conv2d(x, w, st_, pads, dil)
    dy = ch.pick(_same_type(pool, y.type) + [y])
    if which == "conv_input":
        return prims.conv2d_grad_input(dy, w, x.shape, st_, pads, dil)
    return prims.conv2d_grad_weight(x, dy, w.shape, st_, pads, dil)


def _scatter_add(gen: Gen, b, x, pool):
    ch = gen.ch
    shape = x.shape if x.ndim else (ch.int(1, 3),)
    axis = ch.int(0, len(shape) - 1)
    if shape[axis] == 0:
        raise ShapeError("cannot scatter into an empty axis")
    idx = _index_operand(gen, b, pool, shape[axis], IndexHint(shape[axis], strict=True),
                         ch.shape()[:2])
    ut = TensorType(shape[:axis] + idx.shape + shape[axis + 1:],
                    x.dtype if x.dtype.is_float else gen.float_dtype())
    upd = ch.pick(_same_type(pool, ut) + [None])
    upd = upd if upd is not None else gen.fresh_input(ut, "upd")
    return prims.scatter_add(idx, upd, shape, axis)


def _random(gen: Gen, b, x, pool):
    seeds = [s for s in pool if s.type == TensorType((), I64)]
    seed = gen.ch.pick(seeds) if seeds and gen.ch.bool() else gen.fresh_input(
        TensorType((), I64), "seed")
    return prims.random_uniform(seed, gen.ch.shape(), gen.ch.int(-3, 2 ** 40),
                                gen.float_dtype())


def _barrier(gen: Gen, b, x, pool):
    """optimization_barrier(x, after): `after` any scalar of the pool, or a fresh one."""
    scalars = [s for s in pool if s.shape == ()]
    after = gen.ch.pick(scalars) if scalars and gen.ch.bool() else gen.fresh_input(
        TensorType((), gen.float_dtype()), "after")
    return prims.optimization_barrier(x, after)


def _collective(gen: Gen, b, x, pool):
    """A collective over a group of one (what one process runs: the identity, rank 0), at the
    top level only: collectives inside scan bodies are refused."""
    if b is not gen.root or x.dtype == DType.BOOL:
        return []
    ch = gen.ch
    kind = ch.pick(["sum", "mean", "max", "gather", "scatter", "broadcast", "rank"])
    if kind in ("sum", "max") or (kind == "mean" and x.dtype.is_float):
        return prims.all_reduce(x, kind, "batch", 1)
    if kind in ("gather", "scatter") and x.ndim:
        op = prims.all_gather if kind == "gather" else prims.reduce_scatter
        return op(x, ch.int(0, x.ndim - 1), "batch", 1)
    if kind == "rank":
        return prims.add(x, prims.cast(prims.axis_index(b, "batch", 1), x.dtype))
    return prims.broadcast(x, 0, "batch", 1)


# -- movement/indexing ops (issue 12) --
def _scatter(gen: Gen, b, x, pool):
    """x with updates written (set: the last duplicate wins) or combined (min/max/multiply)
    at in-range indices along one axis."""
    ch = gen.ch
    if not x.ndim or (x.dtype == DType.BOOL and ch.bool()):
        return []
    axis = ch.int(0, x.ndim - 1)
    if x.shape[axis] == 0:
        raise ShapeError("cannot scatter into an empty axis")
    mode = "set" if x.dtype == DType.BOOL else ch.pick(["set", "set", "min", "max", "multiply"])
    idx = _index_operand(gen, b, pool, x.shape[axis], IndexHint(x.shape[axis], strict=True),
                         ch.shape()[:2])
    ut = TensorType(x.shape[:axis] + idx.shape + x.shape[axis + 1:], x.dtype)
    upd = ch.pick(_same_type(pool, ut) + [None])
    upd = upd if upd is not None else gen.fresh_input(ut, "upd")
    return prims.scatter(x, idx, upd, axis, mode)


MENU = {"dot": _dot, "broadcast": _broadcast, "pad": _pad, "take": _take, "one_hot": _one_hot,
        "cross_entropy": _cross_entropy, "composite": _composite, "conv": _conv, "pool": _pool,
        "window_grad": _window_grad, "scatter_add": _scatter_add, "random": _random,
        "getitem_array": _getitem_array, "barrier": _barrier, "collective": _collective,
        "scatter": _scatter}


def build_graph(gen: Gen, max_ops: int, depth: int) -> Graph:
    """A random graph: 1-3 inputs, 1..max_ops ops (scans nest `depth` deep), 1-4 outputs plus
    every value that must stay live."""
    ch, b = gen.ch, gen.root
    pool = []
    for _ in range(ch.int(1, 3)):
        t = TensorType(ch.shape(), ch.pick(gen.dtypes))
        pool.append(b.input(t, ch.name(), loc=ch.loc()))
    for _ in range(ch.int(1, max_ops)):
        _step(gen, b, pool, depth)
    outs = ch.outputs(pool)
    seen = {s.value for s in outs}
    for s in gen.live.pop(id(b), []):
        if s.value not in seen:
            outs.append(s)
            seen.add(s.value)
    return b.build(outs)


@st.composite
def random_graphs(draw, max_ops: int = 10, depth: int = 2) -> Graph:
    """A hypothesis strategy for random valid graphs over the whole op menu."""
    ch = HypothesisChooser(draw)
    return build_graph(Gen(ch, Builder(ch.name())), max_ops, depth)


# -- fuzz cases ------------------------------------------------------------------------------------

@dataclass
class Case:
    """One fuzz program: its graph, its arguments, and how they were made."""

    seed: int
    graph: Graph
    inputs: list[np.ndarray]
    hints: dict[int, IndexHint]
    regime: str             # "plain", "special" (awkward values) or "smooth" (gradient case)

    @property
    def grad(self) -> bool:
        return self.regime == "smooth"


def generate_case(seed: int, max_ops: int = 12, depth: int = 2) -> Case:
    """The fuzz case of `seed` (deterministic: same seed and GENERATOR_VERSION, same case)."""
    rng = np.random.default_rng([GENERATOR_VERSION, seed])
    regime = ["plain", "special", "special", "smooth"][int(rng.integers(4))]
    if regime == "smooth":
        dtypes = (F64, F64, F64, F64, I32, I64, BOOL)     # mostly differentiable values
    else:
        dtypes = tuple(DType)
    special = float(rng.choice([0.05, 0.15, 0.3])) if regime == "special" else 0.0
    ch = RngChooser(rng, special=special, large=0.0 if regime == "smooth" else 0.01)
    gen = Gen(ch, Builder(f"fuzz{seed}"), dtypes=dtypes, grad=regime == "smooth")
    g = build_graph(gen, ch.int(1, max_ops), ch.int(0, depth))
    oob = float(rng.choice([0.0, 0.0, 0.05, 0.3]))
    inputs = make_inputs(rng, g, gen.hints, regime, oob, special)
    return Case(seed, g, inputs, gen.hints, regime)
