"""The span lease: which of several exporters on one database sends its spans.

Two exporters pointed at one database (an HA pair, or a copy started by mistake) read the same
rows and would send every span twice. A session-level advisory lock decides: the exporter whose
dedicated connection holds it sends; the others keep reading (their span metrics stay exact) but
hold the spans they would send as *candidates*, and try the lock again every poll. Advisory
locks need no privilege, so this works with a SELECT-only role, and PostgreSQL releases the lock
when the holder's session ends, which a `kill -9` of the holder causes at once (the kernel
closes its socket).

Exact hand-over: the holder announces, after the endpoint accepted a batch, a digest of each
span key it sent (`NOTIFY` on a channel every exporter of the database LISTENs to; any role may
use it). A standby drops a candidate when its digest is announced, and remembers announced
digests it has not read yet, so a span it reads later is not kept. The holder's NOTIFYs are sent
on the connection that holds the lock, so every announcement is committed before the lock can
be released: a standby that gets the lock has every announcement queued, reads them, then sends
its remaining candidates. What can repeat is the batch the holder had sent but not yet announced
when it died (at most `traces.batch_size` spans, with the same ids); nothing is lost as long as
the standby's candidates fit in half its queue (`exporter.send.handover.limit_for`).

Catching up: NOTIFY reaches only sessions listening at the time, so a standby that restarts
(its candidates come back from its checkpoint, see `exporter.send.handover`) or reconnects
misses what was announced meanwhile. Whenever a standby starts listening it sends `sync` on
the channel, and the holder repeats its last `history` digests (the queue size; whole
announcements, so somewhat fewer) at its next poll. The history holds what the holder heard
as a standby as well as what it announced itself: a standby restarted after the previous
holder's death restores candidates that holder had sent after the standby's last checkpoint,
and only a process that heard them can tell it. A takeover before that answer arrives, or of
a candidate sent more than `history` spans before the answer, may repeat such a restored
candidate.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

PAYLOAD_LIMIT = 7900
"""Bytes per NOTIFY payload (PostgreSQL's limit is 8000)."""
SYNC = "sync"
"""A standby's request to repeat recent announcements (not hex, so never a digest)."""
HISTORY = 100_000
"""Announced digests a holder remembers for a `sync` when the span source gives no size."""


def digest(key: str) -> str:
    """16 hex characters per span key: span ids are free text of any length, digests fit
    about 470 to a NOTIFY."""
    return hashlib.blake2b(key.encode(), digest_size=8).hexdigest()


def lock_key(schema: str, table: str) -> int:
    """One advisory lock per pgGit spans table (advisory locks are per database already)."""
    raw = hashlib.blake2b(f"pggit-exporter spans {schema}.{table}".encode(),
                          digest_size=8).digest()
    return int.from_bytes(raw, "big", signed=True)


def channel(schema: str, table: str) -> str:
    return "pggit_exporter_spans_" + digest(f"{schema}.{table}")


class SpanLease:
    """The lock connection of one span source: acquire, keep, announce, hear announcements.

    `refresh()` runs on the poll thread; `announce()` on the sender thread. psycopg serialises
    the two on the connection.
    """

    def __init__(self, database: str, open_session: Callable[[], psycopg.Connection],
                 schema: str, table: str, on_announced: Callable[[list[str]], None],
                 history: int = HISTORY):
        self.database = database
        self.open_session = open_session
        self.key = lock_key(schema, table)
        self.channel = channel(schema, table)
        self.on_announced = on_announced
        self.held = False
        self.announcing = True
        self.conn: psycopg.Connection | None = None
        self._pid = 0
        # Recent announcements as sent: (digests, payload). Payload strings cost 17 bytes a
        # span, a third of a deque of digest strings.
        self._history: deque[tuple[int, str]] = deque()
        self._history_spans = 0
        self._history_limit = history
        self._history_lock = threading.Lock()
        self._sync_asked = False

    def _heard(self, notify: psycopg.Notify) -> None:
        """Runs inside whichever call on the connection received it: only note a `sync`,
        the connection is busy until the handler returns."""
        if notify.channel != self.channel or notify.pid == self._pid or not notify.payload:
            return
        if notify.payload == SYNC:
            self._sync_asked = True
        else:
            digests = notify.payload.split(" ")
            self._remember([(len(digests), notify.payload)])
            self.on_announced(digests)

    def _open(self) -> psycopg.Connection:
        """The lock connection, listening for announcements where the server allows it.

        A server in recovery (a hot standby) refuses LISTEN and NOTIFY but not advisory
        locks: the lease still decides who sends, and a takeover then sends every candidate
        (up to half a queue), and then what the last holder had sent before this process
        read it: those repeat. One warning says so.
        """
        conn = self.open_session()
        self._pid = conn.info.backend_pid
        conn.add_notify_handler(self._heard)
        try:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        except psycopg.Error as exc:
            if self.announcing:
                log.warning("%s: span lease without hand-over (LISTEN refused: %s); a "
                            "takeover may send again what the last holder sent: up to half a "
                            "queue of spans, plus how far it had read ahead", self.database,
                            exc)
            self.announcing = False
            return conn
        self.announcing = True
        try:
            # Announcements made before LISTEN did not reach this session: ask for them.
            conn.execute("SELECT pg_notify(%s, %s)", (self.channel, SYNC))
        except psycopg.Error as exc:
            log.warning("%s: could not ask the span lease holder for its recent "
                        "announcements: %s", self.database, exc)
        return conn

    def refresh(self) -> bool:
        """Check the lease (holder) or try to take it (standby); hear announcements.

        A broken lock connection means the lease is lost: PostgreSQL has released, or will
        release, the lock with the session.
        """
        try:
            if self.conn is None or self.conn.closed:
                self.conn = self._open()
            if self.held:
                self.conn.execute("SELECT 1")
                if self._sync_asked:
                    self._sync_asked = False
                    self._repeat(self.conn)
            else:
                got = self.conn.execute("SELECT pg_try_advisory_lock(%s)",
                                        (self.key,)).fetchone()
                if got and got[0]:
                    # Every announcement the last holder made is queued by now (committed
                    # before its lock was released): one more round trip delivers them.
                    self.conn.execute("SELECT 1")
                    self.held = True
        except psycopg.Error as exc:
            if self.held:
                log.warning("%s: span lease connection failed: %s", self.database, exc)
            self.held = False
            self.close()
        return self.held

    def announce(self, keys: Iterable[str]) -> None:
        """Tell standbys these span keys were accepted by the endpoint."""
        conn = self.conn
        if conn is None or not self.held or not self.announcing:
            return
        payloads = self._payloads([digest(k) for k in keys])
        self._remember(payloads)
        try:
            self._notify(conn, [p for _, p in payloads])
        except psycopg.Error as exc:
            log.warning("%s: could not announce sent spans to a standby: %s",
                        self.database, exc)

    def _remember(self, payloads: list[tuple[int, str]]) -> None:
        """Keep announcements, made or heard, for a standby's `sync` (the last `history`)."""
        with self._history_lock:
            for n, payload in payloads:
                self._history.append((n, payload))
                self._history_spans += n
            while self._history_spans > self._history_limit:
                self._history_spans -= self._history.popleft()[0]

    def _repeat(self, conn: psycopg.Connection) -> None:
        """Answer a standby's `sync`: the recent announcements again, repacked into full
        payloads (a batch of 20 spans was announced in a payload of its own)."""
        with self._history_lock:
            recent = " ".join(p for _, p in self._history).split(" ")
        try:
            self._notify(conn, [p for _, p in self._payloads(recent) if p])
        except psycopg.Error as exc:
            log.warning("%s: could not repeat announcements for a standby: %s",
                        self.database, exc)

    @staticmethod
    def _payloads(digests: list[str]) -> list[tuple[int, str]]:
        """Digests in as few NOTIFY payloads as fit the limit, with their counts."""
        per = PAYLOAD_LIMIT // 17
        return [(len(digests[i:i + per]), " ".join(digests[i:i + per]))
                for i in range(0, len(digests), per)]

    def _notify(self, conn: psycopg.Connection, payloads: list[str]) -> None:
        for payload in payloads:
            conn.execute("SELECT pg_notify(%s, %s)", (self.channel, payload))

    def close(self) -> None:
        conn, self.conn = self.conn, None
        self.held = False
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()
