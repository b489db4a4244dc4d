"""The exceptions nnjit raises. Every message names what went wrong and where (user line, IR node)."""
from __future__ import annotations

from .types import Loc


class NnjitError(Exception):
    """Base class of every error nnjit raises on purpose (the CLI prints these without a trace)."""


class ShapeError(NnjitError, ValueError):
    """An op was applied to operands of incompatible shapes/dtypes, or with a bad attribute.

    Shape rules raise it with just the reason; the builder re-raises it with the op name and the
    user's source line, e.g. `matmul: inner dims differ, (3, 4) @ (5, 6) at model.py:12 in fwd`.
    """

    def __init__(self, msg: str, op: str | None = None, loc: Loc | None = None):
        self.reason, self.op, self.loc = msg, op, loc
        text = f"{op}: {msg}" if op else msg
        if loc is not None:
            text += f" at {loc}"
        super().__init__(text)

    def at(self, op: str, loc: Loc | None) -> "ShapeError":
        """The same error, attributed to `op` created at `loc`."""
        return ShapeError(self.reason, op, loc)


class VerifyError(NnjitError):
    """The graph breaks an IR invariant; the message names the node (in IR text) and its loc."""


# A ParseError quotes at most this many characters of the offending line (and of its message,
# which may quote tokens): a 1 MB line must not make a 1 MB error.
_QUOTE_MAX = 200
_MSG_MAX = 400


def _excerpt(line: str, col: int) -> tuple[str, int]:
    """At most `_QUOTE_MAX` characters of `line` around 1-based `col`, with `...` where cut, and
    the caret's 0-based offset in the excerpt."""
    if len(line) <= _QUOTE_MAX:
        return line, col - 1
    width = _QUOTE_MAX - 6
    start = max(0, min(col - 1 - width // 2, len(line) - width))
    head = "..." if start else ""
    tail = "..." if start + width < len(line) else ""
    return head + line[start:start + width] + tail, len(head) + col - 1 - start


def _clip(msg: str) -> str:
    if len(msg) <= _MSG_MAX:
        return msg
    return f"{msg[:_MSG_MAX * 3 // 4]} ... {msg[-_MSG_MAX // 4:]}"


class ParseError(NnjitError):
    """Malformed IR text: carries the 1-based line and column and what the parser expected."""

    def __init__(self, msg: str, line: int, col: int, source_line: str = ""):
        self.msg, self.line, self.col = _clip(msg), line, col
        text = f"{line}:{col}: {self.msg}"
        if source_line:
            shown, caret = _excerpt(source_line, col)
            text += f"\n  {shown}\n  {' ' * caret}^"
        super().__init__(text)


class CompileError(NnjitError):
    """A pass or backend failed on a graph; the message names the pass/kernel and the node's loc."""


class IndexOutOfRange(NnjitError, IndexError):
    """A gather, one-hot or loss label index is out of range at run time: the message names the
    op, the index value, the valid range and the user's source line."""


class ArgumentError(NnjitError, TypeError):
    """A compiled function was called with arguments that do not match its signature."""
