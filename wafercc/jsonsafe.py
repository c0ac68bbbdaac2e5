"""Bounded reading of user files (JSON configs, defect maps, TOML targets).

Python's parsers fail on hostile input with exceptions that are not wafercc errors: a 5000-digit
integer raises ValueError (the int-to-str digit limit), 100,000 nested brackets RecursionError, a
binary file UnicodeDecodeError; ``1e999`` and ``NaN`` load silently as non-finite floats.  Here
each is refused with one line, before the parser runs where possible, against wafercc.limits.
"""
from __future__ import annotations

import json
import math
import os
import re
from typing import Any

import numpy as np

from .limits import MAX_INT_DIGITS, MAX_JSON_DEPTH

_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_TOML_STRING = re.compile(rb'"""[\s\S]*?"""|\'\'\'[\s\S]*?\'\'\'|"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\'|#[^\n]*')
_TOML_INT = re.compile(rb"(?<![\w.])[+-]?\d[\d_]*")


_MAX_OBJECT_NODES = 10 ** 6


class _Refused(Exception):
    pass


def read_text(path: str, error: type[Exception], *, max_bytes: int, what: str = "file",
              where: str | None = None) -> str:
    """The UTF-8 text of ``path``, at most ``max_bytes`` long; ``error(..., where=where or path)`` otherwise."""
    shown = where or path
    try:
        size = os.path.getsize(path)
        if size > max_bytes:
            raise error(f"{size} bytes, expected a {what} of at most {max_bytes} bytes "
                        f"(wafercc.limits)", where=shown)
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise error(f"cannot read: {e.strerror or e}", where=shown) from None
    if len(data) > max_bytes:
        raise error(f"more than {max_bytes} bytes, expected a {what} of at most that (wafercc.limits)", where=shown)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"not a UTF-8 text file (byte {e.start}), expected a {what}", where=shown) from None


def _max_depth(data: bytes, strings: re.Pattern, opens: bytes, closes: bytes) -> int:
    """Deepest bracket nesting of ``data`` outside string literals (and comments), without parsing."""
    b = np.frombuffer(strings.sub(b'""', data), dtype=np.uint8)
    step = np.zeros(b.shape, dtype=np.int32)
    for c in opens:
        step[b == c] = 1
    for c in closes:
        step[b == c] = -1
    return int(np.cumsum(step).max(initial=0))


def check_text_depth(text: str, where: str, error: type[Exception], *, toml: bool = False) -> None:
    """Refuse nesting deeper than MAX_JSON_DEPTH and integer literals longer than MAX_INT_DIGITS."""
    data = text.encode("utf-8", "surrogatepass")
    depth = _max_depth(data, _TOML_STRING if toml else _JSON_STRING, b"[{", b"]}")
    if depth > MAX_JSON_DEPTH:
        raise error(f"nested {depth} levels deep, expected at most {MAX_JSON_DEPTH} (wafercc.limits.MAX_JSON_DEPTH)",
                    where=where)
    if toml:
        bare = _TOML_STRING.sub(b'""', data)
        longest = max((len(m.group().lstrip(b"+-").replace(b"_", b"")) for m in _TOML_INT.finditer(bare)), default=0)
        if longest > MAX_INT_DIGITS:
            raise error(f"an integer of {longest} digits, expected at most {MAX_INT_DIGITS} "
                        f"(wafercc.limits.MAX_INT_DIGITS)", where=where)


def _int(s: str) -> int:
    if len(s.lstrip("-")) > MAX_INT_DIGITS:
        raise _Refused(f"an integer of {len(s.lstrip('-'))} digits, expected at most {MAX_INT_DIGITS} "
                       f"(wafercc.limits.MAX_INT_DIGITS)")
    return int(s)


def _float(s: str) -> float:
    v = float(s)
    if not math.isfinite(v):
        raise _Refused(f"number {s[:40]} overflows a float, expected a finite number")
    return v


def _constant(s: str):
    raise _Refused(f"{s} is not a number JSON allows, expected a finite number")


def loads(text: str, where: str, error: type[Exception]) -> Any:
    """``json.loads`` with the limits: depth, integer digits, finite floats; one-line ``error``s."""
    check_text_depth(text, where, error)
    try:
        return json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except _Refused as e:
        raise error(str(e), where=where) from None
    except json.JSONDecodeError as e:
        raise error(f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})", where=where) from None
    except (RecursionError, ValueError) as e:  # depth is checked above; kept as a last guard
        raise error(f"not valid JSON ({type(e).__name__})", where=where) from None


def load_file(path: str, error: type[Exception], *, max_bytes: int, what: str = "JSON file") -> Any:
    return loads(read_text(path, error, max_bytes=max_bytes, what=what), path, error)


def check_object_depth(obj: Any, where: str, error: type[Exception]) -> None:
    """Refuse a Python object (an API caller's dict) nested deeper than MAX_JSON_DEPTH, iteratively
    (copy.deepcopy and pydantic would recurse into RecursionError on a 100,000-deep one)."""
    stack, visited = [(obj, 0)], 0
    while stack:
        o, d = stack.pop()
        if d > MAX_JSON_DEPTH:
            raise error(f"nested more than {MAX_JSON_DEPTH} levels deep, expected at most that "
                        f"(wafercc.limits.MAX_JSON_DEPTH)", where=where)
        if isinstance(o, dict):
            children = o.values()
        elif isinstance(o, (list, tuple)):
            children = o
        else:
            continue
        visited += 1
        if visited > _MAX_OBJECT_NODES:   # shared sub-objects can make a small object a huge tree
            raise error(f"more than {_MAX_OBJECT_NODES} nested lists and objects, expected a config-sized tree",
                        where=where)
        stack.extend((c, d + 1) for c in children)
