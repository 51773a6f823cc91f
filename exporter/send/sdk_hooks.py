"""Every private name of the OpenTelemetry SDK this project relies on, and nothing else.

The span path hands the SDK's exporters ready-made protobuf bytes (see `exporter.otlp.encode`),
which the SDK has no public hook for. The private names used for that live here only, each
behind one small function or method with its own test in tests/test_sdk_hooks.py, so an SDK
release that renames or reshapes one fails that one named test instead of the trace suite.
The floor in pyproject.toml (1.45) is the first release where all of them exist as used.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.common._internal import (
    _encode_instrumentation_scope,
    _encode_resource,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as _Grpc
from opentelemetry.exporter.otlp.proto.http._common import (
    RequestPayloadTooLargeError,
    _is_request_too_large,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as _Http
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.semconv.attributes.http_attributes import HTTP_RESPONSE_STATUS_CODE

log = logging.getLogger(__name__)


def encode_resource(resource: Resource) -> bytes:
    """A `Resource` message, written by the SDK's own encoder (hook: `_encode_resource`)."""
    return _encode_resource(resource).SerializeToString()


def encode_scope(scope: InstrumentationScope) -> bytes:
    """An `InstrumentationScope` message (hook: `_encode_instrumentation_scope`)."""
    return _encode_instrumentation_scope(scope).SerializeToString()


class GrpcRequestHook(_Grpc):
    """The SDK's gRPC span exporter; the request of a batch comes from `request_bytes`.

    Hook: the SDK's `export` asks `_translate_data(batch)` for the request message and does
    everything else (retries, TLS, headers, compression) itself.
    """

    def request_bytes(self, batch: Sequence[Any]) -> bytes:
        raise NotImplementedError

    def _translate_data(self, data: Sequence[Any]) -> ExportTraceServiceRequest:  # type: ignore[override]
        # The stub wants a message: parsing the bytes (native code) and serializing them
        # again costs about 2 µs a span, a small part of the budget.
        return ExportTraceServiceRequest.FromString(self.request_bytes(data))


class HttpSendHook(_Http):
    """The SDK's HTTP/protobuf span exporter; the body of a batch comes from `request_bytes`.

    The SDK has no translate step over HTTP, so `export` mirrors its own, with its private
    parts: `_shutdown`, `_metrics.export_operation`, `_max_request_size`,
    `_is_request_too_large` and `_client.export` (which retries and reads the response).
    """

    def request_bytes(self, batch: Sequence[Any]) -> bytes:
        raise NotImplementedError

    def export(self, spans: Sequence[Any]) -> SpanExportResult:  # type: ignore[override]
        if self._shutdown:
            log.warning("Exporter already shutdown, ignoring batch")
            return SpanExportResult.FAILURE
        with self._metrics.export_operation(len(spans)) as result:
            data = self.request_bytes(spans)
            if _is_request_too_large(data, self._max_request_size):
                log.warning("Dropping span batch: serialized size %d bytes exceeds "
                            "max_request_size %d bytes.", len(data), self._max_request_size)
                result.error = RequestPayloadTooLargeError(
                    f"Serialized span request size {len(data)} bytes exceeds "
                    f"max_request_size {self._max_request_size} bytes.")
                return SpanExportResult.FAILURE
            sent = self._client.export(data)
            if not sent.success:
                result.error = sent.error
                result.error_attrs = ({HTTP_RESPONSE_STATUS_CODE: sent.status_code}
                                      if sent.status_code is not None else None)
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS
