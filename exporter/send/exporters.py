"""The official OTLP span exporters, fed spans that are already encoded.

Everything about the connection stays the SDK's: endpoint, TLS and client certificates,
headers, timeout, compression, its retries of transient errors and its reading of the
`OTEL_EXPORTER_OTLP_*` variables. Only the step that turns `ReadableSpan`s into a request is
replaced, because the spans arrive as protobuf bytes (`exporter.send.encode`): for gRPC the
`_translate_data` hook, for HTTP the body of `export`, which mirrors the SDK's own.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc
from opentelemetry.exporter.otlp.proto.http._common import (
    RequestPayloadTooLargeError,
    _is_request_too_large,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.semconv.attributes.http_attributes import HTTP_RESPONSE_STATUS_CODE

from exporter.send.encode import Envelope

log = logging.getLogger(__name__)


class GrpcBytesExporter(Grpc):
    """The SDK's gRPC exporter; a batch is a sequence of encoded `Span` messages."""

    def __init__(self, envelope: Envelope, **kwargs: Any):
        super().__init__(**kwargs)
        self.envelope = envelope

    def _translate_data(self, data: Sequence[bytes]) -> ExportTraceServiceRequest:  # type: ignore[override]
        # The stub wants a message: parsing the bytes (native code) and serializing them
        # again costs about 2 µs a span, a small part of the budget.
        return ExportTraceServiceRequest.FromString(self.envelope.request(data))


class HttpBytesExporter(Http):
    """The SDK's HTTP/protobuf exporter; a batch is a sequence of encoded `Span` messages."""

    def __init__(self, envelope: Envelope, **kwargs: Any):
        super().__init__(**kwargs)
        self.envelope = envelope

    def export(self, spans: Sequence[bytes]) -> SpanExportResult:  # type: ignore[override]
        if self._shutdown:
            log.warning("Exporter already shutdown, ignoring batch")
            return SpanExportResult.FAILURE
        with self._metrics.export_operation(len(spans)) as result:
            data = self.envelope.request(spans)
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
