"""One test per private OpenTelemetry SDK name we use (exporter/send/sdk_hooks.py).

An SDK upgrade that renames or reshapes a hook fails the test named for it. The exporters
talk to a real OTLP receiver (tests/otlp_receiver.py), so "works" means spans arrived.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope as ScopeMessage
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ResourceMessage
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from exporter.otlp import encode
from exporter.send import sdk_hooks
from exporter.send.envelope import Envelope
from tests.otlp_receiver import Receiver

ENVELOPE = Envelope(Resource.create({"service.name": "hooks", "cluster": "eu-1"}),
                           InstrumentationScope("pggit-exporter", "9.9"))


def one_span(name: str) -> bytes:
    return encode.span(b"\x01" * 16, b"\x02" * 8, None, name, 1_000, 2_000,
                       encode.attributes([("k", "v")]))


def test_hook_encode_resource() -> None:
    message = ResourceMessage.FromString(
        sdk_hooks.encode_resource(Resource({"service.name": "x", "n": 3})))
    assert {kv.key: kv.value for kv in message.attributes}["n"].int_value == 3


def test_hook_encode_instrumentation_scope() -> None:
    message = ScopeMessage.FromString(sdk_hooks.encode_scope(InstrumentationScope("s", "1.2")))
    assert (message.name, message.version) == ("s", "1.2")


class _Grpc(sdk_hooks.GrpcRequestHook):
    def request_bytes(self, batch: Sequence[bytes]) -> bytes:
        return ENVELOPE.request(batch)


class _Http(sdk_hooks.HttpSendHook):
    def request_bytes(self, batch: Sequence[bytes]) -> bytes:
        return ENVELOPE.request(batch)


def test_hook_grpc_translate_data(receiver: Receiver) -> None:
    exporter = _Grpc(endpoint=receiver.grpc_endpoint, insecure=True, timeout=5)
    try:
        assert exporter.export([one_span("over-grpc")]) == SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    assert [(s.name, s.resource["cluster"]) for s in receiver.spans] == [("over-grpc", "eu-1")]


def test_hook_http_client_export(receiver: Receiver) -> None:
    exporter = _Http(endpoint=receiver.http_endpoint, timeout=5)
    try:
        assert exporter.export([one_span("over-http")]) == SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    assert [(s.name, s.resource["cluster"]) for s in receiver.spans] == [("over-http", "eu-1")]


def test_hook_http_refused_batch_is_a_failure(receiver: Receiver) -> None:
    receiver.refuse = True
    exporter = _Http(endpoint=receiver.http_endpoint, timeout=1)
    try:
        assert exporter.export([one_span("refused")]) == SpanExportResult.FAILURE
    finally:
        exporter.shutdown()
    assert receiver.spans == []


def test_hook_http_max_request_size(receiver: Receiver) -> None:
    exporter = _Http(endpoint=receiver.http_endpoint, timeout=5)
    exporter._max_request_size = 10
    try:
        assert exporter.export([one_span("too-big")]) == SpanExportResult.FAILURE
    finally:
        exporter.shutdown()
    assert receiver.requests == 0


def test_hook_http_export_after_shutdown(receiver: Receiver) -> None:
    exporter = _Http(endpoint=receiver.http_endpoint, timeout=5)
    exporter.shutdown()
    assert exporter.export([one_span("late")]) == SpanExportResult.FAILURE
    assert receiver.requests == 0
