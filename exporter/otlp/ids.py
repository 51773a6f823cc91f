"""Deterministic OTLP ids from pgGit's text ids.

A replay after a crash must produce the very same trace, so ids are a pure function of the
row: no randomness, no process state. pgGit fills missing ids with `gen_random_uuid()::text`,
and a UUID already is 16 random bytes, so it keeps them as the trace id (a trace then carries
the id an operator sees in the table). Any other text (`span_merge_workflow_001`) is hashed.
Ids are the big-endian bytes OTLP puts on the wire.
"""

from __future__ import annotations

import hashlib
import uuid
from functools import lru_cache

_TRACE_SALT = b"pggit.trace\x00"
_SPAN_SALT = b"pggit.span\x00"
_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)
CACHE_SIZE = 16384
"""Ids remembered per kind. A root's trace id is computed for the histogram exemplar when a
row is read and again when the sender encodes it, up to a few batches later, and a parent's
span id for each of its children; 16k entries (~10 MB for both kinds) cover that, where the
former 64k cost ~40 MB with a backlog of distinct roots."""


@lru_cache(maxsize=CACHE_SIZE)
def trace_id(text: str) -> bytes:
    """128-bit OTLP trace id of a root's `trace_id`; never all zero (invalid in OTLP)."""
    try:
        value = uuid.UUID(text).bytes if len(text) in (32, 36, 38, 45) else _ZERO_TRACE
    except ValueError:
        value = _ZERO_TRACE
    if value != _ZERO_TRACE:
        return value
    digest = hashlib.sha256(_TRACE_SALT + text.encode("utf-8", "surrogatepass")).digest()
    return digest[:16] if digest[:16] != _ZERO_TRACE else _ZERO_TRACE[:15] + b"\x01"


@lru_cache(maxsize=CACHE_SIZE)
def span_id(text: str) -> bytes:
    """64-bit OTLP span id of a `span_id` text; never all zero.

    Eight bytes cannot hold a UUID, so every span id is hashed; the original travels as the
    `pggit.span_id` attribute.
    """
    digest = hashlib.sha256(_SPAN_SALT + text.encode("utf-8", "surrogatepass")).digest()
    for start in range(0, 32, 8):
        value = digest[start:start + 8]
        if value != _ZERO_SPAN:
            return value
    return _ZERO_SPAN[:7] + b"\x01"


def hex_trace_id(value: bytes) -> str:
    return value.hex()


def hex_span_id(value: bytes) -> str:
    return value.hex()
