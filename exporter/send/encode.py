"""OTLP protobuf encoding of spans, written straight to wire format.

The SDK's `encode_spans` builds one Python protobuf object per span, attribute and value;
that costs ~150 µs per span here, which alone would cap the forwarder well below its target
of 20,000 spans/s on one core. This encoder writes the same message (the tests compare it
with the SDK's, field for field) as bytes, and the official gRPC exporter sends it: only its
`_translate_data` step is replaced, transport, TLS, headers, retries and compression are the
SDK's. Resource and scope are encoded once by the SDK and reused.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.common._internal import (
    _encode_instrumentation_scope,
    _encode_resource,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan

_pack_d = struct.Struct("<d").pack
_pack_q = struct.Struct("<Q").pack
_KIND = {0: 1, 1: 2, 2: 3, 3: 4, 4: 5}
_FLAGS = b"\x85\x01" + struct.pack("<I", 0x100)  # field 16, fixed32: context has is_remote
_FLAGS_REMOTE = b"\x85\x01" + struct.pack("<I", 0x300)


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field; `tag` is (field << 3) | 2, always below 128 here."""
    n = len(payload)
    if n < 0x80:
        return bytes((tag, n)) + payload
    return bytes((tag,)) + _varint(n) + payload


def _any(value: Any) -> bytes:
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _field(0x0A, value.encode("utf-8", "surrogatepass"))
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _pack_d(value)
    if isinstance(value, bytes):
        return _field(0x3A, value)
    if isinstance(value, Mapping):
        return _field(0x32, _attributes(value, 0x0A))
    if isinstance(value, Sequence):
        return _field(0x2A, b"".join(_field(0x0A, _any(v)) for v in value))
    raise TypeError(f"attribute value of type {type(value).__name__}")


def _attributes(attrs: Mapping[str, Any] | None, tag: int) -> bytes:
    if not attrs:
        return b""
    out = []
    for k, v in attrs.items():
        if v is None:
            continue
        key = k.encode("utf-8", "surrogatepass")
        if type(v) is str:
            raw = v.encode("utf-8", "surrogatepass")
            value = _field(0x0A, raw) if len(raw) < 0x80 else _any(v)
        else:
            value = _any(v)
        out.append(_field(tag, _field(0x0A, key) + _field(0x12, value)))
    return b"".join(out)


def encode_span(span: ReadableSpan) -> bytes:
    ctx = span.context
    assert ctx is not None
    parts = [b"\x0a\x10" + ctx.trace_id.to_bytes(16, "big"),
             b"\x12\x08" + ctx.span_id.to_bytes(8, "big")]
    parent = span.parent
    if parent is not None:
        parts.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
    if span.name:
        parts.append(_field(0x2A, span.name.encode("utf-8", "surrogatepass")))
    parts.append(b"\x30" + _varint(_KIND[span.kind.value]))
    if span.start_time:
        parts.append(b"\x39" + _pack_q(span.start_time))
    if span.end_time:
        parts.append(b"\x41" + _pack_q(span.end_time))
    parts.append(_attributes(span.attributes, 0x4A))
    for event in span.events:
        body = b""
        if event.timestamp:
            body += b"\x09" + _pack_q(event.timestamp)
        if event.name:
            body += _field(0x12, event.name.encode("utf-8", "surrogatepass"))
        body += _attributes(event.attributes, 0x1A)
        parts.append(_field(0x5A, body))
    status = span.status
    body = b""
    if status.description:
        body += _field(0x12, status.description.encode("utf-8", "surrogatepass"))
    if status.status_code.value:
        body += b"\x18" + _varint(status.status_code.value)
    parts.append(_field(0x7A, body))
    parts.append(_FLAGS_REMOTE if parent is not None and parent.is_remote else _FLAGS)
    return b"".join(parts)


def encode_request(spans: Sequence[ReadableSpan]) -> bytes:
    """Serialized `ExportTraceServiceRequest`, spans grouped by resource, then scope."""
    groups: dict[int, tuple[Any, dict[int, tuple[Any, list[bytes]]]]] = {}
    for span in spans:
        resource = span.resource
        scope = span.instrumentation_scope
        by_scope = groups.setdefault(id(resource), (resource, {}))[1]
        by_scope.setdefault(id(scope), (scope, []))[1].append(encode_span(span))
    out = []
    for resource, scopes in groups.values():
        body = _field(0x0A, _encode_resource(resource).SerializeToString())
        for scope, encoded in scopes.values():
            scope_body = b""
            if scope is not None:
                scope_body += _field(0x0A, _encode_instrumentation_scope(scope)
                                     .SerializeToString())
            scope_body += b"".join(_field(0x12, s) for s in encoded)
            if scope is not None and scope.schema_url:
                scope_body += _field(0x1A, scope.schema_url.encode())
            body += _field(0x12, scope_body)
        if resource.schema_url:
            body += _field(0x1A, resource.schema_url.encode())
        out.append(_field(0x0A, body))
    return b"".join(out)


def fast_request(spans: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
    """The request message the gRPC stub sends; parsing bytes is native code, so cheap."""
    return ExportTraceServiceRequest.FromString(encode_request(spans))
