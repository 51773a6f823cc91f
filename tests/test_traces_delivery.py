"""Each span once: across restarts, outages of the endpoint, a full queue and timeouts."""

from __future__ import annotations

import json
from collections.abc import Iterator

import psycopg
import pytest

from tests.otlp_receiver import Receiver, make_forwarder, spans_total, traces_config
from tests.test_traces_trees import drain, end_span, start_span


def write_ended(conn: psycopg.Connection, span_ids: list[str]) -> None:
    for span_id in span_ids:
        start_span(conn, span_id, None)
        end_span(conn, span_id)


@pytest.fixture
def writer(pggit_dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        yield conn


def test_span_that_ends_after_a_restart_is_sent_once(
        pggit_dsn: str, tmp_path, receiver: Receiver, writer: psycopg.Connection) -> None:
    first = make_forwarder(pggit_dsn, tmp_path, traces_config(receiver))
    start_span(writer, "early", None)
    start_span(writer, "late", None)
    end_span(writer, "early")
    drain(first)
    first.stop(timeout=1)
    end_span(writer, "late")
    second = make_forwarder(pggit_dsn, tmp_path, traces_config(receiver))
    drain(second)
    drain(second)
    second.stop(timeout=1)
    by_id = receiver.by_pggit_span_id()
    assert {k: len(v) for k, v in by_id.items()} == {"early": 1, "late": 1}


def test_restart_does_not_resend_spans_already_sent(
        pggit_dsn: str, tmp_path, receiver: Receiver, writer: psycopg.Connection) -> None:
    write_ended(writer, [f"s{i}" for i in range(20)])
    first = make_forwarder(pggit_dsn, tmp_path, traces_config(receiver))
    drain(first)
    first.stop(timeout=1)
    second = make_forwarder(pggit_dsn, tmp_path, traces_config(receiver))
    drain(second)
    second.stop(timeout=1)
    assert len(receiver.spans) == 20


def test_spans_wait_while_endpoint_is_down_and_arrive_when_it_is_back(
        pggit_dsn: str, tmp_path, receiver: Receiver, writer: psycopg.Connection) -> None:
    forwarder = make_forwarder(pggit_dsn, tmp_path, traces_config(receiver, timeout=0.5))
    receiver.refuse = True
    write_ended(writer, [f"s{i}" for i in range(10)])
    forwarder.poll_once()
    assert forwarder.send_pending() is False
    assert forwarder.queue.depth == 10
    receiver.refuse = False
    while forwarder.send_pending():
        pass
    forwarder.stop(timeout=1)
    assert sorted(receiver.by_pggit_span_id()) == sorted(f"s{i}" for i in range(10))
    assert spans_total(forwarder, "exported") == 10
    assert spans_total(forwarder, "dropped") == 0


def test_spans_beyond_a_full_queue_are_dropped_and_counted(
        pggit_dsn: str, tmp_path, receiver: Receiver, writer: psycopg.Connection) -> None:
    cfg = traces_config(receiver, timeout=0.5, queue_size=5)
    forwarder = make_forwarder(pggit_dsn, tmp_path, cfg)
    receiver.refuse = True
    write_ended(writer, [f"s{i:02d}" for i in range(20)])
    forwarder.poll_once()
    assert forwarder.send_pending() is False  # the endpoint is down: now spans overflow
    forwarder.poll_once()
    assert forwarder.queue.depth == 5
    assert spans_total(forwarder, "dropped") == 15
    receiver.refuse = False
    while forwarder.send_pending():
        pass
    forwarder.stop(timeout=1)
    assert len(receiver.spans) == 5
    assert spans_total(forwarder, "exported") == 5


def test_batch_refused_past_the_retry_limit_is_dropped_counted_and_not_resent(
        pggit_dsn: str, tmp_path, receiver: Receiver, writer: psycopg.Connection) -> None:
    forwarder = make_forwarder(pggit_dsn, tmp_path,
                               traces_config(receiver, timeout=0.5, retry_for=90))
    assert forwarder.sender.give_up_after == 90
    forwarder.sender.give_up_after = 0.0  # the first failure is past the limit
    receiver.refuse = True
    write_ended(writer, [f"lost{i}" for i in range(3)])
    forwarder.poll_once()
    assert forwarder.send_pending() is False
    assert forwarder.queue.depth == 0
    assert spans_total(forwarder, "dropped") == 3
    receiver.refuse = False
    write_ended(writer, [f"kept{i}" for i in range(2)])
    drain(forwarder)
    forwarder.stop(timeout=1)
    again = make_forwarder(pggit_dsn, tmp_path, traces_config(receiver))
    drain(again)
    again.stop(timeout=1)
    assert sorted(receiver.by_pggit_span_id()) == ["kept0", "kept1"]
    assert spans_total(forwarder, "exported") == 2
    assert json.loads((tmp_path / "main.json").read_text())["traces"]["unsent"] == []


def test_crash_after_a_skipped_checkpoint_resends_the_same_spans_and_counts_once(
        pggit_dsn: str, tmp_path, receiver: Receiver, writer: psycopg.Connection) -> None:
    names = [f"s{i:02d}" for i in range(30)]
    write_ended(writer, names)
    first = make_forwarder(pggit_dsn, tmp_path, traces_config(receiver, batch_size=3))
    first.save_interval = float("inf")  # only the first poll of the backlog is saved
    for _ in range(2):
        assert first.poll_once() == 12
        while first.send_pending():
            pass
    # kill -9: no stop(), so the second poll's spans are sent but not checkpointed
    second = make_forwarder(pggit_dsn, tmp_path, traces_config(receiver, batch_size=3))
    drain(second, rounds=4)
    second.stop(timeout=1)
    by_id = receiver.by_pggit_span_id()
    assert sorted(by_id) == names
    # The first poll's spans were saved as unsent, the second's not saved at all: both resent.
    assert sorted(k for k, v in by_id.items() if len(v) == 2) == names[:24]
    assert all(len({(c.trace_id, c.span_id, c.end_ns) for c in v}) == 1
               for v in by_id.values())
    cells = second.agg.histograms["pggit_span_duration_seconds"].values()
    assert sum(sum(cell[:-1]) for cell in cells) == 30


def test_metrics_show_only_checkpointed_spans_while_a_backlog_is_read(
        pggit_dsn: str, tmp_path, receiver: Receiver, writer: psycopg.Connection) -> None:
    """A scrape must never show a count that kill -9 could take back."""
    write_ended(writer, [f"s{i:02d}" for i in range(30)])
    forwarder = make_forwarder(pggit_dsn, tmp_path, traces_config(receiver, batch_size=3))
    forwarder.save_interval = float("inf")

    def shown() -> int:
        (histogram, _) = forwarder.collect()
        return sum(sum(cell[:-1]) for cell in histogram.cells.values())

    def saved() -> int:
        state = json.loads(forwarder.state_path.read_text())["traces"]
        return sum(sum(cell[:-1]) for _, cell in
                   state["aggregates"]["histograms"]["pggit_span_duration_seconds"])

    assert forwarder.poll_once() == 12
    assert shown() == saved() == 12
    while forwarder.send_pending():
        pass
    assert forwarder.poll_once() == 12
    assert shown() == saved() == 12, "the second page is counted in memory, not yet on disk"
    forwarder.stop(timeout=1)
    assert shown() == saved() == 24


def test_healthy_endpoint_backlog_larger_than_queue_is_not_dropped(
        pggit_dsn: str, tmp_path, receiver: Receiver, writer: psycopg.Connection) -> None:
    forwarder = make_forwarder(pggit_dsn, tmp_path, traces_config(receiver, queue_size=4))
    write_ended(writer, [f"s{i:02d}" for i in range(30)])
    drain(forwarder, rounds=12)
    forwarder.stop(timeout=1)
    assert len(receiver.spans) == 30
    assert spans_total(forwarder, "dropped") == 0


def test_span_running_past_its_timeout_is_sent_once_as_timed_out(
        pggit_dsn: str, tmp_path, receiver: Receiver, writer: psycopg.Connection) -> None:
    forwarder = make_forwarder(pggit_dsn, tmp_path, traces_config(receiver, running_timeout=60))
    start_span(writer, "stuck", None)
    start_span(writer, "fresh", None)
    drain(forwarder)
    assert receiver.spans == []
    writer.execute("UPDATE pggit.operation_traces SET start_time = start_time - interval '2 "
                   "hours' WHERE span_id = 'stuck'")
    drain(forwarder)
    drain(forwarder)
    (span,) = receiver.by_pggit_span_id()["stuck"]
    assert span.attributes["pggit.span.timed_out"] is True
    assert span.status_code == 2
    assert spans_total(forwarder, "timed_out") == 1
    (_, gauge) = forwarder.collect()
    assert gauge.values == {("commit",): 1.0}, "the timed-out span is no longer running"
    end_span(writer, "stuck")
    drain(forwarder)
    forwarder.stop(timeout=1)
    assert len(receiver.by_pggit_span_id()["stuck"]) == 1
    assert forwarder.late_ends == 1
    assert "fresh" not in receiver.by_pggit_span_id()


def test_timed_out_span_is_not_sent_again_after_restart(
        pggit_dsn: str, tmp_path, receiver: Receiver, writer: psycopg.Connection) -> None:
    cfg = traces_config(receiver, running_timeout=60)
    first = make_forwarder(pggit_dsn, tmp_path, cfg)
    start_span(writer, "stuck", None)
    writer.execute("UPDATE pggit.operation_traces SET start_time = start_time - interval '2 "
                   "hours' WHERE span_id = 'stuck'")
    drain(first)
    drain(first)
    first.stop(timeout=1)
    end_span(writer, "stuck")
    second = make_forwarder(pggit_dsn, tmp_path, cfg)
    drain(second)
    second.stop(timeout=1)
    assert len(receiver.by_pggit_span_id()["stuck"]) == 1
    assert second.late_ends == 1


def test_running_spans_gauge_counts_spans_not_yet_ended(
        pggit_dsn: str, tmp_path, receiver: Receiver, writer: psycopg.Connection) -> None:
    forwarder = make_forwarder(pggit_dsn, tmp_path, traces_config(receiver))
    start_span(writer, "a", None, op="merge")
    start_span(writer, "b", None, op="merge")
    start_span(writer, "c", None, op="commit")
    end_span(writer, "c")
    drain(forwarder)
    forwarder.stop(timeout=1)
    (_, gauge) = forwarder.collect()
    assert gauge.values == {("merge",): 2.0}


def test_span_duration_histogram_carries_trace_id_exemplars(
        pggit_dsn: str, tmp_path, receiver: Receiver, writer: psycopg.Connection) -> None:
    from exporter.expose.text import Encoder

    forwarder = make_forwarder(pggit_dsn, tmp_path, traces_config(receiver))
    start_span(writer, "x", None, trace_id="11111111-2222-3333-4444-555555555555")
    end_span(writer, "x")
    drain(forwarder)
    forwarder.stop(timeout=1)
    text = Encoder(openmetrics=True).encode(forwarder.collect()).decode()
    assert 'trace_id="11111111222233334444555555555555"' in text
    assert 'pggit_span_duration_seconds_count{database="main",operation_type="commit"' in text


def test_unsent_spans_wait_while_the_span_table_cannot_be_read(
        pggit_dsn: str, tmp_path, receiver: Receiver, writer: psycopg.Connection) -> None:
    """Keys of spans not yet accepted stay in the checkpoint while their table is gone (a
    migration renaming it, a revoked grant), and are sent once when it is back."""
    write_ended(writer, ["kept"])
    receiver.refuse = True
    first = make_forwarder(pggit_dsn, tmp_path, traces_config(receiver, timeout=0.5))
    first.poll_once()
    first.stop(timeout=0.5)
    assert json.loads((tmp_path / "main.json").read_text())["traces"]["unsent"] == ["s:kept"]
    receiver.refuse = False
    writer.execute("ALTER TABLE pggit.operation_traces RENAME TO operation_traces_away")
    try:
        second = make_forwarder(pggit_dsn, tmp_path, traces_config(receiver))
        drain(second)
        second.stop(timeout=1)
    finally:
        writer.execute("ALTER TABLE pggit.operation_traces_away RENAME TO operation_traces")
    assert receiver.spans == []
    assert json.loads((tmp_path / "main.json").read_text())["traces"]["unsent"] == ["s:kept"]
    third = make_forwarder(pggit_dsn, tmp_path, traces_config(receiver))
    drain(third)
    third.stop(timeout=1)
    assert {k: len(v) for k, v in receiver.by_pggit_span_id().items()} == {"kept": 1}


def test_a_backlog_held_back_by_a_busy_sender_is_not_caught_up(
        pggit_dsn: str, tmp_path, receiver: Receiver, writer: psycopg.Connection) -> None:
    """/readyz and the landing page say "caught up" only once the spans are read: a poll
    that reads nothing because the sender has not sent the last pages yet (no sender thread
    here) is not the end of the backlog."""
    write_ended(writer, [f"s{i:02d}" for i in range(30)])
    forwarder = make_forwarder(pggit_dsn, tmp_path, traces_config(receiver, batch_size=3))
    assert forwarder.poll_once() == 12
    assert not forwarder.poller.caught_up
    assert forwarder.poll_once() == 0 and forwarder.throttled
    assert not forwarder.poller.caught_up
    drain(forwarder, rounds=4)
    assert forwarder.poller.caught_up
    forwarder.stop(timeout=1)
    assert len(receiver.spans) == 30
