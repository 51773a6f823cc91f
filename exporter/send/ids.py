"""Deterministic OTLP ids from pgGit's text ids.

A replay after a crash must produce the very same trace, so ids are a pure function of the
row: no randomness, no process state. pgGit fills missing ids with `gen_random_uuid()::text`,
and a UUID already is 16 random bytes, so it keeps them as the trace id (a trace then carries
the id an operator sees in the table). Any other text (`span_merge_workflow_001`) is hashed.
"""

from __future__ import annotations

import hashlib
import uuid
from functools import lru_cache

_TRACE_SALT = b"pggit.trace\x00"
_SPAN_SALT = b"pggit.span\x00"


@lru_cache(maxsize=65536)
def trace_id(text: str) -> int:
    """128-bit OTLP trace id of a root's `trace_id`; never 0 (invalid in OTLP)."""
    try:
        value = uuid.UUID(text).int if len(text) in (32, 36, 38, 45) else 0
    except ValueError:
        value = 0
    if value:
        return value
    digest = hashlib.sha256(_TRACE_SALT + text.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:16], "big") or 1


@lru_cache(maxsize=65536)
def span_id(text: str) -> int:
    """64-bit OTLP span id of a `span_id` text; never 0.

    Eight bytes cannot hold a UUID, so every span id is hashed; the original travels as the
    `pggit.span_id` attribute.
    """
    digest = hashlib.sha256(_SPAN_SALT + text.encode("utf-8", "surrogatepass")).digest()
    for start in range(0, 32, 8):
        value = int.from_bytes(digest[start:start + 8], "big")
        if value:
            return value
    return 1


def hex_trace_id(value: int) -> str:
    return f"{value:032x}"


def hex_span_id(value: int) -> str:
    return f"{value:016x}"
