"""The whole process with tracing on: spans reach the receiver, span metrics reach /metrics."""

from __future__ import annotations

import psycopg
import pytest

from tests.exporter_fixtures import parse, scrape, total, wait_for
from tests.otlp_receiver import Receiver


def test_exporter_with_an_otlp_endpoint_sends_spans_and_exposes_span_metrics(
        pggit_dsn: str, run_exporter, receiver: Receiver) -> None:
    exporter = run_exporter(pggit_dsn, traces={"endpoint": receiver.grpc_endpoint,
                                                "protocol": "grpc", "insecure": True})
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        root = conn.execute("SELECT pggit.start_performance_trace(NULL, NULL, NULL, 'merge', "
                            "'merge_branches', 1, 'tester', NULL, NULL)").fetchone()[0]
        child = conn.execute("SELECT pggit.start_performance_trace(NULL, NULL, %s, 'merge', "
                             "'detect_conflicts', 1, 'tester', NULL, NULL)",
                             (root,)).fetchone()[0]
        conn.execute("SELECT pggit.end_performance_trace(%s)", (child,))
        conn.execute("SELECT pggit.end_performance_trace(%s)", (root,))
    wait_for(lambda: {root, child} <= set(receiver.by_pggit_span_id()), 30,
             what="both spans at the OTLP receiver")
    spans = receiver.by_pggit_span_id()
    assert spans[root][0].trace_id == spans[child][0].trace_id
    samples = wait_for(lambda: (s := exporter.samples())
                       and total(s, "pggit_span_duration_seconds_count") == 2 and s,
                       30, what="span metrics on /metrics")
    assert total(samples, "pggit_exporter_spans_total", result="exported") == 2
    openmetrics = scrape(exporter.port, "application/openmetrics-text; version=1.0.0")
    assert "trace_id=" in openmetrics
    assert total(parse(scrape(exporter.port)), "pggit_operation_duration_seconds_count") == 0


def test_span_metrics_are_exposed_without_any_otlp_endpoint(
        pggit_dsn: str, run_exporter, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    exporter = run_exporter(pggit_dsn)
    (forwarder,) = exporter.service.span_sources.values()
    assert forwarder.sender is None
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        for _ in range(3):
            span = conn.execute("SELECT pggit.start_performance_trace(NULL, NULL, NULL, "
                                "'commit', 'c', 1, 'tester', NULL, NULL)").fetchone()[0]
            conn.execute("SELECT pggit.end_performance_trace(%s)", (span,))
        conn.execute("SELECT pggit.start_performance_trace(NULL, NULL, NULL, 'merge', 'm', 1, "
                     "'tester', NULL, NULL)")
    samples = wait_for(lambda: (s := exporter.samples())
                       and total(s, "pggit_span_duration_seconds_count") == 3
                       and total(s, "pggit_spans_running") == 1 and s,
                       30, what="span metrics on /metrics without an endpoint")
    assert total(samples, "pggit_exporter_collector_enabled", collector="operation_traces") == 1
    assert "pggit_exporter_spans_total" not in {n for n, _ in samples}


def test_disabled_operation_traces_starts_no_forwarder(
        pggit_dsn: str, run_exporter, receiver: Receiver, tmp_path) -> None:
    exporter = run_exporter(pggit_dsn, traces={"endpoint": receiver.grpc_endpoint,
                                                "protocol": "grpc", "insecure": True},
                            database={"disabled_collectors": ["operation_traces"]})
    assert exporter.service.span_sources == {}
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        span = conn.execute("SELECT pggit.start_performance_trace(NULL, NULL, NULL, 'commit', "
                            "'c', 1, 'tester', NULL, NULL)").fetchone()[0]
        conn.execute("SELECT pggit.end_performance_trace(%s)", (span,))
    samples = exporter.caught_up_with(pggit_dsn)
    assert total(samples, "pggit_exporter_collector_enabled", collector="operation_traces") == 0
    assert total(samples, "pggit_exporter_collector_enabled", collector="merge_traces") == 0
    assert total(samples, "pggit_span_duration_seconds_count") == 0
    assert receiver.spans == []
    assert not list((tmp_path / "state").glob("*.traces.json"))
