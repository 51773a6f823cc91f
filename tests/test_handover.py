"""A lease standby's hand-over bookkeeping (`exporter.send.handover`), and the holder's
answer to a standby that (re)starts listening (`exporter.send.lease`, real PostgreSQL)."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

import psycopg
import pytest

from exporter.send.handover import Handover, limit_for
from exporter.send.lease import SpanLease, digest
from exporter.send.otlp import Group
from tests.exporter_fixtures import wait_for
from tests.otlp_receiver import Receiver, make_forwarder, spans_total, traces_config
from tests.test_traces_trees import drain, end_span, start_span


def group(key: str, spans: int = 1) -> Group:
    return Group(key, [key.encode()] * spans)


def keys(taken: list[Group | str]) -> list[str]:
    return [c.key if isinstance(c, Group) else c for c in taken]


def test_a_span_announced_after_it_was_read_is_not_handed_over() -> None:
    h = Handover(10)
    assert h.keep([group("s:a"), group("s:b")]) == 0
    h.heard([digest("s:a")])
    assert keys(h.take()) == ["s:b"]
    assert not h.announced


def test_a_span_announced_before_it_is_read_is_never_kept() -> None:
    h = Handover(10)
    h.heard([digest("s:a")])
    assert list(h.announced) == [digest("s:a")]
    h.keep([group("s:a"), group("s:b")])
    assert keys(h.take()) == ["s:b"]
    assert not h.announced  # the announcement was used up


def test_takeover_hands_over_oldest_first_and_leaves_nothing() -> None:
    h = Handover(10)
    h.keep([group("s:1"), group("m:2", 3)])
    h.keep([group("t:3")])
    h.keep([group("s:1")])  # read again: moves to the end, kept once
    assert keys(h.take()) == ["m:2", "t:3", "s:1"]
    assert len(h) == 0 and h.take() == []


def test_the_bound_cuts_the_oldest_and_counts_their_spans() -> None:
    h = Handover(3)
    assert h.keep([group("s:1"), group("m:2", 4), group("s:3")]) == 0
    assert h.keep([group("s:4"), group("s:5")]) == 5  # s:1 (1 span) and m:2 (4 spans)
    assert keys(h.take()) == ["s:3", "s:4", "s:5"]
    # A forwarder keeps half its queue: a takeover leaves room for what it reads next.
    assert (limit_for(100_000), limit_for(1)) == (50_000, 1)


def test_announced_digests_are_bounded_oldest_first() -> None:
    h = Handover(2)
    h.heard([digest(f"s:{i}") for i in range(10)])
    assert list(h.announced) == [digest(f"s:{i}") for i in range(2, 10)]  # 4 * limit


def test_the_holder_does_not_send_what_a_previous_holder_announced() -> None:
    h = Handover(10)
    h.heard([digest("s:a")])
    h.take()
    fresh = h.unannounced([group("s:a"), group("s:b")])
    assert [g.key for g in fresh] == ["s:b"]
    assert h.unannounced([group("s:a")])[0].key == "s:a"  # one announcement, used once


def test_json_round_trip_restores_candidates_as_keys_in_order() -> None:
    h = Handover(10)
    h.keep([group("s:a"), group("m:7", 2), group("t:b")])
    h.heard([digest("s:a"), digest("s:later")])
    data = json.loads(json.dumps(h.to_json()))
    assert data == {"candidates": ["m:7", "t:b"], "announced": [digest("s:later")]}
    restored = Handover.from_json(data, 10)
    assert restored.to_json() == data
    assert restored.take() == ["m:7", "t:b"]


def test_restore_then_read_again_replaces_the_key_by_the_group() -> None:
    """A checkpoint that lagged the read position: the span is read again after restart."""
    restored = Handover.from_json({"candidates": ["s:a", "s:b"], "announced": []}, 10)
    again = group("s:a")
    restored.keep([again])
    taken = restored.take()
    assert taken == ["s:b", again]


def test_restore_then_announced_drops_the_restored_candidate() -> None:
    restored = Handover.from_json({"candidates": ["s:a", "s:b"], "announced": []}, 10)
    restored.heard([digest("s:b")])
    assert restored.take() == ["s:a"]


def test_restore_into_a_smaller_bound_keeps_the_newest() -> None:
    restored = Handover.from_json({"candidates": ["s:1", "s:2", "s:3"]}, 2)
    assert restored.take() == ["s:2", "s:3"]
    assert Handover.from_json(None, 2).to_json() == {"candidates": [], "announced": []}


def test_a_standby_that_starts_listening_late_hears_the_holders_recent_announcements(
        pggit_dsn: str) -> None:
    """NOTIFY reaches only sessions listening at the time: a restarted standby asks (`sync`)
    and the holder repeats its history at its next refresh."""
    heard: dict[str, list[str]] = {"holder": [], "standby": []}

    def lease(name: str) -> SpanLease:
        return SpanLease("main", lambda: psycopg.connect(pggit_dsn, autocommit=True),
                         "pggit", "operation_traces", heard[name].extend, history=3)

    holder, standby = lease("holder"), lease("standby")
    try:
        assert holder.refresh()
        holder.announce(["s:1", "s:2"])
        holder.announce(["s:3", "s:4"])  # history 3: the first announcement is forgotten
        assert not standby.refresh()  # LISTEN, then `sync`
        assert heard["standby"] == []
        assert holder.refresh()  # hears `sync`, repeats
        holder.announce(["s:5"])
        standby.refresh()
        assert heard["standby"] == [digest(k) for k in ("s:3", "s:4", "s:5")]
        assert heard["holder"] == []
    finally:
        holder.close()
        standby.close()


# -- in a forwarder: checkpoint, restore, count (real PostgreSQL and OTLP receiver) ----------

def write_spans(dsn: str, n: int) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(n)]
    with psycopg.connect(dsn, autocommit=True) as conn:
        for span_id in ids:
            start_span(conn, span_id, None)
            end_span(conn, span_id)
    return ids


def copies(receiver: Receiver) -> dict[str, int]:
    return {k: len(v) for k, v in receiver.by_pggit_span_id().items()}


def test_a_standby_counts_candidates_beyond_its_bound_and_hands_over_the_rest_after_restart(
        pggit_dsn: str, receiver: Receiver, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """The holder sends nothing (it is not polled); the standby holds half its queue (2),
    counts the 3 it let go, checkpoints the 2, and after a restart sends exactly those, by
    key, once it holds the lease."""
    holder = make_forwarder(pggit_dsn, tmp_path / "h", traces_config(receiver), lease=True)
    standby_state = tmp_path / "s"
    cfg = traces_config(receiver, queue_size=4)
    standby = make_forwarder(pggit_dsn, standby_state, cfg, lease=True)
    restarted = None
    try:
        holder.poll_once()
        assert holder.lease.held
        ids = write_spans(pggit_dsn, 5)
        with caplog.at_level(logging.WARNING):
            drain(standby)
            drain(standby)
        assert not standby.lease.held
        assert spans_total(standby, "unguarded") == 3
        assert sum("counted as unguarded" in r.getMessage() for r in caplog.records) == 1
        standby.stop()
        saved = json.loads((standby_state / "main.json").read_text())["traces"]
        kept = [k.removeprefix("s:") for k in saved["handover"]["candidates"]]
        assert len(kept) == 2 and set(kept) <= set(ids)
        assert saved["counts"]["unguarded"] == 3

        restarted = make_forwarder(pggit_dsn, standby_state, cfg, lease=True)
        assert spans_total(restarted, "unguarded") == 3  # the count survives the restart
        holder.lease.close()  # the holder's session ends: the lease is free
        drain(restarted)
        assert restarted.lease.held
        assert copies(receiver) == dict.fromkeys(kept, 1)
    finally:
        for f in (holder, restarted):
            if f is not None:
                f.stop()


def test_what_the_holder_sent_while_the_standby_was_down_is_not_sent_again(
        pggit_dsn: str, receiver: Receiver, tmp_path: Path) -> None:
    """NOTIFY reaches only listeners: the restarted standby asks (`sync`), the holder repeats
    its announcements, the restored candidates go, and a takeover repeats nothing."""
    holder = make_forwarder(pggit_dsn, tmp_path / "h", traces_config(receiver), lease=True)
    standby_state = tmp_path / "s"
    standby = make_forwarder(pggit_dsn, standby_state, traces_config(receiver), lease=True)
    restarted = None
    try:
        holder.poll_once()
        first = write_spans(pggit_dsn, 4)
        drain(standby)  # read first: all four are candidates
        standby.stop()
        assert len(json.loads((standby_state / "main.json").read_text())["traces"]
                   ["handover"]["candidates"]) == 4
        drain(holder)  # sends and announces them, nobody listening
        assert copies(receiver) == dict.fromkeys(first, 1)

        restarted = make_forwarder(pggit_dsn, standby_state, traces_config(receiver),
                                   lease=True)
        assert len(restarted.handover) == 4
        restarted.poll_once()  # LISTEN, `sync`
        holder.poll_once()  # repeats its announcements
        restarted.poll_once()  # hears them
        assert len(restarted.handover) == 0
        later = write_spans(pggit_dsn, 3)
        drain(restarted)
        holder.lease.close()
        drain(restarted)
        assert restarted.lease.held
        assert copies(receiver) == dict.fromkeys(first + later, 1)
    finally:
        for f in (holder, restarted):
            if f is not None:
                f.stop()


def test_candidates_taken_over_but_not_yet_re_read_stay_in_the_checkpoint(
        pggit_dsn: str, receiver: Receiver, tmp_path: Path) -> None:
    """Between the takeover and the poll's re-read by key, restored candidates are only in
    `unsent`: a checkpoint written then (a stop) must keep them."""
    (tmp_path / "main.traces.json").write_text(json.dumps({
        "version": 2, "unsent": ["s:before"],
        "handover": {"candidates": ["s:restored"], "announced": []}}))
    forwarder = make_forwarder(pggit_dsn, tmp_path, traces_config(receiver), lease=True)
    forwarder._lease_step()  # the lease is free: taken over, nothing re-read yet
    assert forwarder.lease.held
    forwarder.stop()
    saved = json.loads((tmp_path / "main.json").read_text())["traces"]
    assert saved["unsent"] == ["s:restored", "s:before"]
    assert saved["handover"]["candidates"] == []


def test_a_new_holder_repeats_what_the_previous_holder_announced(pggit_dsn: str) -> None:
    """A standby restarted after the holder's death restores candidates that holder sent
    after the standby's last checkpoint: the new holder heard those announcements as a
    standby, and its answer to `sync` carries them, so the restarted one drops them."""
    heard: dict[str, list[str]] = {"first": [], "second": [], "restarted": []}

    def lease(name: str) -> SpanLease:
        return SpanLease("main", lambda: psycopg.connect(pggit_dsn, autocommit=True),
                         "pggit", "operation_traces", heard[name].extend)

    first, second, restarted = lease("first"), lease("second"), lease("restarted")
    try:
        assert first.refresh()
        assert not second.refresh()
        first.announce(["s:1", "s:2"])
        first.close()  # the holder dies; its backend lets the lock go a moment later
        wait_for(second.refresh, 10, interval=0.02, what="takeover")  # hearing s:1 and s:2
        assert heard["second"] == [digest("s:1"), digest("s:2")]
        second.announce(["s:3"])
        assert not restarted.refresh()  # LISTEN, then `sync`
        assert second.refresh()  # hears `sync`, repeats what it heard and what it sent
        restarted.refresh()
        assert heard["restarted"] == [digest(k) for k in ("s:1", "s:2", "s:3")]
    finally:
        for lease_ in (first, second, restarted):
            lease_.close()
