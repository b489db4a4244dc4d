"""Lowering contractions to GEMM kernels: matmul directly over strided operand views; conv2d
and its gradients as im2col / col2im loop kernels around the same GEMM. A grouped convolution
(groups > 1) batches that GEMM over (image, group): each group's weight block multiplies its
own block of im2col rows, so groups == 1 emits exactly the ungrouped kernels. Groups of a few
channels (depthwise) are summed directly by one loop kernel per op instead.

A group may hold one contraction, view-only producers of its operands (transpose, reshape,
broadcast, slice: folded into the GEMM's strides) and elementwise consumers, which become the
GEMM's epilogue (bias add, activation, residual add), applied while each C block is hot.
"""
from __future__ import annotations

from typing import Sequence

from ..ir import CompileError, DType, Node, Op, TensorType, Value
from ..ir.groups import VIEW
from ..ir.kernel import (
    Assign,
    Call,
    Const,
    GemmKernel,
    KOp,
    Let,
    Load,
    LoopKind,
    MatView,
    Stmt,
    Store,
    Var,
)
from ..ir.opdef import set_rule
from .analysis import accesses
from .index import (
    View,
    c64,
    clamp,
    cmp,
    contiguous_strides,
    iadd,
    idiv,
    imod,
    imul,
    in_range,
    isub,
    land,
    loop_vars,
    reshape_coords,
    select,
)
from .loops import GroupLowering, _nest, accumulate, make_loop_kernel, store_all, zero_plane


def _template(fn):
    """A contraction's lowering hook: operand producers (prologue) and consumers (epilogue) are
    computed inline where needed; both see every other member, since an epilogue may use a
    value computed before the contraction."""
    def lower(lw, c: Node, others: list[Node], roots: Sequence[Value], name: str, src: str):
        return fn(lw, c, others, others, list(roots), name, src)
    return lower


# -- operand views --------------------------------------------------------------------------------

def operand_view(lw, v: Value, prologue: list[Node], name: str) -> tuple[View, list]:
    """A strided view of operand `v`, looking through view-only producers in the group; values
    that cannot be viewed are first written contiguously to a temporary by a loop kernel."""
    view = _view_through(lw, v, set(prologue))
    if view is not None:
        return view, []
    t = lw.temp(v.type)
    glow = GroupLowering(prologue, lw.views, name)
    body = glow.map_loops(v.shape, [(v, t)], prefix="p")
    return t, [make_loop_kernel(f"{name}_operand", body, "operand layout", lw.buffers)]


def _view_through(lw, v: Value, group: set) -> View | None:
    if v in lw.views:
        return lw.views[v]
    n = v.node
    if n not in group or n.op not in VIEW:
        return None
    base = _view_through(lw, n.srcs[0], group)
    if base is None:
        return None
    a = n.attrs
    if n.op == Op.TRANSPOSE:
        return base.transpose(a["perm"])
    if n.op == Op.BROADCAST_TO:
        return base.broadcast_to(a["shape"])
    if n.op == Op.SLICE:
        return base.slice(a["starts"], a["steps"], n.type.shape)
    return base.reshape(n.type.shape)


def mat_view(view: View, batch: tuple[int, ...]) -> MatView:
    """The MatView of a (broadcast) batched matrix view for output batch dims `batch`."""
    v = view.broadcast_to(batch + view.shape[-2:]) if view.shape[:-2] != batch else view
    return MatView(v.buf, v.offset, v.strides[:-2], v.strides[-2], v.strides[-1])


# -- epilogues ---------------------------------------------------------------------------------

def _epilogue(lw, c: Node, epilogue: list[Node], roots: list[Value], name: str,
              coords_of, nb: int | None = None) -> tuple[list[Stmt], View | None]:
    """Statements storing every root given the accumulator, and the C buffer to use.

    `coords_of(b_vars, row, col)` maps the GEMM position to coordinates of the contraction's
    output. Without consumers, C is the contraction's own home and no epilogue is needed."""
    out = c.out
    if roots == [out]:
        return [], lw.home(out)
    acc = Var("acc", out.type.dtype)
    glow = GroupLowering(epilogue, lw.views, name, overrides={out: acc})
    if nb is None:
        nb = out.type.ndim - 2 if c.op == Op.MATMUL else 1
    bvars = [Var(f"b{k}") for k in range(nb)]
    coords = coords_of(bvars, Var("row"), Var("col"))
    stmts: list[Stmt] = []
    c_home = None
    for r in roots:
        if r.type.size != out.type.size or r.shape != out.shape and c.op != Op.MATMUL:
            raise CompileError(f"{name}: epilogue result {r.type} does not match the "
                               f"contraction's {out.type}")
        dst = lw.home(r)
        at = coords if r.shape == out.shape else reshape_coords(coords, out.shape, r.shape)
        # The first same-typed temporary result doubles as C (read, then overwritten). A
        # graph result does not: it may be written in place over a donated input (an
        # optimizer update w - lr * grad) that the epilogue still has to read.
        as_c = dst if r.shape == out.shape else _as_shape(dst, out.shape)
        if c_home is None and r.type.dtype == out.type.dtype and dst.buf not in lw.outputs \
                and as_c is not None:
            c_home = as_c
        # Stored through C's shape where the layout allows: row * n + col, no division.
        where = as_c.index(coords) if as_c is not None else dst.index(at)
        stmts.append(Store(dst.buf, where, glow.value_at(r, at)))
    if c_home is None:
        c_home = lw.temp(out.type, "acc")
    return store_all(stmts), c_home


def _as_shape(view: View, shape) -> View | None:
    """`view` reshaped, in canonical strides when it is contiguous (size-1 dims' strides are
    arbitrary in a reshaped view, and C's contiguity is checked stride by stride)."""
    if view.strides == contiguous_strides(view.shape):
        return View.contiguous(view.buf, shape, view.offset)
    return view.reshape(shape)


def _gemm(lw, c: Node, name, src, batch, m, n, k, a: MatView, b: MatView, c_view: View,
          epi: list[Stmt], accumulate_batches=False) -> GemmKernel:
    cmat = _c_matview(c_view, batch, m, n, c.op)
    epi_reads, epi_writes, _ = accesses(epi)
    reads = tuple(dict.fromkeys((a.buf, b.buf) + epi_reads))
    writes = tuple(dict.fromkeys((cmat.buf,) + epi_writes))
    return GemmKernel(name, c.type.dtype, batch, m, n, k, a, b, cmat, accumulate_batches,
                      tuple(epi), reads, writes, src)


def _c_matview(view: View, batch, m, n, op) -> MatView:
    """C as [batch..., m, n] row-major over the home of the result (NCHW for convolutions)."""
    per = m * n
    strides, acc = [], per
    for d in reversed(batch):
        strides.append(acc)
        acc *= d
    return MatView(view.buf, view.offset, tuple(reversed(strides)), n, 1)


# -- matmul --------------------------------------------------------------------------------------

def _matmul(lw, c: Node, prologue, epilogue, roots, name, src) -> list:
    a, b = c.srcs
    out = c.type
    batch = out.shape[:-2]
    m, n = out.shape[-2:]
    k = a.shape[-1]
    kernels: list = []
    av, ka = operand_view(lw, a, prologue, name)
    bv, kb = operand_view(lw, b, prologue, name)
    kernels += ka + kb

    def coords_of(bvars, row, col):
        return list(bvars) + [row, col]

    epi, c_home = _epilogue(lw, c, epilogue, roots, name, coords_of)
    if c_home.strides != View.contiguous("x", out.shape).strides and out.size > 1:
        raise CompileError(f"{name}: matmul result must be contiguous")
    kernels.append(_gemm(lw, c, name, src, batch, m, n, k, mat_view(av, batch),
                         mat_view(bv, batch), c_home, epi))
    return kernels


# -- convolutions (im2col + GEMM) ----------------------------------------------------------------

def _conv_geometry(x_shape, w_shape, y_shape, attrs):
    n, ch, h, w = x_shape
    o, _, kh, kw = w_shape
    ho, wo = y_shape[2:]
    return n, ch, h, w, o, kh, kw, ho, wo


def _input_pixel(vh, vw, rkh, rkw, attrs):
    """The input pixel (unpadded coordinates, possibly outside the image) that output pixel
    (vh, vw) reads at kernel offset (rkh, rkw): the inverse of `_output_pixel`."""
    (sh, sw), (dh, dw) = attrs["stride"], attrs["dilation"]
    (pt, _), (pl, _) = attrs["padding"]
    return (iadd(imul(vh, c64(sh)), isub(imul(rkh, c64(dh)), c64(pt))),
            iadd(imul(vw, c64(sw)), isub(imul(rkw, c64(dw)), c64(pl))))


def _im2col(lw, x: Value, w_shape, y_shape, attrs, prologue, name, images_inner=False
            ) -> tuple[View, object]:
    """col[n, (c, kh, kw), (ho, wo)] = x[n, c, ho*s - p + kh*d, wo*s - p + kw*d] (0 outside).
    `images_inner`: laid out as col[(c, kh, kw), (n, ho, wo)] instead, so that one group's rows
    are a matrix whose columns run over every image (the grouped weight gradient's GEMM)."""
    n, ch, h, w, o, kh, kw, ho, wo = _conv_geometry(x.shape, w_shape, y_shape, attrs)
    shape = (ch * kh * kw, n * ho * wo) if images_inner else (n, ch * kh * kw, ho * wo)
    col = lw.temp(TensorType(shape, x.type.dtype), "col")
    glow = GroupLowering(prologue, lw.views, name)
    vn, vc, vkh, vkw, vho, vwo = loop_vars("i", 6)
    if images_inner:
        # One loop over the (c, kh, kw) rows, outermost and parallel (LeNet's first conv has
        # one channel: a loop over channels would leave nothing to split).
        vrow = vc
        vc, vkh, vkw = idiv(vrow, kh * kw), imod(idiv(vrow, kw), kh), imod(vrow, kw)
    hh, ww = _input_pixel(vho, vwo, vkh, vkw, attrs)
    row = vrow if images_inner else iadd(imul(iadd(imul(vc, c64(kh)), vkh), c64(kw)), vkw)
    pix = iadd(imul(vho, c64(wo)), vwo)
    idx = [row, iadd(imul(vn, c64(ho * wo)), pix)] if images_inner else [vn, row, pix]
    body = [Store(col.buf, col.index(idx), _tap_value(glow, x, vn, vc, hh, ww, h, w,
                                                     attrs["padding"], x.type.dtype))]
    loops = [vrow, vn, vho, vwo] if images_inner else [vn, vc, vkh, vkw, vho, vwo]
    extents = [ch * kh * kw, n, ho, wo] if images_inner else [n, ch, kh, kw, ho, wo]
    stmts = _nest(loops, extents, body, parallel=True)   # stores in row-major loop order
    return col, make_loop_kernel(f"{name}_im2col", stmts, "im2col", lw.buffers)


def _grouping(n: int, c: Node) -> tuple[int, tuple[int, ...]]:
    """(groups, GEMM batch): (n,) for an ungrouped convolution, (n, groups) otherwise."""
    g = c.attrs.get("groups", 1)
    return g, ((n,) if g == 1 else (n, g))


def _per_group(stride_image: int, stride_group: int, batch) -> tuple[int, ...]:
    """MatView batch strides over (image[, group])."""
    return (stride_image,) if len(batch) == 1 else (stride_image, stride_group)


def _conv2d(lw, c: Node, prologue, epilogue, roots, name, src) -> list:
    x, w = c.srcs
    n, ch, h, wd, o, kh, kw, ho, wo = _conv_geometry(x.shape, w.shape, c.type.shape, c.attrs)
    g, batch = _grouping(n, c)
    cg, og = ch // g, o // g        # channels of one group, in and out
    if _direct(c, ch, o):
        return _direct_conv2d(lw, c, epilogue, roots, name, src)
    wv, kws = operand_view(lw, w, [], name)
    kernels = list(kws)
    pointwise = (kh == kw == 1 and tuple(c.attrs["stride"]) == (1, 1)
                 and c.attrs["padding"] == ((0, 0), (0, 0)) and x in lw.views)
    direct_input = pointwise and lw.views[x].strides == View.contiguous("x", x.shape).strides
    if not direct_input and _fold_images(c, n, o, ho * wo, ch * kh * kw, epilogue, roots):
        return kernels + _images_folded_conv2d(lw, c, wv, prologue, epilogue, roots, name, src)
    if direct_input:
        xv = lw.views[x]   # a 1x1 convolution reads the input itself as the GEMM's B
        bmat = MatView(xv.buf, xv.offset, _per_group(ch * h * wd, cg * h * wd, batch), h * wd, 1)
    else:
        col, k_col = _im2col(lw, x, w.shape, c.type.shape, c.attrs, prologue, name)
        kernels.append(k_col)
        bmat = MatView(col.buf, 0, _per_group(ch * kh * kw * ho * wo, cg * kh * kw * ho * wo,
                                              batch), ho * wo, 1)
    amat = MatView(wv.buf, wv.offset, _per_group(0, og * cg * kh * kw, batch), cg * kh * kw, 1)
    epi, c_home = _epilogue(lw, c, epilogue, roots, name, _conv_coords(n, o, ho, wo, og),
                            nb=len(batch))
    kernels.append(_gemm(lw, c, name, src, batch, og, ho * wo, cg * kh * kw, amat, bmat, c_home,
                         epi))
    return kernels


# Per-image GEMMs (O x CKK @ CKK x HoWo) below this many multiply-adds are folded into one
# GEMM over every image. LeNet-5's are 6 x 25 @ 25 x 784 and 16 x 150 @ 150 x 100: each below
# the GEMM's threading threshold, so the batch of 64 ran one small GEMM after another on one
# thread, each re-packing its operands; as one 6 x 25 @ 25 x 50176 GEMM they take a fraction
# of that, on every thread, and one pass puts the result in NCHW order.
FOLD_IMAGES_MAX_WORK = 1 << 20


def _fold_images(c: Node, n: int, o: int, npix: int, ckk: int, epilogue, roots) -> bool:
    return (c.attrs.get("groups", 1) == 1 and n > 1 and o * npix * ckk < FOLD_IMAGES_MAX_WORK
            and all(r.shape == c.out.shape for r in roots))


def _images_folded_conv2d(lw, c: Node, wv: View, prologue, epilogue, roots, name, src) -> list:
    """One GEMM for every image: C[o, (n, ho, wo)] = W[o, (c, kh, kw)] @ col[(c, kh, kw),
    (n, ho, wo)], then one loop kernel reads C in NCHW order and stores every root (the
    fused consumers computed there, vectorized along wo)."""
    x, w = c.srcs
    n, ch, h, wd, o, kh, kw, ho, wo = _conv_geometry(x.shape, w.shape, c.type.shape, c.attrs)
    npix, ckk = ho * wo, ch * kh * kw
    col, k_col = _im2col(lw, x, w.shape, c.type.shape, c.attrs, prologue, name,
                         images_inner=True)
    ct = lw.temp(TensorType((o, n * npix), c.type.dtype), "convt")
    amat = MatView(wv.buf, wv.offset, (), ckk, 1)
    bmat = MatView(col.buf, 0, (), n * npix, 1)
    cmat = MatView(ct.buf, 0, (), n * npix, 1)
    gemm = GemmKernel(name, c.type.dtype, (), o, n * npix, ckk, amat, bmat, cmat, False, (),
                      (amat.buf, bmat.buf), (ct.buf,), src)
    nchw = View(ct.buf, c.type.shape, (npix, n * npix, wo, 1))
    glow = GroupLowering(epilogue, {**lw.views, c.out: nchw}, name)
    stores = [(r, lw.home(r)) for r in roots if r.type.size > 0]
    body = glow.map_loops(c.type.shape, stores)
    return [k_col, gemm, make_loop_kernel(f"{name}_nchw", body, src, lw.buffers)]


def _conv_coords(n, o, ho, wo, og=None):
    """Output coordinates of GEMM position (image[, group], row, col); row is the out-channel
    within the group when grouped."""
    def coords_of(bvars, row, col):
        ch = row if len(bvars) == 1 else iadd(imul(bvars[1], c64(og)), row)
        return reshape_coords([bvars[0], ch, col], (n, o, ho * wo), (n, o, ho, wo))
    return coords_of


def _conv2d_grad_weight(lw, c: Node, prologue, epilogue, roots, name, src) -> list:
    """dW[o, (c,kh,kw)] = sum_n dy[n, o, :] @ col[n, (c,kh,kw), :]^T."""
    x, dy = c.srcs
    n, ch, h, wd, o, kh, kw, ho, wo = _conv_geometry(x.shape, c.type.shape, dy.shape, c.attrs)
    if roots != [c.out]:
        raise CompileError(f"{name}: conv2d_grad_weight takes no fused epilogue")
    if _direct(c, ch, o):
        return _direct_conv2d_grad_weight(lw, c, prologue, name, src)
    if c.attrs.get("groups", 1) > 1:
        return _grouped_grad_weight(lw, c, prologue, name, src)
    col, k_col = _im2col(lw, x, c.type.shape, dy.shape, c.attrs, prologue, name)
    dyv, kd = _rows(lw, dy, (n, o, ho * wo), prologue, name)
    amat = mat_view(dyv, (n,))
    bmat = MatView(col.buf, 0, (ch * kh * kw * ho * wo,), 1, ho * wo)
    home = lw.home(c.out)
    cm = MatView(home.buf, home.offset, (0,), ch * kh * kw, 1)  # every image adds into dW
    gemm = GemmKernel(name, c.type.dtype, (n,), o, ch * kh * kw, ho * wo, amat, bmat, cm, True,
                      (), (amat.buf, bmat.buf), (home.buf,), src)
    return [k_col] + kd + [gemm]


def _grouped_grad_weight(lw, c: Node, prologue, name, src) -> list:
    """dW[g] = dyT[g] @ colT[g]^T with images folded into k: dyT[o, (n, ho, wo)] and
    colT[(c, kh, kw), (n, ho, wo)], so one GEMM batched over groups sums over every image
    (a GEMM's `accumulate_batches` would sum over the groups too)."""
    x, dy = c.srcs
    n, ch, h, wd, o, kh, kw, ho, wo = _conv_geometry(x.shape, c.type.shape, dy.shape, c.attrs)
    g = c.attrs["groups"]
    cg, og, npix = ch // g, o // g, n * ho * wo
    col, k_col = _im2col(lw, x, c.type.shape, dy.shape, c.attrs, prologue, name,
                         images_inner=True)
    dyt = lw.temp(TensorType((o, npix), c.type.dtype), "dyt")
    glow = GroupLowering(prologue, lw.views, name)
    vo, vn, vh, vw = loop_vars("i", 4)
    flat = iadd(imul(iadd(imul(vn, c64(ho)), vh), c64(wo)), vw)
    body = [Store(dyt.buf, dyt.index([vo, flat]), glow.value_at(dy, [vn, vo, vh, vw]))]
    k_dyt = make_loop_kernel(f"{name}_dy_by_channel",
                             _nest([vo, vn, vh, vw], [o, n, ho, wo], body, parallel=True),
                             "dy by channel", lw.buffers)
    ckk = cg * kh * kw
    amat = MatView(dyt.buf, 0, (og * npix,), npix, 1)
    bmat = MatView(col.buf, 0, (ckk * npix,), 1, npix)
    home = lw.home(c.out)
    cm = MatView(home.buf, home.offset, (og * ckk,), ckk, 1)
    gemm = GemmKernel(name, c.type.dtype, (g,), og, ckk, npix, amat, bmat, cm, False,
                      (), (amat.buf, bmat.buf), (home.buf,), src)
    return [k_col, k_dyt, gemm]


def _tap_value(glow, x: Value, n, c, hh, ww, h: int, w: int, padding, dt):
    """x[n, c, hh, ww], or 0 where a tap falls into the padding. Without padding every tap is
    inside the image, so the load stays affine (and vectorizes) with no clamp or select."""
    if padding == ((0, 0), (0, 0)):
        return glow.value_at(x, [n, c, hh, ww])
    valid = land(in_range(hh, 0, h), in_range(ww, 0, w))
    val = glow.value_at(x, [n, c, clamp(hh, 0, h - 1), clamp(ww, 0, w - 1)])
    return select(valid, val, Const(0.0, dt))


def _rows(lw, v: Value, shape, prologue, name) -> tuple[View, list]:
    """Operand `v` viewed with `shape` (its NCHW data as [n, c, h*w]), copied when needed."""
    view, ks = operand_view(lw, v, prologue, name)
    r = view.reshape(shape)
    if r is None:
        view, more = operand_view(lw, v, [], name)
        ks += more
        r = view.reshape(shape)
    return r, ks


def _conv2d_grad_input(lw, c: Node, prologue, epilogue, roots, name, src) -> list:
    """colg[n] = W^T @ dy[n], then dx gathers colg over the taps that read each input pixel."""
    dy, w = c.srcs
    n, ch, h, wd, o, kh, kw, ho, wo = _conv_geometry(c.type.shape, w.shape, dy.shape, c.attrs)
    g, batch = _grouping(n, c)
    og = o // g
    if _direct(c, ch, o):
        return _direct_conv2d_grad_input(lw, c, epilogue, roots, name, src)
    dyv, kd = _rows(lw, dy, batch + (og, ho * wo), prologue, name)
    wv, kw_ = operand_view(lw, w, [], name)
    ckk = (ch // g) * kh * kw                                 # im2col rows of one group
    colg = lw.temp(TensorType((n, ch * kh * kw, ho * wo), c.type.dtype), "colg")
    amat = MatView(wv.buf, wv.offset, _per_group(0, og * ckk, batch), 1, ckk)  # W^T: (ckk, o)
    bmat = mat_view(dyv, batch)
    gemm = GemmKernel(f"{name}_gemm", c.type.dtype, batch, ckk, ho * wo, og, amat, bmat,
                      _c_matview(colg, batch, ckk, ho * wo, c.op), False, (),
                      (amat.buf, bmat.buf), (colg.buf,), src)
    kernels = kd + kw_ + [gemm]
    if list(roots) == [c.out] and not epilogue:
        stmts = _col2im_shifted(lw, c, colg)
        return kernels + [make_loop_kernel(f"{name}_col2im", stmts, src, lw.buffers)]
    # col2im as a gather: race-free and parallel over every input pixel, each summing its taps
    # (the fused consumers are computed from that sum).
    vn, vc, vh, vw = loop_vars("i", 4)
    rkh, rkw = loop_vars("r", 2)
    (sh, sw), (dh, dw) = c.attrs["stride"], c.attrs["dilation"]
    (pt, _), (pl, _) = c.attrs["padding"]
    acc = Var("acc0", c.type.dtype)
    valid, hi, wi = _output_pixel(vh, vw, rkh, rkw, (pt, pl), (sh, sw), (dh, dw), ho, wo)
    col_idx = colg.index([vn, iadd(imul(iadd(imul(vc, c64(kh)), rkh), c64(kw)), rkw),
                          iadd(imul(hi, c64(wo)), wi)])
    term = select(valid, Load(colg.buf, col_idx, c.type.dtype), Const(0.0, c.type.dtype))
    red = _nest([rkh, rkw], [kh, kw], [Assign(acc, Call(KOp.ADD, (acc, term), acc.dtype))],
                kind=LoopKind.REDUCE)
    glow = GroupLowering(epilogue, lw.views, name, overrides={c.out: acc})
    coords = [vn, vc, vh, vw]
    stores = []
    for r in roots:
        dst = lw.home(r)
        stores.append(Store(dst.buf, dst.index(coords), glow.value_at(r, coords)))
    body = [Let(acc, Const(0.0, acc.dtype))] + red + store_all(stores)
    stmts = _nest([vn, vc, vh, vw], [n, ch, h, wd], body, parallel=True)
    return kernels + [make_loop_kernel(f"{name}_col2im", stmts, src, lw.buffers)]


def _col2im_shifted(lw, c: Node, colg: View) -> list[Stmt]:
    """dx[n, ch] = 0, then for each tap (a, b) colg's row (ch, a, b) added, one output row at a
    time, to the input pixels that tap read: contiguous rows of adds (in L1, one plane per
    iteration of the parallel loop), where the gather loaded each pixel's taps from 25 rows
    apart. Each pixel still sums its taps in (a, b) order. Out-of-image taps (padding) add 0
    to a clamped pixel; split_loop_ranges leaves the interior without the test."""
    n, ch, h, wd, o, kh, kw, ho, wo = _conv_geometry(c.type.shape, c.srcs[1].shape,
                                                     c.srcs[0].shape, c.attrs)
    dt = c.type.dtype
    dst = lw.home(c.out)
    vn, vc = loop_vars("i", 2)
    rkh, rkw = loop_vars("r", 2)
    vh, vw = loop_vars("o", 2)
    hh, ww = _input_pixel(vh, vw, rkh, rkw, c.attrs)
    row = iadd(imul(iadd(imul(vc, c64(kh)), rkh), c64(kw)), rkw)
    val = Load(colg.buf, colg.index([vn, row, iadd(imul(vh, c64(wo)), vw)]), dt)
    if c.attrs["padding"] != ((0, 0), (0, 0)):
        val = select(land(in_range(hh, 0, h), in_range(ww, 0, wd)), val, Const(0.0, dt))
        hh, ww = clamp(hh, 0, h - 1), clamp(ww, 0, wd - 1)
    taps = _nest([rkh, rkw, vh, vw], [kh, kw, ho, wo], [accumulate(dst, [vn, vc, hh, ww], val,
                                                                   dt)])
    return _nest([vn, vc], [n, ch], zero_plane(dst, c.type.shape, vn, vc, dt) + taps,
                 parallel=True)


def _output_pixel(vh, vw, rkh, rkw, pad, stride, dilation, ho: int, wo: int):
    """The output pixel (hi, wi) that input pixel (vh, vw) meets at kernel offset (rkh, rkw) in
    a strided, dilated, padded window, and whether it exists (a gradient's gather: each input
    pixel sums over the outputs that read it). hi and wi are clamped, so loads stay in bounds."""
    (pt, pl), (sh, sw), (dh, dw) = pad, stride, dilation
    hn = isub(iadd(vh, c64(pt)), imul(rkh, c64(dh)))
    wn = isub(iadd(vw, c64(pl)), imul(rkw, c64(dw)))
    valid = land(land(in_range(hn, 0, sh * (ho - 1) + 1), _divisible(hn, sh)),
                 land(in_range(wn, 0, sw * (wo - 1) + 1), _divisible(wn, sw)))
    hi = clamp(idiv(clamp(hn, 0, sh * (ho - 1)), sh), 0, ho - 1)
    wi = clamp(idiv(clamp(wn, 0, sw * (wo - 1)), sw), 0, wo - 1)
    return valid, hi, wi


def _divisible(e, s: int):
    if s == 1:
        return Const(True, DType.BOOL)
    return cmp(KOp.EQ, imod(e, s), c64(0))


# -- direct convolutions (many small groups: depthwise) -------------------------------------------
# With one or a few channels per group, each group's GEMM is a sliver (a depthwise conv's is
# 1 x 9 x HW) and the im2col / col2im buffers, 9x the image, dominate: the output is then summed
# directly over its group's taps in one loop kernel per op, with no column buffer.

# out-channels x in-channels of one group, at most, for direct loops. Measured on a 3x3
# conv + relu fwd+bwd step, 32 images x 64 channels x 16x16 (llvm, 2 threads, best of 12):
# depthwise 5.8 ms direct vs 22.6 ms GEMM; 4x4 channels per group 25 vs 24 ms; 8x8 50 vs 20 ms.
DIRECT_MAX_GROUP = 16


def _direct(c: Node, ch: int, o: int) -> bool:
    g = c.attrs.get("groups", 1)
    return g > 1 and (ch // g) * (o // g) <= DIRECT_MAX_GROUP


def _fma(acc: Var, a, b) -> Assign:
    return Assign(acc, Call(KOp.ADD, (acc, Call(KOp.MUL, (a, b), acc.dtype)), acc.dtype))


def _store_roots(lw, glow, roots, coords) -> list[Stmt]:
    return store_all([Store(lw.home(r).buf, lw.home(r).index(coords), glow.value_at(r, coords))
                      for r in roots])


def _direct_window(attrs, ch: int, o: int):
    """What the direct loops of a grouped convolution need: channels per group in and out,
    stride, dilation, and the top/left padding (the loops clamp at the far edges)."""
    g = attrs["groups"]
    (pt, _), (pl, _) = attrs["padding"]
    return ch // g, o // g, attrs["stride"], attrs["dilation"], (pt, pl)


def _direct_conv2d(lw, c: Node, others, roots, name, src) -> list:
    """y[n, o, i, j] = sum over (c', a, b) of x[n, group(o) * cg + c', tap] * w[o, c', a, b]."""
    x, w = c.srcs
    n, ch, h, wd, o, kh, kw, ho, wo = _conv_geometry(x.shape, w.shape, c.type.shape, c.attrs)
    cg, og, *_ = _direct_window(c.attrs, ch, o)
    vn, vo, vh, vw = loop_vars("i", 4)
    rc, rkh, rkw = loop_vars("r", 3)
    acc = Var("acc0", c.type.dtype)
    glow = GroupLowering(others, lw.views, name, overrides={c.out: acc})
    cin = iadd(imul(idiv(vo, og), c64(cg)), rc)
    hh, ww = _input_pixel(vh, vw, rkh, rkw, c.attrs)
    tap = _tap_value(glow, x, vn, cin, hh, ww, h, wd, c.attrs["padding"], c.type.dtype)
    red = _nest([rc, rkh, rkw], [cg, kh, kw],
                [_fma(acc, tap, glow.value_at(w, [vo, rc, rkh, rkw]))], kind=LoopKind.REDUCE)
    body = [Let(acc, Const(0.0, acc.dtype))] + red + _store_roots(lw, glow, roots,
                                                                  [vn, vo, vh, vw])
    stmts = _nest([vn, vo, vh, vw], [n, o, ho, wo], body, parallel=True)
    return [make_loop_kernel(f"{name}_direct", stmts, src, lw.buffers)]


def _direct_conv2d_grad_input(lw, c: Node, others, roots, name, src) -> list:
    """dx[n, c, r, s] = sum over the group's out-channels o and taps (a, b) that read (r, s)
    of dy[n, o, i, j] * w[o, c % cg, a, b] (a gather: race-free and parallel per pixel)."""
    dy, w = c.srcs
    n, ch, h, wd, o, kh, kw, ho, wo = _conv_geometry(c.type.shape, w.shape, dy.shape, c.attrs)
    cg, og, (sh, sw), (dh, dw), (pt, pl) = _direct_window(c.attrs, ch, o)
    vn, vc, vh, vw = loop_vars("i", 4)
    ro, rkh, rkw = loop_vars("r", 3)
    acc = Var("acc0", c.type.dtype)
    glow = GroupLowering(others, lw.views, name, overrides={c.out: acc})
    valid, hi, wi = _output_pixel(vh, vw, rkh, rkw, (pt, pl), (sh, sw), (dh, dw), ho, wo)
    oc = iadd(imul(idiv(vc, cg), c64(og)), ro)
    prod = Call(KOp.MUL, (glow.value_at(dy, [vn, oc, hi, wi]),
                          glow.value_at(w, [oc, imod(vc, cg), rkh, rkw])), acc.dtype)
    term = select(valid, prod, Const(0.0, acc.dtype))
    red = _nest([ro, rkh, rkw], [og, kh, kw],
                [Assign(acc, Call(KOp.ADD, (acc, term), acc.dtype))], kind=LoopKind.REDUCE)
    body = [Let(acc, Const(0.0, acc.dtype))] + red + _store_roots(lw, glow, roots,
                                                                  [vn, vc, vh, vw])
    stmts = _nest([vn, vc, vh, vw], [n, ch, h, wd], body, parallel=True)
    return [make_loop_kernel(f"{name}_direct", stmts, src, lw.buffers)]


def _direct_conv2d_grad_weight(lw, c: Node, others, name, src) -> list:
    """dw[o, c', a, b] = sum over (n, i, j) of dy[n, o, i, j] * x[n, group(o) * cg + c', tap]."""
    x, dy = c.srcs
    n, ch, h, wd, o, kh, kw, ho, wo = _conv_geometry(x.shape, c.type.shape, dy.shape, c.attrs)
    cg, og, *_ = _direct_window(c.attrs, ch, o)
    vo, vc, vkh, vkw = loop_vars("i", 4)
    rn, rh, rw = loop_vars("r", 3)
    acc = Var("acc0", c.type.dtype)
    glow = GroupLowering(others, lw.views, name)
    cin = iadd(imul(idiv(vo, og), c64(cg)), vc)
    hh, ww = _input_pixel(rh, rw, vkh, vkw, c.attrs)
    tap = _tap_value(glow, x, rn, cin, hh, ww, h, wd, c.attrs["padding"], c.type.dtype)
    red = _nest([rn, rh, rw], [n, ho, wo], [_fma(acc, glow.value_at(dy, [rn, vo, rh, rw]), tap)],
                kind=LoopKind.REDUCE)
    home = lw.home(c.out)
    body = [Let(acc, Const(0.0, acc.dtype))] + red + [
        Store(home.buf, home.index([vo, vc, vkh, vkw]), acc)]
    stmts = _nest([vo, vc, vkh, vkw], [o, cg, kh, kw], body, parallel=True)
    return [make_loop_kernel(f"{name}_direct", stmts, src, lw.buffers)]


for _op, _fn in {Op.MATMUL: _matmul, Op.CONV2D: _conv2d, Op.CONV2D_GRAD_INPUT: _conv2d_grad_input,
                 Op.CONV2D_GRAD_WEIGHT: _conv2d_grad_weight}.items():
    set_rule(_op, lower=_template(_fn))
