"""What a span carries: exact times in the writers' zone, capped attributes, merges, config."""

from __future__ import annotations

import json

import psycopg
import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from exporter.config import TracesConfig
from exporter.send.envelope import Envelope
from exporter.send.otlp import build_exporter, protocol
from exporter.spans import tracing_enabled
from tests.otlp_receiver import Receiver, make_forwarder, traces_config
from tests.test_traces_trees import drain, end_span, start_span


def insert_span(dsn: str, span_id: str, start: str, end: str, attributes: str | None = None
                ) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO pggit.operation_traces (trace_id, span_id, operation_type, span_name, "
            "span_status, start_time, end_time, duration_microseconds, user_name, attributes) "
            "VALUES (%s, %s, 'commit', 'commit', 'SUCCESS', %s, %s, 1, 'alice', %s::jsonb)",
            (span_id + "-t", span_id, start, end, attributes))


def test_timestamps_are_read_in_the_writers_time_zone_to_the_microsecond(
        tz_pggit_dsn: str, tmp_path, receiver: Receiver) -> None:
    # New York local time across the 2026 spring-forward: 01:59:59 EST, 03:00:00 EDT.
    insert_span(tz_pggit_dsn, "dst", "2026-03-08 01:59:59.123456", "2026-03-08 03:00:00.654321")
    forwarder = make_forwarder(tz_pggit_dsn, tmp_path, traces_config(receiver),
                               timezone="America/New_York")
    drain(forwarder)
    forwarder.stop(timeout=1)
    (span,) = receiver.by_pggit_span_id()["dst"]
    assert span.start_ns == 1_772_953_199_123_456_000  # 2026-03-08T06:59:59.123456Z
    assert span.end_ns == 1_772_953_200_654_321_000  # 2026-03-08T07:00:00.654321Z


def hostile_attributes() -> str:
    deep = '{"d":' * 400 + '"bottom"' + "}" * 400
    return json.dumps({
        "deep": "DEEP",
        "huge": "x" * 200_000,
        "1": "numeric key", "": "empty key", "a.b": {"c": 1}, "null": None,
        "big": 2**70, "mixed": [1, "a", {"b": 2}], "list": [1, 2, 3], "flag": True,
        "f": 1.5, "zz_many_keys_last": {f"k{i}": i for i in range(500)},
    }).replace('"DEEP"', deep)


def test_hostile_attribute_json_is_flattened_typed_and_capped(
        pggit_dsn: str, tmp_path, receiver: Receiver) -> None:
    insert_span(pggit_dsn, "hostile", "2026-01-01 00:00:00", "2026-01-01 00:00:01",
                hostile_attributes())
    cfg = traces_config(receiver, max_attribute_length=100, max_attributes=64)
    forwarder = make_forwarder(pggit_dsn, tmp_path, cfg)
    drain(forwarder)
    forwarder.stop(timeout=1)
    (span,) = receiver.by_pggit_span_id()["hostile"]
    attrs = span.attributes
    assert len(attrs) <= 64
    assert attrs["huge"] == "x" * 99 + "\u2026"
    assert attrs["1"] == "numeric key"
    assert attrs["a.b.c"] == 1
    assert attrs["flag"] is True and attrs["f"] == 1.5
    assert attrs["list"] == (1, 2, 3)
    assert attrs["big"] == str(2**70)
    assert attrs["mixed"] == '[1,"a",{"b":2}]'
    assert "null" not in attrs
    assert attrs["(empty)"] == "empty key"
    assert attrs["pggit.attributes.dropped"] > 0
    deep_keys = [k for k in attrs if k.startswith("deep")]
    assert len(deep_keys) == 1 and len(deep_keys[0]) <= 100


def test_attribute_json_too_deep_for_the_parser_costs_one_attribute(
        pggit_dsn: str, tmp_path, receiver: Receiver) -> None:
    insert_span(pggit_dsn, "deep", "2026-01-01 00:00:00", "2026-01-01 00:00:01",
                "[" * 5000 + "]" * 5000)
    forwarder = make_forwarder(pggit_dsn, tmp_path, traces_config(receiver))
    drain(forwarder)
    forwarder.stop(timeout=1)
    (span,) = receiver.by_pggit_span_id()["deep"]
    assert span.attributes["pggit.attributes.error"].startswith("attributes not parsed")


def test_user_name_is_off_by_default_and_hashed_on_request(
        pggit_dsn: str, tmp_path, receiver: Receiver) -> None:
    insert_span(pggit_dsn, "u1", "2026-01-01 00:00:00", "2026-01-01 00:00:01")
    forwarder = make_forwarder(pggit_dsn, tmp_path / "a", traces_config(receiver))
    drain(forwarder)
    forwarder.stop(timeout=1)
    hashed = make_forwarder(pggit_dsn, tmp_path / "b", traces_config(receiver,
                                                                     user_name="hashed"))
    drain(hashed)
    hashed.stop(timeout=1)
    off, on = receiver.by_pggit_span_id()["u1"]
    assert not any("user" in k for k in off.attributes)
    assert "alice" not in on.attributes.values()
    assert len(on.attributes["pggit.user_name_hash"]) == 16


def test_resource_carries_service_database_and_version(
        pggit_dsn: str, tmp_path, receiver: Receiver) -> None:
    insert_span(pggit_dsn, "r", "2026-01-01 00:00:00", "2026-01-01 00:00:01")
    forwarder = make_forwarder(pggit_dsn, tmp_path, traces_config(receiver,
                                                                  service_name="pggit-prod"))
    drain(forwarder)
    forwarder.stop(timeout=1)
    resource = receiver.spans[0].resource
    assert resource["service.name"] == "pggit-prod"
    assert resource["db.namespace"] == "main"
    assert "pggit.exporter.version" in resource


def test_completed_merge_is_a_trace_with_one_child_per_phase(
        pggit_dsn: str, tmp_path, receiver: Receiver) -> None:
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        branch = conn.execute("SELECT min(branch_id) FROM pggit.branches").fetchone()[0]
        conn.execute("SELECT pggit.record_merge_performance(%s, %s, 'SUCCESS', 1000, 2000, 1, "
                     "3000)", (branch, branch))
        running = conn.execute("SELECT pggit.record_merge_performance(%s, %s, 'SUCCESS', 1, 1, "
                               "p_completed => false)", (branch, branch)).fetchone()[0]
    forwarder = make_forwarder(pggit_dsn, tmp_path, traces_config(receiver))
    drain(forwarder)
    forwarder.stop(timeout=1)
    merges = [s for s in receiver.spans if "pggit.merge_metric_id" in s.attributes]
    assert running not in {s.attributes["pggit.merge_metric_id"] for s in merges}
    root = next(s for s in merges if s.name == "merge")
    children = sorted((s for s in merges if s.name != "merge"), key=lambda s: s.start_ns)
    assert [c.name for c in children] == ["merge.merge_base_calculation",
                                          "merge.conflict_detection", "merge.auto_resolution"]
    assert all(c.trace_id == root.trace_id and c.parent_span_id == root.span_id
               for c in children)
    assert [c.end_ns - c.start_ns for c in children] == [1_000_000, 2_000_000, 3_000_000]


def test_tracing_is_on_with_a_yaml_endpoint_or_the_standard_variables() -> None:
    assert not tracing_enabled(TracesConfig(), {})
    assert tracing_enabled(TracesConfig(endpoint="http://c:4317"), {})
    assert tracing_enabled(TracesConfig(), {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c"})
    assert tracing_enabled(TracesConfig(), {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"})


def test_yaml_protocol_wins_over_the_environment() -> None:
    env = {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}
    assert protocol(TracesConfig(), env) == "grpc"
    assert protocol(TracesConfig(protocol="http/protobuf"), env) == "http/protobuf"
    assert protocol(TracesConfig(), {}) == "http/protobuf"


def test_environment_endpoint_and_headers_reach_the_receiver(
        pggit_dsn: str, tmp_path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{receiver.http_port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-env=yes")
    insert_span(pggit_dsn, "e", "2026-01-01 00:00:00", "2026-01-01 00:00:01")
    forwarder = make_forwarder(pggit_dsn, tmp_path, TracesConfig())
    drain(forwarder)
    forwarder.stop(timeout=1)
    assert len(receiver.spans) == 1
    assert receiver.headers[0]["x-env"] == "yes"


@pytest.mark.parametrize("proto", ["grpc", "http/protobuf"])
def test_header_read_from_a_file_is_sent(
        pggit_dsn: str, tmp_path, receiver: Receiver, proto: str) -> None:
    key = tmp_path / "api-key"
    key.write_text("s3cret\n")
    insert_span(pggit_dsn, "h", "2026-01-01 00:00:00", "2026-01-01 00:00:01")
    cfg = traces_config(receiver, proto, header_files={"X-Api-Key": key})
    forwarder = make_forwarder(pggit_dsn, tmp_path, cfg)
    drain(forwarder)
    forwarder.stop(timeout=1)
    assert receiver.headers[0]["x-api-key"] == "s3cret"


def test_unknown_protocol_is_refused() -> None:
    envelope = Envelope(Resource.create({}), InstrumentationScope("pggit-exporter"))
    with pytest.raises(ValueError, match=r"must be grpc or http/protobuf"):
        TracesConfig(endpoint="http://c", protocol="thrift")
    with pytest.raises(ValueError, match=r"traces\.protocol"):
        build_exporter(TracesConfig(endpoint="http://c"), {"OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"},
                       envelope=envelope)


def test_span_ended_then_committed_with_start_in_same_transaction_is_sent(
        pggit_dsn: str, tmp_path, receiver: Receiver) -> None:
    forwarder = make_forwarder(pggit_dsn, tmp_path, traces_config(receiver))
    with psycopg.connect(pggit_dsn) as conn:
        start_span(conn, "one-tx", None)
        end_span(conn, "one-tx")
        drain(forwarder)
        assert receiver.spans == []
    drain(forwarder)
    forwarder.stop(timeout=1)
    assert len(receiver.by_pggit_span_id()["one-tx"]) == 1
