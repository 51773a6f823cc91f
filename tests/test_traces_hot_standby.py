"""Spans read from a hot standby (a streaming replica in recovery) are exact.

There `pg_stat_activity` lists only the standby's own sessions, not the primary's
transactions whose rows are still to arrive, so the start-time window (the method a
privileged role gets) would miss a span written by a primary transaction older than the
window's margin. The forwarder reads by full scans there, whatever the role.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict

from exporter.demo.embedded import EmbeddedPostgres
from exporter.read.operation_traces import BOUND_MARGIN, MODE_SELECT_ONLY
from tests.otlp_receiver import Receiver, make_forwarder, traces_config
from tests.pg_fixtures import wait_replayed
from tests.test_traces_trees import drain, end_span, start_span


def test_a_long_primary_transaction_is_read_on_a_hot_standby_by_a_superuser(
        pggit_dsn: str, pg_replica: EmbeddedPostgres, receiver: Receiver,
        tmp_path: Path) -> None:
    standby_dsn = pg_replica.dsn(dbname=str(conninfo_to_dict(pggit_dsn)["dbname"]))
    wait_replayed(pggit_dsn, standby_dsn)
    forwarder = make_forwarder(standby_dsn, tmp_path, traces_config(receiver))
    drain(forwarder)
    long_id = str(uuid.uuid4())
    short_ids: list[str] = []
    with psycopg.connect(pggit_dsn) as slow, \
            psycopg.connect(pggit_dsn, autocommit=True) as fast:
        start_span(slow, long_id, None)
        end_span(slow, long_id)
        # Short spans committed while the long transaction stays open for longer than the
        # window's margin, each read by a poll on the standby.
        deadline = time.monotonic() + BOUND_MARGIN + 1.5
        while time.monotonic() < deadline:
            short_ids.append(str(uuid.uuid4()))
            start_span(fast, short_ids[-1], None)
            end_span(fast, short_ids[-1])
            wait_replayed(pggit_dsn, standby_dsn)
            drain(forwarder, 1)
        slow.commit()
    wait_replayed(pggit_dsn, standby_dsn)
    drain(forwarder)
    got = {k: len(v) for k, v in receiver.by_pggit_span_id().items()}
    assert forwarder.mode == MODE_SELECT_ONLY and forwarder.recovery
    assert "hot standby" in forwarder.mode_text()
    assert got == dict.fromkeys([long_id, *short_ids], 1)
