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
    # reductions
    SUM = "sum"
    MAX = "max"
    ARGMAX = "argmax"
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

    def __repr__(self) -> str:
        return f"Op.{self.name}"

    def __str__(self) -> str:
        return self.value


class Kind(enum.IntEnum):
    """How an op fuses and lowers; ordered like TVM's OpPatternKind (a lattice for fusion)."""

    ELEMENTWISE = 0   # out[i] = f(in[i]...), with numpy broadcasting of the inputs
    INJECTIVE = 1     # each output element reads one input element (reshape, transpose, slice...)
    REDUCE = 2        # folds axes of one input (sum, max, argmax)
    CONTRACTION = 3   # matmul, convolutions: tiled kernels with optional elementwise epilogues
    WINDOW = 4        # pooling and its gradients
    OPAQUE = 5        # scatter, control flow, graph inputs: fused with nothing


UNARY = {Op.NEG, Op.EXP, Op.LOG, Op.SQRT, Op.ABS, Op.TANH, Op.SIGMOID, Op.RELU, Op.NOT, Op.CAST,
         Op.STOP_GRADIENT}
COMPARISON = {Op.EQ, Op.NE, Op.LT, Op.LE, Op.GT, Op.GE}
BINARY = {Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.POW, Op.REMAINDER, Op.MAXIMUM, Op.MINIMUM, Op.AND,
          Op.OR} | COMPARISON
TERNARY = {Op.WHERE}
ELEMENTWISE = UNARY | BINARY | TERNARY
SOURCE = {Op.IOTA, Op.RANDOM_UNIFORM}
REDUCE = {Op.SUM, Op.MAX, Op.ARGMAX}
CONTRACTION = {Op.MATMUL, Op.CONV2D, Op.CONV2D_GRAD_INPUT, Op.CONV2D_GRAD_WEIGHT}
WINDOW = {Op.MAX_POOL2D, Op.AVG_POOL2D, Op.MAX_POOL2D_GRAD, Op.AVG_POOL2D_GRAD}
MOVEMENT = {Op.RESHAPE, Op.TRANSPOSE, Op.BROADCAST_TO, Op.CONCAT, Op.SLICE, Op.PAD, Op.TAKE}
VIEW = {Op.RESHAPE, Op.TRANSPOSE, Op.BROADCAST_TO, Op.SLICE}   # expressible as strides
COMMUTATIVE = {Op.ADD, Op.MUL, Op.MAXIMUM, Op.MINIMUM, Op.AND, Op.OR, Op.EQ, Op.NE}
