"""Flattening pgGit's `attributes` JSONB into OTLP attributes, with caps.

Callers write any JSON they like into `attributes`. OTLP attributes are flat and typed, and
backends reject or truncate huge payloads, so nested keys are joined with dots, scalar values
keep their JSON type, homogeneous arrays of scalars stay arrays, and everything else (mixed
arrays, arrays of objects, nesting deeper than `MAX_DEPTH`) becomes compact JSON text. Every
string is cut to `max_length` and at most `max_count` attributes are kept, so one hostile row
cannot blow up the exporter's memory or a batch's size.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

MAX_DEPTH = 16
"""Nesting levels flattened into dotted keys; deeper objects are kept as JSON text."""

MAX_JSON_TEXT = 1 << 20
"""Attribute JSON longer than this is not parsed at all (see `parse`)."""

EMPTY_KEY = "(empty)"

_INT64 = (-(1 << 63), (1 << 63) - 1)

AttrValue = str | bool | int | float | tuple[Any, ...]


def cut(value: str, max_length: int) -> str:
    """Shorten a string, marking the cut so a reader knows the value is incomplete."""
    if len(value) <= max_length:
        return value
    return value[: max(max_length - 1, 0)] + "\u2026"


def parse(text: str | None) -> tuple[Any, str | None]:
    """Parse JSON text from the database; returns (value, problem).

    Parsing happens here rather than in the driver because Python's json module recurses: a
    document nested a few thousand levels deep raises RecursionError, which must cost one
    attribute, not the reader thread.
    """
    if text is None:
        return None, None
    if len(text) > MAX_JSON_TEXT:
        return None, f"attributes too large ({len(text)} characters)"
    try:
        return json.loads(text), None
    except (RecursionError, ValueError) as exc:
        return None, f"attributes not parsed: {type(exc).__name__}"


def _scalar(value: Any, max_length: int) -> AttrValue | None:
    if isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        return value if _INT64[0] <= value <= _INT64[1] else cut(str(value), max_length)
    if isinstance(value, str):
        return cut(value, max_length)
    return None


def _compact(value: Any, max_length: int) -> str:
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    except (RecursionError, ValueError):
        text = "<unrepresentable>"
    return cut(text, max_length)


def _array(values: list[Any], max_length: int) -> AttrValue:
    kinds = {type(v) for v in values}
    if len(kinds) == 1 and kinds <= {str, bool, int, float}:
        items = [_scalar(v, max_length) for v in values]
        if all(type(i) is type(values[0]) for i in items):
            # A bounded number of elements: a long array is cut like a long string.
            return tuple(items[:max_length])
    return _compact(values, max_length)


def flatten(value: Any, max_length: int, prefix: str = "") -> Iterator[tuple[str, AttrValue]]:
    """Yield (dotted key, typed value) pairs; nulls are skipped (OTLP has no null attribute).

    Iterative, with an explicit depth limit, so nesting costs no recursion.
    """
    stack: list[tuple[str, Any, int]] = [(prefix, value, 0)]
    while stack:
        key, item, depth = stack.pop()
        if isinstance(item, Mapping):
            if depth >= MAX_DEPTH:
                yield cut(key, max_length), _compact(item, max_length)
                continue
            for k, v in reversed(list(item.items())):
                # OTLP keys must not be empty; an empty JSON key gets a visible stand-in.
                sub = f"{key}.{k}" if depth else (str(k) or EMPTY_KEY)
                stack.append((sub, v, depth + 1))
        elif isinstance(item, list):
            yield cut(key or "value", max_length), _array(item, max_length)
        elif item is not None:
            scalar = _scalar(item, max_length)
            if scalar is not None:
                yield cut(key or "value", max_length), scalar


def capped(pairs: Iterator[tuple[str, AttrValue]], room: int) -> tuple[dict[str, AttrValue], int]:
    """At most `room` attributes; returns them and how many were left out."""
    out: dict[str, AttrValue] = {}
    dropped = 0
    for key, value in pairs:
        if key in out:
            continue
        if len(out) >= room:
            dropped += 1
            continue
        out[key] = value
    return out, dropped
