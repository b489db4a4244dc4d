"""The op enum, the fusion/codegen kinds, and the op groups as plain sets.

Every op is a member of `Op` (a typo fails at import); everything else about an op lives in its
`OpDef` (see `opdef.py` and `defs/`). Composite DSL functions (softmax, mean, linear, dropout,
one_hot, cross-entropy, the LSTM cell) are built from these primitives and have no entry here.
"""
from __future__ import annotations

import enum


class Op(enum.Enum):
    # graph plumbing
    INPUT = "input"
    CONST = "const"
    # sources computed from the index space
    IOTA = "iota"
    RANDOM_UNIFORM = "random_uniform"
    # elementwise, unary
    NEG = "neg"
    EXP = "exp"
    LOG = "log"
    SQRT = "sqrt"
    ABS = "abs"
    TANH = "tanh"
    SIGMOID = "sigmoid"
    RELU = "relu"
    SOFTPLUS = "softplus"
    NOT = "logical_not"
    CAST = "cast"
    STOP_GRADIENT = "stop_gradient"
    # elementwise, binary (numpy broadcasting, equal dtypes)
    ADD = "add"
    SUB = "sub"
    MUL = "mul"
    DIV = "div"
    POW = "pow"
    REMAINDER = "remainder"
    MAXIMUM = "maximum"
    MINIMUM = "minimum"
    AND = "logical_and"
    OR = "logical_or"
    EQ = "eq"
    NE = "ne"
    LT = "lt"
    LE = "le"
    GT = "gt"
    GE = "ge"
    # elementwise, ternary
    WHERE = "where"
    # -- math ops (issue 12): unary math, rounding, floor division --
    SIN = "sin"
    COS = "cos"
    ERF = "erf"
    EXPM1 = "expm1"
    LOG1P = "log1p"
    FLOOR = "floor"
    CEIL = "ceil"
    ROUND = "round"
    FLOOR_DIVIDE = "floor_divide"
    # reductions
    SUM = "sum"
    MAX = "max"
    ARGMAX = "argmax"
    # -- reductions (issue 12) --
    PROD = "prod"
    # contractions
    MATMUL = "matmul"
    CONV2D = "conv2d"
    CONV2D_GRAD_INPUT = "conv2d_grad_input"
    CONV2D_GRAD_WEIGHT = "conv2d_grad_weight"
    # windows
    MAX_POOL2D = "max_pool2d"
    AVG_POOL2D = "avg_pool2d"
    MAX_POOL2D_GRAD = "max_pool2d_grad"
    AVG_POOL2D_GRAD = "avg_pool2d_grad"
    # data movement
    RESHAPE = "reshape"
    TRANSPOSE = "transpose"
    BROADCAST_TO = "broadcast_to"
    CONCAT = "concat"
    SLICE = "slice"
    PAD = "pad"
    TAKE = "take"
    SCATTER_ADD = "scatter_add"
    # run-time checks
    CHECK_INDEX = "check_index"
    # control flow and kernel boundaries
    SCAN = "scan"
    FUSION = "fusion"
    # -- collectives over a process group (issue 15) --
    ALL_REDUCE = "all_reduce"
    ALL_GATHER = "all_gather"
    REDUCE_SCATTER = "reduce_scatter"
    BROADCAST = "broadcast"
    AXIS_INDEX = "axis_index"

    # -- rematerialization (issue 12) --
    OPTIMIZATION_BARRIER = "optimization_barrier"

    def __repr__(self) -> str:
        return f"Op.{self.name}"

    def __str__(self) -> str:
        return self.value


class Kind(enum.IntEnum):
    """How an op fuses and lowers; ordered like TVM's OpPatternKind (a lattice for fusion). The
    kind also says which lowering hook its OpDef carries (see `OpDef`)."""

    ELEMENTWISE = 0   # out[i] = f(in[i]...), with numpy broadcasting; sources from coordinates
    VIEW = 1          # a strided view of its operand (reshape, transpose, broadcast_to, slice)
    INJECTIVE = 2     # each output element reads one input element (concat, pad, take)
    REDUCE = 3        # folds axes of one input (sum, max, argmax)
    CONTRACTION = 4   # matmul, convolutions: tiled kernels with optional elementwise epilogues
    WINDOW = 5        # pooling and its gradients
    OPAQUE = 6        # scatter, checks, control flow, graph inputs: fused with nothing


# Algebraic facts the rewrite rules use; everything about fusion and lowering comes from each
# op's OpDef (`kind`, `scalar`, `lower`), so a new op needs no entry here beyond `Op`.
COMPARISON = {Op.EQ, Op.NE, Op.LT, Op.LE, Op.GT, Op.GE}
# Ops that communicate with the other processes of a group: never folded, run by the host.
COLLECTIVE = {Op.ALL_REDUCE, Op.ALL_GATHER, Op.REDUCE_SCATTER, Op.BROADCAST, Op.AXIS_INDEX}
COMMUTATIVE = {Op.ADD, Op.MUL, Op.MAXIMUM, Op.MINIMUM, Op.AND, Op.OR, Op.EQ, Op.NE}
