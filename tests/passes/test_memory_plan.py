"""Memory planning: the checker on every kind of program, reuse bounds, in-place chains and
donation, and that none of it changes results (checked with the kernel-IR interpreter)."""
from __future__ import annotations

import numpy as np
import pytest

import nnjit
from nnjit import nn
from nnjit.codegen.lower import _Lowering
from nnjit.ir import CompileError, evaluate
from nnjit.ir.kernel_eval import run_program
from nnjit.passes.fusion import fuse
from nnjit.codegen.memory_plan import (BufferPlan, MemoryPlan, check_plan, inplace_pairs,
                                      plan_memory)

rng = np.random.default_rng(0)


def _mlp_step_graph(batch=4):
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(),
                          nn.Linear(8, 3))

    def step(p, x, y):
        loss, g = nnjit.value_and_grad(lambda p: nn.cross_entropy(model.apply(p, x), y))(p)
        return nnjit.tree_map(lambda a, b: a - 0.1 * b, p, g), loss

    args = (model.init(seed=0), rng.standard_normal((batch, 6)).astype(np.float32),
            rng.integers(0, 3, batch))
    flat = nnjit.tree_leaves(args)
    return nnjit.trace(step, *args), flat


GRAPHS = {
    "mlp_step": _mlp_step_graph,
    "chain": lambda: (nnjit.trace(lambda x: nnjit.exp(nnjit.tanh(x) * 2) + x, np.ones(64)),
                      [rng.standard_normal(64)]),
    "conv": lambda: (nnjit.trace(lambda x, w: nnjit.grad(
        lambda w: (nnjit.max_pool2d(nnjit.relu(nnjit.conv2d(x, w, padding=1)), 2) ** 2).sum())(w),
        np.ones((2, 2, 4, 4)), np.ones((3, 2, 3, 3))),
        [rng.standard_normal((2, 2, 4, 4)), rng.standard_normal((3, 2, 3, 3))]),
}


@pytest.mark.parametrize("name", list(GRAPHS))
@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("reuse", [False, True])
def test_plans_are_checked_and_results_unchanged(name, fused, reuse):
    g, args = GRAPHS[name]()
    g = fuse(g) if fused else g
    program = _Lowering(g, "p").run()
    planned, plan = plan_memory(program, reuse=reuse)
    check_plan(plan)
    assert plan.lower_bound_bytes <= plan.arena_bytes <= plan.no_reuse_bytes
    if not reuse:
        assert plan.arena_bytes == plan.no_reuse_bytes
    for got, want in zip(run_program(planned, args), evaluate(g, args)):
        np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-5, atol=1e-6)


def test_reuse_reaches_the_lower_bound_on_a_training_step():
    g, _ = _mlp_step_graph(batch=32)
    _, plan = plan_memory(_Lowering(g, "p").run(), reuse=True)
    assert plan.arena_bytes <= 1.15 * plan.lower_bound_bytes
    assert plan.arena_bytes <= plan.no_reuse_bytes / 2


def test_elementwise_chain_runs_in_place():
    g = nnjit.trace(lambda x: nnjit.exp(nnjit.tanh(x + 1.0) * 2.0), np.ones(1000))
    program = _Lowering(g, "p").run()
    _, plan = plan_memory(program, reuse=True)
    temps = [b for b in plan.buffers]
    assert len({b.offset for b in temps}) == 1       # one slot, handed from kernel to kernel
    assert all(inplace_pairs(k) for k in program.kernels[1:])


def test_checker_rejects_overlapping_live_buffers():
    bad = MemoryPlan((BufferPlan("a", 64, 0, 2, 0), BufferPlan("b", 64, 1, 3, 0)), 64, 128, 128,
                     4)
    with pytest.raises(CompileError, match="overlap"):
        check_plan(bad)
    with pytest.raises(CompileError, match="misaligned"):
        check_plan(MemoryPlan((BufferPlan("a", 64, 0, 0, 8),), 128, 64, 64, 1))


def test_donated_inputs_receive_their_updates_and_results_are_unchanged():
    g = nnjit.trace(lambda w, grad: (w - 0.1 * grad, (grad * grad).sum()), np.ones(16),
                    np.ones(16))
    program = _Lowering(g, "p").run()
    planned, plan = plan_memory(program, donate=(0,))
    assert plan.donated == (("out0", "in0"),)
    assert planned.buffer("out0").base == "in0"
    w, grad = rng.standard_normal(16), rng.standard_normal(16)
    for got, want in zip(run_program(planned, [w, grad]), evaluate(g, [w, grad])):
        np.testing.assert_allclose(got.reshape(want.shape), want)
    # an input read after the update must not be donated into
    g2 = nnjit.trace(lambda w: (w * 2.0, w.sum()), np.ones(16))
    assert plan_memory(_Lowering(g2, "p").run(), donate=(0,))[1].donated == ()


def test_donated_parameters_are_consumed_and_results_unchanged():
    """On the llvm backend a donated parameter's update is written into the caller's array,
    which is returned as the result (the caller is told by identity: `new is old`)."""
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))

    def step(p, x, y):
        loss, g = nnjit.value_and_grad(lambda p: nn.cross_entropy(model.apply(p, x), y))(p)
        return nnjit.tree_map(lambda a, b: a - 0.1 * b, p, g), loss

    params = model.init(seed=0)
    x = rng.standard_normal((4, 6)).astype(np.float32)
    y = rng.integers(0, 3, 4)
    want_params, want_loss = nnjit.jit(step, backend="interp")(params, x, y)
    donated = nnjit.tree_map(np.copy, params)
    f = nnjit.jit(step, backend="llvm", donate_argnums=(0,))
    got_params, got_loss = f(donated, x, y)
    assert f.lower(donated, x, y).memory_plan().donated   # something was donated
    consumed = [new is old for new, old in zip(nnjit.tree_leaves(got_params),
                                               nnjit.tree_leaves(donated))]
    assert any(consumed)
    for a, b in zip(nnjit.tree_leaves(got_params), nnjit.tree_leaves(want_params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)


def test_adam_state_is_donated_and_updated_in_place():
    """Several results of one kernel (Adam's m, v and the parameter) are each written over
    their donated input: the values are computed before any store."""
    from nnjit import optim

    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = optim.Adam(1e-2)

    def step(p, s, x, y):
        loss, g = nnjit.value_and_grad(lambda p: nn.cross_entropy(model.apply(p, x), y))(p)
        p, s = opt.update(p, g, s)
        return p, s, loss

    params = model.init(seed=0)
    state = opt.init(params)
    x = rng.standard_normal((4, 6)).astype(np.float32)
    y = rng.integers(0, 3, 4)
    want = nnjit.jit(step, backend="interp")(params, state, x, y)
    f = nnjit.jit(step, backend="llvm", donate_argnums=(0, 1))
    p0, s0 = nnjit.tree_map(np.copy, params), nnjit.tree_map(np.copy, state)
    plan = f.lower(p0, s0, x, y).memory_plan()
    assert len(plan.donated) >= 4
    got = f(p0, s0, x, y)
    for a, b in zip(nnjit.tree_leaves(got), nnjit.tree_leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# A result written into a donated buffer keeps its own shape: reshapes, reductions to scalars,
# size-1 dims and GEMM epilogues (issue 17's cases, found by differential testing).
DONATED_SHAPE_CASES = [
    (lambda x: (x * 2.0).reshape(6, 1), (1, 6)),
    (lambda x: (x * 2.0).sum(), (1,)),
    (lambda x: (x * 2.0).sum(), (1, 1, 1)),
    (lambda x: (x + 1.0).reshape(4, 4), (4, 1, 4)),
    (lambda x: (x - 1.0).reshape(3, 4, 10, 2), (1, 3, 4, 10, 2)),
    (lambda x: nnjit.exp(x).reshape(1, 1, 6), (6, 1, 1)),
    (lambda x: (x @ np.eye(4, dtype=np.float32) + 1.0).reshape(2, 8), (4, 4)),
    (lambda x: x.sum(), (0,)),                # an empty input has no bytes to write into
]


@pytest.mark.parametrize("native", ["llvm", "cuda"])   # not `backend`: cuda runs here too
@pytest.mark.parametrize("case", range(len(DONATED_SHAPE_CASES)))
def test_donated_results_have_their_own_shape(native, case):
    fn, shape = DONATED_SHAPE_CASES[case]
    x = rng.standard_normal(shape).astype(np.float32)
    want = nnjit.jit(fn, backend="interp")(x)
    donated = x.copy()
    got = nnjit.jit(fn, backend=native, donate_argnums=(0,))(donated)
    assert (got.shape, got.dtype) == (want.shape, want.dtype)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_donated_training_steps_match_undonated_ones():
    """Several SGD-momentum steps with params and optimizer state donated give the same
    params, state and losses, with the same shapes and dtypes, as the undonated step."""
    from nnjit import optim

    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    opt = optim.SGD(0.1, momentum=0.9)

    def step(p, s, x, y):
        loss, g = nnjit.value_and_grad(lambda p: nn.cross_entropy(model.apply(p, x), y))(p)
        p, s = opt.update(p, g, s)
        return p, s, loss

    x = rng.standard_normal((4, 1, 6, 6)).astype(np.float32)
    y = rng.integers(0, 3, 4)
    plain = nnjit.jit(step, backend="llvm")
    donating = nnjit.jit(step, backend="llvm", donate_argnums=(0, 1))
    p = model.init(seed=0)
    s = opt.init(p)
    a = (nnjit.tree_map(np.copy, p), nnjit.tree_map(np.copy, s))
    b = (nnjit.tree_map(np.copy, p), nnjit.tree_map(np.copy, s))
    for _ in range(3):
        *a, loss_a = plain(*a, x, y)
        *b, loss_b = donating(*b, x, y)
        for u, v in zip(nnjit.tree_leaves((a, loss_a)), nnjit.tree_leaves((b, loss_b))):
            assert (u.shape, u.dtype) == (v.shape, v.dtype)
            np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-7)
    assert donating.lower(*b, x, y).memory_plan().donated


def _plan_cases():
    model = nn.Sequential(nn.Embedding(10, 8), nn.Flatten(), nn.Linear(3 * 8, 4))
    p = model.init(seed=0)

    def step(p, i, y):
        return nnjit.value_and_grad(lambda p: nn.cross_entropy(model.apply(p, i), y))(p)

    def rnn(xs, h):
        return nnjit.scan(lambda h, x: (nnjit.tanh(h + x), h.sum()), h, xs)

    return {
        "gemm": (lambda x, w: nnjit.relu(x @ w), (np.ones((64, 96), np.float32),
                                                 np.ones((96, 80), np.float32))),
        # constant weights: llvm packs them at compile time (module constants, no arena)
        "constant gemm": (lambda x: nnjit.relu(x @ np.full((96, 80), 0.5, np.float32)),
                          (np.ones((64, 96), np.float32),)),
        "checked step": (step, (p, np.zeros((5, 3), np.int64), np.zeros(5, np.int64))),
        "scan": (rnn, (np.ones((4, 3), np.float32), np.zeros(3, np.float32))),
        "elementwise": (lambda x: x * 2.0 + 1.0, (np.ones(1000, np.float32),)),
    }


@pytest.mark.parametrize("native", ["llvm", "cuda"])
@pytest.mark.parametrize("name", list(_plan_cases()))
def test_the_memory_plan_counts_every_byte_the_executable_allocates(native, name):
    """The plan's total is exactly the arena the executable allocates (temporaries, GEMM
    workspace, status word, cuda's constants and staging), each extra named by purpose."""
    fn, args = _plan_cases()[name]
    cf = nnjit.jit(fn, backend=native).lower(*args)
    plan, exe = cf.memory_plan(), cf.executable
    allocated = exe._arena.nbytes if native == "llvm" else exe.arena.nbytes
    assert plan.total_bytes == allocated
    assert plan.total_bytes == plan.arena_bytes + sum(n for _, n in plan.extras)
    assert f"arena {plan.total_bytes} B allocated once" in plan.table()
    if name == "gemm" and native == "llvm":
        assert any("GEMM packing workspace" in purpose for purpose, _ in plan.extras)
    if name == "checked step":
        assert any("status word" in purpose for purpose, _ in plan.extras)
    assert plan.results_bytes == sum(np.asarray(r).nbytes for r in
                                     nnjit.tree_leaves(cf(*args)))


def test_a_donated_elementwise_kernel_sees_one_pointer():
    """The output written over a donated input and that input are one kernel argument, so the
    loop vectorizes without LLVM's run-time overlap check (which failed on the one array the
    runtime passes, and ran the scalar fallback: 4x slower)."""
    f = lambda x: nnjit.tanh(x * 1.5 + 0.25) * 0.5 + x  # noqa: E731
    x = np.linspace(-3, 3, 4096, dtype=np.float32)
    cf = nnjit.jit(f, backend="llvm", donate_argnums=(0,)).lower(x)
    kernel = [line for line in cf.llvm_ir().splitlines()
              if line.startswith("define internal") and "k0_fusion" in line]
    assert kernel and kernel[0].count("ptr") == 1, kernel
    want = nnjit.jit(f, backend="interp")(x)
    got = cf(y := x.copy())
    assert got is y or np.shares_memory(got, y)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_a_caller_passing_two_arrays_for_a_donated_pair_gets_the_right_answer():
    """Native callers (the exported C library) may pass a separate output array: the entry
    copies the input there first, and the input is left as it was."""
    f = lambda x: x * 2.0 + 1.0  # noqa: E731
    x = np.arange(8, dtype=np.float32)
    cf = nnjit.jit(f, backend="llvm", donate_argnums=(0,)).lower(x)
    assert cf.executable.donated
    out = np.full(8, -7.0, np.float32)
    cf.executable([x], [out])
    np.testing.assert_array_equal(out, x * 2.0 + 1.0)
    np.testing.assert_array_equal(x, np.arange(8))
