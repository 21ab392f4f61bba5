"""Checks on JSON from outside (clients, agents) before it is stored: nesting, NUL characters, bad Unicode, infinities.

PostgreSQL refuses NUL characters in text and jsonb, lone surrogates cannot be encoded to
UTF-8, jsonb has no Infinity or NaN (`1e400` parses to infinity), and values nested
deeper than Python's recursion limit break the encoders that store and render them.
Each of these would otherwise surface as a server error on write or read (or, in a
worker, as a crashed run). Pure code.
"""

import math
from collections.abc import Iterator
from typing import Any

from plans.shape import MAX_JSON_DEPTH


def text_problem(text: str) -> str:
    """Return why a string cannot be stored as it is, or ""."""
    if "\x00" in text:
        return "Contains a NUL character (\\u0000)."
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "Is not valid Unicode (a lone surrogate such as \\ud800)."
    return ""


def storable_text(text: str) -> str:
    """Return text with what PostgreSQL cannot store written out: NUL as \\x00, lone surrogates as \\udXXX."""
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def json_problem(value: Any, *, max_depth: int = MAX_JSON_DEPTH) -> str:
    """Return why a parsed JSON value cannot be stored as it is, or "" when it can."""
    for item, depth in _walk(value):
        if isinstance(item, dict | list | tuple):
            if depth > max_depth:
                return f"Nested more than {max_depth} levels deep."
            for key in item.keys() if isinstance(item, dict) else ():
                problem = text_problem(key) if isinstance(key, str) else ""
                if problem:
                    return f"A key {problem[0].lower()}{problem[1:]}"
        elif isinstance(item, str):
            problem = text_problem(item)
            if problem:
                return f"A string {problem[0].lower()}{problem[1:]}"
        elif isinstance(item, float) and not math.isfinite(item):
            return f"Numbers must be finite (got {item})."
    return ""


def nested_deeper_than(value: Any, levels: int) -> bool:
    """Return whether objects and lists in a parsed JSON value nest more than `levels` deep."""
    return any(isinstance(item, dict | list | tuple) and depth > levels for item, depth in _walk(value))


def _walk(value: Any) -> Iterator[tuple[Any, int]]:
    """Yield each value nested in a parsed JSON value with its depth, without recursion.

    An object or a list is one level; a scalar adds none. A value nested deeper than
    Python's recursion limit is measured too, and the walk goes only as deep as its
    caller reads.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        yield item, depth
        if isinstance(item, dict | list | tuple):
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
