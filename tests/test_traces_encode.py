"""The wire encoder used for gRPC writes exactly the message the SDK's encoder builds."""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode

from exporter.send.encode import fast_request


def test_wire_encoder_matches_the_sdk_encoder_for_every_value_type() -> None:
    resource = Resource.create({"service.name": "pggit", "n": 3})
    scope = InstrumentationScope("pggit-exporter", "1.0")
    parent = SpanContext(7, 8, is_remote=False)
    spans = [
        ReadableSpan(
            name="commit" + "é" * 100, context=SpanContext(2**127 + 5, 2**63 + 1, False),
            parent=parent, resource=resource, instrumentation_scope=scope,
            attributes={"s": "x" * 300, "i": -5, "big": 2**62, "f": 1.25, "b": False,
                        "arr": (1, 2, 3), "sarr": ("a", "b"), "u": "ünï"},
            events=[Event("exception", {"exception.message": "boom"}, timestamp=123)],
            kind=SpanKind.INTERNAL, status=Status(StatusCode.ERROR, "boom"),
            start_time=1_700_000_000_000_000_001, end_time=1_700_000_000_000_000_999),
        ReadableSpan(name="root", context=SpanContext(9, 10, False), resource=resource,
                     instrumentation_scope=scope, attributes={}, status=Status(StatusCode.OK),
                     start_time=1, end_time=2),
        ReadableSpan(name="other-resource", context=SpanContext(11, 12, False),
                     resource=Resource.create({"service.name": "x"}),
                     instrumentation_scope=scope, start_time=1, end_time=2),
    ]
    assert fast_request(spans) == encode_spans(spans)
