"""Malformed IR text: every failure is a `nnjit.ParseError` whose `.line`/`.col` point at the
offending token and whose message says what was expected; never another exception, never a
crash. Hand-written cases mark the expected error position with `⁁`; truncations and random
mutations of valid texts must either parse to a graph that verifies or raise ParseError.
"""
from __future__ import annotations

import re

import pytest
from hypothesis import given, settings, strategies as st

import nnjit
from nnjit.ir import parse, verify

MARK = "⁁"

GOOD = """\
func @f(%x: f32[2,3], %y: f32[2,3]) -> (f32[2,3]) {
  %0 = add(%x, %y) : f32[2,3] loc("m.py":3 in "f")
  return %0
}"""

GOOD_SCAN = """\
func @s(%h: f32[3], %xs: f32[4,3]) -> (f32[3], f32[4,3]) {
  %0:2 = scan(%h, %xs) {body = func @body(%c: f32[3], %x: f32[3]) -> (f32[3], f32[3]) {
    %0 = add(%c, %x) : f32[3] loc("m.py":5 in "step")
    return %0, %c
  }, num_carry = 1, num_consts = 0, length = 4, reverse = false} : (f32[3], f32[4,3])
  %1 = neg(%0#1) : f32[4,3]
  return %0#0, %1
}"""

GOOD_MIXED = "\n".join([
    "func @mixed(%x: f32[2,3], %i: i64[2], %seed: i64[]) -> (f32[2,2], f32[4,5], f32[20], f32[3],"
    " bool[2]) {",
    "  %0 = take(%x, %i) {axis = 1} : f32[2,2]",
    "  %1 = pad(%x) {pads = [[1, 1], [1, 1]], value = -inf} : f32[4,5]",
    '  %2 = const() {value = dense<f32[20], "0x' + "0000803f" * 20 + '">} : f32[20]',
    "  %3 = random_uniform(%seed) {shape = [3], salt = 7, dtype = f32} : f32[3]",
    '  %4 = const() {value = dense<bool[2], [true, false]>} : bool[2] '
    'loc("a \\"q\\" \\\\ é.py":12 in "fn")',
    "  %5 = sum(%x) {axes = [], keepdims = false} : f32[2,3]",
    "  return %0, %1, %2, %3, %4",
    "}"])


def test_the_valid_texts_parse():
    for text in (GOOD, GOOD_SCAN, GOOD_MIXED):
        g = parse(text)
        verify(g)
        assert parse(str(g)) == g


def locate(marked: str) -> tuple[str, int, int]:
    """(text without the marker, 1-based line, 1-based col of the marker)."""
    assert marked.count(MARK) == 1, marked
    i = marked.index(MARK)
    before = marked[:i]
    return marked.replace(MARK, ""), before.count("\n") + 1, i - (before.rfind("\n") + 1) + 1


def G(body: str, sig: str = "(%x: f32[2,3], %y: f32[2,3]) -> (f32[2,3])") -> str:
    return f"func @f{sig} {{\n{body}\n}}"


SCAN_HEAD = "func @s(%h: f32[3], %xs: f32[4,3]) -> (f32[3], f32[4,3]) {\n"
SCAN_OP = ("  %0:2 = scan(%h, %xs) {body = func @body(%c: f32[3], %x: f32[3]) -> (f32[3], f32[3]) "
           "{\n    %0 = add(%c, %x) : f32[3]\n    return %0, %c\n  }, num_carry = 1, length = 4} "
           ": (f32[3], f32[4,3])\n")

# (id, text with ⁁ at the expected error position, regex the message must match)
CASES = [
    ("unknown op", G("  %0 = ⁁frob(%x, %y) : f32[2,3]\n  return %0"), r"unknown op 'frob'"),
    ("the input pseudo-op", G("  %0 = ⁁input() : f32[2,3]\n  return %0"), r"unknown op 'input'"),
    ("unknown dtype in a parameter", G("  return %x", "(%x: ⁁f16[2,3]) -> (f32[2,3])"),
     r"unknown dtype 'f16' \(expected one of f32, f64, i32, i64, bool\)"),
    ("unknown dtype in a node type", G("  %0 = add(%x, %y) : ⁁float32[2,3]\n  return %0"),
     r"unknown dtype 'float32'"),
    ("declared shape disagrees with the shape rule",
     G("  %0 = ⁁add(%x, %y) : f32[3,2]\n  return %0"),
     r"add gives type f32\[2,3\], but f32\[3,2\] is declared"),
    ("declared dtype disagrees with the shape rule",
     G("  %0 = ⁁add(%x, %y) : f64[2,3]\n  return %0"),
     r"add gives type f32\[2,3\], but f64\[2,3\] is declared"),
    ("operand dtypes differ", G("  %0 = ⁁add(%x, %y) : f32[2,3]\n  return %0",
                                "(%x: f32[2,3], %y: f64[2,3]) -> (f32[2,3])"),
     r"add: operand dtypes differ"),
    ("undefined value", G("  %0 = add(%x, ⁁%z) : f32[2,3]\n  return %0"),
     r"use of undefined value %z"),
    ("value defined twice", G("  %0 = add(%x, %y) : f32[2,3]\n  ⁁%0 = neg(%x) : f32[2,3]\n"
                              "  return %0"), r"value %0 is defined twice"),
    ("a node redefines a parameter", G("  ⁁%x = neg(%y) : f32[2,3]\n  return %x"),
     r"value %x is defined twice"),
    ("parameter defined twice", G("  return %x", "(%x: f32[2,3], ⁁%x: f32[2,3]) -> (f32[2,3])"),
     r"parameter %x is defined twice"),
    ("use before definition", G("  %0 = add(%x, ⁁%1) : f32[2,3]\n  %1 = neg(%y) : f32[2,3]\n"
                                "  return %0"), r"use of undefined value %1"),
    ("unknown attribute name", G("  %0 = sum(%x) {⁁axis = [0], keepdims = false} : f32[3]\n"
                                 "  return %0", "(%x: f32[2,3]) -> (f32[3])"),
     r"sum has no attribute 'axis' \(known: axes, keepdims\)"),
    ("attribute given twice", G("  %0 = sum(%x) {axes = [0], ⁁axes = [0]} : f32[3]\n"
                                "  return %0", "(%x: f32[2,3]) -> (f32[3])"),
     r"attribute 'axes' given twice"),
    ("bad attribute value", G("  %0 = sum(%x) {axes = ⁁foo} : f32[3]\n  return %0",
                              "(%x: f32[2,3]) -> (f32[3])"),
     r"expected an attribute value, found 'foo'"),
    ("attribute of the wrong type", G("  %0 = sum(%x) {axes = [0], ⁁keepdims = 1} : f32[3]\n"
                                      "  return %0", "(%x: f32[2,3]) -> (f32[3])"),
     r"bad value for attribute 'keepdims'.*must be a bool"),
    ("dtype attribute given as a string", G("  %0 = cast(%x) {⁁dtype = \"f64\"} : f64[2,3]\n"
                                            "  return %0", "(%x: f32[2,3]) -> (f64[2,3])"),
     r"expected a dtype name, not a string"),
    ("missing required attribute", G("  %0 = ⁁sum(%x) {keepdims = false} : f32[3]\n"
                                     "  return %0", "(%x: f32[2,3]) -> (f32[3])"),
     r"sum: missing attribute 'axes'"),
    ("float where an int is expected", G("  %0 = sum(%x) {⁁axes = [0.0]} : f32[3]\n"
                                         "  return %0", "(%x: f32[2,3]) -> (f32[3])"),
     r"attribute 'axes' must be a sequence of ints"),
    ("int where a float is expected",
     G("  %0 = pad(%x) {pads = [[0, 0], [1, 1]], ⁁value = 0} : f32[2,5]\n  return %0",
       "(%x: f32[2,3]) -> (f32[2,5])"), r"expected a float literal like 0.0, got 0"),
    ("float dimension", G("  return %x", "(%x: f32[⁁2.0,3]) -> (f32[2,3])"),
     r"expected a dimension, found '2.0'"),
    ("negative dimension", G("  return %x", "(%x: ⁁f32[-2,3]) -> (f32[2,3])"),
     r"negative dimension"),
    ("dimension beyond int64 elements", G("  return %x", "(%x: f32[⁁4611686018427387904,4]) -> "
                                          "(f32[2,3])"),
     r"f32\[4611686018427387904,4\] has 2\*\*64 elements \(2\*\*66 bytes\): the element count "
     r"overflows int64; a tensor can have at most 2\*\*47 bytes"),
    ("byte size beyond int64, at the dim that overflows", G(
        "  return %x", "(%x: f64[1024, ⁁1152921504606846976]) -> (f32[2,3])"),
     r"has 2\*\*70 elements \(2\*\*73 bytes\): the element count overflows int64"),
    ("beyond the address space in a node type", G(
        "  %0 = broadcast_to(%x) {shape = [35184372088833]} : f32[⁁35184372088833]\n  return %x",
        "(%x: f32[]) -> (f32[])"),
     r"f32\[35184372088833\] has 35184372088833 elements \(140737488355332 bytes\); a tensor "
     r"can have at most 2\*\*47 bytes \(128 TiB"),
    ("an empty tensor's other dims still count", G(
        "  return %x", "(%x: bool[0, 2, ⁁140737488355328]) -> (f32[2,3])"),
     r"has 281474976710656 elements in its non-zero dims"),
    ("beyond the address space in a dense type", G(
        "  %0 = const() {value = dense<f32[⁁35184372088833], [1.0]>} : f32[1]\n  return %0",
        "() -> (f32[1])"), r"f32\[35184372088833\] has"),
    ("beyond the address space in a scan body", SCAN_HEAD + SCAN_OP.replace(
        "%x: f32[3]", "%x: f32[⁁35184372088833]") + "  return %0#0, %0#1\n}",
     r"f32\[35184372088833\] has"),
    ("an integer literal too long to convert", G("  return %x", "(%x: f32[⁁" + "9" * 5000 +
                                                 "]) -> (f32[2,3])"),
     r"an integer literal of 5000 digits is too long"),
    ("pairs that are not pairs", G("  %0 = pad(%x) {⁁pads = [[0, 0, 0], [1, 1]]} : f32[2,5]\n"
                                   "  return %0", "(%x: f32[2,3]) -> (f32[2,5])"),
     r"expected a list of \[lo, hi\] pairs"),
    ("dense with too few values", G("  %0 = const() {value = dense<⁁f32[3], [1.0, 2.0]>} : "
                                    "f32[3]\n  return %0", "() -> (f32[3])"),
     r"2 values given for f32\[3\] \(3 elements\)"),
    ("dense with bad hex", G("  %0 = const() {value = dense<f32[1], ⁁\"0xzz00803f\">} : f32[1]"
                             "\n  return %0", "() -> (f32[1])"), r"bad hex data"),
    ("dense hex of odd length", G("  %0 = const() {value = dense<f32[1], ⁁\"0x0000803\">} : "
                                  "f32[1]\n  return %0", "() -> (f32[1])"), r"bad hex data"),
    ("dense hex without 0x", G("  %0 = const() {value = dense<f32[1], ⁁\"0000803f\">} : f32[1]"
                               "\n  return %0", "() -> (f32[1])"),
     r"expected a hex string like \"0x0000803f\""),
    ("dense hex of the wrong length", G("  %0 = const() {value = dense<f32[2], ⁁\"0x0000803f\">}"
                                        " : f32[2]\n  return %0", "() -> (f32[2])"),
     r"4 bytes given for f32\[2\] \(8 bytes\)"),
    ("dense int literal for a float", G("  %0 = const() {value = dense<f32[2], [⁁1, 2.0]>} : "
                                        "f32[2]\n  return %0", "() -> (f32[2])"),
     r"expected a float literal like 1.0 for a f32 element"),
    ("dense float literal for an int", G("  %0 = const() {value = dense<i32[2], [1, ⁁2.5]>} : "
                                         "i32[2]\n  return %0", "() -> (i32[2])"),
     r"expected an integer for a i32 element, found 2.5"),
    ("dense int out of range", G("  %0 = const() {value = dense<i32[1], [⁁2147483648]>} : "
                                 "i32[1]\n  return %0", "() -> (i32[1])"),
     r"2147483648 is out of range for i32"),
    ("dense bool given a number", G("  %0 = const() {value = dense<bool[1], [⁁1]>} : bool[1]\n"
                                    "  return %0", "() -> (bool[1])"),
     r"expected true or false for a bool element"),
    ("dense bool hex byte 02", G("  %0 = const() {value = dense<bool[1], ⁁\"0x02\">} : bool[1]\n"
                                 "  return %0", "() -> (bool[1])"),
     r"bool data bytes must be 00 or 01"),
    ("missing return", G("  %0 = add(%x, %y) : f32[2,3]").replace("\n}", "\n⁁}"),
     r"expected a node or 'return', found '}'"),
    ("return type differs from the signature",
     G("  %0 = add(%x, %y) : f32[2,3]\n  ⁁return %0", "(%x: f32[2,3], %y: f32[2,3]) -> "
       "(f64[2,3])"), r"return types \(f32\[2,3\]\) do not match the signature \(f64\[2,3\]\)"),
    ("return count differs from the signature",
     G("  ⁁return %x", "(%x: f32[2,3], %y: f32[2,3]) -> (f32[2,3], f32[2,3])"),
     r"return types \(f32\[2,3\]\) do not match the signature \(f32\[2,3\], f32\[2,3\]\)"),
    ("unterminated string", G("  %0 = add(%x, %y) : f32[2,3] loc(⁁\"m.py:3 in f)\n  return %0"),
     r"unterminated string"),
    ("bad string escape", G("  %0 = add(%x, %y) : f32[2,3] loc(⁁\"m\\q.py\":3 in \"f\")\n"
                            "  return %0"), r"bad string literal"),
    ("line number is not an int", G("  %0 = add(%x, %y) : f32[2,3] loc(\"m.py\":⁁\"3\" in "
                                    "\"f\")\n  return %0"), r"expected a line number"),
    ("stray character", G("  %0 = add(%x, %y) ⁁$ : f32[2,3]\n  return %0"),
     r"unexpected character '\$'"),
    ("stray NUL", G("  %0 = add(%x, %y)⁁\x00 : f32[2,3]\n  return %0"),
     r"unexpected character '\\x00'"),
    ("garbage after the closing brace", GOOD + "\n⁁garbage",
     r"unexpected 'garbage' after the end of the function"),
    ("two functions", GOOD + "\n⁁" + GOOD, r"unexpected 'func' after the end of the function"),
    ("multi-result used without #", SCAN_HEAD + SCAN_OP + "  %1 = neg(⁁%0) : f32[4,3]\n"
     "  return %0#0, %1\n}", r"%0 has 2 results: use %0#0 \.\. %0#1"),
    ("# index out of range", SCAN_HEAD + SCAN_OP + "  return %0#0, ⁁%0#2\n}",
     r"%0 has no result #2 \(it has 2\)"),
    ("negative # index", SCAN_HEAD + SCAN_OP + "  return %0#0, ⁁%0#-1\n}",
     r"%0 has no result #-1"),
    ("# on a single-result value", G("  ⁁return %x#0").replace("⁁return %x#0",
                                                              "return ⁁%x#0"),
     r"%x has a single result: drop the '#'"),
    ("result count disagrees with the types", G("  ⁁%0:2 = add(%x, %y) : (f32[2,3])\n"
                                                "  return %0#0"),
     r"2 results declared but 1 types given"),
    ("zero results", G("  ⁁%0:0 = add(%x, %y) : ()\n  return %x"),
     r"a node has at least one result"),
    ("wrong arity", G("  %0 = ⁁exp(%x, %y) : f32[2,3]\n  return %0"),
     r"exp: takes 1 operands, got 2"),
    ("concat of nothing", G("  %0 = ⁁concat() {axis = 0} : f32[2,3]\n  return %0"),
     r"concat: needs at least one operand"),
    ("scan body signature differs from the operands",
     SCAN_HEAD + "  %0:2 = ⁁scan(%h, %xs) {body = func @body(%c: f32[3], %x: f32[4,3]) -> "
     "(f32[3], f32[3]) {\n    %0 = neg(%c) : f32[3]\n    return %0, %c\n  }, num_carry = 1, "
     "length = 4} : (f32[3], f32[4,3])\n  return %0#0, %0#1\n}",
     r"scan: body inputs \(f32\[3\], f32\[4,3\]\) do not match \(carry, x slices, consts\) "
     r"\(f32\[3\], f32\[3\]\)"),
    ("scan body returns the wrong carry type",
     SCAN_HEAD + "  %0:2 = ⁁scan(%h, %xs) {body = func @body(%c: f32[3], %x: f32[3]) -> "
     "(f32[], f32[3]) {\n    %0 = sum(%c) {axes = [0]} : f32[]\n    return %0, %c\n  }, "
     "num_carry = 1, length = 4} : (f32[3], f32[4,3])\n  return %0#0, %0#1\n}",
     r"scan: body must return the carry types \(f32\[3\]\) first, got \(f32\[\], f32\[3\]\)"),
    ("scan length disagrees with xs",
     SCAN_HEAD + SCAN_OP.replace("%0:2 = scan", "%0:2 = ⁁scan").replace("length = 4",
                                                                         "length = 5")
     + "  return %0#0, %0#1\n}", r"sequence operand f32\[4,3\] does not have leading dim 5"),
    ("error inside a scan body points into the body",
     SCAN_HEAD + "  %0:2 = scan(%h, %xs) {body = func @body(%c: f32[3], %x: f32[3]) -> "
     "(f32[3], f32[3]) {\n    %0 = add(%c, ⁁%h) : f32[3]\n    return %0, %c\n  }, "
     "num_carry = 1, length = 4} : (f32[3], f32[4,3])\n  return %0#0, %0#1\n}",
     r"use of undefined value %h"),
    ("scan body is not a graph", SCAN_HEAD + "  %0:2 = scan(%h, %xs) {⁁body = 3, num_carry = 1,"
     " length = 4} : (f32[3], f32[4,3])\n  return %0#0, %0#1\n}",
     r"attribute 'body' must be a graph"),
    ("str attribute given a number", "func @f(%x: f32[2]) -> (f32[2]) {\n  %0 = fusion(%x) "
     "{body = func @b(%a: f32[2]) -> (f32[2]) {\n    %0 = exp(%a) : f32[2]\n    return %0\n  }, "
     "⁁kind = 3} : f32[2]\n  return %0\n}", r"bad value for attribute 'kind': expected a quoted "
     "string"),
    ("str attribute given an identifier", "func @f(%x: f32[2]) -> (f32[2]) {\n  %0 = fusion(%x) "
     "{body = func @b(%a: f32[2]) -> (f32[2]) {\n    %0 = exp(%a) : f32[2]\n    return %0\n  }, "
     "kind = ⁁loop} : f32[2]\n  return %0\n}", r"expected an attribute value, found 'loop'"),
    ("missing func", "⁁fun @f() -> () {\n  return\n}", r"expected 'func', found 'fun'"),
    ("missing function name", "func ⁁f() -> () {\n  return\n}",
     r"expected a function name like @main, found 'f'"),
    ("missing arrow", "func @f() ⁁(f32[2]) {\n  return\n}", r"expected '->', found '\('"),
    ("parameter without a type", "func @f(%x⁁) -> () {\n  return\n}",
     r"expected ':', found '\)'"),
    ("parameter named like a node", "func @f(⁁%0: f32[2]) -> (f32[2]) {\n  return %0\n}",
     r"parameter names must not start with a digit"),
    ("empty input", "⁁", r"expected 'func', found end of input"),
    ("only whitespace and comments", "  // nothing here\n\n⁁", r"expected 'func', found end of "
     "input"),
    ("missing comma between operands", G("  %0 = add(%x ⁁%y) : f32[2,3]\n  return %0"),
     r"expected '\)', found '%y'"),
    ("missing type after colon", G("  %0 = add(%x, %y) : ⁁\n  return %0").replace(
        ": ⁁\n  return", ":\n  ⁁return"), r"unknown dtype 'return' \(expected one of f32"),
    ("nesting too deep", G("  %0 = sum(%x) {axes = " + "[" * 200 + "]" * 200 + "} : f32[2,3]"
                           "\n  return %0").replace("[" * 65, "[" * 64 + "⁁[", 1),
     r"nest deeper than 64 levels"),
]


@pytest.mark.parametrize("name,marked,pattern", CASES, ids=[c[0] for c in CASES])
def test_malformed_text_raises_parse_error_at_the_right_place(name, marked, pattern):
    text, line, col = locate(marked)
    with pytest.raises(nnjit.ParseError) as info:
        parse(text)
    e = info.value
    assert re.search(pattern, e.msg), f"message {e.msg!r} does not match {pattern!r}"
    assert (e.line, e.col) == (line, col), f"{e.line}:{e.col} != {line}:{col} for {e.msg!r}"
    assert str(e).startswith(f"{line}:{col}: ")


def test_there_are_enough_cases():
    assert len(CASES) >= 40


def test_error_text_shows_the_line_and_a_caret():
    with pytest.raises(nnjit.ParseError) as info:
        parse(G("  %0 = frob(%x, %y) : f32[2,3]\n  return %0"))
    lines = str(info.value).splitlines()
    assert lines[0] == "2:8: unknown op 'frob'"
    assert lines[1].strip() == "%0 = frob(%x, %y) : f32[2,3]"
    assert lines[2].index("^") == lines[1].index("frob")


@pytest.mark.parametrize("bad", [None, b"func @f() -> () {\n  return\n}", 3, ["func"]])
def test_parse_takes_text_only(bad):
    with pytest.raises(TypeError, match=r"^parse takes IR text \(a str\), got "
                       + type(bad).__name__):
        parse(bad)


def test_bytes_are_told_to_decode():
    with pytest.raises(TypeError, match="got bytes: decode bytes first"):
        parse(b"func")


@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_a_huge_line_is_quoted_short_around_the_error(where):
    """A 1 MB line gives a short message that still shows the error's region and a caret under
    it, with the real column."""
    pad = "  " * 250_000
    before = {"start": "", "middle": pad, "end": pad * 2}[where]
    after = {"start": pad * 2, "middle": pad, "end": ""}[where]
    text = G(f"  %0 = add(%x, %y) {before}$ {after}: f32[2,3]\n  return %0")
    col = len("  %0 = add(%x, %y) ") + len(before) + 1
    with pytest.raises(nnjit.ParseError) as info:
        parse(text)
    e = info.value
    assert (e.line, e.col) == (2, col)
    head, quoted, caret = str(e).splitlines()
    assert head == f"2:{col}: unexpected character '$'"
    assert len(quoted) <= 210 and quoted.startswith("  ")
    assert quoted[caret.index("^")] == "$"
    assert ("..." in quoted[:6]) == (where != "start")
    assert quoted.endswith("...") == (where != "end")


def test_a_huge_token_makes_a_short_message():
    name = "a" * 1_000_000
    with pytest.raises(nnjit.ParseError) as info:
        parse(G(f"  %0 = {name}(%x, %y) : f32[2,3]\n  return %0"))
    e = info.value
    assert (e.line, e.col) == (2, 8)
    assert len(str(e)) < 1000 and " ... " in e.msg
    assert e.msg.startswith("unknown op 'aaaa") and e.msg.endswith("aaaa'")


def test_parse_error_is_an_nnjit_error():
    assert issubclass(nnjit.ParseError, nnjit.NnjitError)
    assert nnjit.ParseError is nnjit.ir.ParseError


# -- truncation: every prefix of a valid text ------------------------------------------------------

def _end(text: str) -> tuple[int, int]:
    return text.count("\n") + 1, len(text) - (text.rfind("\n") + 1) + 1


@pytest.mark.parametrize("good", [GOOD, GOOD_SCAN, GOOD_MIXED], ids=["simple", "scan", "mixed"])
def test_every_prefix_is_a_parse_error(good):
    for cut in range(len(good)):
        prefix = good[:cut]
        with pytest.raises(nnjit.ParseError) as info:
            parse(prefix)
        e = info.value
        assert e.msg, cut
        assert 1 <= e.col and (e.line, e.col) <= _end(prefix), (cut, e)


def test_truncation_at_the_end_says_end_of_input():
    with pytest.raises(nnjit.ParseError, match="found end of input") as info:
        parse(GOOD[:-1])
    assert (info.value.line, info.value.col) == _end(GOOD[:-1])
    with pytest.raises(nnjit.ParseError, match=r"expected '\]', found end of input"):
        parse(GOOD[:GOOD.index("2,3]") + 3])


# -- fuzzing: random mutations of valid texts ------------------------------------------------------

ALPHABET = sorted(set(GOOD + GOOD_SCAN + GOOD_MIXED)) + list('#@"\\\x00é⁁\t\r-.eE{}[]<>()')


def _check_parse_or_error(text: str) -> None:
    try:
        g = parse(text)
    except nnjit.ParseError as e:
        assert e.line >= 1 and e.col >= 1 and e.msg
        return
    verify(g)                       # anything the parser accepts is valid IR ...
    assert parse(str(g)) == g       # ... and prints back to itself


@st.composite
def char_mutations(draw):
    text = list(draw(st.sampled_from([GOOD, GOOD_SCAN, GOOD_MIXED])))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text) - 1))
        op = draw(st.sampled_from(["delete", "insert", "replace", "duplicate", "swap"]))
        if op == "delete":
            del text[i]
        elif op == "insert":
            text.insert(i, draw(st.sampled_from(ALPHABET)))
        elif op == "replace":
            text[i] = draw(st.sampled_from(ALPHABET))
        elif op == "duplicate":
            j = draw(st.integers(i, min(len(text), i + 12)))
            text[i:i] = text[i:j]
        elif i + 1 < len(text):
            text[i], text[i + 1] = text[i + 1], text[i]
    return "".join(text)


@settings(max_examples=300)
@given(char_mutations())
def test_char_mutations_parse_or_raise_parse_error(text):
    _check_parse_or_error(text)


@settings(max_examples=150)
@given(st.sampled_from([GOOD, GOOD_SCAN, GOOD_MIXED]), st.data())
def test_byte_mutations_parse_or_raise_parse_error(good, data):
    raw = bytearray(good.encode())
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    _check_parse_or_error(raw.decode("utf-8", errors="surrogateescape"))


@settings(max_examples=100)
@given(st.text(max_size=60))
def test_arbitrary_text_parses_or_raises_parse_error(text):
    _check_parse_or_error(text)


@settings(max_examples=100)
@given(st.sampled_from([GOOD, GOOD_SCAN, GOOD_MIXED]), st.data())
def test_token_splices_parse_or_raise_parse_error(good, data):
    """Swap whole tokens for other tokens of valid texts (reaches deeper than character noise:
    wrong ops, dtypes, attribute names, value references)."""
    toks = re.findall(r'"(?:[^"\\\n]|\\.)*"|%[\w#]+|@\w+|[\w.\-]+|\S', good)
    pool = sorted(set(re.findall(r'"(?:[^"\\\n]|\\.)*"|%[\w#]+|@\w+|[\w.\-]+|\S',
                                 GOOD + GOOD_SCAN + GOOD_MIXED)))
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(toks) - 1))
        toks[i] = data.draw(st.sampled_from(pool))
    _check_parse_or_error(" ".join(toks))
