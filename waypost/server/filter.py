"""Consul ``?filter=`` expressions (hashicorp/go-bexpr syntax) for the embedded catalog.

``compile_filter(expr)`` parses once and returns a predicate that the catalog applies to every object
of a listing (plain dicts with Consul's field names, as they are serialised to JSON).

Grammar (precedence ``not`` > ``and`` > ``or``; parentheses group; keywords are lower case and
everything is case-sensitive, like Consul)::

    Selector == Value            Selector != Value
    Selector is empty            Selector is not empty
    Value in Selector            Value not in Selector
    Selector contains Value      Selector not contains Value
    Selector matches "regex"     Selector not matches "regex"

- Selector: ``Service``, dotted ``Node.Meta.rack``, bracketed map keys ``Meta["some-key"]``, numeric
  list indexes ``Checks.0.Status``, or a quoted JSON pointer ``"/Node/Meta/rack"``.
- Value: ``"double quoted"`` (Go escapes: ``\\n \\t \\" \\\\ \\xFF \\u00e9 …``), ```backtick raw```,
  a number (``8080``, ``-1``, ``0.5``) or an unquoted word that reads like a selector (``web``,
  ``v1.api``; its text is the value). Anything else (``my-svc``, ``10.0.0.1``) must be quoted.

Matching, as go-bexpr does it on Consul's typed structs:

- ``==`` compares against the field's type: a bool field parses the value like Go's ParseBool
  (``true``/``True``/``1``/``t`` …), a number field parses it as a number (``Port == 8080`` and
  ``Port == "8080"`` both match), a string field compares the text.
- ``in``/``contains``: list → any element equal (coerced per element), map → has that key,
  string → substring.
- ``is empty``: string, list or map of length 0 (a missing or null field is empty).
- ``matches``: unanchored regular-expression search on a string field.
- A list met *inside* a selector is searched: ``Checks.Status == "critical"`` is true when any check
  is critical, and ``Checks.Status != "passing"`` when any check is not passing (an empty list
  matches neither).
- A missing map key behaves like in Consul: ``==``, ``in``, ``contains``, ``matches`` and
  ``is not empty`` are false; their negations are true.

Differences from Consul, all because we evaluate untyped dicts rather than Go structs:

- An unknown selector is not a 400 at compile time (Consul knows each endpoint's struct fields);
  any missing field, ``null``, or descent into a scalar behaves like a missing map key (above).
- A value that cannot be coerced to the field's type (``Port == "abc"``) is a non-match rather
  than a 400; an operator that does not apply to the field's type (``Port matches "8"``,
  ``Tags == "x"``) is likewise a non-match, and its negation a match.
- Regular expressions run on Python's ``re`` (with ``re.ASCII``, so ``\\d``/``\\w``/``\\s`` are
  ASCII as in RE2), not RE2: ``\\z`` and POSIX classes such as ``[[:alpha:]]`` are translated,
  ``\\p{..}`` classes are not supported, ``(?i)`` folds ASCII only, ``$`` also matches before a
  final newline, and a pathological pattern can backtrack (RE2 is linear-time).
- Parsing is a little more lenient: ``\\"`` works inside double-quoted strings, and keywords may touch
  parentheses and quotes (``not(Port == 80)``). Parentheses nest at most ``MAX_NESTING`` deep.
"""

from __future__ import annotations

import re
import string
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_NESTING", "FilterError", "compile_filter"]

MAX_NESTING = 64
"""Deepest parenthesis nesting accepted (keeps parsing and evaluation far from Python's stack limit)."""

_ERROR_PREFIX = "Failed to create boolean expression evaluator"

Predicate = Callable[[Any], bool]


class FilterError(ValueError):
    """A filter expression that cannot be compiled.

    ``str(err)`` reads like Consul's HTTP 400 body, e.g.
    ``Failed to create boolean expression evaluator: 1:12 (11): unterminated string literal``
    (line:column, then the 0-based character offset in parentheses).
    """

    def __init__(self, expression: str, offset: int, reason: str) -> None:
        self.expression = expression
        self.offset = offset
        self.reason = reason
        self.line = expression.count("\n", 0, offset) + 1
        self.column = offset - (expression.rfind("\n", 0, offset) + 1) + 1
        super().__init__(f"{_ERROR_PREFIX}: {self.line}:{self.column} ({offset}): {reason}")


# --------------------------------------------------------------------------------------------- lexer

_WS = " \t\r\n"
_LETTERS = frozenset(string.ascii_letters)
_DIGITS = frozenset(string.digits)
_IDENT_CHARS = _LETTERS | _DIGITS | {"_"}
_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
                   "\\": "\\", '"': '"'}
_HEX_ESCAPE_LEN = {"x": 2, "u": 4, "U": 8}
_POINTER_SEGMENT = re.compile(r"[\w\-.~:|]+")

# Token kinds.
_IDENT = "identifier"  # a bare word; may be a keyword, a one-part selector or an unquoted value
_SELECTOR = "selector"  # dotted / indexed path
_STRING = "string"
_NUMBER = "number"
_OP = "operator"  # == or !=
_LPAREN = "("
_RPAREN = ")"
_EOF = "end"


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str
    pos: int
    text: str  # source text
    value: str = ""  # decoded string, number text, or the selector's dotted form
    path: tuple[str, ...] = ()  # identifier / selector parts

    def describe(self) -> str:
        if self.kind == _EOF:
            return "the end of the expression"
        text = self.text if len(self.text) <= 40 else self.text[:37] + "..."
        return f"{self.kind} {text}" if self.kind in (_STRING, _NUMBER) else f'"{text}"'


class _Lexer:
    def __init__(self, expr: str) -> None:
        self.expr = expr

    def fail(self, offset: int, reason: str) -> FilterError:
        return FilterError(self.expr, offset, reason)

    def tokens(self) -> list[_Token]:
        expr, n, i = self.expr, len(self.expr), 0
        out: list[_Token] = []
        while i < n:
            c = expr[i]
            if c in _WS:
                i += 1
            elif c in "()":
                out.append(_Token(c, i, c))
                i += 1
            elif expr.startswith(("==", "!="), i):
                out.append(_Token(_OP, i, expr[i : i + 2]))
                i += 2
            elif c == "=":
                raise self.fail(i, 'unknown operator "=": use "==" to compare')
            elif c == "!":
                raise self.fail(i, 'unknown operator "!": use "!=" for inequality or "not" to negate')
            elif c in "<>":
                raise self.fail(i, f'unknown operator "{c}": filters support ==, !=, in, contains, '
                                   "matches and is empty (each with a not form), no ordering")
            elif c in "&|":
                raise self.fail(i, f'unknown operator "{c}": combine expressions with "and", "or", "not"')
            elif c in '"`':
                text, end = self.string(i)
                out.append(_Token(_STRING, i, expr[i:end], text))
                i = end
            elif c == "-" or c in _DIGITS:
                i = self.number(i, out)
            elif c in _LETTERS:
                i = self.selector(i, out)
            else:
                raise self.fail(i, f"unexpected character {c!r}; quote values that are not plain words")
        out.append(_Token(_EOF, n, ""))
        return out

    def number(self, start: int, out: list[_Token]) -> int:
        expr, n, i = self.expr, len(self.expr), start
        if expr[i] == "-":
            i += 1
            if i >= n or expr[i] not in _DIGITS:
                raise self.fail(start, self.bad_dash(start))
        if expr[i] == "0":
            i += 1
        else:
            while i < n and expr[i] in _DIGITS:
                i += 1
        if i + 1 < n and expr[i] == "." and expr[i + 1] in _DIGITS:
            i += 1
            while i < n and expr[i] in _DIGITS:
                i += 1
        if i < n and expr[i] not in _WS and expr[i] != ")":
            end = i
            while end < n and expr[end] not in _WS and expr[end] not in "()":
                end += 1
            word = expr[start:end]
            raise self.fail(start, f'invalid number literal "{word}"; quote it if it is text: "{word}"')
        out.append(_Token(_NUMBER, start, expr[start:i], expr[start:i]))
        return i

    def bad_dash(self, dash: int) -> str:
        expr, first, end = self.expr, dash, dash + 1
        while first > 0 and expr[first - 1] not in _WS + "()\"`":
            first -= 1
        while end < len(expr) and expr[end] not in _WS + "()\"`":
            end += 1
        word = expr[first:end]
        if first < dash or end > dash + 1:
            return f'"{word}" is not a selector, number or quoted string; quote text that contains "-": "{word}"'
        return 'unexpected "-": a negative number needs a digit right after "-"'

    def identifier(self, i: int) -> int:
        n = len(self.expr)
        i += 1
        while i < n and self.expr[i] in _IDENT_CHARS:
            i += 1
        return i

    def selector(self, start: int, out: list[_Token]) -> int:
        expr, n = self.expr, len(self.expr)
        i = self.identifier(start)
        path = [expr[start:i]]
        while i < n and expr[i] in ".[":
            if expr[i] == ".":
                nxt = expr[i + 1] if i + 1 < n else ""
                if nxt in _LETTERS:
                    end = self.identifier(i + 1)
                elif nxt in _DIGITS:
                    end = i + 1
                    while end < n and expr[end] in _DIGITS:
                        end += 1
                else:
                    raise self.fail(i, f'invalid selector "{expr[start:i + 1]}": expected a field name '
                                       'after "."; quote values that contain dots')
                path.append(expr[i + 1 : end])
                i = end
            else:
                j = i + 1
                while j < n and expr[j] in _WS:
                    j += 1
                if j >= n or expr[j] not in '"`':
                    raise self.fail(j, f'invalid index after "{expr[start:i]}": expected a quoted key, '
                                       'e.g. Meta["some-key"]')
                key, j = self.string(j)
                while j < n and expr[j] in _WS:
                    j += 1
                if j >= n or expr[j] != "]":
                    raise self.fail(j, f'unclosed index expression after "{expr[start:i]}": expected "]"')
                path.append(key)
                i = j + 1
        kind = _IDENT if len(path) == 1 else _SELECTOR
        out.append(_Token(kind, start, expr[start:i], ".".join(path), tuple(path)))
        return i

    def string(self, start: int) -> tuple[str, int]:
        """Decode the quoted string starting at ``start``; return (text, offset after it)."""
        expr, n = self.expr, len(self.expr)
        if expr[start] == "`":
            end = expr.find("`", start + 1)
            if end < 0:
                raise self.fail(start, "unterminated string literal: missing closing `")
            # Go's strconv.Unquote drops carriage returns from raw strings.
            return expr[start + 1 : end].replace("\r", ""), end + 1
        chars: list[str] = []
        i = start + 1
        while True:
            if i >= n:
                raise self.fail(start, 'unterminated string literal: missing closing "')
            c = expr[i]
            if c == '"':
                return "".join(chars), i + 1
            if c == "\n":
                raise self.fail(i, "newline in string literal; write it as \\n")
            if c != "\\":
                chars.append(c)
                i += 1
                continue
            if i + 1 >= n:
                raise self.fail(start, 'unterminated string literal: missing closing "')
            e = expr[i + 1]
            if e in _SIMPLE_ESCAPES:
                chars.append(_SIMPLE_ESCAPES[e])
                i += 2
            elif e in _HEX_ESCAPE_LEN or e in "01234567":
                chars.append(self.numeric_escape(i))
                i += 2 + _HEX_ESCAPE_LEN[e] if e in _HEX_ESCAPE_LEN else 4
            else:
                raise self.fail(i, f'invalid escape sequence "\\{e}" in string literal; '
                                   "write a backslash as \\\\ or use a `backtick` string")

    def numeric_escape(self, i: int) -> str:
        """Decode \\ooo, \\xhh, \\uhhhh or \\Uhhhhhhhh at ``i`` (the backslash)."""
        e = self.expr[i + 1]
        if e in _HEX_ESCAPE_LEN:
            digits, base, allowed = self.expr[i + 2 : i + 2 + _HEX_ESCAPE_LEN[e]], 16, string.hexdigits
            want = _HEX_ESCAPE_LEN[e]
        else:
            digits, base, allowed, want = self.expr[i + 1 : i + 4], 8, string.octdigits, 3
        if len(digits) != want or any(d not in allowed for d in digits):
            raise self.fail(i, f'invalid escape sequence "\\{e}": expected {want} '
                               f'{"hex" if base == 16 else "octal"} digits')
        code = int(digits, base)
        if (e in "01234567" and code > 0xFF) or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
            escape = self.expr[i : i + 4] if base == 8 else self.expr[i : i + 2 + want]
            raise self.fail(i, f'invalid escape sequence "{escape}": not a valid character')
        return chr(code)


def _json_pointer(token: _Token) -> tuple[str, ...] | None:
    """The parts of a double-quoted JSON pointer selector like "/Node/Meta/rack", else None."""
    if token.kind != _STRING or not token.text.startswith('"') or not token.value.startswith("/"):
        return None
    parts = token.value.split("/")[1:]
    if not all(_POINTER_SEGMENT.fullmatch(p) for p in parts):
        return None
    return tuple(p.replace("~1", "/").replace("~0", "~") for p in parts)


# ------------------------------------------------------------------------------------------ matching

_GO_BOOLS = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
             "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}


def _parse_int(raw: str) -> int | None:
    # Python also accepts padding and non-ASCII digits; Go's strconv does not.
    if not raw.isascii() or raw != raw.strip():
        return None
    try:
        return int(raw, 0)
    except ValueError:
        return None


def _parse_float(raw: str) -> float | None:
    if not raw.isascii() or raw != raw.strip():
        return None
    try:
        return float(raw)
    except (ValueError, OverflowError):
        return None


def _equals(raw: str) -> Predicate:
    """Field == raw, coercing raw to the field's type the way go-bexpr does."""
    as_bool = _GO_BOOLS.get(raw)
    as_int = _parse_int(raw)
    as_float = _parse_float(raw)

    def test(v: Any) -> bool:
        if isinstance(v, str):
            return v == raw
        if isinstance(v, bool):
            return as_bool is not None and v == as_bool
        if isinstance(v, int):
            if as_int is not None:
                return v == as_int
            return as_float is not None and v == as_float
        if isinstance(v, float):
            return as_float is not None and v == as_float
        return False

    return test


def _contains(raw: str) -> Predicate:
    element_equals = _equals(raw)

    def test(v: Any) -> bool:
        if isinstance(v, str | Mapping):
            return raw in v
        if isinstance(v, list | tuple):
            return any(element_equals(item) for item in v)
        return False

    return test


def _is_empty(v: Any) -> bool:
    return isinstance(v, str | Mapping | list | tuple) and len(v) == 0


def _matches(pattern: re.Pattern[str]) -> Predicate:
    def test(v: Any) -> bool:
        return isinstance(v, str) and pattern.search(v) is not None

    return test


_POSIX_CLASSES = {
    "alnum": "0-9A-Za-z", "alpha": "A-Za-z", "ascii": "\\x00-\\x7f", "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f", "digit": "0-9", "graph": "!-~", "lower": "a-z", "print": " -~",
    "punct": "!-/:-@\\[-`{-~", "space": "\\t\\n\\v\\f\\r ", "upper": "A-Z", "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}
_POSIX_CLASS = re.compile(r"\[:(\^?)([a-z]+):\]")


def _go_regex_to_python(pattern: str) -> str:
    """Translate the RE2 spellings Python's ``re`` lacks: ``\\z`` and ``[[:alpha:]]``-style classes."""
    out: list[str] = []
    i, n, in_class = 0, len(pattern), False
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            out.append("\\Z" if pattern[i + 1] == "z" and not in_class else pattern[i : i + 2])
            i += 2
            continue
        if in_class and c == "[":
            m = _POSIX_CLASS.match(pattern, i)
            if m and m.group(2) in _POSIX_CLASSES and not m.group(1):
                out.append(_POSIX_CLASSES[m.group(2)])
                i = m.end()
                continue
        if c == "[" and not in_class:
            in_class = True
            out.append(c)
            i += 1
            # A "]" (or "^]") right after "[" is a literal member, not the end of the class.
            if pattern.startswith("^", i):
                out.append("^")
                i += 1
            if pattern.startswith("]", i):
                out.append("\\]")
                i += 1
            continue
        if c == "]" and in_class:
            in_class = False
        out.append(c)
        i += 1
    return "".join(out)


# -------------------------------------------------------------------------------------------- parser

_NEGATED = {"!=": "==", "not in": "in", "not contains": "contains", "is not empty": "is empty",
            "not matches": "matches"}
_OPERATOR_HELP = ("==, !=, contains, not contains, matches, not matches, is empty, is not empty "
                  '(or "Value in Selector")')
_OPERATOR_WORDS = frozenset({"is", "in", "contains", "matches"})


def _walk(obj: Any, path: tuple[str, ...], depth: int, leaf: Predicate, missing: bool) -> bool:
    """Follow ``path`` from ``obj`` and apply ``leaf``; a list met on the way is searched (any item).

    Iterative, so nested lists in the data cannot exhaust the stack.
    """
    pending = [(obj, depth)]
    while pending:
        obj, depth = pending.pop()
        while True:
            if obj is None:
                result: bool | None = missing
                break
            if depth == len(path):
                result = leaf(obj)
                break
            part = path[depth]
            if isinstance(obj, Mapping):
                if part not in obj:
                    result = missing
                    break
                obj = obj[part]
            elif isinstance(obj, list | tuple):
                if part.isascii() and part.isdigit():
                    index = int(part)
                    if index >= len(obj):
                        result = missing
                        break
                    obj = obj[index]
                else:
                    pending.extend((item, depth) for item in reversed(obj))
                    result = None
                    break
            else:
                result = missing
                break
            depth += 1
        if result:
            return True
    return False


def _match_node(path: tuple[str, ...], operator: str, test: Predicate) -> Predicate:
    """The predicate for one ``Selector operator Value`` with ``test`` the positive form's check."""
    negated = operator in _NEGATED
    positive = _NEGATED.get(operator, operator)
    # A missing field counts as empty and as containing / equalling / matching nothing.
    missing = (positive == "is empty") != negated
    leaf = (lambda v: not test(v)) if negated else test
    if len(path) == 1:
        key = path[0]

        # Fast path for the common top-level field.
        def top(obj: Any) -> bool:
            if isinstance(obj, Mapping):
                v = obj.get(key)
                return missing if v is None else _walk(v, path, 1, leaf, missing)
            return _walk(obj, path, 0, leaf, missing)

        return top
    return lambda obj: _walk(obj, path, 0, leaf, missing)


class _Parser:
    def __init__(self, expr: str) -> None:
        self.expr = expr
        self.tokens = _Lexer(expr).tokens()
        self.i = 0

    def fail(self, token: _Token, reason: str) -> FilterError:
        return FilterError(self.expr, token.pos, reason)

    def peek(self, ahead: int = 0) -> _Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def take(self) -> _Token:
        token = self.peek()
        self.i = min(self.i + 1, len(self.tokens) - 1)
        return token

    def at_word(self, word: str, ahead: int = 0) -> bool:
        token = self.peek(ahead)
        return token.kind == _IDENT and token.value == word

    def parse(self) -> Predicate:
        if self.peek().kind == _EOF:
            raise self.fail(self.peek(), "empty filter expression")
        node = self.or_expr(0)
        token = self.peek()
        if token.kind == _RPAREN:
            raise self.fail(token, 'unmatched ")": no "(" to close')
        if token.kind != _EOF:
            raise self.fail(token, f"unexpected {token.describe()} after a complete expression; "
                                   'expected "and", "or" or the end of the expression')
        return node

    def or_expr(self, depth: int) -> Predicate:
        parts = [self.and_expr(depth)]
        while self.at_word("or"):
            self.take()
            parts.append(self.and_expr(depth))
        if len(parts) == 1:
            return parts[0]
        return lambda obj: any(p(obj) for p in parts)

    def and_expr(self, depth: int) -> Predicate:
        parts = [self.not_expr(depth)]
        while self.at_word("and"):
            self.take()
            parts.append(self.not_expr(depth))
        if len(parts) == 1:
            return parts[0]
        return lambda obj: all(p(obj) for p in parts)

    def not_is_operand(self) -> bool:
        """Whether the ``not`` at the cursor is a field or value named "not" rather than negation."""
        after = self.peek(1)
        return after.kind == _OP or (after.kind == _IDENT and after.value in _OPERATOR_WORDS)

    def not_expr(self, depth: int) -> Predicate:
        negations = 0
        while self.at_word("not") and not self.not_is_operand():
            self.take()
            negations += 1
        node = self.group(depth)
        if negations % 2:
            return lambda obj: not node(obj)
        return node

    def group(self, depth: int) -> Predicate:
        token = self.peek()
        if token.kind != _LPAREN:
            return self.match()
        if depth >= MAX_NESTING:
            raise self.fail(token, f"expression nested too deeply (more than {MAX_NESTING} levels of "
                                   "parentheses)")
        self.take()
        node = self.or_expr(depth + 1)
        close = self.peek()
        if close.kind != _RPAREN:
            opened = FilterError(self.expr, token.pos, "")
            raise self.fail(close, f'unmatched parentheses: expected ")" to close the "(" at '
                                   f"{opened.line}:{opened.column}, found {close.describe()}")
        self.take()
        return node

    def missing_operand(self, token: _Token) -> FilterError:
        previous = self.tokens[self.i - 1] if self.i > 0 else None
        where = f' after "{previous.text}"' if previous is not None else ""
        return self.fail(token, f"missing expression{where}: expected a selector or value, "
                                f"found {token.describe()}")

    def in_follows(self) -> bool:
        return self.at_word("in", 1) or (self.at_word("not", 1) and self.at_word("in", 2))

    def match(self) -> Predicate:
        token = self.peek()
        if token.kind in (_EOF, _RPAREN, _OP, _LPAREN):
            raise self.missing_operand(token)
        if token.kind in (_IDENT, _SELECTOR, _NUMBER) or self.in_follows():
            if self.in_follows():
                return self.value_in_selector()
            if token.kind == _NUMBER:
                raise self.fail(token, f"expected a selector, found {token.describe()}: write the field "
                                       f"first (Port == {token.text}) or use {token.text} in Selector")
            self.take()
            return self.selector_op_value(token.path, token)
        pointer = _json_pointer(token)
        if pointer is None:
            raise self.fail(token, f'expected "in" or "not in" after {token.describe()}; a selector must '
                                   "come first in other comparisons (Service == \"web\")")
        self.take()
        return self.selector_op_value(pointer, token)

    def value_in_selector(self) -> Predicate:
        value = self.take()
        operator = "in"
        if self.at_word("not"):
            self.take()
            operator = "not in"
        self.take()  # "in"
        target = self.take()
        if target.kind in (_IDENT, _SELECTOR):
            path = target.path
        else:
            pointer = _json_pointer(target)
            if pointer is None:
                raise self.fail(target, f'invalid selector after "{operator}": expected a field such as '
                                        f"Tags or Meta.env, found {target.describe()}")
            path = pointer
        return _match_node(path, operator, _contains(value.value))

    def selector_op_value(self, path: tuple[str, ...], selector: _Token) -> Predicate:
        token = self.take()
        if selector.kind == _IDENT and selector.value in ("and", "or") and not (
                token.kind == _OP or (token.kind == _IDENT and token.value in _OPERATOR_WORDS | {"not"})):
            # Most likely a doubled or leading "and"/"or" rather than a field named so.
            raise self.fail(selector, f'missing expression before "{selector.value}"')
        if token.kind == _OP:
            operator = token.text
        elif token.kind == _IDENT and token.value in ("contains", "matches"):
            operator = token.value
        elif token.kind == _IDENT and token.value == "not" and (
                self.at_word("contains") or self.at_word("matches")):
            operator = "not " + self.take().value
        elif token.kind == _IDENT and token.value == "is":
            operator = "is empty"
            if self.at_word("not"):
                self.take()
                operator = "is not empty"
            word = self.take()
            if not (word.kind == _IDENT and word.value == "empty"):
                raise self.fail(word, f'expected "empty" or "not empty" after "is", found {word.describe()}')
            return _match_node(path, operator, _is_empty)
        elif token.kind == _EOF:
            raise self.fail(token, f"missing operator after selector \"{selector.text}\": expected "
                                   f"{_OPERATOR_HELP}")
        else:
            raise self.fail(token, f"unknown operator {token.describe()} after selector "
                                   f"\"{selector.text}\": expected {_OPERATOR_HELP}")

        value = self.take()
        if value.kind not in (_STRING, _NUMBER, _IDENT, _SELECTOR):
            raise self.fail(value, f'missing value after "{operator}": expected a quoted string, a number '
                                   f"or a word, found {value.describe()}")
        raw = value.value
        positive = _NEGATED.get(operator, operator)
        if positive == "==":
            return _match_node(path, operator, _equals(raw))
        if positive == "contains":
            return _match_node(path, operator, _contains(raw))
        return _match_node(path, operator, _matches(self.regex(value)))

    def regex(self, value: _Token) -> re.Pattern[str]:
        try:
            with warnings.catch_warnings():
                # e.g. FutureWarning "Possible nested set" for patterns RE2 reads differently.
                warnings.simplefilter("ignore")
                # RE2's \d, \w, \s and \b are ASCII-only.
                return re.compile(_go_regex_to_python(value.value), re.ASCII)
        except (re.error, OverflowError, RecursionError, ValueError) as exc:
            raise self.fail(value, f"invalid regular expression {value.text}: {exc}") from None


def compile_filter(expr: str) -> Predicate:
    """Compile a Consul filter expression into a predicate over one listed object.

    Raises :class:`FilterError` (a ``ValueError``) naming the problem and its position. The
    predicate never raises on JSON-like input (dicts, lists, strings, numbers, bools, None).
    An empty ``?filter=`` means "no filter" in Consul; callers should skip compiling it.
    """
    if not isinstance(expr, str):
        raise TypeError(f"filter expression must be str, not {type(expr).__name__}")
    predicate = _Parser(expr).parse()

    def matches(obj: Any) -> bool:
        return bool(predicate(obj))

    matches.__doc__ = f"Consul filter {expr!r}"
    return matches
