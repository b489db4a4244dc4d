"""The fuzzer's oracle: a program run on the reference interpreter and on llvm (unfused and
fused, then again with every input donated), and its float64 gradients checked against central
finite differences and across backends.

    >>> report = check_case(generate_case(7))
    >>> report.failures                      # [] or Failure(check, detail) per broken check

What counts as "the same result" (`compare`):

* Shapes and dtypes agree exactly; an IndexOutOfRange on one side needs one with the same
  message on the other.
* Integers and bools agree exactly; floats within rtol 1e-4 / atol 1e-5 where finite; NaN-ness,
  inf-ness and the sign of an inf exactly. The sign of a zero is not compared.
* Legitimate rounding differences are measured, not guessed: the reference is run again four
  times with a few-ulp random jitter where native code may round differently from numpy: on the
  operands of every summing op (sum, matmul, convolutions, average pooling, scatter_add), which
  models any reassociation of the sum (each term off by a relative n*eps is the classic error
  bound of a reordered n-term sum), and on the results of transcendental ops (exp, log, tanh,
  sigmoid, pow), whose native versions may be off in the last bits. The second run computes
  the summing ops in a wider type (f64 for f32, long double for f64); the third and fourth
  compute sum, matmul and conv2d from products rounded one by one and added one at a time,
  largest first and smallest first. Together they cover the overflow that depends on the
  order of a sum: a GEMM's fma keeps a product exact when it adds it to a partial sum but
  rounds it alone onto a zero accumulator (3e38 * -3 in f32 may or may not become -inf), and
  partial sums of huge finite terms overflow in one order and not in another (MAX + MAX - inf
  is NaN, MAX - inf + MAX is -inf). Such an element's class changes between the runs, so it
  is not compared. (With terms of one sign, overflow in some order but not in another happens
  only at the rounding edge of the result, below; with mixed signs cancellation moves it
  anywhere.)
  The tolerance of each element grows by 4x the spread the jitter caused there, so
  catastrophic cancellation (1e30 + 1 - 1e30) and amplification (exp(exp(x))) are allowed
  exactly as much as they are ill-conditioned. An element whose class (finite, NaN,
  +inf, -inf; or an int or bool value) the jitter changes is at the edge and not compared, and
  so is a run whose raising the jitter changes (indices computed from floats).
* The overflow edge: a finite value within rtol of the dtype's largest finite value may be the
  same-signed inf on the other side (a reordered sum or an fma rounds across the threshold).
  Anywhere else inf-ness is exact: an inf that one side gets and the other does not, away from
  the threshold, is a bug.

The gradient check (float64 programs with smooth inputs): loss = sum_k sum(out_k * w_k) over the
f64 outputs with fixed random weights, differentiated by `nnjit.passes.autodiff.grad` w.r.t. the
f64 inputs. On the interpreter the gradient must match central differences at up to 8 sampled
elements per input (tests/gradcheck.py's eps=1e-6, rtol 1e-5, atol 1e-6, plus the estimated
truncation and roundoff error); on llvm it must match the interpreter's gradient by `compare`.
Non-smooth points are avoided by the inputs (away from 0, ties improbable) and detected where
the program makes them anyway: an element whose differences at eps and 2*eps disagree (a kink,
a jump of a comparison, noise) is not compared. Programs with a non-finite intermediate value
are not differentiated (a NaN masked by `where` poisons cotangents, as in every framework).
"""
from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from nnjit.ir import Builder, DType, Graph, IndexOutOfRange, Op, evaluate, opdef, prims
from nnjit.passes.autodiff import grad as grad_pass
from nnjit.passes.manager import PassManager
from nnjit.passes.pipeline import default_pipeline
from nnjit.runtime.compiled import Options, compile_graph
from tests.backends.test_differential import check_donated_run
from tests.fuzz.generate import Case

RTOL, ATOL = 1e-4, 1e-5
JITTER_ULPS = 32          # relative jitter, in units of the dtype's eps
SPREAD_FACTOR = 4.0
# prod accumulates like a sum: reordered (blocked) products overflow or underflow in one
# order and not another (MAX * tiny * 2 is finite, MAX * 2 * tiny is inf; 0 * 1 * .. * 63 is 0,
# 63! * .. * 0 is inf * 0 = NaN in float32), which the wide and ordered runs expose as a class
# change.
SUMMING = {Op.SUM, Op.PROD, Op.MATMUL, Op.CONV2D, Op.CONV2D_GRAD_INPUT, Op.CONV2D_GRAD_WEIGHT,
           Op.AVG_POOL2D, Op.AVG_POOL2D_GRAD, Op.SCATTER_ADD}
ROUNDED = {Op.EXP, Op.LOG, Op.TANH, Op.SIGMOID, Op.POW, Op.SIN, Op.COS, Op.ERF, Op.EXPM1,
           Op.LOG1P}
GRAD_EPS, GRAD_RTOL, GRAD_ATOL, GRAD_ELEMS = 1e-6, 1e-5, 1e-6, 8


@dataclass
class Outcome:
    """What one run gave: results, or the message of an IndexOutOfRange."""

    values: list[np.ndarray] | None = None
    error: str | None = None

    @property
    def raised(self) -> bool:
        return self.error is not None


@dataclass(frozen=True)
class Failure:
    check: str          # interp, pipeline[..], passes[..], compile[..], llvm[..], donated[..],
    detail: str         # grad, grad-fd, grad-llvm[..]


@dataclass
class Report:
    compiled: bool = False       # compiled and ran on llvm at least once
    raised: bool = False         # IndexOutOfRange on the interpreter and on llvm
    grad_checked: bool = False   # at least one gradient element compared with finite differences
    failures: list[Failure] = field(default_factory=list)


class CheckFailed(Exception):
    def __init__(self, check: str, detail: str):
        super().__init__(f"{check}: {detail}")
        self.failure = Failure(check, detail)


def _tag(fuse: bool) -> str:
    return "fused" if fuse else "unfused"


# -- running ------------------------------------------------------------------------------------

def _copies(args: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [np.array(a, copy=True) for a in args]


def run_reference(g: Graph, args: Sequence[np.ndarray], check: str = "interp") -> Outcome:
    """`nnjit.ir.evaluate` on `g`; IndexOutOfRange is an outcome, anything else a failure."""
    try:
        with np.errstate(all="ignore"):
            return Outcome(values=evaluate(g, _copies(args)))
    except IndexOutOfRange as e:
        return Outcome(error=str(e))
    except Exception:
        raise CheckFailed(check, traceback.format_exc(limit=-6)) from None


def optimize(g: Graph, fuse: bool) -> Graph:
    """The default pipeline, verified (and text round-tripped) after every pass."""
    try:
        with np.errstate(all="ignore"):     # constant folding runs the references
            return PassManager(default_pipeline(fuse), verify_each=True).run(g)[0]
    except Exception:
        raise CheckFailed(f"pipeline[{_tag(fuse)}]", traceback.format_exc(limit=-6)) from None


def run_llvm(g: Graph, args: Sequence[np.ndarray], fuse: bool, donate: bool = False):
    """Compile optimized `g` on llvm and run it: (executable, Outcome)."""
    opts = Options("llvm", fuse, donate=tuple(range(len(args))) if donate else ())
    try:
        exe = compile_graph(g, opts, graph_passes=False)[0]
    except Exception:
        raise CheckFailed(f"compile[{_tag(fuse)}]", traceback.format_exc(limit=-6)) from None
    try:
        with np.errstate(all="ignore"):
            return exe, Outcome(values=exe(_copies(args)))
    except IndexOutOfRange as e:
        return exe, Outcome(error=str(e))
    except Exception:
        raise CheckFailed(f"llvm[{_tag(fuse)}]", traceback.format_exc(limit=-6)) from None


# -- the jittered reference ---------------------------------------------------------------------

def _jitter(rng: np.random.Generator, a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind != "f" or a.size == 0:
        return a
    scale = JITTER_ULPS * float(np.finfo(a.dtype).eps)
    f = 1.0 + rng.uniform(-scale, scale, a.shape)
    with np.errstate(all="ignore"):
        j = (a.astype(np.float64) * f).astype(a.dtype)
    return np.where(np.isfinite(j) | ~np.isfinite(a), j, a)   # no overflow of its own


WIDE = {np.dtype(np.float32): np.float64, np.dtype(np.float64): np.longdouble}
#: The ways the jittered runs compute summing ops: as the reference does; in a wider type
#: (each product exact, as inside an fma); and, for sum, matmul and conv2d, from products
#: rounded one by one (as an fma onto a zero accumulator does) added one at a time, largest
#: first ("up") or smallest first ("down"): the orders in which partial sums overflow most.
MODES = ("plain", "wide", "up", "down")
ORDERED_MAX = 1 << 20      # the most terms an ordered sum materializes


def _widen(a: np.ndarray) -> np.ndarray:
    return a.astype(WIDE[a.dtype]) if a.dtype in WIDE else a


def _ordered_sum(terms: np.ndarray, mode: str) -> np.ndarray:
    """Sum over the last axis, one term at a time (add.accumulate is sequential), sorted."""
    if terms.shape[-1] == 0:
        return np.zeros(terms.shape[:-1], terms.dtype)
    t = np.sort(terms, axis=-1)          # NaNs last
    if mode == "up":
        t = t[..., ::-1]
    return np.add.accumulate(t, axis=-1)[..., -1]


def _summing_ref(n, srcs: list[np.ndarray], mode: str):
    ref = opdef(n.op).ref
    if mode == "wide":
        return ref([_widen(a) for a in srcs], n.attrs)
    floats = all(a.dtype.kind == "f" for a in srcs)
    if mode in ("up", "down") and floats and n.op == Op.SUM and n.attrs["axes"] and \
            srcs[0].size <= ORDERED_MAX:
        (x,), axes = srcs, n.attrs["axes"]
        moved = np.moveaxis(x, axes, range(x.ndim - len(axes), x.ndim))
        lead = moved.shape[:x.ndim - len(axes)]
        count = int(np.prod(moved.shape[len(lead):], dtype=np.int64))
        out = _ordered_sum(moved.reshape(lead + (count,)), mode)
        return out.reshape(n.type.shape) if n.attrs["keepdims"] else out
    if mode in ("up", "down") and floats and n.op == Op.PROD and n.attrs["axes"] and \
            srcs[0].size <= ORDERED_MAX:
        # largest magnitudes first ("up": partial products overflow soonest, so a zero later
        # meets an inf) or smallest first ("down": they underflow soonest)
        (x,), axes = srcs, n.attrs["axes"]
        moved = np.moveaxis(x, axes, range(x.ndim - len(axes), x.ndim))
        lead = moved.shape[:x.ndim - len(axes)]
        count = int(np.prod(moved.shape[len(lead):], dtype=np.int64))
        if count == 0 or moved.size == 0:     # empty products, or nothing to multiply: plain
            return ref(srcs, n.attrs)
        t = moved.reshape(lead + (count,))
        t = np.take_along_axis(t, np.argsort(np.abs(t), axis=-1), axis=-1)
        with np.errstate(all="ignore"):
            out = np.multiply.accumulate(t[..., ::-1] if mode == "up" else t, axis=-1)[..., -1]
        return out.reshape(n.type.shape) if n.attrs["keepdims"] else out
    if mode in ("up", "down") and floats and n.op == Op.MATMUL:
        a, b = srcs
        a2, b2 = (a[None, :] if a.ndim == 1 else a), (b[:, None] if b.ndim == 1 else b)
        batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
        if np.prod(batch + a2.shape[-2:] + b2.shape[-1:], dtype=np.int64) <= ORDERED_MAX:
            prods = a2[..., :, :, None] * b2[..., None, :, :]
            out = _ordered_sum(np.moveaxis(prods, -2, -1), mode)
            if a.ndim == 1:
                out = out[..., 0, :]
            return out[..., 0] if b.ndim == 1 else out
    if mode in ("up", "down") and n.op == Op.CONV2D and srcs[0].shape[1]:
        x, w = srcs          # one input channel at a time: every product rounded on its own
        order = range(x.shape[1]) if mode == "up" else reversed(range(x.shape[1]))
        parts = [ref([x[:, c:c + 1], w[:, c:c + 1]], n.attrs) for c in order]
        return _ordered_sum(np.stack(parts, axis=-1), mode)
    return ref(srcs, n.attrs)


def evaluate_jittered(g: Graph, args: Sequence[np.ndarray], rng: np.random.Generator,
                      mode: str = "plain") -> list[np.ndarray]:
    """`evaluate`, with a few ulps of random jitter on the operands of summing ops and the
    results of transcendental ones, inside scan bodies too; summing ops are computed as `mode`
    says (see MODES)."""
    env = dict(zip(g.inputs, args))
    for n in g.nodes:
        srcs = [env[s] for s in n.srcs]
        if n.op == Op.SCAN:
            out = _scan_jittered(srcs, n.attrs, rng, mode)
        elif n.op in SUMMING:
            out = _summing_ref(n, [_jitter(rng, a) for a in srcs], mode)
        else:
            out = opdef(n.op).ref(srcs, n.attrs)
        outs = out if isinstance(out, tuple) else (out,)
        for v, o in zip(n.outs, outs):
            o = np.asarray(o).astype(v.type.dtype.np, copy=False)
            env[v] = _jitter(rng, o) if n.op in ROUNDED else o
    return [env[v] for v in g.outputs]


def _scan_jittered(xs, attrs, rng, mode):
    """The scan reference (defs/control.py) with a jittered body."""
    body, nc, nk, length = attrs["body"], attrs["num_consts"], attrs["num_carry"], attrs["length"]
    carry, seqs, consts = list(xs[:nk]), xs[nk:len(xs) - nc], list(xs[len(xs) - nc:])
    ys = [np.empty((length,) + t.shape, t.dtype.np) for t in body.output_types[nk:]]
    for t in (range(length - 1, -1, -1) if attrs["reverse"] else range(length)):
        outs = evaluate_jittered(body, carry + [s[t] for s in seqs] + consts, rng, mode)
        carry = list(outs[:nk])
        for y, o in zip(ys, outs[nk:]):
            y[t] = o
    return tuple(carry) + tuple(ys)


def jittered_references(g: Graph, args, seed: int) -> list[Outcome]:
    """The reference run once per MODE, each with its own jitter."""
    out = []
    for k, mode in enumerate(MODES):
        rng = np.random.default_rng([seed, k, 0x5EED])
        try:
            with np.errstate(all="ignore"):
                out.append(Outcome(values=evaluate_jittered(g, _copies(args), rng, mode)))
        except IndexOutOfRange as e:
            out.append(Outcome(error=str(e)))
    return out


# -- comparing ------------------------------------------------------------------------------------

def _classes(a: np.ndarray) -> np.ndarray:
    """0 finite, 1 NaN, 2 +inf, 3 -inf."""
    return np.select([np.isnan(a), a == np.inf, a == -np.inf], [1, 2, 3], 0)


def bad_elements(got: np.ndarray, want: np.ndarray, jittered: Sequence[np.ndarray]
                 ) -> np.ndarray:
    """A mask of the elements of `got` that disagree with `want` (see the module docstring)."""
    if want.dtype.kind != "f":
        unstable = np.zeros(want.shape, bool)
        for j in jittered:
            unstable |= j != want
        return (got != want) & ~unstable
    with np.errstate(all="ignore"):
        cw, cg = _classes(want), _classes(got)
        unstable = np.zeros(want.shape, bool)
        spread = np.zeros(want.shape, np.float64)
        for j in jittered:
            cj = _classes(j)
            unstable |= cj != cw
            both = (cj == 0) & (cw == 0)
            spread = np.maximum(spread, np.where(both, np.abs(j.astype(np.float64) -
                                                               want.astype(np.float64)), 0.0))
        top = float(np.finfo(want.dtype).max) * (1 - RTOL)
        w64, g64 = want.astype(np.float64), got.astype(np.float64)
        edge = (((cw == 0) & (np.abs(w64) >= top) & (cg >= 2) & (np.sign(w64) == np.sign(g64))) |
                ((cg == 0) & (np.abs(g64) >= top) & (cw >= 2) & (np.sign(w64) == np.sign(g64))))
        tol = ATOL + RTOL * np.abs(w64) + SPREAD_FACTOR * spread
        finite_bad = (cw == 0) & ((cg != 0) | (np.abs(g64 - w64) > tol))
        special_bad = (cw != 0) & (cg != cw)
        return (finite_bad | special_bad) & ~unstable & ~edge


def compare(got: Outcome, want: Outcome, jittered: Sequence[Outcome]) -> str | None:
    """None if `got` is the reference's result `want`; otherwise what differs."""
    if any(j.raised != want.raised for j in jittered):
        return None     # whether it raises depends on rounding: not decidable here
    if want.raised or got.raised:
        if got.error != want.error:
            return f"expected {_describe(want)}, got {_describe(got)}"
        return None
    if len(got.values) != len(want.values):
        return f"{len(got.values)} results, expected {len(want.values)}"
    for k, (a, b) in enumerate(zip(got.values, want.values)):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape or a.dtype != b.dtype:
            return f"result {k} is {a.dtype}{list(a.shape)}, expected {b.dtype}{list(b.shape)}"
        bad = bad_elements(a, b, [np.asarray(j.values[k]) for j in jittered])
        if bad.any():
            where = [tuple(int(i) for i in ix) for ix in np.argwhere(bad)[:4]]
            pairs = ", ".join(f"{w}: got {a[w]!r} want {b[w]!r}" for w in where)
            return (f"result {k} ({b.dtype}{list(b.shape)}) differs at {int(bad.sum())} "
                    f"element(s): {pairs}")
    return None


def _describe(o: Outcome) -> str:
    return f"IndexOutOfRange({o.error!r})" if o.raised else "results"


# -- the checks ---------------------------------------------------------------------------------

def check_case(case: Case, fuses: Sequence[bool] = (False, True), donate: bool = True,
               grad: bool = True, only: str | None = None) -> Report:
    """Run every check on `case` (stopping at the first failure). `only` (a check name, e.g.
    "llvm[fused]") runs just what that check needs: how the minimizer reproduces a failure."""
    report = Report()
    stage, tag = _split(only)
    if tag is not None:
        fuses = [f for f in fuses if _tag(f) == tag]
    try:
        want = run_reference(case.graph, case.inputs)
        if stage is None or not stage.startswith("grad"):
            _check_forward(case, want, fuses, donate, report, stage)
        if grad and case.grad and (stage is None or stage.startswith("grad")):
            _check_grads(case.graph, case.inputs, case.hints, case.seed, fuses, report, stage)
    except CheckFailed as e:
        report.failures.append(e.failure)
    return report


def _split(check: str | None) -> tuple[str | None, str | None]:
    """"llvm[fused]" -> ("llvm", "fused"); "grad-fd" -> ("grad-fd", None)."""
    if check is None:
        return None, None
    name, _, tag = check.partition("[")
    return name, tag.rstrip("]") or None


def _check_forward(case: Case, want: Outcome, fuses, donate: bool, report: Report,
                   stage: str | None) -> None:
    g, args = case.graph, case.inputs
    if stage == "interp":
        return
    jit = jittered_references(g, args, case.seed)
    for fuse in fuses:
        tag = _tag(fuse)
        opt = optimize(g, fuse)
        if stage in (None, "passes"):
            why = compare(run_reference(opt, args, f"passes[{tag}]"), want, jit)
            if why:
                raise CheckFailed(f"passes[{tag}]", "the interpreter on the optimized graph: "
                                  + why)
        if stage not in (None, "compile", "llvm", "donated"):
            continue
        _, got = run_llvm(opt, args, fuse)
        report.compiled = True
        why = compare(got, want, jit)
        if why and stage in (None, "llvm"):
            raise CheckFailed(f"llvm[{tag}]", why)
        report.raised = report.raised or (want.raised and got.raised)
        if donate and stage in (None, "donated"):
            _check_donated(opt, args, got, fuse)


def _check_donated(opt: Graph, args, got: Outcome, fuse: bool) -> None:
    check = f"donated[{_tag(fuse)}]"
    options = Options("llvm", fuse, donate=tuple(range(len(args))))
    if got.raised:
        _, again = run_llvm(opt, args, fuse, donate=True)
        if again.error != got.error:
            raise CheckFailed(check, f"undonated run raised {got.error!r}, donated gave "
                              f"{_describe(again)}")
        return
    try:
        with np.errstate(all="ignore"):
            check_donated_run(opt, _copies(args), got.values, options)
    except AssertionError as e:
        raise CheckFailed(check, str(e).split("\n")[0]) from None
    except Exception:
        raise CheckFailed(check, traceback.format_exc(limit=-6)) from None


# -- gradients ------------------------------------------------------------------------------------

def loss_graph(g: Graph, seed: int) -> Graph | None:
    """loss(inputs) = sum_k sum(out_k * w_k) over g's f64 outputs (w_k fixed random); None when
    g has no f64 output."""
    rng = np.random.default_rng([seed, 0x1055])
    b = Builder(f"{g.name}_loss")
    ins = [b.input(v.type, name) for v, name in zip(g.inputs, g.input_names)]
    outs = b.inline(g, ins)
    total = None
    for o in outs:
        if o.dtype != DType.F64:
            continue
        w = b.const(rng.standard_normal(o.shape))
        term = prims.reduce_sum(o * w)
        total = term if total is None else total + term
    return None if total is None else b.build([total])


def _finite_intermediates(g: Graph, args) -> bool:
    ok = [True]

    def on_node(n, results):
        ok[0] = ok[0] and all(np.isfinite(r).all() for r in results if r.dtype.kind == "f")

    try:
        with np.errstate(all="ignore"):
            evaluate(g, _copies(args), on_node)
    except IndexOutOfRange:
        return False
    return ok[0]


def _check_grads(g, args, hints, seed, fuses, report, stage) -> None:
    lg = loss_graph(g, seed)
    wrt = [i for i, t in enumerate(g.input_types)
           if t.dtype == DType.F64 and t.size and i not in hints]
    if lg is None or not wrt or not _finite_intermediates(lg, args):
        return
    try:
        gg = grad_pass(lg, wrt)
    except Exception:
        raise CheckFailed("grad", traceback.format_exc(limit=-6)) from None
    want = run_reference(gg, args, "grad")
    if want.raised or not all(np.isfinite(v).all() for v in want.values):
        return
    if stage in (None, "grad-fd"):
        _check_fd(lg, args, wrt, want.values[1:], seed, report)
    if stage not in (None, "grad-pipeline", "grad-compile", "grad-llvm"):
        return
    jit = jittered_references(gg, args, seed)
    for fuse in fuses:
        try:
            opt = optimize(gg, fuse)
            _, got = run_llvm(opt, args, fuse)
        except CheckFailed as e:      # the gradient graph's own pipeline or compile failed
            raise CheckFailed("grad-" + e.failure.check, e.failure.detail) from None
        why = compare(got, want, jit)
        if why:
            raise CheckFailed(f"grad-llvm[{_tag(fuse)}]", "the gradient graph: " + why)


def _check_fd(lg: Graph, args, wrt, grads, seed, report) -> None:
    rng = np.random.default_rng([seed, 0xFD])
    args = _copies(args)

    def loss() -> float:
        with np.errstate(all="ignore"):
            return float(evaluate(lg, args)[0])

    problems = []
    for i, ana in zip(wrt, grads):
        flat = args[i].reshape(-1)
        idx = np.arange(flat.size)
        if flat.size > GRAD_ELEMS:
            idx = np.sort(rng.choice(flat.size, GRAD_ELEMS, replace=False))
        for j in idx:
            orig = flat[j]
            f = {}
            for k in (1, -1, 2, -2):
                flat[j] = orig + k * GRAD_EPS
                f[k] = loss()
            flat[j] = orig
            d1 = (f[1] - f[-1]) / (2 * GRAD_EPS)
            d2 = (f[2] - f[-2]) / (4 * GRAD_EPS)
            if not (np.isfinite(d1) and np.isfinite(d2)):
                continue
            trunc = abs(d1 - d2)
            if trunc > 1e-3 * (1 + abs(d1)):
                continue        # a kink, a jump or noise within 2*eps: not decidable here
            roundoff = 4 * np.finfo(np.float64).eps * (abs(f[1]) + abs(f[-1])) / GRAD_EPS
            a = float(ana.reshape(-1)[j])
            report.grad_checked = True
            if abs(a - d1) > GRAD_ATOL + GRAD_RTOL * abs(d1) + 2 * trunc + roundoff:
                where = np.unravel_index(j, args[i].shape) if args[i].ndim else ()
                problems.append(f"d loss / d {lg.input_names[i]}{list(map(int, where))}: "
                                f"autodiff {a:.10g}, finite differences {d1:.10g}")
    if problems:
        raise CheckFailed("grad-fd", "; ".join(problems[:4]))
