"""Lowering window ops (pooling and its gradients) and scatter-add to loop kernels.

Pooling is a row kernel over output pixels with a reduce loop over the taps (out-of-image taps
are masked: -inf for max, 0 for average); its input may be a fused elementwise producer and its
output may feed fused elementwise consumers. The gradients scatter into the input gradient one
image plane at a time (planes run in parallel, so no two threads touch the same element).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..ir import CompileError, DType, Node, Op, Value
from ..ir.kernel import Assign, Call, Const, KOp, Let, Load, LoopKind, Stmt, Store, Var
from ..ir.opdef import set_rule
from .index import c64, clamp, cmp, iadd, imul, in_range, isub, land, loop_vars, select
from .loops import GroupLowering, _nest, accumulate, make_loop_kernel, store_all, zero_plane


def _template(fn):
    """A window op's lowering hook: producers and consumers are computed inline."""
    def lower(lw, w: Node, others: list[Node], roots: Sequence[Value], name: str, src: str):
        return [make_loop_kernel(name, fn(lw, w, others, others, list(roots), name), src,
                                 lw.buffers)]
    return lower


def _lower_scatter_add(lw, n: Node) -> None:
    """scatter_add is opaque (a kernel of its own): zero the result, then add every update."""
    name = lw.kernel_name(n)
    src = f"{n.op.value} at {n.loc}" if n.loc else n.op.value
    body = _scatter_add(lw, n, [], [], list(n.outs), name)
    lw.kernels.append(make_loop_kernel(name, body, src, lw.buffers))


def _geometry(n: Node, x_shape):
    (kh, kw), (sh, sw) = n.attrs["kernel"], n.attrs["stride"]
    (pt, _), (pl, _) = n.attrs["padding"]
    padded = n.attrs["padding"] != ((0, 0), (0, 0))
    return kh, kw, sh, sw, pt, pl, padded


def _tap(x_shape, ho, wo, i, j, geo):
    """Input position of tap (i, j) of the window at output (ho, wo), clamped, and its mask.
    Without padding every tap is inside the image: no clamp, so loads stay affine."""
    kh, kw, sh, sw, pt, pl, padded = geo
    h = iadd(imul(ho, c64(sh)), isub(i, c64(pt)))
    w = iadd(imul(wo, c64(sw)), isub(j, c64(pl)))
    if not padded:
        return h, w, Const(True, DType.BOOL)
    valid = land(in_range(h, 0, x_shape[2]), in_range(w, 0, x_shape[3]))
    return clamp(h, 0, x_shape[2] - 1), clamp(w, 0, x_shape[3] - 1), valid


def _pool(lw, p: Node, prologue, epilogue, roots, name) -> list[Stmt]:
    x = p.srcs[0]
    dt = x.type.dtype
    geo = _geometry(p, x.shape)
    kh, kw = geo[0], geo[1]
    vn, vc, vh, vw = loop_vars("i", 4)
    ri, rj = loop_vars("r", 2)
    pro = GroupLowering(prologue, lw.views, name)
    h, w, valid = _tap(x.shape, vh, vw, ri, rj, geo)
    val = pro.value_at(x, [vn, vc, h, w])
    acc = Var("acc0", dt)
    is_max = p.op == Op.MAX_POOL2D
    if is_max:
        init = Const(-np.inf, dt)
        step = Call(KOp.MAX, (acc, select(valid, val, Const(-np.inf, dt))), dt)
    else:
        init = Const(0.0, dt)
        step = Call(KOp.ADD, (acc, select(valid, val, Const(0.0, dt))), dt)
    stmts: list[Stmt] = [Let(acc, init)]
    stmts += _nest([ri, rj], [kh, kw], [Assign(acc, step)], kind=LoopKind.REDUCE)
    result: Var | Call = acc
    if not is_max:
        if p.attrs["count_include_pad"]:
            count = Const(float(kh * kw), dt)
        else:
            cnt = Var("cnt0", DType.I64)
            stmts.append(Let(cnt, c64(0)))
            stmts += _nest([ri, rj], [kh, kw], [Assign(cnt, Call(KOp.ADD, (
                cnt, Call(KOp.CAST, (valid,), DType.I64)), DType.I64))], kind=LoopKind.REDUCE)
            count = Call(KOp.CAST, (cnt,), dt)
        res = Var("avg0", dt)
        stmts.append(Let(res, Call(KOp.DIV, (acc, count), dt)))
        result = res
    epi = GroupLowering(epilogue, lw.views, name, overrides={p.out: result})
    coords = [vn, vc, vh, vw]
    stores = []
    for r in roots:
        if r.shape != p.shape:
            raise CompileError(f"{name}: fused result {r.type} does not match the pool's "
                               f"{p.type}")
        dst = lw.home(r)
        stores.append(Store(dst.buf, dst.index(coords), epi.value_at(r, coords)))
    return _nest(coords, p.shape, stmts + store_all(stores), parallel=True)


def _only_root(p: Node, epilogue, roots, name) -> None:
    if list(roots) != [p.out]:
        raise CompileError(f"{name}: {p.op.value} takes no fused consumers")


def _max_pool_grad(lw, p: Node, prologue, epilogue, roots, name) -> list[Stmt]:
    """Per plane: zero dx, then for every window find its first maximum and add dy there."""
    _only_root(p, epilogue, roots, name)
    x, dy = p.srcs
    dt = x.type.dtype
    geo = _geometry(p, x.shape)
    kh, kw = geo[0], geo[1]
    dst = lw.home(p.out)
    pro = GroupLowering(prologue, lw.views, name)
    vn, vc = loop_vars("i", 2)
    vh, vw = loop_vars("o", 2)
    ri, rj = loop_vars("r", 2)
    h, w, valid = _tap(x.shape, vh, vw, ri, rj, geo)
    val = pro.value_at(x, [vn, vc, h, w])
    best, bi, bj, take = Var("best", dt), Var("bi"), Var("bj"), Var("take", DType.BOOL)
    found = Var("found", DType.BOOL)
    isnan = Call(KOp.ISNAN, (val,), DType.BOOL)
    best_nan = Call(KOp.ISNAN, (best,), DType.BOOL)
    # The first in-image tap starts the search, so padding never receives dy (as in torch).
    better = Call(KOp.OR, (Call(KOp.NOT, (found,), DType.BOOL), Call(KOp.OR, (
        Call(KOp.GT, (val, best), DType.BOOL),
        Call(KOp.AND, (isnan, Call(KOp.NOT, (best_nan,), DType.BOOL)), DType.BOOL)),
        DType.BOOL)), DType.BOOL)
    search = _nest([ri, rj], [kh, kw], [Let(take, Call(KOp.AND, (valid, better), DType.BOOL)),
                                       Assign(best, select(take, val, best)),
                                       Assign(bi, select(take, ri, bi)),
                                       Assign(bj, select(take, rj, bj)),
                                       Assign(found, Call(KOp.OR, (found, valid), DType.BOOL))])
    g = pro.value_at(dy, [vn, vc, vh, vw])
    window = [Let(best, Const(-np.inf, dt)), Let(bi, c64(0)), Let(bj, c64(0)),
              Let(found, Const(False, DType.BOOL))] + search
    sh, sw, padded = geo[2], geo[3], geo[6]
    zero = zero_plane(dst, x.shape, vn, vc, dt)
    if not padded and sh >= kh and sw >= kw:
        # Windows that do not overlap own their pixels: each stores dy at its maximum and 0 at
        # its other taps (independent stores, where adding into dx chained every window's
        # read-modify-write to the last). Only pixels no window covers need zeroing first.
        h, w, _ = _tap(x.shape, vh, vw, ri, rj, geo)
        hit = land(cmp(KOp.EQ, bi, ri), cmp(KOp.EQ, bj, rj))
        window += _nest([ri, rj], [kh, kw], [Store(dst.buf, dst.index([vn, vc, h, w]),
                                                   select(hit, g, Const(0.0, dt)))])
        (ho, wo), (xh, xw) = dy.shape[2:], x.shape[2:]
        if (sh, sw) == (kh, kw) and (xh, xw) == (ho * kh, wo * kw):
            zero = []
    else:
        th, tw, _ = _tap(x.shape, vh, vw, bi, bj, geo)
        window.append(accumulate(dst, [vn, vc, th, tw], g, dt))
    per_plane = zero + _nest([vh, vw], dy.shape[2:], window)
    return _nest([vn, vc], x.shape[:2], per_plane, parallel=True)


def _avg_pool_grad(lw, p: Node, prologue, epilogue, roots, name) -> list[Stmt]:
    """Per plane: zero dx, then spread each dy / count over its window's in-image taps."""
    _only_root(p, epilogue, roots, name)
    (dy,) = p.srcs
    shape = p.type.shape
    dt = dy.type.dtype
    geo = _geometry(p, shape)
    kh, kw = geo[0], geo[1]
    dst = lw.home(p.out)
    pro = GroupLowering(prologue, lw.views, name)
    vn, vc = loop_vars("i", 2)
    vh, vw = loop_vars("o", 2)
    ri, rj = loop_vars("r", 2)
    g = pro.value_at(dy, [vn, vc, vh, vw])
    window: list[Stmt] = []
    if p.attrs["count_include_pad"]:
        share: Var | Call = Call(KOp.DIV, (g, Const(float(kh * kw), dt)), dt)
    else:
        cnt = Var("cnt", DType.I64)
        _, _, valid = _tap(shape, vh, vw, ri, rj, geo)
        window += [Let(cnt, c64(0))] + _nest([ri, rj], [kh, kw], [Assign(cnt, Call(
            KOp.ADD, (cnt, Call(KOp.CAST, (valid,), DType.I64)), DType.I64))])
        share = Call(KOp.DIV, (g, Call(KOp.CAST, (cnt,), dt)), dt)
    sv = Var("share", dt)
    window.append(Let(sv, share))
    h, w, valid = _tap(shape, vh, vw, ri, rj, geo)
    window += _nest([ri, rj], [kh, kw], [accumulate(dst, [vn, vc, h, w],
                                                     select(valid, sv, Const(0.0, dt)), dt)])
    per_plane = zero_plane(dst, shape, vn, vc, dt) + _nest([vh, vw], dy.shape[2:], window)
    return _nest([vn, vc], shape[:2], per_plane, parallel=True)


def _scatter_add(lw, s: Node, prologue, epilogue, roots, name) -> list[Stmt]:
    """Zero the output, then add every update at its (wrapped, clamped) index, serially: two
    updates may hit the same row."""
    _only_root(s, epilogue, roots, name)
    ind, upd = s.srcs
    shape, ax = s.attrs["shape"], s.attrs["axis"]
    dt = upd.type.dtype
    dst = lw.home(s.out)
    pro = GroupLowering(prologue, lw.views, name)
    zs = loop_vars("z", len(shape))
    zero = _nest(zs, shape, [Store(dst.buf, dst.index(zs), Const(0 if not dt.is_float else 0.0,
                                                                 dt))], parallel=True)
    us = loop_vars("u", upd.type.ndim)
    k = ind.type.ndim
    i = pro.value_at(ind, us[ax:ax + k])
    if ind.type.dtype != DType.I64:
        i = Call(KOp.CAST, (i,), DType.I64)
    size = shape[ax]
    i = clamp(select(cmp(KOp.LT, i, c64(0)), iadd(i, c64(size)), i), 0, max(size - 1, 0))
    coords = list(us[:ax]) + [i] + list(us[ax + k:])
    add = accumulate(dst, coords, pro.value_at(upd, us), dt)
    return zero + _nest(us, upd.shape, [add])


for _op, _fn in {Op.MAX_POOL2D: _pool, Op.AVG_POOL2D: _pool, Op.MAX_POOL2D_GRAD: _max_pool_grad,
                 Op.AVG_POOL2D_GRAD: _avg_pool_grad}.items():
    set_rule(_op, lower=_template(_fn))
set_rule(Op.SCATTER_ADD, lower=_lower_scatter_add)


# -- movement/indexing ops (issue 12) --

def _lower_scatter(lw, n: Node) -> None:
    """scatter is opaque: copy the operand, then combine the updates in, one after another
    (a later duplicate must see an earlier one's write: `set` keeps the last)."""
    (x, ind, upd), dst = n.srcs, lw.home(n.out)
    ax, mode = n.attrs["axis"], n.attrs["mode"]
    dt = upd.type.dtype
    name = lw.kernel_name(n)
    pro = GroupLowering([], lw.views, name)
    zs = loop_vars("z", x.type.ndim)
    copy = _nest(zs, x.shape, [Store(dst.buf, dst.index(zs), pro.value_at(x, zs))],
                 parallel=True)
    us = loop_vars("u", upd.type.ndim)
    k = ind.type.ndim
    i = pro.value_at(ind, us[ax:ax + k])
    if ind.type.dtype != DType.I64:
        i = Call(KOp.CAST, (i,), DType.I64)
    size = x.shape[ax]
    i = clamp(select(cmp(KOp.LT, i, c64(0)), iadd(i, c64(size)), i), 0, max(size - 1, 0))
    at = dst.index(list(us[:ax]) + [i] + list(us[ax + k:]))
    value = pro.value_at(upd, us)
    if mode != "set":
        combine = {"min": KOp.MIN, "max": KOp.MAX, "multiply": KOp.MUL}[mode]
        value = Call(combine, (Load(dst.buf, at, dt), value), dt)
    body = copy + _nest(us, upd.shape, [Store(dst.buf, at, value)])
    src = f"{n.op.value} at {n.loc}" if n.loc else n.op.value
    lw.kernels.append(make_loop_kernel(name, body, src, lw.buffers))


set_rule(Op.SCATTER, lower=_lower_scatter)
