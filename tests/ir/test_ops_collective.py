"""Collectives (issue 15) in one process: forward cases on every backend (a group of one is the
identity), shape rules and their errors, the text form, constant folding leaving them alone, and
their lowering across processes (host steps, the all-reduce start/wait pair and the overlap
stage) checked on Programs without launching any rank (tests/distributed launches two)."""
import numpy as np
import pytest

import nnjit
import nnjit.distributed as dist
from nnjit.codegen import lower_graph
from nnjit.codegen.collective import overlap_collectives
from nnjit.ir import Builder, DType, Op, ShapeError, TensorType, parse, verify
from nnjit.ir import prims as P
from nnjit.ir.kernel import HostKernel
from nnjit.ir.kernel_verify import verify_program
from nnjit.passes.fold import fold_constants
from tests.op_cases import COL, case_params, check_case

F32 = TensorType((4, 6), DType.F32)


@pytest.mark.parametrize("case,dtype", case_params(COL))
def test_forward(case, dtype, backend):
    check_case(case, case.make_inputs(np.random.default_rng(0), dtype), backend)


def test_single_process_is_a_group_of_one():
    assert (dist.rank(), dist.size()) == (0, 1)
    x = np.arange(6.0).reshape(2, 3)
    for f in (dist.psum, dist.pmean, dist.pmax, dist.all_gather, dist.psum_scatter,
              dist.broadcast):
        np.testing.assert_array_equal(f({"a": x})["a"], x)
    np.testing.assert_array_equal(dist.shard(x), x)


def _graph(fn, t=F32, n=2):
    b = Builder("f")
    x = b.input(t, "x")
    return b.build(list(fn(x, n)))


def test_shapes_and_text_round_trip():
    g = _graph(lambda x, n: [P.all_reduce(x, "mean", "batch", n),
                             P.all_gather(x, 1, "batch", n), P.reduce_scatter(x, 0, "batch", n),
                             P.broadcast(x, 1, "batch", n), P.axis_index(x.builder, "batch", n)])
    assert [v.shape for v in g.outputs] == [(4, 6), (4, 12), (2, 6), (4, 6), ()]
    assert g.outputs[4].dtype == DType.I32
    verify(g)
    assert parse(str(g)) == g
    assert 'all_reduce(%x) {reduce = "mean", axis_name = "batch", group_size = 2}' in str(g)


@pytest.mark.parametrize("fn,message", [
    (lambda x: P.all_reduce(x, "prod", "batch", 2), "reduce must be one of sum, mean, max"),
    (lambda x: P.all_reduce(P.cast(x, DType.I32), "mean", "batch", 2), "must be f32 or f64"),
    (lambda x: P.all_reduce(x, "sum", "batch", 0), "group_size must be >= 1"),
    (lambda x: P.all_reduce(x, "sum", "", 2), "axis_name must not be empty"),
    (lambda x: P.reduce_scatter(x, 0, "batch", 3), "not divisible by the group size 3"),
    (lambda x: P.all_gather(x, 2, "batch", 2), "axis 2 is out of range"),
    (lambda x: P.broadcast(x, 2, "batch", 2), "root 2 is not a rank of a group of 2"),
])
def test_shape_errors_name_the_problem(fn, message):
    b = Builder("f")
    x = b.input(F32, "x")
    with pytest.raises(ShapeError, match=message):
        fn(x)


def test_collectives_are_never_folded():
    """psum of a constant over two ranks is twice it: folding with the reference would lie."""
    b = Builder("f")
    x = b.input(F32, "x")
    c = P.all_reduce(b.const(np.ones((2,), np.float32)), "sum", "batch", 2)
    g = fold_constants(b.build([c, x]))
    assert any(n.op == Op.ALL_REDUCE for n in g.nodes)


def test_reference_refuses_more_than_one_process():
    b = Builder("f")
    x = b.input(F32, "x")
    g = b.build([P.all_reduce(x, "sum", "batch", 2)])
    with pytest.raises(nnjit.CompileError, match="runs through the process group"):
        nnjit.ir.evaluate(g, [np.ones((4, 6), np.float32)])


def _program(fn, n=2):
    """The placed Program of fn(x) (unfused graph) with the CPU overlap stage."""
    g = _graph(fn, n=n)
    return lower_graph(g, schedule=[("overlap_collectives", overlap_collectives)]).program


def test_group_of_one_lowers_to_no_host_step():
    p = _program(lambda x, n: [P.exp(P.all_reduce(P.exp(x), "sum", "batch", n))], n=1)
    assert not any(isinstance(k, HostKernel) for k in p.kernels)


def test_all_reduce_lowers_to_a_start_and_a_wait_moved_to_the_first_use():
    def fn(x, n):
        s = P.all_reduce(P.exp(x), "sum", "batch", n)    # its transfer ...
        t = P.tanh(x) * 3.0                               # ... overlaps these kernels
        u = P.sqrt(P.abs(t))
        return [s + u]
    p = _program(fn)
    verify_program(p)
    kinds = [k.op if isinstance(k, HostKernel) else k.name.split("_", 1)[1] for k in p.kernels]
    start, wait = kinds.index("all_reduce_start"), kinds.index("all_reduce_wait")
    assert wait > start + 1, kinds          # the wait moved past the independent kernels
    first_use = next(i for i, k in enumerate(p.kernels) if i > start
                     and p.kernels[start].dsts[0] in k.reads and not isinstance(k, HostKernel))
    assert wait == first_use - 1
    # The planner keeps the transfer's buffers apart and alive from start to wait.
    start_k = p.kernels[start]
    src, dst = p.buffer(start_k.srcs[0]), p.buffer(start_k.dsts[0])
    assert src.offset + src.nbytes <= dst.offset or dst.offset + dst.nbytes <= src.offset
    for k in p.kernels[start + 1:wait]:
        assert not set(k.writes) & {src.name, dst.name}
    assert "host all_reduce_start(axis_name=batch, group_size=2, reduce=sum, slot=0)" in str(p)


def test_other_collectives_are_one_host_step_each():
    p = _program(lambda x, n: [P.all_gather(x, 1, "batch", n), P.broadcast(x, 0, "batch", n),
                               P.reduce_scatter(x, 0, "batch", n),
                               P.axis_index(x.builder, "batch", n)])
    ops = [k.op for k in p.kernels if isinstance(k, HostKernel)]
    assert ops == ["all_gather", "broadcast", "reduce_scatter", "axis_index"]


def test_kernel_interpreter_refuses_host_steps():
    from nnjit.ir.kernel_eval import run_program

    p = _program(lambda x, n: [P.all_reduce(x, "sum", "batch", n)])
    with pytest.raises(nnjit.CompileError, match="runs in a backend's runtime"):
        run_program(p, [np.ones(24, np.float32)])
