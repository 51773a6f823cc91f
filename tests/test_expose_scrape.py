"""Scrapes against the running exporter: a slow poll never holds a scrape up."""

from __future__ import annotations

import psycopg

from tests.exporter_fixtures import db_count, free_port, scrape, total, wait_for

WAITING_TRACE_READS = """SELECT count(*) FROM pg_stat_activity
    WHERE application_name = 'pggit-exporter' AND wait_event_type = 'Lock'
      AND query LIKE '%operation_traces%'"""


def test_a_scrape_does_not_wait_for_a_poll_stuck_on_the_span_table(
        pggit_dsn: str, run_exporter) -> None:
    # Tracing on: spans are read whether or not the endpoint answers.
    exporter = run_exporter(
        pggit_dsn, database={"statement_timeout": "120s"},
        traces={"endpoint": f"http://127.0.0.1:{free_port()}"})
    wait_for(lambda: "pggit_span_duration_seconds" in scrape(exporter.port),
             what="span metrics on /metrics")
    with psycopg.connect(pggit_dsn) as blocker:
        blocker.execute("LOCK TABLE pggit.operation_traces IN ACCESS EXCLUSIVE MODE")
        wait_for(lambda: db_count(pggit_dsn, WAITING_TRACE_READS) > 0,
                 what="a poll waiting for the table lock")
        with psycopg.connect(pggit_dsn, autocommit=True) as writer:
            writer.execute("SELECT pggit.record_performance_metric('commit', 1500)")
        # The poll is stuck inside its span read: the page is the published state, with
        # the span metrics, served at once.
        page = scrape(exporter.port)
        assert db_count(pggit_dsn, WAITING_TRACE_READS) > 0
        blocker.rollback()
    samples = exporter.caught_up_with(pggit_dsn)
    assert total(samples, "pggit_operation_duration_seconds_count") == 1
    assert "# TYPE pggit_span_duration_seconds histogram\n" in page


def test_a_span_table_locked_for_good_holds_the_metrics_up_one_statement_timeout_at_most(
        pggit_dsn: str, run_exporter) -> None:
    """Spans and metrics share the poll: a span read that times out is the span collector's
    failure (retried with backoff), not the database's, so the metrics tables go on."""
    exporter = run_exporter(
        pggit_dsn, database={"statement_timeout": "1s"},
        traces={"endpoint": f"http://127.0.0.1:{free_port()}"})
    wait_for(lambda: "pggit_span_duration_seconds" in scrape(exporter.port),
             what="span metrics on /metrics")
    with psycopg.connect(pggit_dsn) as blocker:
        blocker.execute("LOCK TABLE pggit.operation_traces IN ACCESS EXCLUSIVE MODE")
        with psycopg.connect(pggit_dsn, autocommit=True) as writer:
            writer.execute("SELECT pggit.record_performance_metric('commit', 1500)")
        samples = exporter.caught_up_with(pggit_dsn)
        assert total(samples, "pggit_operation_duration_seconds_count") == 1
        assert total(samples, "pggit_up") == 1
        failing = wait_for(lambda: total(exporter.samples(),
                                         "pggit_exporter_collector_failing",
                                         collector="operation_traces") == 1,
                           what="operation_traces shown failing")
        assert failing
        blocker.rollback()
    wait_for(lambda: total(exporter.samples(), "pggit_exporter_collector_failing",
                           collector="operation_traces") == 0,
             timeout=60, what="operation_traces reading again")
