"""The official OTLP span exporters, fed spans that are already encoded.

Everything about the connection stays the SDK's: endpoint, TLS and client certificates,
headers, timeout, compression, its retries of transient errors and its reading of the
`OTEL_EXPORTER_OTLP_*` variables. Only the step that turns `ReadableSpan`s into a request is
replaced, because the spans arrive as protobuf bytes (`exporter.otlp.encode`); the SDK
internals that takes are kept in `exporter.send.sdk_hooks`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from exporter.send.envelope import Envelope
from exporter.send.sdk_hooks import GrpcRequestHook, HttpSendHook


class GrpcBytesExporter(GrpcRequestHook):
    """The SDK's gRPC exporter; a batch is a sequence of encoded `Span` messages."""

    def __init__(self, envelope: Envelope, **kwargs: Any):
        super().__init__(**kwargs)
        self.envelope = envelope

    def request_bytes(self, batch: Sequence[bytes]) -> bytes:
        return self.envelope.request(batch)


class HttpBytesExporter(HttpSendHook):
    """The SDK's HTTP/protobuf exporter; a batch is a sequence of encoded `Span` messages."""

    def __init__(self, envelope: Envelope, **kwargs: Any):
        super().__init__(**kwargs)
        self.envelope = envelope

    def request_bytes(self, batch: Sequence[bytes]) -> bytes:
        return self.envelope.request(batch)
