"""Spans read at a cost set by the changes stay exact, with and without pg_read_all_stats.

Every case runs twice: as a superuser (member of pg_read_all_stats: the start_time window
bounded by pg_stat_activity) and as a SELECT-only role (quick windows between full passes).
The server's TimeZone is America/New_York, the writers' sessions are in Los Angeles (behind
the server, the direction in which a bound read in the wrong zone would skip rows), and the
exporter is told the writers' zone, as `databases[].timezone` does. Each test names the span
it would lose or double.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from exporter.demo.embedded import EmbeddedPostgres, create_database
from exporter.demo.schema import install_schema
from exporter.read.operation_traces import MODE_PRIVILEGED, MODE_SELECT_ONLY
from tests.otlp_receiver import Receiver, make_forwarder, spans_total, traces_config
from tests.pg_fixtures import PgTestServer, create_select_only_role, unique_db_name
from tests.test_traces_trees import end_span, start_span

SERVER_ZONE = "America/New_York"
WRITER_ZONE = "America/Los_Angeles"


@pytest.fixture(scope="module")
def ny_server(pg_server: PgTestServer) -> Iterator[EmbeddedPostgres]:
    pg_server.require_embedded()
    server = EmbeddedPostgres(timezone=SERVER_ZONE, settings={"max_prepared_transactions": 4})
    server.start()
    try:
        install_schema(server.create_database("pggit_tpl"))
        yield server
    finally:
        server.close()


@pytest.fixture(params=["privileged", "select_only"])
def dbs(request: pytest.FixtureRequest, ny_server: EmbeddedPostgres) -> tuple[str, str, str]:
    """(writer DSN, exporter DSN, path) on a fresh pgGit database."""
    name = unique_db_name("win")
    create_database(ny_server.dsn(), name, "pggit_tpl")
    dsn = ny_server.dsn(dbname=name)
    if request.param == "privileged":
        return dsn, dsn, request.param
    role = f"ro_{uuid.uuid4().hex[:10]}"
    return dsn, create_select_only_role(dsn, role, "secret"), request.param


def writer(dsn: str, autocommit: bool = True) -> psycopg.Connection:
    return psycopg.connect(dsn, autocommit=autocommit, options=f"-c TimeZone={WRITER_ZONE}")


def forwarder_for(dbs: tuple[str, str, str], state_dir: Path, receiver: Receiver,
                  **overrides: Any) -> Any:
    forwarder = make_forwarder(dbs[1], state_dir, traces_config(receiver, **overrides),
                               timezone=WRITER_ZONE)
    forwarder.quick_window = 1.0
    forwarder.full_pass_interval = 3600.0
    return forwarder


def start_span_at_transaction_start(conn: psycopg.Connection, span_id: str) -> None:
    """A span as pgGit's own start_performance_trace() writes it: start_time from
    CURRENT_TIMESTAMP, the transaction's start (the demo schema uses clock_timestamp())."""
    conn.execute("INSERT INTO pggit.operation_traces (trace_id, span_id, operation_type, "
                 "span_name, span_status, start_time, user_name) VALUES (%s, %s, 'commit', "
                 "'commit.slow', 'RUNNING', CURRENT_TIMESTAMP, 'u')", (str(uuid.uuid4()), span_id))


def drain(forwarder: Any, rounds: int = 2) -> None:
    for _ in range(rounds):
        forwarder.poll_once()
        while forwarder.send_pending():
            pass


def full_pass(forwarder: Any) -> None:
    """What the SELECT-only path does every full_pass_interval; privileged needs none."""
    interval = forwarder.full_pass_interval
    forwarder.full_pass_interval = 0.0
    drain(forwarder)
    forwarder.full_pass_interval = interval
    drain(forwarder)


def counts(receiver: Receiver) -> dict[str, int]:
    return {k: len(v) for k, v in receiver.by_pggit_span_id().items()}


def assert_once(receiver: Receiver, expected: set[str]) -> None:
    got = counts(receiver)
    assert set(got) == expected, f"lost {expected - set(got)}, extra {set(got) - expected}"
    assert all(n == 1 for n in got.values()), f"doubled: {[k for k, n in got.items() if n > 1]}"


def settle(forwarder: Any, path: str) -> None:
    """Past the first (backlog) pass, and for SELECT-only past one full pass, so the next
    polls take the steady-state route this module is about."""
    drain(forwarder)
    if path == "select_only":
        full_pass(forwarder)


def test_read_mode_follows_the_role(dbs: tuple[str, str, str], tmp_path: Path,
                                    receiver: Receiver) -> None:
    forwarder = forwarder_for(dbs, tmp_path, receiver)
    drain(forwarder)
    expected = MODE_PRIVILEGED if dbs[2] == "privileged" else MODE_SELECT_ONLY
    assert forwarder.mode == expected
    value = forwarder.registry.get_sample_value(
        "pggit_exporter_read_mode",
        {"database": "main", "source": "operation_traces", "mode": expected})
    assert value == 1.0
    assert "pg_read_all_stats" in forwarder.mode_text() or expected == MODE_PRIVILEGED


def test_out_of_order_commits_send_each_span_once(dbs: tuple[str, str, str], tmp_path: Path,
                                                 receiver: Receiver) -> None:
    forwarder = forwarder_for(dbs, tmp_path, receiver)
    settle(forwarder, dbs[2])
    early = writer(dbs[0], autocommit=False)
    start_span(early, "early", None)
    end_span(early, "early")
    with writer(dbs[0]) as late:
        start_span(late, "late", None)
        end_span(late, "late")
    drain(forwarder)
    assert counts(receiver) == {"late": 1}
    early.commit()  # committed after a later transaction was read
    early.close()
    drain(forwarder)
    if dbs[2] == "select_only":
        full_pass(forwarder)
    assert_once(receiver, {"early", "late"})


def test_span_ended_in_another_transaction_is_sent_once_ended(
        dbs: tuple[str, str, str], tmp_path: Path, receiver: Receiver) -> None:
    forwarder = forwarder_for(dbs, tmp_path, receiver)
    settle(forwarder, dbs[2])
    with writer(dbs[0]) as conn:
        start_span(conn, "long", None)
        drain(forwarder)
        time.sleep(1.5)  # older than the SELECT-only quick window: only the probe finds it
        drain(forwarder)
        assert receiver.spans == []
        end_span(conn, "long")
    drain(forwarder)
    assert_once(receiver, {"long"})
    assert receiver.by_pggit_span_id()["long"][0].status_code != 2
    if dbs[2] == "select_only":
        full_pass(forwarder)
    assert_once(receiver, {"long"})


def test_span_staying_running_is_counted_running_and_never_sent(
        dbs: tuple[str, str, str], tmp_path: Path, receiver: Receiver) -> None:
    forwarder = forwarder_for(dbs, tmp_path, receiver)
    settle(forwarder, dbs[2])
    with writer(dbs[0]) as conn:
        start_span(conn, "stuck", None)
        start_span(conn, "done", None)
        end_span(conn, "done")
    for _ in range(4):
        drain(forwarder)
    if dbs[2] == "select_only":
        full_pass(forwarder)
    assert_once(receiver, {"done"})
    assert list(forwarder.running) == ["stuck"]
    _, running = forwarder.collect()
    assert running.values == {("commit",): 1.0}


def test_late_commit_of_a_long_transaction_is_sent_once(
        dbs: tuple[str, str, str], tmp_path: Path, receiver: Receiver) -> None:
    """The span's start_time is its transaction's start, long before it commits: on the
    privileged path the bound waits for it; SELECT-only finds it in the next full pass."""
    forwarder = forwarder_for(dbs, tmp_path, receiver)
    settle(forwarder, dbs[2])
    slow = writer(dbs[0], autocommit=False)
    slow.execute("SELECT 1")  # the transaction (and so CURRENT_TIMESTAMP) starts here
    time.sleep(1.5)
    names = []
    for i in range(5):
        with writer(dbs[0]) as conn:
            start_span(conn, f"quick{i}", None)
            end_span(conn, f"quick{i}")
        names.append(f"quick{i}")
        drain(forwarder, 1)
    start_span_at_transaction_start(slow, "slow")
    end_span(slow, "slow")
    slow.commit()
    slow.close()
    drain(forwarder)
    if dbs[2] == "privileged":
        assert_once(receiver, {*names, "slow"})
    else:
        assert "slow" not in counts(receiver), "outside the quick window until a full pass"
        full_pass(forwarder)
        assert_once(receiver, {*names, "slow"})
    drain(forwarder)
    full_pass(forwarder)
    assert_once(receiver, {*names, "slow"})


def test_rolled_back_span_is_not_sent_and_hides_nothing(
        dbs: tuple[str, str, str], tmp_path: Path, receiver: Receiver) -> None:
    forwarder = forwarder_for(dbs, tmp_path, receiver)
    settle(forwarder, dbs[2])
    gone = writer(dbs[0], autocommit=False)
    start_span(gone, "gone", None)
    end_span(gone, "gone")
    with writer(dbs[0]) as conn:
        start_span(conn, "kept", None)
        end_span(conn, "kept")
    drain(forwarder)
    gone.rollback()
    gone.close()
    drain(forwarder)
    if dbs[2] == "select_only":
        full_pass(forwarder)
    assert_once(receiver, {"kept"})


def test_prepared_transaction_holds_the_bound_until_it_commits(
        dbs: tuple[str, str, str], tmp_path: Path, receiver: Receiver) -> None:
    forwarder = forwarder_for(dbs, tmp_path, receiver)
    settle(forwarder, dbs[2])
    gid = f"pggit-{uuid.uuid4().hex[:8]}"
    with writer(dbs[0], autocommit=False) as conn:
        start_span(conn, "prepared", None)
        end_span(conn, "prepared")
        conn.execute(f"PREPARE TRANSACTION '{gid}'")
    try:
        time.sleep(1.5)
        for _ in range(3):
            drain(forwarder)
        with writer(dbs[0]) as conn:
            start_span(conn, "after", None)
            end_span(conn, "after")
            drain(forwarder)
            conn.execute(f"COMMIT PREPARED '{gid}'")
    except BaseException:
        with psycopg.connect(dbs[0], autocommit=True) as conn:
            conn.execute(f"ROLLBACK PREPARED '{gid}'")
        raise
    drain(forwarder)
    if dbs[2] == "select_only":
        full_pass(forwarder)
    assert_once(receiver, {"prepared", "after"})


def test_restart_between_polls_neither_loses_nor_doubles(
        dbs: tuple[str, str, str], tmp_path: Path, receiver: Receiver) -> None:
    forwarder = forwarder_for(dbs, tmp_path, receiver)
    settle(forwarder, dbs[2])
    with writer(dbs[0]) as conn:
        start_span(conn, "before", None)
        end_span(conn, "before")
        start_span(conn, "across", None)
        drain(forwarder)
        forwarder.stop(timeout=2)
        end_span(conn, "across")
        start_span(conn, "after", None)
        end_span(conn, "after")
    again = forwarder_for(dbs, tmp_path, receiver)
    drain(again)
    if dbs[2] == "select_only":
        full_pass(again)
    assert_once(receiver, {"before", "across", "after"})


def test_many_writers_concurrently_lose_and_double_nothing(
        dbs: tuple[str, str, str], tmp_path: Path, receiver: Receiver) -> None:
    """Four writers, each span started and ended in its own transaction, polled throughout."""
    forwarder = forwarder_for(dbs, tmp_path, receiver, batch_size=16)
    settle(forwarder, dbs[2])
    expected: set[str] = set()
    lock = threading.Lock()

    def write(n: int) -> None:
        with writer(dbs[0]) as conn:
            for i in range(40):
                name = f"w{n}-{i}"
                start_span(conn, name, None)
                with conn.transaction():
                    end_span(conn, name)
                with lock:
                    expected.add(name)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        drain(forwarder, 1)
    for t in threads:
        t.join()
    for _ in range(3):
        drain(forwarder)
    if dbs[2] == "select_only":
        full_pass(forwarder)
    assert_once(receiver, expected)
    assert spans_total(forwarder, "exported") == len(expected)


def test_quiet_poll_that_only_rereads_handled_rows_waits(
        dbs: tuple[str, str, str], tmp_path: Path, receiver: Receiver) -> None:
    """A poll that re-reads versions it had handled must not ask for another at once."""
    forwarder = forwarder_for(dbs, tmp_path, receiver)
    settle(forwarder, dbs[2])
    with writer(dbs[0]) as conn:
        for i in range(5):
            start_span(conn, f"s{i}", None)
            end_span(conn, f"s{i}")
    drain(forwarder, 1)
    forwarder.poll_once()
    assert forwarder._more is False


def test_odd_timestamps_are_counted_as_invalid_and_reading_goes_on(
        dbs: tuple[str, str, str], tmp_path: Path, receiver: Receiver,
        caplog: pytest.LogCaptureFixture) -> None:
    """'infinity' and year-1 times pgGit's constraints accept: one log line each, counted.

    Rows inserted by hand with a start_time before their transaction began ('-infinity',
    year 1) are outside the privileged window by design (pgGit's writers cannot produce
    them), so only the SELECT-only full pass meets them; either way reading goes on.
    """
    forwarder = forwarder_for(dbs, tmp_path, receiver)
    settle(forwarder, dbs[2])
    with writer(dbs[0]) as conn:
        start_span(conn, "ends-at-infinity", None)
        drain(forwarder)
        conn.execute("UPDATE pggit.operation_traces SET end_time = 'infinity', "
                     "span_status = 'SUCCESS' WHERE span_id = 'ends-at-infinity'")
        for span, start, end in (("inf-end", "now()", "'infinity'"),
                                 ("minus-inf", "'-infinity'", "now()"),
                                 ("year-one", "'0001-01-01'", "now()")):
            conn.execute(
                "INSERT INTO pggit.operation_traces (trace_id, span_id, operation_type, "
                "span_name, span_status, start_time, end_time, user_name) "
                f"VALUES (%s, %s, 'commit', 'odd', 'SUCCESS', {start}, {end}, 'u')",
                (str(uuid.uuid4()), span))
        start_span(conn, "normal", None)
        end_span(conn, "normal")
        conn.execute("INSERT INTO pggit.merge_performance_metrics (source_branch_id, "
                     "target_branch_id, total_merge_us, merge_status, user_name, started_at, "
                     "completed_at) VALUES (1, 1, 5, 'SUCCESS', 'u', now(), 'infinity')")
    with caplog.at_level("WARNING"):
        for _ in range(3):
            drain(forwarder)
        if dbs[2] == "select_only":
            full_pass(forwarder)
    assert_once(receiver, {"normal"})
    by_hand = 1 if dbs[2] == "select_only" else 0
    reasons = {
        (table, reason): forwarder.registry.get_sample_value(
            "pggit_exporter_invalid_rows_total",
            {"database": "main", "table": table, "reason": reason}) or 0
        for table, reason in (("operation_traces", "not_finite"),
                              ("operation_traces", "out_of_range"),
                              ("merge_performance_metrics", "not_finite"))}
    assert reasons == {("operation_traces", "not_finite"): 2 + by_hand,
                       ("operation_traces", "out_of_range"): by_hand,
                       ("merge_performance_metrics", "not_finite"): 1}
    lines = {(r.table, r.key if r.table == "operation_traces" else "merge", r.column)
             for r in caplog.records if r.getMessage() == "invalid row skipped"}
    expected = {("operation_traces", "ends-at-infinity", "end_time"),
                ("operation_traces", "inf-end", "end_time"),
                ("merge_performance_metrics", "merge", "completed_at")}
    if by_hand:
        expected |= {("operation_traces", "minus-inf", "start_time"),
                     ("operation_traces", "year-one", "start_time")}
    assert lines == expected
    assert forwarder.running == {}


def test_dropped_count_survives_a_crash(dbs: tuple[str, str, str], tmp_path: Path,
                                        receiver: Receiver) -> None:
    forwarder = forwarder_for(dbs, tmp_path, receiver, queue_size=2)
    receiver.stop()
    forwarder.sender.stats.healthy = False
    with writer(dbs[0]) as conn:
        for i in range(5):
            start_span(conn, f"d{i}", None)
            end_span(conn, f"d{i}")
    forwarder.poll_once()
    dropped = spans_total(forwarder, "dropped")
    assert dropped >= 1
    state = json.loads((tmp_path / "main.json").read_text())["traces"]
    assert state["counts"]["dropped"] == dropped
    again = forwarder_for(dbs, tmp_path, receiver)  # as after kill -9: no stop(), no save
    assert spans_total(again, "dropped") == dropped


def test_the_readme_grant_turns_a_select_only_role_into_the_window_reader(
        ny_server: EmbeddedPostgres, tmp_path: Path, receiver: Receiver) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    grant = next(line for line in readme.splitlines()
                 if line.startswith("GRANT pg_read_all_stats"))
    name = unique_db_name("win")
    create_database(ny_server.dsn(), name, "pggit_tpl")
    dsn = ny_server.dsn(dbname=name)
    role = f"ro_{uuid.uuid4().hex[:10]}"
    ro = (dsn, create_select_only_role(dsn, role, "secret"), "select_only")
    forwarder = forwarder_for(ro, tmp_path, receiver)
    drain(forwarder)
    assert forwarder.mode == MODE_SELECT_ONLY
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(grant.replace("pggit_exporter", role))
    drain(forwarder)
    assert forwarder.mode == MODE_PRIVILEGED
