"""The wire encoder writes exactly the message the SDK's encoder builds for the same span."""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode

from exporter.otlp import encode
from exporter.send.envelope import Envelope

RESOURCE = Resource.create({"service.name": "pggit", "n": 3})
SCOPE = InstrumentationScope("pggit-exporter", "1.0")
ATTRIBUTES = {"s": "x" * 300, "i": -5, "big": 2**62, "f": 1.25, "b": False, "t": True,
              "arr": (1, 2, 3), "sarr": ("a", "b"), "u": "ünï", "e": ""}


def sdk_span(trace: int, span: int, parent: int | None, name: str, attributes: dict,
             status: Status, events: list[Event]) -> ReadableSpan:
    return ReadableSpan(
        name=name, context=SpanContext(trace, span, False),
        parent=SpanContext(trace, parent, False) if parent is not None else None,
        resource=RESOURCE, instrumentation_scope=SCOPE, attributes=attributes, events=events,
        kind=SpanKind.INTERNAL, status=status, start_time=1_700_000_000_000_000_001,
        end_time=1_700_000_000_000_000_999)


def our_span(trace: int, span: int, parent: int | None, name: str, attributes: dict,
             status: Status, events: list[Event]) -> bytes:
    encoded_events = b"".join(
        encode.event(e.name, e.timestamp, encode.attributes(e.attributes.items(),
                                                            encode.EVENT_ATTRIBUTE))
        for e in events)
    return encode.span(
        trace.to_bytes(16, "big"), span.to_bytes(8, "big"),
        parent.to_bytes(8, "big") if parent is not None else None, name,
        1_700_000_000_000_000_001, 1_700_000_000_000_000_999,
        encode.attributes(attributes.items()), status.status_code.value, status.description,
        encoded_events)


CASES = [
    (2**127 + 5, 2**63 + 1, 8, "commit" + "é" * 100, ATTRIBUTES,
     Status(StatusCode.ERROR, "boom"),
     [Event("exception", {"exception.message": "boom", "n": 7}, timestamp=123)]),
    (9, 10, None, "root", {}, Status(StatusCode.OK), []),
    (11, 12, None, "", {"k": "v"}, Status(StatusCode.UNSET), []),
    (13, 14, 15, "long attributes", {f"key{i}": "v" * i for i in range(0, 400, 37)},
     Status(StatusCode.ERROR, "m" * 200), []),
]


def test_each_span_encodes_like_the_sdk() -> None:
    for case in CASES:
        ours = ExportTraceServiceRequest.FromString(
            Envelope(RESOURCE, SCOPE).request([our_span(*case)]))
        assert ours == encode_spans([sdk_span(*case)]), case[3]


def test_a_batch_encodes_like_the_sdk() -> None:
    ours = Envelope(RESOURCE, SCOPE).request([our_span(*case) for case in CASES])
    assert ExportTraceServiceRequest.FromString(ours) == encode_spans(
        [sdk_span(*case) for case in CASES])


def test_varint_covers_the_whole_range() -> None:
    from google.protobuf.internal.encoder import _VarintBytes

    for value in (0, 1, 127, 128, 300, 2**31, 2**63 - 1):
        assert encode.varint(value) == _VarintBytes(value)
    assert encode.any_value(-1) == b"\x18" + b"\xff" * 9 + b"\x01"
