"""Span trees leave as whole traces, each span once, over both OTLP transports."""

from __future__ import annotations

import random
import uuid

import psycopg
import pytest

from exporter.otlp import ids
from tests.otlp_receiver import Receiver, make_forwarder, traces_config

DEPTH = 5


def start_span(conn: psycopg.Connection, span_id: str, parent: str | None,
               trace_id: str | None = None, op: str = "commit",
               attributes: str | None = None) -> None:
    conn.execute("SELECT pggit.start_performance_trace(p_trace_id => %s, p_span_id => %s, "
                 "p_parent_span_id => %s, p_operation_type => %s, p_span_name => %s, "
                 "p_attributes => %s::jsonb)",
                 (trace_id, span_id, parent, op, f"{op}.{span_id[:8]}", attributes))


def end_span(conn: psycopg.Connection, span_id: str, status: str = "SUCCESS") -> None:
    conn.execute("SELECT pggit.end_performance_trace(%s, %s)", (span_id, status))


def drain(forwarder, rounds: int = 3) -> None:
    for _ in range(rounds):
        forwarder.poll_once()
        while forwarder.send_pending():
            pass


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_tree_ending_out_of_order_in_concurrent_transactions_is_one_trace(
        pggit_dsn: str, tmp_path, receiver: Receiver, protocol: str) -> None:
    root_trace = str(uuid.uuid4())
    chain = [f"span-{i}-{uuid.uuid4()}" for i in range(DEPTH)]
    writers = [psycopg.connect(pggit_dsn, autocommit=True) for _ in range(DEPTH)]
    forwarder = make_forwarder(pggit_dsn, tmp_path, traces_config(receiver, protocol))
    try:
        for i, span in enumerate(chain):
            start_span(writers[i], span, chain[i - 1] if i else None,
                       trace_id=root_trace if i == 0 else None)
        drain(forwarder)
        assert receiver.spans == []
        # Leaves first, each end in its own transaction, committed in a shuffled order with
        # polls in between: commit order 3, 4, 1, 0, 2 (span 2's transaction stays open).
        for conn in writers:
            conn.autocommit = False
        for i in reversed(range(DEPTH)):
            end_span(writers[i], chain[i])
        for i in (3, 4):
            writers[i].commit()
            drain(forwarder)
        writers[1].commit()
        writers[0].commit()
        drain(forwarder)
        assert {s.attributes["pggit.span_id"] for s in receiver.spans} == {
            chain[0], chain[1], chain[3], chain[4]}
        writers[2].commit()
        drain(forwarder)
    finally:
        for conn in writers:
            conn.close()
        forwarder.stop(timeout=1)

    by_id = receiver.by_pggit_span_id()
    assert sorted(by_id) == sorted(chain)
    assert all(len(v) == 1 for v in by_id.values())
    expected_trace = uuid.UUID(root_trace).hex
    for i, span in enumerate(chain):
        got = by_id[span][0]
        assert got.trace_id == expected_trace
        assert got.span_id == ids.hex_span_id(ids.span_id(span))
        parent = ids.hex_span_id(ids.span_id(chain[i - 1])) if i else ""
        assert got.parent_span_id == parent


def test_text_trace_ids_are_hashed_and_kept_as_attributes(
        pggit_dsn: str, tmp_path, receiver: Receiver) -> None:
    forwarder = make_forwarder(pggit_dsn, tmp_path, traces_config(receiver))
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        start_span(conn, "span_merge_workflow_001", None, trace_id="trace_merge_workflow_001")
        start_span(conn, "span_merge_workflow_002", "span_merge_workflow_001")
        end_span(conn, "span_merge_workflow_002")
        end_span(conn, "span_merge_workflow_001", "FAILED")
    drain(forwarder)
    forwarder.stop(timeout=1)
    by_id = receiver.by_pggit_span_id()
    root = by_id["span_merge_workflow_001"][0]
    child = by_id["span_merge_workflow_002"][0]
    assert root.trace_id == child.trace_id == ids.hex_trace_id(
        ids.trace_id("trace_merge_workflow_001"))
    assert root.attributes["pggit.trace_id"] == "trace_merge_workflow_001"
    assert child.attributes["pggit.parent_span_id"] == "span_merge_workflow_001"
    assert child.attributes["pggit.root_trace_id"] == "trace_merge_workflow_001"


def test_failed_span_has_error_status_and_exception_event(
        pggit_dsn: str, tmp_path, receiver: Receiver) -> None:
    forwarder = make_forwarder(pggit_dsn, tmp_path, traces_config(receiver))
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        start_span(conn, "failing", None)
        conn.execute("SELECT pggit.end_performance_trace('failing', 'FAILED', 'disk full', "
                     "'53100', '{\"file\": \"x\"}'::jsonb)")
    drain(forwarder)
    forwarder.stop(timeout=1)
    (span,) = receiver.by_pggit_span_id()["failing"]
    assert span.status_code == 2  # STATUS_CODE_ERROR
    assert span.status_message == "disk full"
    (event,) = span.events
    assert event[0] == "exception"
    assert event[1]["pggit.error_code"] == "53100"
    assert event[1]["pggit.error_details"] == '{"file": "x"}'


def test_spans_read_a_page_ahead_are_each_sent_once_in_whole_trees(
        pggit_dsn: str, tmp_path, receiver: Receiver) -> None:
    """Tiny batches: every poll reads several pages, each while the previous is handled."""
    rng = random.Random(7)
    trees = [[f"t{t}-s{i}" for i in range(DEPTH)] for t in range(6)]
    forwarder = make_forwarder(pggit_dsn, tmp_path, traces_config(receiver, batch_size=3))
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        late = psycopg.connect(pggit_dsn)
        try:
            for chain in trees[:3]:
                for i, span in enumerate(chain):
                    start_span(conn, span, chain[i - 1] if i else None)
                for span in rng.sample(chain, len(chain)):
                    end_span(conn, span)
            start_span(conn, "late", None)
            end_span(late, "late")  # committed only after the first pass
            forwarder.poll_once()
            assert forwarder.queue.depth > 3  # more than one page in one poll
            drain(forwarder)
            for chain in trees[3:]:
                for i, span in enumerate(chain):
                    start_span(conn, span, chain[i - 1] if i else None)
                for span in rng.sample(chain, len(chain)):
                    end_span(conn, span)
            late.commit()
            drain(forwarder, rounds=6)
        finally:
            late.close()
    forwarder.stop(timeout=1)
    by_id = receiver.by_pggit_span_id()
    expected = {span for chain in trees for span in chain} | {"late"}
    assert sorted(by_id) == sorted(expected)
    assert all(len(copies) == 1 for copies in by_id.values())
    for chain in trees:
        assert len({by_id[span][0].trace_id for span in chain}) == 1
    cells = forwarder.agg.histograms["pggit_span_duration_seconds"].values()
    assert sum(sum(cell[:-1]) for cell in cells) == len(expected)
