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


def flatten(value: dict[str, Any], max_length: int, room: int
            ) -> tuple[dict[str, AttrValue], int]:
    """At most `room` (dotted key, typed value) pairs, and how many more were left out.

    Keys come in document order, depth first; of equal keys the first wins; nulls are
    skipped (OTLP has no null attribute). Nesting deeper than `MAX_DEPTH` is kept as JSON
    text, so the recursion is bounded whatever the document.
    """
    out: dict[str, AttrValue] = {}
    left_out = _walk(value, "", 0, max_length, room, out)
    return out, left_out


def _walk(obj: dict[str, Any], prefix: str, depth: int, max_length: int, room: int,
          out: dict[str, AttrValue]) -> int:
    left_out = 0
    for k, v in obj.items():
        # OTLP keys must not be empty; an empty JSON key gets a visible stand-in.
        key = f"{prefix}.{k}" if depth else (str(k) or EMPTY_KEY)
        kind = type(v)
        if kind is dict and depth + 1 < MAX_DEPTH:
            left_out += _walk(v, key, depth + 1, max_length, room, out)
            continue
        if kind is str:
            item: AttrValue | None = v if len(v) <= max_length else cut(v, max_length)
        elif kind is dict:
            item = _compact(v, max_length)
        elif kind is list:
            item = _array(v, max_length)
        elif v is None:
            continue
        else:
            item = _scalar(v, max_length)
            if item is None:
                continue
        if len(key) > max_length:
            key = cut(key, max_length)
        if key in out:
            continue
        if len(out) >= room:
            left_out += 1
            continue
        out[key] = item
    return left_out
