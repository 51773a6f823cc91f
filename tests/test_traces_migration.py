"""A version-1 trace state file (full-scan change feed for spans and merges) is migrated.

The file is written the way version 1 left it after a completed pass: the base snapshot,
nothing pending, a span remembered RUNNING. After the upgrade nothing handled before is
sent again and nothing that changed since is lost, spans and merges alike.
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
    state = json.loads((tmp_path / "main.traces.json").read_text())
    assert state["version"] == 2
    assert state["merges"]["max_seen"] == new_merge
    again = make_forwarder(pggit_dsn, tmp_path, traces_config(receiver))
    drain(again)
    assert merge_roots(receiver) == sorted([open_merge, new_merge])
    assert {k: len(v) for k, v in receiver.by_pggit_span_id().items() if k != "None"} == got
