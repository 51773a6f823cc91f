"""client_model's metrics.proto as a descriptor, to decode the protobuf exposition in tests.

The messages and field numbers are those of github.com/prometheus/client_model
(io/prometheus/client/metrics.proto), declared here because no maintained Python package
ships them; the protobuf runtime itself (a dependency of opentelemetry-proto) does the
decoding, so the exporter's hand-written encoder is checked by an independent parser.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2
from google.protobuf.internal.decoder import _DecodeVarint32

F = descriptor_pb2.FieldDescriptorProto
OPT, REP = F.LABEL_OPTIONAL, F.LABEL_REPEATED

MESSAGES: dict[str, list[tuple[str, int, int, int, str]]] = {
    "LabelPair": [("name", 1, F.TYPE_STRING, OPT, ""), ("value", 2, F.TYPE_STRING, OPT, "")],
    "Gauge": [("value", 1, F.TYPE_DOUBLE, OPT, "")],
    "Counter": [("value", 1, F.TYPE_DOUBLE, OPT, ""), ("exemplar", 2, F.TYPE_MESSAGE, OPT,
                                                        "Exemplar")],
    "Quantile": [("quantile", 1, F.TYPE_DOUBLE, OPT, ""), ("value", 2, F.TYPE_DOUBLE, OPT, "")],
    "Summary": [("sample_count", 1, F.TYPE_UINT64, OPT, ""),
                ("sample_sum", 2, F.TYPE_DOUBLE, OPT, ""),
                ("quantile", 3, F.TYPE_MESSAGE, REP, "Quantile")],
    "Untyped": [("value", 1, F.TYPE_DOUBLE, OPT, "")],
    "Histogram": [("sample_count", 1, F.TYPE_UINT64, OPT, ""),
                  ("sample_count_float", 4, F.TYPE_DOUBLE, OPT, ""),
                  ("sample_sum", 2, F.TYPE_DOUBLE, OPT, ""),
                  ("bucket", 3, F.TYPE_MESSAGE, REP, "Bucket"),
                  ("schema", 5, F.TYPE_SINT32, OPT, ""),
                  ("zero_threshold", 6, F.TYPE_DOUBLE, OPT, ""),
                  ("zero_count", 7, F.TYPE_UINT64, OPT, ""),
                  ("zero_count_float", 8, F.TYPE_DOUBLE, OPT, ""),
                  ("negative_span", 9, F.TYPE_MESSAGE, REP, "BucketSpan"),
                  ("negative_delta", 10, F.TYPE_SINT64, REP, ""),
                  ("negative_count", 11, F.TYPE_DOUBLE, REP, ""),
                  ("positive_span", 12, F.TYPE_MESSAGE, REP, "BucketSpan"),
                  ("positive_delta", 13, F.TYPE_SINT64, REP, ""),
                  ("positive_count", 14, F.TYPE_DOUBLE, REP, "")],
    "Bucket": [("cumulative_count", 1, F.TYPE_UINT64, OPT, ""),
               ("cumulative_count_float", 4, F.TYPE_DOUBLE, OPT, ""),
               ("upper_bound", 2, F.TYPE_DOUBLE, OPT, ""),
               ("exemplar", 3, F.TYPE_MESSAGE, OPT, "Exemplar")],
    "BucketSpan": [("offset", 1, F.TYPE_SINT32, OPT, ""), ("length", 2, F.TYPE_UINT32, OPT, "")],
    "Exemplar": [("label", 1, F.TYPE_MESSAGE, REP, "LabelPair"),
                 ("value", 2, F.TYPE_DOUBLE, OPT, ""),
                 ("timestamp", 3, F.TYPE_MESSAGE, OPT, ".google.protobuf.Timestamp")],
    "Metric": [("label", 1, F.TYPE_MESSAGE, REP, "LabelPair"),
               ("gauge", 2, F.TYPE_MESSAGE, OPT, "Gauge"),
               ("counter", 3, F.TYPE_MESSAGE, OPT, "Counter"),
               ("summary", 4, F.TYPE_MESSAGE, OPT, "Summary"),
               ("untyped", 5, F.TYPE_MESSAGE, OPT, "Untyped"),
               ("histogram", 7, F.TYPE_MESSAGE, OPT, "Histogram"),
               ("timestamp_ms", 6, F.TYPE_INT64, OPT, "")],
    "MetricFamily": [("name", 1, F.TYPE_STRING, OPT, ""), ("help", 2, F.TYPE_STRING, OPT, ""),
                     ("type", 3, F.TYPE_ENUM, OPT, "MetricType"),
                     ("metric", 4, F.TYPE_MESSAGE, REP, "Metric"),
                     ("unit", 5, F.TYPE_STRING, OPT, "")],
}
TYPES = ["COUNTER", "GAUGE", "SUMMARY", "UNTYPED", "HISTOGRAM", "GAUGE_HISTOGRAM"]
PACKAGE = "io.prometheus.client"


def _build() -> Any:
    file = descriptor_pb2.FileDescriptorProto(
        name="pggit_tests/metrics.proto", package=PACKAGE, syntax="proto2",
        dependency=[timestamp_pb2.DESCRIPTOR.name])
    enum = file.enum_type.add(name="MetricType")
    for number, name in enumerate(TYPES):
        enum.value.add(name=name, number=number)
    for message, fields in MESSAGES.items():
        m = file.message_type.add(name=message)
        for name, number, kind, label, type_name in fields:
            f = m.field.add(name=name, number=number, type=kind, label=label)
            if type_name:
                f.type_name = type_name if type_name.startswith(".") else (
                    f".{PACKAGE}.{type_name}")
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.MetricFamily"))


MetricFamily = _build()


def parse_delimited(body: bytes) -> list[Any]:
    """Every MetricFamily in a length-delimited stream, checking it ends where a message does."""
    out = []
    pos = 0
    while pos < len(body):
        size, pos = _DecodeVarint32(body, pos)
        family = MetricFamily()
        family.ParseFromString(body[pos:pos + size])
        out.append(family)
        pos += size
    assert pos == len(body)
    return out
