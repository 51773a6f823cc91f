"""Scrapes against the running exporter: a slow poll never holds a scrape up."""

from __future__ import annotations

import psycopg

from tests.exporter_fixtures import db_count, free_port, scrape, total, wait_for

WAITING_TRACE_READS = """SELECT count(*) FROM pg_stat_activity
    WHERE application_name = 'pggit-exporter' AND wait_event_type = 'Lock'
      AND query LIKE '%operation_traces%'"""


def test_a_scrape_does_not_wait_for_a_trace_poll_stuck_in_the_database(
        pggit_dsn: str, run_exporter) -> None:
    # Tracing on: the forwarder polls whether or not its endpoint answers.
    exporter = run_exporter(
        pggit_dsn, database={"statement_timeout": "120s"},
        traces={"endpoint": f"http://127.0.0.1:{free_port()}"})
    wait_for(lambda: "pggit_span_duration_seconds" in scrape(exporter.port),
             what="span metrics on /metrics")
    with psycopg.connect(pggit_dsn) as blocker:
        blocker.execute("LOCK TABLE pggit.operation_traces IN ACCESS EXCLUSIVE MODE")
        wait_for(lambda: db_count(pggit_dsn, WAITING_TRACE_READS) > 0,
                 what="a trace poll waiting for the table lock")
        with psycopg.connect(pggit_dsn, autocommit=True) as writer:
            writer.execute("SELECT pggit.record_performance_metric('commit', 1500)")
        # The poller publishes the new row, so this scrape renders a new page while the
        # trace poll still holds the forwarder's lock.
        samples = exporter.caught_up_with(pggit_dsn)
        page = scrape(exporter.port)
        assert db_count(pggit_dsn, WAITING_TRACE_READS) > 0
        blocker.rollback()
    assert total(samples, "pggit_operation_duration_seconds_count") == 1
    assert "# TYPE pggit_span_duration_seconds histogram\n" in page
