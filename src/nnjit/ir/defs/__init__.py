"""The op definitions, one module per family; importing this package registers them all.

Primitives live here. Composites (mean, softmax, log_softmax, dropout, one_hot, linear,
cross-entropy, the LSTM cell) are DSL functions built from them, with no OpDef of their own.
"""
from . import contraction, control, elementwise, movement, reduce, source, window  # noqa: F401
from . import collective  # noqa: F401  (issue 15)
