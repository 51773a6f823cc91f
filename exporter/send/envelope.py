"""The request around a batch of encoded spans (`exporter.otlp.encode`).

The resource and scope are encoded once, by the SDK's own encoders (reached through
`exporter.send.sdk_hooks`); a batch is then only the spans' bytes joined inside them.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from exporter.otlp.encode import field, text
from exporter.send.sdk_hooks import encode_resource, encode_scope


class Envelope:
    """The `ExportTraceServiceRequest` around a batch: one resource, one scope, encoded once."""

    def __init__(self, resource: Resource, scope: InstrumentationScope):
        self.resource = resource
        self.scope = scope
        self._resource = field(b"\x0a", encode_resource(resource))
        self._scope = field(b"\x0a", encode_scope(scope))
        self._scope_schema = field(b"\x1a", text(scope.schema_url)) if scope.schema_url else b""
        self._resource_schema = (field(b"\x1a", text(resource.schema_url))
                                 if resource.schema_url else b"")

    def request(self, spans: Sequence[bytes]) -> bytes:
        """Serialized `ExportTraceServiceRequest` holding `spans` (encoded `Span` messages)."""
        body = b"".join([self._scope, *(field(b"\x12", s) for s in spans), self._scope_schema])
        resource_spans = self._resource + field(b"\x12", body) + self._resource_schema
        return field(b"\x0a", resource_spans)
