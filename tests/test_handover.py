"""A lease standby's hand-over bookkeeping (`exporter.send.handover`), and the holder's
answer to a standby that (re)starts listening (`exporter.send.lease`, real PostgreSQL)."""

from __future__ import annotations

import json

import psycopg

from exporter.send.handover import Handover, limit_for
from exporter.send.lease import SpanLease, digest
from exporter.send.otlp import Group


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
        holder.announce(["s:3", "s:4"])  # history 3: s:1 is forgotten
        assert not standby.refresh()  # LISTEN, then `sync`
        assert heard["standby"] == []
        assert holder.refresh()  # hears `sync`, repeats
        holder.announce(["s:5"])
        standby.refresh()
        assert heard["standby"] == [digest(k) for k in ("s:2", "s:3", "s:4", "s:5")]
        assert heard["holder"] == []
    finally:
        holder.close()
        standby.close()
