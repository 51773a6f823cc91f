"""Span state of earlier releases is migrated into the one state file, losing and resending
nothing.

Version 1 of the span state (a full-scan change feed for spans and merges) is written the way
it was left after a completed pass: the base snapshot, nothing pending, a span remembered
RUNNING. Releases with a separate span pipeline kept the span state in
`<database>.traces.json` beside the metrics tables' `<database>.json` (format 1); both are
folded into one file (format 2) at the first checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import psycopg

from tests.otlp_receiver import Receiver, make_forwarder, traces_config
from tests.test_traces_trees import drain, end_span, start_span

MERGE = ("INSERT INTO pggit.merge_performance_metrics (source_branch_id, target_branch_id, "
         "total_merge_us, merge_status, user_name, started_at, completed_at) "
         "VALUES (1, 1, 10, 'SUCCESS', 'u', now(), {}) RETURNING merge_metric_id")


def merge_roots(receiver: Receiver) -> list[int]:
    return sorted(int(s.attributes["pggit.merge_metric_id"]) for s in receiver.spans
                  if s.name == "merge")


def test_version_1_state_is_migrated_without_loss_or_resend(
        pggit_dsn: str, tmp_path: Path, receiver: Receiver) -> None:
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        for name in ("old1", "old2"):
            start_span(conn, name, None)
            end_span(conn, name)
        start_span(conn, "running-before", None)
        old_merge = conn.execute(MERGE.format("now()")).fetchone()[0]
        open_merge = conn.execute(MERGE.format("NULL")).fetchone()[0]
        snap = conn.execute("SELECT pg_current_snapshot()::text").fetchone()[0]
        start_us = conn.execute(
            "SELECT (extract(epoch FROM start_time::timestamptz) * 1e6)::bigint "
            "FROM pggit.operation_traces WHERE span_id = 'running-before'").fetchone()[0]
    feed = {"base": snap, "recent": {}, "pass_start": snap, "pass_base": snap,
            "cursor": None, "in_pass": False}
    (tmp_path / "main.traces.json").write_text(json.dumps({
        "version": 1, "spans": feed, "merges": feed,
        "running": {"running-before": [start_us, "commit"]}, "timed_out": {},
        "unsent": [], "late_ends": 0}))

    forwarder = make_forwarder(pggit_dsn, tmp_path, traces_config(receiver))
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        end_span(conn, "running-before")
        start_span(conn, "new", None)
        end_span(conn, "new")
        conn.execute("UPDATE pggit.merge_performance_metrics SET completed_at = now() "
                     "WHERE merge_metric_id = %s", (open_merge,))
        new_merge = conn.execute(MERGE.format("now()")).fetchone()[0]
    drain(forwarder)
    got = {k: len(v) for k, v in receiver.by_pggit_span_id().items() if k != "None"}
    assert got == {"running-before": 1, "new": 1}
    assert merge_roots(receiver) == sorted([open_merge, new_merge])
    assert old_merge not in merge_roots(receiver)
    forwarder.stop(timeout=2)
    assert not (tmp_path / "main.traces.json").exists()
    state = json.loads((tmp_path / "main.json").read_text())["traces"]
    assert state["version"] == 2
    assert state["merges"]["max_seen"] == new_merge
    again = make_forwarder(pggit_dsn, tmp_path, traces_config(receiver))
    drain(again)
    assert merge_roots(receiver) == sorted([open_merge, new_merge])
    assert {k: len(v) for k, v in receiver.by_pggit_span_id().items() if k != "None"} == got


def metric_count(state: dict) -> int:
    return sum(sum(cell[:-1]) for _, cell in
               state["aggregates"]["histograms"]["pggit_operation_duration_seconds"])


def span_count(traces: dict) -> int:
    return sum(sum(cell[:-1]) for _, cell in
               traces["aggregates"]["histograms"]["pggit_span_duration_seconds"])


def test_two_state_files_of_the_separate_span_pipeline_become_one(
        pggit_dsn: str, tmp_path: Path, receiver: Receiver) -> None:
    """The files as a release with two pipelines left them: the metrics file in format 1,
    the span file in version 2 with one span still unsent. The first checkpoint writes one
    file with both; the unsent span is sent once, nothing else again, every count kept."""
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        for name in ("a", "b", "c"):
            start_span(conn, name, None)
            end_span(conn, name)
        for us in (1500, 2500):
            conn.execute("SELECT pggit.record_performance_metric('commit', %s)", (us,))
    first = make_forwarder(pggit_dsn, tmp_path, traces_config(receiver), metrics=True)
    drain(first)
    first.stop(timeout=2)
    one = json.loads((tmp_path / "main.json").read_text())
    assert one["format"] == 2 and span_count(one["traces"]) == 3
    metrics_before = metric_count(one)
    assert metrics_before == 2
    traces = one.pop("traces")
    traces["unsent"] = ["s:b"]  # as if the old process died before "b" was confirmed
    one["format"] = 1
    (tmp_path / "main.json").write_text(json.dumps(one))
    (tmp_path / "main.traces.json").write_text(json.dumps(traces))
    sent_before = {k: len(v) for k, v in receiver.by_pggit_span_id().items()}
    assert sent_before == {"a": 1, "b": 1, "c": 1}

    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        start_span(conn, "d", None)
        end_span(conn, "d")
        conn.execute("SELECT pggit.record_performance_metric('commit', 3500)")
    again = make_forwarder(pggit_dsn, tmp_path, traces_config(receiver), metrics=True)
    drain(again)
    again.stop(timeout=2)
    assert {k: len(v) for k, v in receiver.by_pggit_span_id().items()} == {
        "a": 1, "b": 2, "c": 1, "d": 1}
    assert not (tmp_path / "main.traces.json").exists()
    merged = json.loads((tmp_path / "main.json").read_text())
    assert merged["format"] == 2
    assert metric_count(merged) == metrics_before + 1
    assert span_count(merged["traces"]) == 4
    assert merged["traces"]["unsent"] == []
