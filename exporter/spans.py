"""The span sources of a database's poll: pgGit's spans and merges, as span metrics and OTLP.

`exporter.poller.DatabasePoller` is the one engine: each poll it discovers the tables once,
takes one snapshot, reads the metrics tables and then these sources, and writes one
checkpoint. This module is the part of that poll that knows spans: the exactly-once change
feed of `operation_traces` (`exporter.read.operation_traces`), merges past an id cursor
(`exporter.read.merge_traces`), span metrics (`exporter.map.operation_traces`) and, with an
endpoint, the hand-over to the OTLP sender and the span lease (`exporter.send`).

Span metrics (`pggit_span_duration_seconds`, `pggit_spans_running`) are kept whenever
`operation_traces` is readable; sending to an OTLP endpoint is the optional part (without an
endpoint there is no sender and no queue). One poll = `prepare` (a short read of the running
transactions' start times, before the poll's snapshot: `exporter.read.operation_traces.
read_bound`), `read` inside the poll's REPEATABLE READ READ ONLY transaction, and `finish`
after it. The checkpoint's `traces` section (`section`) holds the change-feed positions, the
spans seen RUNNING or timed out, the span-duration histograms and the keys of spans still in
the send queue.

What "sent" means: a span is *handed over* when its row version is consumed by a poll; the
checkpoint written after that poll still lists it as unsent until the OTLP endpoint accepted
it. A restart re-reads unsent spans by key and sends them again, so a crash between sending
and checkpointing resends, never loses, and the resend carries identical ids (they are a
function of the row). Histogram counts are part of the same checkpoint as the read position,
so they are exact across kill -9. A span that did not fit into the queue is dropped and
counted as `result="dropped"`; its duration is still counted in the histogram.

Flow control: while the endpoint accepts spans, a poll reads a batch when the sender has no
more than one waiting, and never more than the queue has room for (the table is the buffer,
nothing is dropped while catching up on a backlog). When the endpoint fails, polls continue
at full size, so metrics stay current, and overflow is dropped and counted.

Threads: the poll thread reads, decides and counts; spans are encoded by the sender thread
(`Group`), so that work overlaps the poll thread's waits for the database.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from functools import partial
from typing import Any

import psycopg
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from exporter import __version__
from exporter.aggregates import Aggregates
from exporter.config import TracesConfig
from exporter.discover import Found
from exporter.expose.families import Histogram, Part, Series
from exporter.failing import failing_as
from exporter.labels import LabelCap
from exporter.map import merge_traces, operation_traces
from exporter.map.operation_traces import HISTOGRAM, SpanStyle, to_span
from exporter.native import NativeSpec
from exporter.read.cursor import IdCursor
from exporter.read.merge_traces import MergeReader, MergeRow, changescan_handled
from exporter.read.operation_traces import (
    MODE_PRIVILEGED,
    MODE_SELECT_ONLY,
    PRIVILEGE_HINT,
    QUICK_WINDOW,
    Bound,
    ChangeScan,
    SpanReader,
    SpanRow,
    read_bound,
)
from exporter.read.snapshot import Snapshot
from exporter.send.envelope import Envelope
from exporter.send.handover import Handover, limit_for
from exporter.send.lease import SpanLease
from exporter.send.otlp import Group, Sender, SpanQueue, build_exporter

log = logging.getLogger(__name__)

ENDPOINT_ENV = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
STATE_VERSION = 2
"""The `traces` section's own version (it is also the whole file `<db>.traces.json` of
releases that kept spans apart). Version 2: merges read by id cursor; the span feed carries
start-time bounds; counts that must survive a crash (`counts`). Version 1 is migrated on
load (see `restore`)."""
SPANS = "operation_traces"
MERGES = "merge_traces"
"""Collector names, as `disabled_collectors` and `pggit_exporter_collector_enabled` use them."""
SPAN_COLUMNS = frozenset({
    "trace_id", "span_id", "parent_span_id", "operation_type", "span_name", "span_status",
    "start_time", "end_time", "duration_microseconds", "branch_id", "user_name", "session_id",
    "memory_peak_bytes", "cpu_microseconds", "error_message", "error_code", "error_details",
    "attributes"})
MERGE_COLUMNS = frozenset({
    "merge_metric_id", "source_branch_id", "target_branch_id", "merge_base_calculation_us",
    "conflict_detection_us", "conflict_count", "auto_resolution_us",
    "auto_resolution_success_count", "auto_resolution_failure_count", "total_merge_us",
    "merge_status", "user_name", "session_id", "started_at", "completed_at"})
PAGES = 4
"""Batches one healthy poll may read: enough to spread a poll's fixed costs, few enough to
keep its transaction short."""


def tracing_enabled(cfg: TracesConfig, env: Mapping[str, str]) -> bool:
    """On when an endpoint is set in the YAML or in the standard OTLP variables."""
    return bool(cfg.endpoint or any(env.get(v, "").strip() for v in ENDPOINT_ENV))


class SpanSource:
    """Per database: spans and merges as a source of the poll, and, with an endpoint, a sender.

    The poller calls, each poll: `prepare` before its snapshot, `read` inside its
    transaction, `finish` after it; `section` when it writes the checkpoint and `saved` once
    it is on disk.
    """

    def __init__(self, database: str, schema: str, tables: Callable[[str], str],
                 cfg: TracesConfig, self_metrics: Any, span_buckets: tuple[float, ...],
                 database_name_for_resource: str, *,
                 exporter: Any = None, send: bool = True, merges: bool = True,
                 full_pass_interval: float, gap_grace: float,
                 resource_attributes: Mapping[str, str] | None = None,
                 native: NativeSpec | None = None,
                 lease_session: Callable[[], psycopg.Connection] | None = None):
        self.database = database
        self.cfg = cfg
        self.schema = schema
        self.tables = tables
        self.self_metrics = self_metrics
        self.label_cap = LabelCap(0, 0)  # the poller's, once attached
        self.full_pass_interval = full_pass_interval
        self.native = native
        self.quick_window = QUICK_WINDOW
        self.gap_grace = gap_grace
        self.want_merges = merges and cfg.merges_as_traces
        self._span_buckets = tuple(span_buckets)
        self.spans = SpanReader(schema, tables)
        self.merges: MergeReader | None = None
        self.enabled: dict[str, bool] = {}
        self.mode: str | None = None
        self.recovery = False
        self.style = SpanStyle(
            resource=Resource.create({
                **(resource_attributes or {}),  # the database's static labels
                "service.name": cfg.service_name,
                "db.system": "postgresql",
                "db.namespace": database_name_for_resource,
                "pggit.database": database,
                "pggit.exporter.version": __version__,
            }),
            scope=InstrumentationScope("pggit-exporter", __version__),
            user_name=cfg.user_name, max_attribute_length=cfg.max_attribute_length,
            max_attributes=cfg.max_attributes)
        self.queue = SpanQueue(cfg.queue_size)
        self.sender: Sender | None = None
        # The span lease (see `exporter.send.lease`): only a sender needs it. While another
        # exporter holds it, spans this one would send wait as candidates, by key digest,
        # until the holder announces them sent or this exporter takes the lease over
        # (`self.handover`, checkpointed, restored by `restore`).
        self.lease: SpanLease | None = None
        self._unguarded_logged = False
        if send and lease_session is not None:
            self.lease = SpanLease(database, lease_session, schema, tables(SPANS),
                                   self._announced, history=cfg.queue_size)
        if send:
            self.sender = Sender(exporter if exporter is not None
                                 else build_exporter(
                                     cfg, envelope=Envelope(self.style.resource, self.style.scope)),
                                 self.queue, cfg.batch_size, self._exported, self._failed,
                                 self._given_up, cfg.retry_for, on_sent=self._sent,
                                 may_send=self._may_send)
        self.on_change: Callable[[], None] = lambda: None
        self._lock = threading.Lock()
        self._reader = ThreadPoolExecutor(1, thread_name_prefix=f"pggit-traces-read-{database}")
        self._polls = 0
        self._timed_out_at = 0
        self._dirty = True
        self._throttled = False
        self._more = False
        self._bound: Bound | None = None
        self._merges_on = False
        self._limit = 0
        self._healthy = True
        self._out: list[Group] = []
        self._step = {"consumed": 0, "handed": 0, "dropped": 0, "timed_out": 0}
        self.last_consumed = 0
        self._restored_shown: dict[str, int] = {}
        self.restore(None)  # the empty state; the poller's load() restores the saved one
        if self.sender is not None:
            for result in ("exported", "dropped", "timed_out"):
                self._counter(result)
        if self.lease is not None:
            self._counter("unguarded")
            self._lease_gauge(False)

    def attach(self, label_cap: LabelCap, on_change: Callable[[], None]) -> None:
        """Join a poller: span labels share its label cap; `on_change` tells the page."""
        self.label_cap = label_cap
        self.on_change = on_change

    # -- state --------------------------------------------------------------------------------

    def restore(self, data: dict[str, Any] | None) -> None:
        """Take over the checkpoint's `traces` section; version 1 is migrated (spans: read as
        is, their next pass is a full one; merges: an id cursor built on the first poll)."""
        data = data or {}
        version = data.get("version", STATE_VERSION) if data else STATE_VERSION
        if version not in (1, STATE_VERSION):
            raise ValueError(f"unknown traces state version {version}")
        self.span_scan = ChangeScan.from_json(data.get("spans"))
        self.merge_cursor: IdCursor | None = IdCursor()
        self.merge_migration: dict[str, Any] | None = None
        if version == 1:
            if data.get("merges"):
                self.merge_cursor = None
                self.merge_migration = data["merges"]
            log.info("trace state migrated from version 1", extra={"database": self.database})
        elif data.get("merges") is not None:
            self.merge_cursor = IdCursor.from_json(data["merges"])
        self.running: dict[str, list[Any]] = dict(data.get("running", {}))
        self.timed_out: dict[str, list[Any]] = dict(data.get("timed_out", {}))
        self.unsent: list[str] = list(data.get("unsent", []))
        self.handover = Handover.from_json(data.get("handover"),
                                           limit_for(self.cfg.queue_size))
        self.late_ends = int(data.get("late_ends", 0))
        self.counts: dict[str, int] = {k: int(v) for k, v in data.get("counts", {}).items()}
        bounds = {HISTOGRAM: tuple(self._buckets())}
        agg = data.get("aggregates")
        self.agg = (Aggregates.from_json(agg, bounds, self.native) if agg
                    else Aggregates(bounds, self.native))
        for (name, pos), values in self.agg.label_values().items():
            if name == HISTOGRAM and pos in (0, 1):
                self.label_cap.admit(operation_traces.HISTOGRAM_LABELS[pos], values)
        self._published = self._pending_parts = self._parts()
        if self.sender is not None:
            # The checkpointed counts, shown once (the counters themselves start at 0).
            for result in ("dropped", "unguarded") if self.lease else ("dropped",):
                restored = self.counts.get(result, 0)
                self._counter(result).inc(restored - self._restored_shown.get(result, 0))
                self._restored_shown[result] = restored

    def _buckets(self) -> tuple[float, ...]:
        return self._span_buckets

    @property
    def changed(self) -> bool:
        """Whether the state moved since the last `section`: a checkpoint is due."""
        return self._dirty

    def section(self) -> dict[str, Any]:
        """The checkpoint's `traces` section, and the span metrics it holds, which `saved`
        publishes once the checkpoint is on disk: a scrape never shows a count a crash could
        take back."""
        with self._lock:
            data = {
                "version": STATE_VERSION,
                "spans": self.span_scan.to_json(),
                "merges": (self.merge_cursor.to_json() if self.merge_cursor is not None
                           else None),
                "running": self.running,
                "timed_out": self.timed_out,
                # `unsent` holds keys only between a start or takeover and their re-read.
                "unsent": self.unsent + self.queue.keys(),
                "handover": self.handover.to_json(),
                "late_ends": self.late_ends,
                "counts": dict(self.counts),
                "aggregates": self.agg.to_json(),
            }
            if self.merge_migration is not None:
                data["version"] = 1
                data["merges"] = self.merge_migration
            self._pending_parts = self._parts()
            self._dirty = False
        return data

    def saved(self) -> None:
        """The last `section` is on disk: its span metrics may be shown."""
        self._published = self._pending_parts

    def _parts(self) -> list[Part]:
        """The span metrics of the current state (call with the lock held, or before start).

        Spans sent as timed out are not running any more as far as the gauge is concerned:
        they were reported, and counting them would keep a stuck span in the gauge forever.
        """
        snapshot = self.agg.copy()
        running = operation_traces.running((e[1] for e in self.running.values()),
                                           self.label_cap)
        prefix = (self.database,)
        return [Histogram(HISTOGRAM, snapshot.histograms[HISTOGRAM], snapshot.bounds[HISTOGRAM],
                          prefix, snapshot.exemplars.get(HISTOGRAM, {}),
                          snapshot.native.get(HISTOGRAM, {})),
                Series(operation_traces.RUNNING, running, prefix)]

    # -- metrics ------------------------------------------------------------------------------

    def _counter(self, result: str) -> Any:
        return self.self_metrics["pggit_exporter_spans_total"].labels(
            database=self.database, result=result)

    def _dropped(self, n: int) -> None:
        """Dropped spans are counted in the checkpoint too, so the count survives a crash."""
        self.counts["dropped"] = self.counts.get("dropped", 0) + n
        self._counter("dropped").inc(n)

    def _depth(self) -> None:
        if self.sender is not None:
            self.self_metrics["pggit_exporter_span_queue_depth"].labels(
                database=self.database).set(self.queue.depth)

    def _exported(self, n: int) -> None:
        self._dirty = True
        self._counter("exported").inc(n)
        self._depth()
        self.on_change()

    def _given_up(self, n: int) -> None:
        self._dirty = True
        with self._lock:
            self._dropped(n)
        self._depth()

    # -- span lease ---------------------------------------------------------------------------

    def _may_send(self) -> bool:
        return self.lease is None or self.lease.held

    def _sent(self, groups: list[Group]) -> None:
        if self.lease is not None:
            self.lease.announce(g.key for g in groups)

    def _lease_gauge(self, held: bool) -> None:
        """Shown at once: the poll that follows a takeover may take a while (resends)."""
        self.self_metrics["pggit_exporter_span_lease_held"].labels(
            database=self.database).set(1 if held else 0)
        self.on_change()

    def _keep(self, groups: list[Group]) -> None:
        """A standby's spans to send, kept until the holder announces them (see
        `exporter.send.handover`). Spans cut by its bound are counted where announcements
        work; on a hot standby nothing is announced and candidates rotate by design."""
        cut = self.handover.keep(groups)
        if cut and self.lease is not None and self.lease.announcing:
            with self._lock:
                self.counts["unguarded"] = self.counts.get("unguarded", 0) + cut
            self._counter("unguarded").inc(cut)
            if not self._unguarded_logged:
                self._unguarded_logged = True
                log.warning("span lease standby: more than half a queue of spans not yet "
                            "announced by the holder; the oldest are counted as unguarded and "
                            "would be lost if the holder died before sending them",
                            extra={"database": self.database, "spans": cut})

    def _announced(self, digests: list[str]) -> None:
        self.handover.heard(digests)

    def _lease_step(self) -> None:
        """Once a poll, before reading: keep, take or lose the lease."""
        assert self.lease is not None
        was = self.lease.held
        held = self.lease.refresh()
        if held and not was:
            taken = self.handover.take()
            groups = [g for g in taken if isinstance(g, Group)]
            # Candidates restored from the checkpoint: re-read by key in this poll, like
            # `unsent` (same ids).
            self.unsent = [k for k in taken if isinstance(k, str)] + self.unsent
            dropped = sum(0 if self.queue.offer(g) else g.size for g in groups)
            if dropped:
                with self._lock:
                    self._dropped(dropped)
            if self.lease.announcing:
                log.info("span lease acquired: this exporter sends the spans", extra={
                    "database": self.database, "handed_over": len(taken) - dropped})
            else:
                log.warning("span lease acquired without hand-over (no announcements on "
                            "this server): every span held is sent, so up to half a queue "
                            "of them, and what the last holder had read ahead, may repeat",
                            extra={"database": self.database,
                                   "handed_over": len(taken) - dropped})
            self._lease_gauge(True)
            self._depth()
        elif was and not held:
            self._keep(self.queue.take_back())
            log.warning("span lease lost: spans wait until this exporter holds it again",
                        extra={"database": self.database})
            self._lease_gauge(False)
            self._depth()

    def _failed(self, message: str) -> None:
        log.warning("%s: %s", self.database, message)
        self.self_metrics["pggit_exporter_errors_total"].labels(
            database=self.database, stage="send", reason="other").inc()
        self.on_change()

    def _invalid(self, table: str, key: Any, bad: str) -> None:
        """One odd row: counted by reason, one log line naming table, key and column."""
        column, reason = bad.split(":", 1)
        self.self_metrics["pggit_exporter_invalid_rows_total"].labels(
            database=self.database, table=table, reason=reason).inc()
        log.warning("invalid row skipped", extra={
            "database": self.database, "table": table, "key": str(key), "column": column,
            "reason": reason})

    def _set_mode(self, privileged: bool) -> None:
        mode = MODE_PRIVILEGED if privileged else MODE_SELECT_ONLY
        if mode == self.mode:
            return
        self.mode = mode
        gauge = self.self_metrics["pggit_exporter_read_mode"]
        for m in (MODE_PRIVILEGED, MODE_SELECT_ONLY):
            gauge.labels(self.database, "operation_traces", m).set(1 if m == mode else 0)
        if privileged:
            log.info("spans read through a start_time window bounded by pg_stat_activity",
                     extra={"database": self.database, "mode": mode})
        elif self.recovery:
            log.warning(
                "a hot standby does not see the primary's transactions: spans are read "
                "exactly by a full table scan at most every %.0fs, recent spans in between",
                self.full_pass_interval, extra={"database": self.database, "mode": mode})
        else:
            log.warning(
                "this role cannot see other sessions' transactions: spans are read exactly "
                "by a full table scan at most every %.0fs, recent spans in between; %s makes "
                "each poll cost only the changes", self.full_pass_interval, PRIVILEGE_HINT,
                extra={"database": self.database, "mode": mode})

    def mode_text(self) -> str:
        """For the landing page: the method in use and what would make it cheaper."""
        if self.mode is None:
            return "not read yet"
        if self.mode == MODE_PRIVILEGED:
            return f"{self.mode} (cost follows the changes)"
        if self.recovery:
            return (f"{self.mode} (a full scan at most every {self.full_pass_interval:.0f}s: "
                    "a hot standby does not see the primary's transactions)")
        return (f"{self.mode} (a full scan at most every {self.full_pass_interval:.0f}s; "
                f"{PRIVILEGE_HINT} makes polls cheaper)")

    def collect(self) -> list[Part]:
        """Span metrics as last checkpointed: never waits for a poll, never ahead of the disk."""
        return self._published

    # -- polling ------------------------------------------------------------------------------

    def configure(self, found: Found, disabled: set[str]) -> dict[str, str | None]:
        """After the poller's discovery: which of the two sources this database has, and why
        not (None: on). The merge reader is set up here, as it depends on the tables."""
        why: dict[str, str | None] = {
            SPANS: "disabled in the configuration" if SPANS in disabled
            else found.missing("operation_traces", SPAN_COLUMNS)}
        if not self.want_merges or MERGES in disabled:
            why[MERGES] = "disabled in the configuration"
        else:
            why[MERGES] = found.missing("merge_performance_metrics", MERGE_COLUMNS)
        self.enabled = {c: w is None for c, w in why.items()}
        names = found.missing("branches", frozenset({"branch_id", "branch_name"})) is None
        if self.enabled[MERGES]:
            self.merges = MergeReader(self.schema, self.tables, names)
            self.self_metrics["pggit_exporter_read_mode"].labels(
                self.database, "merge_performance_metrics", "id_cursor").set(1)
        else:
            self.merges = None
        return why

    def _handle(self, row: SpanRow, out: list[Group]) -> None:
        if self.span_scan.seen(row.span_id, row.xid):
            return
        if row.bad is not None:
            self.running.pop(row.span_id, None)
            self.timed_out.pop(row.span_id, None)
            self._invalid("operation_traces", row.span_id, row.bad)
            return
        if not row.ended:
            if row.span_id not in self.timed_out:
                self.running[row.span_id] = [row.start_us, row.operation_type]
            return
        self.running.pop(row.span_id, None)
        if self.timed_out.pop(row.span_id, None) is not None:
            self.late_ends += 1
            log.info("%s: span %s ended after it was sent as timed out; not sent again",
                     self.database, row.span_id)
            operation_traces.observe(self.agg, row, self.label_cap)
            return
        operation_traces.observe(self.agg, row, self.label_cap)
        if self.sender is not None:
            out.append(Group("s:" + row.span_id, encode=partial(to_span, row, self.style)))

    def _probe(self, conn: psycopg.Connection, xmax: int, keys: list[str],
               out: list[Group]) -> dict[str, SpanRow]:
        """Look up spans by key and handle those that ended (or turned invalid) since."""
        found = {r.span_id: r for r in self.spans.by_ids(conn, keys, xmax)}
        for row in found.values():
            if row.ended or row.bad is not None:
                self._handle(row, out)
            elif row.span_id in self.running:
                self.running[row.span_id] = [row.start_us, row.operation_type]
        return found

    def _updates(self, conn: psycopg.Connection, xmax: int, out: list[Group]) -> None:
        """Spans seen RUNNING, probed by key for their end: that is how ends of spans older
        than the start-time window are found. Timed-out spans are probed too, for a late end
        or their deletion by retention."""
        scan = self.span_scan
        if scan.in_pass and scan.backlog:
            return  # the backlog pass itself reads every row; a probe could hand one twice
        keys = list(self.running)
        for i in range(0, len(keys), self.cfg.batch_size):
            chunk = keys[i:i + self.cfg.batch_size]
            found = self._probe(conn, xmax, chunk, out)
            for key in chunk:
                if key not in found:
                    self.running.pop(key, None)
        if self.timed_out:
            # A rotating slice of at most a batch per poll: spans that stay stuck forever
            # (their caller crashed) must not make every poll cost more.
            keys = sorted(self.timed_out)
            start = self._timed_out_at % len(keys)
            chunk = (keys[start:] + keys[:start])[:self.cfg.batch_size]
            self._timed_out_at = start + len(chunk)
            found = self._probe(conn, xmax, chunk, out)
            for key in chunk:
                if key not in found:
                    self.timed_out.pop(key, None)

    def _timeouts(self, conn: psycopg.Connection, xmax: int, now_us: int,
                  out: list[Group]) -> int:
        limit_us = now_us - int(self.cfg.running_timeout * 1e6)
        due = [k for k, v in self.running.items() if v[0] < limit_us][: self.cfg.batch_size]
        if not due:
            return 0
        found = {r.span_id: r for r in self.spans.by_ids(conn, due, xmax)}
        n = 0
        for span_id in due:
            row = found.get(span_id)
            if row is None:
                self.running.pop(span_id, None)
            elif not row.ended and row.bad is None:
                entry = self.running.pop(span_id)
                self.timed_out[span_id] = entry
                if self.sender is not None:
                    out.append(Group("t:" + span_id,
                                     encode=partial(to_span, row, self.style, now_us)))
                n += 1
        return n

    def _resend(self, conn: psycopg.Connection, xmax: int, now_us: int,
                out: list[Group]) -> None:
        """Spans the last run had not confirmed sent: re-read by key, same ids. The keys
        stay in `unsent` (and so in the next checkpoint) until the reads succeeded."""
        keys = self.unsent
        span_keys = [k[2:] for k in keys if k[:2] in ("s:", "t:")]
        rows = {r.span_id: r for r in self.spans.by_ids(conn, span_keys, xmax)}
        merge_ids = [int(k[2:]) for k in keys if k.startswith("m:")]
        merges = ({r.merge_metric_id: r for r in self.merges.by_ids(conn, merge_ids)}
                  if self.merges is not None else {})
        self.unsent = []
        for key in keys:
            kind, ident = key[:2], key[2:]
            if kind == "m:":
                m = merges.get(int(ident))
                if m is not None and m.bad is None and m.started_us is not None:
                    out.append(Group(key, merge_traces.to_spans(m, self.database, self.style)))
                continue
            row = rows.get(ident)
            if row is None or row.bad is not None:
                self._dropped(1)
            elif kind == "t:":
                out.append(Group(key, encode=partial(to_span, row, self.style, now_us)))
            elif row.ended:
                out.append(Group(key, encode=partial(to_span, row, self.style)))

    def _merge_rows(self, rows: list[MergeRow], out: list[Group]) -> None:
        for m in rows:
            if m.bad is not None or m.started_us is None:
                self._invalid("merge_performance_metrics", m.merge_metric_id,
                              m.bad or "started_at:out_of_range")
            elif self.sender is not None:
                out.append(Group(f"m:{m.merge_metric_id}",
                                 merge_traces.to_spans(m, self.database, self.style)))

    def _merges(self, conn: psycopg.Connection, snap: Snapshot, limit: int,
                out: list[Group]) -> int:
        """Completed merges past the id cursor (merges only become spans: no sender, no
        reading)."""
        if self.merges is None or self.sender is None or limit <= 0:
            return 0
        got: list[MergeRow] = []
        if self.merge_cursor is None:
            assert self.merge_migration is not None
            self.merge_cursor = self.merges.migrate(
                conn, changescan_handled(self.merge_migration), snap, got.extend)
            self.merge_migration = None
        else:
            result = self.merges.read(conn, self.merge_cursor, snap, self.cfg.batch_size,
                                      limit, self.gap_grace, got.extend)
            self._more = self._more or result.backlog
        self._merge_rows(got, out)
        return len(got)

    def _offer(self, groups: list[Group], healthy: bool) -> int:
        """Queue groups; returns the spans that did not fit (dropped, counted by the caller)."""
        if self.sender is None:
            return 0
        if self.lease is not None:
            if not self.lease.held:
                self._keep(groups)
                return 0
            groups = self.handover.unannounced(groups)
        if not healthy:
            # The queue fills while the endpoint is down: hold spans encoded (smaller than
            # rows), and encode here, before the sender can see the group.
            for group in groups:
                group.spans()
        return sum(0 if self.queue.offer(g) else g.size for g in groups)

    def _pages(self, conn: psycopg.Connection, current: Snapshot, limit: int,
               healthy: bool) -> tuple[int, int]:
        """Read up to `limit` changed spans, a batch a page; returns (rows, spans dropped).

        While one page is handled and queued, the next is already being read (by `_reader`,
        on the same connection and snapshot, so it is the same as one big page). The sender
        starts on the first page while the others are read.
        """
        scan = self.span_scan
        page = self.cfg.batch_size
        asked = min(page, limit)
        rows = self.spans.changed(conn, scan, current.xmax, asked)
        consumed = dropped = 0
        while True:
            consumed += len(rows)
            ahead = None
            if len(rows) == asked and consumed < limit:
                scan.advance(rows[-1].span_id, asked, asked)  # the cursor only: a full page
                next_asked = min(page, limit - consumed)
                ahead = self._reader.submit(self.spans.changed, conn, scan, current.xmax,
                                            next_asked)
            out: list[Group] = []
            try:
                with self._lock:
                    for row in rows:
                        self._handle(row, out)
                    if ahead is None:
                        scan.advance(rows[-1].span_id if rows else None, len(rows), asked)
                dropped += self._offer(out, healthy)
            except BaseException:
                if ahead is not None:
                    wait([ahead])  # the connection is busy until the read ahead is done
                raise
            if ahead is None:
                return consumed, dropped
            rows, asked = ahead.result(), next_asked

    def _plan(self) -> int:
        """How many changed spans this poll may read.

        Healthy: read when no more than a batch waits, up to PAGES batches, and leave the rest
        in the table; the queue's capacity is for outages. A poll costs a snapshot, a few
        round trips and a checkpoint, so it reads batches, not the odd few spans.
        """
        self._healthy = self.sender.stats.healthy if self.sender is not None else True
        batch = self.cfg.batch_size
        if self.sender is None:
            return batch * PAGES
        if self._healthy:
            return (min(batch * PAGES, self.queue.room()) if self.queue.depth <= batch
                    else 0)
        return batch

    def prepare(self, conn: psycopg.Connection, spans_on: bool, merges_on: bool) -> None:
        """Before the poll's snapshot: the lease, and the running transactions' start bound
        (read in its own short transaction, which must end before the snapshot is taken).
        `spans_on`, `merges_on`: which of the two this poll reads (a failing one waits)."""
        self._limit = self._plan()
        self._throttled = self._limit == 0
        self._more = False
        self._out = []
        self._step = {"consumed": 0, "handed": 0, "dropped": 0, "timed_out": 0}
        if self.lease is not None:
            self._lease_step()
        self._merges_on = merges_on
        self._bound = read_bound(conn) if spans_on else None
        if self._bound is not None:
            self.recovery = self._bound.recovery
            self._set_mode(self._bound.privileged)

    def read(self, conn: psycopg.Connection, snap: Snapshot) -> bool:
        """Inside the poll's transaction: unsent spans again, changed spans, ends, merges and
        timeouts. Returns whether to poll again at once: only while a pass or a merge backlog
        continues, never for a poll that only re-read rows it had handled already."""
        step, out, healthy, limit = self._step, self._out, self._healthy, self._limit
        spans_on = self._bound is not None
        if self.unsent and spans_on:
            # Queued first, before newer spans, as they were read first.
            resent: list[Group] = []
            with self._lock:
                self._resend(conn, snap.xmax, snap.statement_us, resent)
            step["dropped"] += self._offer(resent, healthy)
            step["handed"] += len(resent)
        if spans_on and limit > 0:
            assert self._bound is not None
            with self._lock:
                self.span_scan.begin(snap, self._bound, snap.statement_us / 1e6,
                                     self.full_pass_interval, self.quick_window)
            consumed, lost = self._pages(conn, snap, limit, healthy)
            step["consumed"] += consumed
            step["dropped"] += lost
            self._more = self.span_scan.in_pass
        with self._lock:
            if spans_on:
                self._updates(conn, snap.xmax, out)
            if self._merges_on:
                with failing_as(MERGES):
                    step["consumed"] += self._merges(conn, snap, limit - step["consumed"],
                                                     out)
            if spans_on:
                step["timed_out"] += self._timeouts(conn, snap.xmax, snap.statement_us, out)
            self._polls += 1
        return self._more

    def finish(self) -> int:
        """After the poll's transaction: queue what it found, count what did not fit.
        Returns the rows read."""
        step = self._step
        step["dropped"] += self._offer(self._out, self._healthy)
        step["handed"] += len(self._out)
        self._out = []
        if step["dropped"]:
            with self._lock:
                self._dropped(step["dropped"])
            log.warning("%s: span queue full, %d spans dropped", self.database, step["dropped"])
        if step["timed_out"]:
            self._counter("timed_out").inc(step["timed_out"])
        self._depth()
        if step["consumed"] or step["handed"] or self.span_scan.in_pass:
            self._dirty = True
        self.last_consumed = step["consumed"]
        return step["consumed"]

    @property
    def throttled(self) -> bool:
        """The last poll read no spans because the sender is busy."""
        return self._throttled

    @property
    def catching_up(self) -> bool:
        """This poll read spans and a pass over them is under way (a first start's backlog,
        a full pass spread over polls): the span metrics do not cover the table yet, also
        while a busy sender holds the reading back and a poll returns without asking to poll
        again. A poll that left spans out (failing, waiting for their retry) says nothing of
        them: their failure is reported on its own, and the other tables are caught up."""
        return self._bound is not None and self.span_scan.in_pass

    def wait_for_room(self, timeout: float) -> None:
        """Held back by a busy sender: return as soon as it has sent a batch."""
        self.queue.wait_depth(self.cfg.batch_size, timeout)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        if self.sender is not None:
            self.sender.start()

    def wake(self) -> None:
        """Let a poll thread waiting in `wait_for_room` go (on stop)."""
        self.queue.wake()

    def stop(self, deadline: float) -> None:
        """Send what can be sent before `deadline`; the poller then checkpoints the rest."""
        self._reader.shutdown(wait=False)
        if self.sender is not None:
            self.sender.drain(deadline)
        self._dirty = True

    def close(self) -> None:
        if self.lease is not None:
            self.lease.close()

    def send_pending(self) -> bool | None:
        """Send one batch now (tests drive the sender without its thread)."""
        return self.sender.send_once() if self.sender is not None else None
