"""A database with the UUID-keyed performance tables of pgGit after v0.1.0 is recognised as such
and told in one line, instead of a list of columns each collector misses."""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Callable, Iterator

import psycopg
import pytest

from exporter.discover import UUID_KEYED, layout
from tests.exporter_fixtures import InProcess, total, wait_for
from tests.pg_fixtures import PgTestServer, unique_db_name

# Written for this test from the column list in PGGIT_SCHEMA.md's "Which pgGit releases have
# these tables": the shape of the later layout, not pgGit's own SQL.
LATER_LAYOUT = """
CREATE SCHEMA pggit;
CREATE TABLE pggit.performance_metrics (
    metric_id uuid PRIMARY KEY DEFAULT gen_random_uuid(), operation_type text NOT NULL,
    operation_name text, started_at timestamp(6), completed_at timestamp(6),
    duration_ms numeric(10,3), cpu_time_ms numeric(10,3), io_time_ms numeric(10,3),
    rows_affected bigint, context jsonb);
CREATE TABLE pggit.operation_traces (
    trace_id uuid PRIMARY KEY DEFAULT gen_random_uuid(), parent_trace_id uuid,
    operation_type text NOT NULL, operation_name text, started_at timestamp(6),
    duration_us bigint, span_attributes jsonb);
CREATE TABLE pggit.performance_baselines (
    baseline_id serial PRIMARY KEY, operation_type text NOT NULL,
    percentile_50 numeric(10,3), percentile_99 numeric(10,3), sample_count int,
    calculated_at timestamp);
CREATE TABLE pggit.performance_alerts (
    alert_id uuid PRIMARY KEY DEFAULT gen_random_uuid(), metric_id uuid, alert_type text,
    severity text, threshold_value numeric(10,3), actual_value numeric(10,3),
    created_at timestamp, acknowledged boolean);
INSERT INTO pggit.performance_metrics (operation_type, started_at, duration_ms)
VALUES ('branch_create', localtimestamp, 1.5);
"""


@pytest.fixture
def later_layout_dsn(pg_server: PgTestServer) -> Iterator[str]:
    name = unique_db_name("pggit_later")
    dsn = pg_server.create_database(name)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(LATER_LAYOUT)
        yield dsn
    finally:
        pg_server.drop_database(name)


def test_layouts_are_told_apart_by_their_columns() -> None:
    phase7 = layout({"performance_metrics": frozenset({"metric_id", "duration_microseconds",
                                                        "recorded_at"})})
    assert phase7.supported and "v0.1.0" in phase7.describe()
    later = layout({"performance_metrics": frozenset({"metric_id", "started_at",
                                                       "completed_at", "cpu_time_ms"}),
                    "branches": frozenset({"branch_id", "branch_name"})})
    assert not later.supported
    assert later.reason("performance_metrics") is not None
    assert later.reason("branches") is None
    assert layout({}).generation is None


def test_later_pggit_layout_is_named_in_one_log_line_and_on_the_landing_page(
        later_layout_dsn: str, run_exporter: Callable[..., InProcess],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="exporter")
    exporter = run_exporter(later_layout_dsn)
    wait_for(lambda: exporter.poller.caught_up, what="a poll")
    samples = exporter.samples()
    assert total(samples, "pggit_up") == 1
    assert total(samples, "pggit_exporter_collector_enabled",
                 collector="performance_metrics") == 0
    lines = [r for r in caplog.records if r.getMessage() == "pgGit layout"]
    assert len(lines) == 1
    said = lines[0].__dict__["layout"]
    assert UUID_KEYED in said and "v0.1.0" in said
    for table in ("performance_metrics", "operation_traces", "performance_baselines",
                  "performance_alerts"):
        assert table in said
    reasons = {r.__dict__["collector"]: r.__dict__["reason"] for r in caplog.records
               if r.getMessage() == "collector disabled"}
    for collector in ("performance_metrics", "performance_alerts", "performance_baselines"):
        assert "UUID-keyed" in reasons[collector] and "lacks" not in reasons[collector]
    with urllib.request.urlopen(f"http://127.0.0.1:{exporter.port}/", timeout=10) as resp:
        page = resp.read().decode()
    assert "UUID-keyed" in page and "reads the Phase 7 tables of pgGit v0.1.0" in page
    with urllib.request.urlopen(f"http://127.0.0.1:{exporter.port}/readyz", timeout=10) as resp:
        status = json.loads(resp.read())
    assert UUID_KEYED in status["databases"][0]["pggit_layout"]


def test_phase7_database_says_it_is_read(pggit_dsn: str, run_exporter: Callable[..., InProcess],
                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="exporter")
    exporter = run_exporter(pggit_dsn)
    wait_for(lambda: exporter.poller.caught_up, what="a poll")
    lines = [r.__dict__["layout"] for r in caplog.records if r.getMessage() == "pgGit layout"]
    assert len(lines) == 1 and "looks like pgGit v0.1.0" in lines[0]
