"""A lease standby's hand-over state: the spans it would send, and what the holder announced.

A standby (see `exporter.send.lease`) reads every span the holder reads, but must send only
those the holder did not get to. It keeps each span it would send as a *candidate* until the
holder announces it sent, and each announced digest it has not read yet, so a span read after
its announcement is not kept. On takeover it sends the candidates that are left.

Why this state is checkpointed: a standby's read position moves past the spans it keeps, so
after a restart it never reads them again. If the holder then died, the spans it had not sent
would be lost. The span source saves `to_json()` next to its read position; candidates are
saved by span key ("s:<span_id>", "t:<span_id>", "m:<merge id>", as the `unsent` list has
them), and a restored candidate stays a key until takeover, when the span source re-reads it
by key the way it re-reads `unsent` (same ids). Announcements made while the standby was down
are not queued for it: `exporter.send.lease` has the holder repeat its recent ones when a
standby (re)starts listening.

Bounds: at most `limit` candidates (half the queue, see `limit_for`) and `4 * limit`
announced digests. Candidates beyond the bound are cut oldest first and returned by `keep()`,
so the caller counts them: they are no longer guarded against the holder's death.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

from exporter.send.lease import digest
from exporter.send.otlp import Group

ANNOUNCED_FACTOR = 4
"""Announced digests kept per candidate slot: the holder may announce spans well before a
standby that polls later reads them."""


def limit_for(queue_size: int) -> int:
    """Half the queue: a takeover queues every candidate and then, in the same poll, what it
    reads, including the ends of running spans, which are not held back in the table; with a
    queue already full of candidates those would be dropped."""
    return max(1, queue_size // 2)


Candidate = Group | str
"""A span read by this process (its group), or one restored from the checkpoint (its key)."""


def size(candidate: Candidate) -> int:
    """Spans of a candidate; a restored key counts as one (a merge's phases are not known
    until it is re-read)."""
    return candidate.size if isinstance(candidate, Group) else 1


def key_of(candidate: Candidate) -> str:
    return candidate.key if isinstance(candidate, Group) else candidate


class Handover:
    """Candidates (digest -> group or key, oldest first) and announced digests, bounded.

    Thread-safe: `keep` and `take` run on the poll thread, `heard` on whichever thread
    psycopg delivers the holder's notifications on, `to_json` on the checkpointing one.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.candidates: OrderedDict[str, Candidate] = OrderedDict()
        self.announced: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.candidates)

    def keep(self, groups: Iterable[Candidate]) -> int:
        """Keep spans to send unless already announced; returns the spans cut by the bound.

        A span read again (a checkpoint that lagged behind the read position) replaces its
        restored key by the group, so nothing is kept twice.
        """
        cut = 0
        with self._lock:
            for group in groups:
                d = digest(key_of(group))
                if d in self.announced:
                    del self.announced[d]
                    continue
                self.candidates[d] = group
                self.candidates.move_to_end(d)
            while len(self.candidates) > self.limit:
                cut += size(self.candidates.popitem(last=False)[1])
        return cut

    def heard(self, digests: Iterable[str]) -> None:
        """The holder sent these: forget them, or remember them for when they are read."""
        with self._lock:
            for d in digests:
                if self.candidates.pop(d, None) is None:
                    self.announced[d] = None
                    self.announced.move_to_end(d)
            while len(self.announced) > ANNOUNCED_FACTOR * self.limit:
                self.announced.popitem(last=False)

    def unannounced(self, groups: list[Group]) -> list[Group]:
        """The holder's filter: spans a previous holder announced, read only after this
        process took over, are not sent again."""
        if not self.announced:
            return groups
        with self._lock:
            fresh = []
            for group in groups:
                d = digest(group.key)
                if d in self.announced:
                    del self.announced[d]
                else:
                    fresh.append(group)
            return fresh

    def take(self) -> list[Candidate]:
        """Takeover: every candidate left, oldest first; the state is empty afterwards.

        Announced digests are kept: a span announced but not read yet must still not be sent
        when this process reads it as the holder (see `unannounced`).
        """
        with self._lock:
            taken = list(self.candidates.values())
            self.candidates.clear()
        return taken

    def to_json(self) -> dict[str, list[str]]:
        with self._lock:
            return {"candidates": [key_of(c) for c in self.candidates.values()],
                    "announced": list(self.announced)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None, limit: int) -> Handover:
        """Restore; candidates come back as keys. A smaller `limit` than the saved state's
        keeps the newest (the oldest are the likeliest to have been sent)."""
        state = cls(limit)
        if data:
            state.keep(str(k) for k in data.get("candidates", []))
            state.heard(str(d) for d in data.get("announced", []))
        return state
