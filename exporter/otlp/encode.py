"""OTLP spans written straight to protobuf wire format, one `bytes` per span.

Why not the SDK's path: building a `ReadableSpan` per row and letting `encode_spans` turn it
into one Python protobuf object per span, attribute and value cost more than the whole
budget of the 20,000 spans/s target on one core. Here the mapper writes each span's
`opentelemetry.proto.trace.v1.Span` bytes once, when the row is read; a batch is those
bytes joined inside a request envelope (`exporter.send.envelope`). The official exporters
still do the sending (see `exporter.send.exporters`), and the tests parse what this module
writes with the official generated messages and compare it with the SDK encoder's output for
the same span.

Field numbers are those of `opentelemetry/proto/trace/v1/trace.proto` and
`common/v1/common.proto`; every tag used is below 128, so it is one byte.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

SPAN_ATTRIBUTE = b"\x4a"  # Span.attributes
EVENT_ATTRIBUTE = b"\x1a"  # Span.Event.attributes

STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2

_pack_d = struct.Struct("<d").pack
_pack_q = struct.Struct("<Q").pack
_SMALL = tuple(bytes((i,)) for i in range(128))
_KIND_INTERNAL = b"\x30\x01"
# Span.flags (field 16, fixed32): SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK, parents never remote,
# which is what the SDK writes for a span whose parent context is local.
_FLAGS = b"\x85\x01" + struct.pack("<I", 0x100)


def varint(value: int) -> bytes:
    """Base-128 varint; a negative int64 as its two's complement, ten bytes, as protobuf does."""
    if value < 0:
        value += 1 << 64
    if value < 0x80:
        return _SMALL[value]
    if value < 0x4000:
        return bytes(((value & 0x7F) | 0x80, value >> 7))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field."""
    n = len(payload)
    return tag + (_SMALL[n] if n < 0x80 else varint(n)) + payload


def text(value: str) -> bytes:
    """UTF-8 for a protobuf string; 'replace' keeps a batch parseable whatever the text."""
    return value.encode("utf-8", "replace")


def string_value(value: str) -> bytes:
    """An `AnyValue` holding a string."""
    raw = value.encode("utf-8", "replace")
    n = len(raw)
    return b"\x0a" + (_SMALL[n] if n < 0x80 else varint(n)) + raw


def any_value(value: Any) -> bytes:
    """An `AnyValue` for the types attributes have here (`AttrValue`): str, bool, int, float
    and arrays of those (bool before int: bool is an int)."""
    if isinstance(value, str):
        return string_value(value)
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + varint(value)
    if isinstance(value, float):
        return b"\x21" + _pack_d(value)
    if isinstance(value, Sequence):
        return field(b"\x2a", b"".join(field(b"\x0a", any_value(v)) for v in value))
    raise TypeError(f"attribute value of type {type(value).__name__}")


@lru_cache(maxsize=4096)
def key(name: str) -> bytes:
    """`KeyValue.key`, cached: the same few keys repeat on every span."""
    return field(b"\x0a", text(name))


def key_value(tag: bytes, key_field: bytes, value: bytes) -> bytes:
    """A `KeyValue` field from an encoded key (see `key`) and an encoded `AnyValue`."""
    n = len(value)
    body = key_field + b"\x12" + (_SMALL[n] if n < 0x80 else varint(n)) + value
    n = len(body)
    return tag + (_SMALL[n] if n < 0x80 else varint(n)) + body


def attribute(key_field: bytes, value: Any, tag: bytes = SPAN_ATTRIBUTE) -> bytes:
    """A `KeyValue` field; a short string (most attributes) is written in one step."""
    if type(value) is not str:
        return key_value(tag, key_field, any_value(value))
    raw = value.encode("utf-8", "replace")
    n = len(raw)
    size = len(key_field) + n + 4
    if size < 0x80:
        return b"".join((tag, _SMALL[size], key_field, b"\x12", _SMALL[n + 2], b"\x0a",
                         _SMALL[n], raw))
    return key_value(tag, key_field, b"\x0a" + varint(n) + raw)


def attributes(pairs: Iterable[tuple[str, Any]], tag: bytes = SPAN_ATTRIBUTE) -> bytes:
    """Repeated `KeyValue` fields; None values are left out (OTLP has no null)."""
    return b"".join([attribute(key(k), v, tag) for k, v in pairs if v is not None])


def span(trace_id: bytes, span_id: bytes, parent_span_id: bytes | None, name: str,
         start_ns: int, end_ns: int, attrs: bytes, status_code: int = STATUS_UNSET,
         status_message: str | None = None, events: bytes = b"") -> bytes:
    """A `Span` message; `attrs` and `events` are already encoded fields (`event`)."""
    parts = b"\x0a\x10" + trace_id + b"\x12\x08" + span_id
    if parent_span_id is not None:
        parts += b"\x22\x08" + parent_span_id
    if name:
        parts += field(b"\x2a", text(name))
    status = b""
    if status_message:
        status = field(b"\x12", text(status_message))
    if status_code:
        status += b"\x18" + _SMALL[status_code]
    return b"".join((parts, _KIND_INTERNAL, b"\x39", _pack_q(start_ns), b"\x41",
                     _pack_q(end_ns), attrs, events, field(b"\x7a", status), _FLAGS))


def event(name: str, time_ns: int, attrs: bytes) -> bytes:
    """A `Span.events` field; `attrs` encoded with `EVENT_ATTRIBUTE`."""
    return field(b"\x5a", b"\x09" + _pack_q(time_ns) + field(b"\x12", text(name)) + attrs)
