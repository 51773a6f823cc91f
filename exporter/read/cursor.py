"""The exactly-once read position for a table with a BIGSERIAL id.

Ids are taken at insert but transactions commit in any order, and a rollback leaves a hole
forever. So the position is not one number: it is the largest id seen (`max_seen`) plus the
ranges below it not yet visible (`gaps`) and rows seen but not yet final (`waiting`, e.g. a
merge still running).

A gap is settled as a rollback only when every transaction that could have been holding it
has ended: when it was noticed in a snapshot whose horizon (the next xid then) is H, any
transaction that had taken the id either already had an xid (below H) or got one just after;
once a later snapshot's xmin is >= H, all of the former have ended (xmin >= H means no xid
below H is still running), and `grace` seconds cover the latter (the instant between
nextval() and the insert taking an xid). A gap still empty then is a rollback. A committed
row in it would have been visible in that same snapshot, and is read by the gap query that
runs first. The horizon is not the snapshot's xmax, which can be below a running writer's
xid (see `exporter.read.incremental.Snapshot`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Gap:
    lo: int
    hi: int
    noticed_horizon: int
    noticed_at: float


@dataclass
class IdCursor:
    max_seen: int = 0
    gaps: list[Gap] = field(default_factory=list)
    waiting: dict[int, float] = field(default_factory=dict)

    def pending_ranges(self) -> tuple[list[int], list[int]]:
        """(lows, highs) of every id range to look at again, waiting rows as one-id ranges."""
        lows = [g.lo for g in self.gaps] + list(self.waiting)
        highs = [g.hi for g in self.gaps] + list(self.waiting)
        return lows, highs

    def pending_count(self) -> int:
        return len(self.gaps) + len(self.waiting)

    def advance(self, ids: list[int], horizon: int, now: float) -> None:
        """Record new rows read past max_seen (ascending); the ids skipped become gaps."""
        prev = self.max_seen
        for i in ids:
            if i > prev + 1:
                self.gaps.append(Gap(prev + 1, i - 1, horizon, now))
            prev = i
        self.max_seen = max(self.max_seen, prev)

    def extend(self, last: int, count: int) -> bool:
        """Move past a page of `count` ascending ids ending at `last` if it has no holes.

        Ids are unique and above max_seen, so the page is exactly max_seen+1..last when the
        distance equals the count; False means the caller must `advance` id by id.
        """
        if last - self.max_seen != count:
            return False
        self.max_seen = last
        return True

    def found(self, ids: set[int]) -> None:
        """Rows now visible inside gaps or finished while waiting: remove them from pending."""
        if not ids:
            return
        for i in ids:
            self.waiting.pop(i, None)
        remaining: list[Gap] = []
        for g in self.gaps:
            inside = sorted(i for i in ids if g.lo <= i <= g.hi)
            lo = g.lo
            for i in inside:
                if i > lo:
                    remaining.append(Gap(lo, i - 1, g.noticed_horizon, g.noticed_at))
                lo = i + 1
            if lo <= g.hi:
                remaining.append(Gap(lo, g.hi, g.noticed_horizon, g.noticed_at))
        self.gaps = remaining

    def wait(self, row_id: int, now: float) -> None:
        """A visible row that is not final yet (still running): read it again next poll."""
        self.waiting.setdefault(row_id, now)

    def settle(self, xmin: int, now: float, grace: float, still_waiting: set[int]) -> int:
        """Drop gaps whose writers have all ended (rollbacks) and waiting rows deleted since.

        `still_waiting` are the waiting ids the gap query saw again; the others were deleted
        (retention) and will never finish. Returns how many gaps were settled as rollbacks.
        """
        before = len(self.gaps)
        self.gaps = [g for g in self.gaps
                     if not (xmin >= g.noticed_horizon and now - g.noticed_at >= grace)]
        self.waiting = {i: t for i, t in self.waiting.items() if i in still_waiting}
        return before - len(self.gaps)

    def copy(self) -> IdCursor:
        """An independent copy for one poll (gaps are never changed in place, only replaced)."""
        return IdCursor(self.max_seen, list(self.gaps), dict(self.waiting))

    def to_json(self) -> dict[str, Any]:
        return {"max_seen": self.max_seen,
                "gaps": [[g.lo, g.hi, g.noticed_horizon, g.noticed_at] for g in self.gaps],
                "waiting": [[i, t] for i, t in self.waiting.items()]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IdCursor:
        return cls(max_seen=int(data["max_seen"]),
                   gaps=[Gap(int(a), int(b), int(x), float(t)) for a, b, x, t in data["gaps"]],
                   waiting={int(i): float(t) for i, t in data["waiting"]})
