"""The differential fuzzer in the default suite: a fixed range of generated programs through
every check of tests/fuzz/oracle.py (interpreter vs llvm fused and unfused, donated inputs,
float64 gradients vs finite differences), plus tests that the generator reaches what it should
and that the oracle and the minimizer catch planted bugs. Longer runs: tests/fuzz/run.py."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from nnjit.ir import OPDEFS, Builder, DType, Op, TensorType, prims
from tests.fuzz.generate import GENERATOR_VERSION, Case, generate_case
from tests.fuzz.minimize import minimize
from tests.fuzz.oracle import Outcome, bad_elements, check_case, compare
from tests.fuzz.values import IndexHint, describe_inputs

CASES = 240          # in chunks, so pytest-xdist spreads them over its workers
CHUNK = 20


@pytest.mark.parametrize("first", range(0, CASES, CHUNK))
def test_generated_programs_agree(first):
    failures = []
    for seed in range(first, first + CHUNK):
        case = generate_case(seed)
        for f in check_case(case).failures:
            small = minimize(case, f.check, f.detail, budget_s=20)
            again = check_case(small, only=f.check).failures
            failures.append(f"seed {seed} [{case.regime}] check {f.check}\n"
                            f"{(again[0] if again else f).detail}\n{small.graph}\n"
                            f"{describe_inputs(small.graph, small.inputs)}")
    assert not failures, "\n\n".join(failures)


# -- the generator -----------------------------------------------------------------------------

def test_cases_are_deterministic_per_seed():
    for seed in (0, 17, 123456789):
        a, b = generate_case(seed), generate_case(seed)
        assert str(a.graph) == str(b.graph) and a.hints == b.hints and a.regime == b.regime
        for x, y in zip(a.inputs, b.inputs):
            assert x.dtype == y.dtype and x.tobytes() == y.tobytes()
    assert str(generate_case(1).graph) != str(generate_case(2).graph)
    assert GENERATOR_VERSION >= 1


def _survey(n: int) -> dict[str, set]:
    seen: dict[str, set] = {"ops": set(), "specials": set(), "dims": set(), "oob": set(),
                            "regimes": set()}
    for seed in range(n):
        case = generate_case(seed)
        seen["regimes"].add(case.regime)
        seen["ops"] |= {nd.op for nd in case.graph.walk()}
        for i, (t, a) in enumerate(zip(case.graph.input_types, case.inputs)):
            seen["dims"] |= set(t.shape)
            if i in case.hints:
                h = case.hints[i]
                lo = -h.n if h.valid == "take" else 0
                ok = (a >= lo) & (a < h.n) | (a == h.ignore if h.ignore is not None else False)
                if (~ok).any():
                    seen["oob"].add(h.valid)
            elif a.dtype.kind == "f" and a.size:
                seen["specials"] |= {name for name, hit in [
                    ("nan", np.isnan(a).any()), ("inf", (a == np.inf).any()),
                    ("-inf", (a == -np.inf).any()), ("-0.0", (np.signbit(a) & (a == 0)).any()),
                    ("huge", (np.abs(a) >= 1e30).any()),
                    ("subnormal", ((a != 0) & (np.abs(a) < np.finfo(a.dtype).tiny)).any())]
                    if hit}
            elif a.dtype.kind == "i" and a.size:
                if (a == np.iinfo(a.dtype).min).any() or (a == np.iinfo(a.dtype).max).any():
                    seen["specials"].add("int extreme")
    return seen


def test_the_generator_reaches_every_op_and_awkward_value():
    """Across 2000 seeds (generation only): every op of the registry (but graph plumbing), all
    awkward values, empty and unit dims, out-of-range indices of every kind, every regime."""
    seen = _survey(2000)
    missing = {op for op in OPDEFS if op not in seen["ops"]} - {Op.INPUT, Op.FUSION}
    assert not missing, f"no generated program uses {sorted(o.value for o in missing)}"
    assert {"nan", "inf", "-inf", "-0.0", "huge", "subnormal", "int extreme"} <= seen["specials"]
    assert {0, 1} <= seen["dims"]
    assert {"take", "class", "label"} <= seen["oob"]
    assert seen["regimes"] == {"plain", "special", "smooth"}


def test_the_strategy_and_the_fuzzer_share_one_menu():
    import tests.ir.test_text as text_tests
    from tests.fuzz import generate

    assert text_tests.random_graphs is generate.random_graphs


# -- the oracle and the minimizer have teeth ------------------------------------------------------

def test_compare_rules():
    nan, inf = np.nan, np.inf
    want = np.array([1.0, nan, inf, -inf, 0.0, 1e30], np.float32)
    ok = np.array([1.00001, nan, inf, -inf, -0.0, 1.00001e30], np.float32)
    assert not bad_elements(ok, want, []).any()
    wrong = np.array([1.1, 0.0, -inf, inf, 1.0, inf], np.float32)
    assert bad_elements(wrong, want, []).all()
    # cancellation: the jittered reference shows the element is ill-conditioned
    assert not bad_elements(np.float32([1.0]), np.float32([0.0]), [np.float32([3.0])]).any()
    assert bad_elements(np.float32([1.0]), np.float32([0.0]), [np.float32([1e-6])]).any()
    # the overflow edge
    top = np.finfo(np.float32).max
    assert not bad_elements(np.float32([inf]), np.float32([top]), []).any()
    assert bad_elements(np.float32([inf]), np.float32([top / 4]), []).any()
    assert bad_elements(np.int32([1, 2]), np.int32([1, 3]), []).tolist() == [False, True]
    raised = Outcome(error="take: index 5 is out of range")
    assert compare(raised, raised, []) is None
    assert "expected" in compare(Outcome(values=[np.zeros(2)]), raised, [])
    assert "expected" in compare(Outcome(error="take: index 6 is out of range"), raised, [])
    shape = compare(Outcome(values=[np.zeros(2, np.float32)]),
                    Outcome(values=[np.zeros(2, np.float64)]), [])
    assert "float64" in shape


def _tanh_case(dtype=DType.F32, regime="plain") -> Case:
    b = Builder("planted")
    x = b.input(TensorType((2, 3), dtype), "x")
    g = b.build([prims.tanh(x) * 2.0])
    rng = np.random.default_rng(0)
    return Case(0, g, [rng.uniform(-2, 2, (2, 3)).astype(dtype.np)], {}, regime)


def test_a_wrong_reference_is_caught_and_minimized(monkeypatch):
    """A planted bug (tanh's reference off by 1e-3): every backend check fails, and the
    minimizer cuts the program down to the tanh."""
    d = OPDEFS[Op.TANH]
    monkeypatch.setitem(OPDEFS, Op.TANH, dataclasses.replace(
        d, ref=lambda xs, a: (np.tanh(xs[0]) * 1.001).astype(xs[0].dtype)))
    case = _tanh_case()
    (f,) = check_case(case).failures
    assert f.check == "llvm[unfused]" and "differs" in f.detail
    small = minimize(case, f.check, f.detail, budget_s=20)
    assert [n.op for n in small.graph.nodes] == [Op.TANH]


def test_a_wrong_vjp_is_caught_by_finite_differences(monkeypatch):
    d = OPDEFS[Op.TANH]
    monkeypatch.setitem(OPDEFS, Op.TANH, dataclasses.replace(
        d, vjp=lambda xs, outs, cts, a: [cts[0] * (1.0 - outs[0] * outs[0]) * 1.01]))
    (f,) = check_case(_tanh_case(DType.F64, "smooth"), fuses=(True,)).failures
    assert f.check == "grad-fd" and "finite differences" in f.detail


def test_an_index_error_must_be_raised_on_both():
    b = Builder("take")
    x = b.input(TensorType((3,), DType.F32), "x")
    i = b.input(TensorType((2,), DType.I64), "i")
    g = b.build([prims.take(x, i)])
    args = [np.ones(3, np.float32), np.array([0, 3])]
    report = check_case(Case(0, g, args, {1: IndexHint(3)}, "plain"))
    assert report.raised and report.compiled and not report.failures


MAX32 = float(np.finfo(np.float32).max)


@pytest.mark.parametrize("a, w", [([[1e-30, 3e38]], [[np.inf], [-2.0]]),
                                  ([[-2.98e38, np.inf, np.inf]], [[3.07], [np.inf], [4.43]]),
                                  ([[MAX32, MAX32, 1.0]], [[1.0], [1.0], [-np.inf]])])
def test_an_fma_overflow_edge_is_not_a_failure(a, w):
    """A product that overflows when rounded alone (3e38 * -2 in f32) does not overflow inside
    an fma that adds it to inf, but does in one onto a zero accumulator; partial sums of huge
    finite terms overflow in one order and not in another (MAX + MAX - inf): by the order of
    the accumulation the dot product is NaN (-inf + inf) or an inf, and both are right."""
    b = Builder("edge")
    x = b.input(TensorType(np.shape(a), DType.F32), "a")
    y = b.input(TensorType(np.shape(w), DType.F32), "w")
    g = b.build([prims.matmul(x, y)])
    args = [np.array(a, np.float32), np.array(w, np.float32)]
    assert not check_case(Case(0, g, args, {}, "special")).failures
