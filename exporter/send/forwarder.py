"""Span sources: poll pgGit's spans and merges, map them to span metrics, optionally send OTLP.

Span metrics (`pggit_span_duration_seconds`, `pggit_spans_running`) are kept whenever
`operation_traces` is readable; sending to an OTLP endpoint is the optional part (without an
endpoint there is no sender and no queue). One poll = a short read of the running
transactions' start times (`exporter.read.operation_traces.read_bound`), then one REPEATABLE
READ READ ONLY transaction (see `exporter.read.operation_traces` for the exactly-once change
feed of spans, `exporter.read.merge_traces` for merges). After each poll (at most once a
second while a backlog is read page after page, see `SAVE_INTERVAL`) the state file
`<state_dir>/<database>.traces.json` is written atomically with: the change-feed positions,
the spans seen RUNNING or timed out, the span-duration histograms, the keys of spans still
in the send queue, and a lease standby's hand-over state (`exporter.send.handover`).

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
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import AbstractContextManager
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from psycopg_pool import PoolTimeout

from exporter import __version__, connect_errors
from exporter.aggregates import Aggregates
from exporter.checkpoint import read as read_state
from exporter.checkpoint import write_atomic
from exporter.config import DatabaseConfig, TracesConfig
from exporter.discover import discover
from exporter.expose.families import Histogram, Part, Series
from exporter.labels import LabelCap
from exporter.map import merge_traces, operation_traces
from exporter.map.operation_traces import HISTOGRAM, SpanStyle, to_span
from exporter.native import NativeSpec
from exporter.read.cursor import IdCursor
from exporter.read.incremental import take_snapshot
from exporter.read.merge_traces import MergeReader, MergeRow, changescan_handled
from exporter.read.operation_traces import (
    MODE_PRIVILEGED,
    MODE_SELECT_ONLY,
    PRIVILEGE_HINT,
    QUICK_WINDOW,
    ChangeScan,
    Snapshot,
    SpanReader,
    SpanRow,
    read_bound,
)
from exporter.send.envelope import Envelope
from exporter.send.handover import Handover, limit_for
from exporter.send.lease import SpanLease
from exporter.send.otlp import Group, Sender, SpanQueue, build_exporter

log = logging.getLogger(__name__)

ENDPOINT_ENV = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
STATE_VERSION = 2
"""Version 2: merges read by id cursor; the span feed carries start-time bounds; counts
that must survive a crash (`counts`). Version 1 files are migrated on load (see `_load`)."""
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
FULL_PASS_INTERVAL = 60.0
GAP_GRACE = 2.0
PAGES = 4
"""Batches one healthy poll may read: enough to spread a poll's fixed costs, few enough to
keep its transaction short."""
SAVE_INTERVAL = 1.0
"""Seconds between checkpoints while a backlog is read page after page.

Two fsyncs per page would cost more than reading the page. Skipping a checkpoint is safe: the
state on disk stays a consistent earlier one, so a crash re-reads (and resends, with the same
ids) what was read since, and counts it once.
"""


def tracing_enabled(cfg: TracesConfig, env: Mapping[str, str]) -> bool:
    """On when an endpoint is set in the YAML or in the standard OTLP variables."""
    return bool(cfg.endpoint or any(env.get(v, "").strip() for v in ENDPOINT_ENV))


class TraceForwarder:
    """Per database: a poll thread (reading, span metrics) and, with an endpoint, a sender."""

    def __init__(self, database: str,
                 connect: Callable[[], AbstractContextManager[psycopg.Connection]],
                 schema: str, tables: Callable[[str], str], cfg: TracesConfig,
                 state_dir: Path, self_metrics: Any, on_change: Callable[[], None],
                 span_buckets: tuple[float, ...], label_cap: LabelCap,
                 database_name_for_resource: str, *, poll_interval: float = 1.0,
                 exporter: Any = None, send: bool = True, merges: bool = True,
                 db_cfg: DatabaseConfig | None = None,
                 full_pass_interval: float = FULL_PASS_INTERVAL,
                 gap_grace: float = GAP_GRACE,
                 resource_attributes: Mapping[str, str] | None = None,
                 native: NativeSpec | None = None,
                 lease_session: Callable[[], psycopg.Connection] | None = None):
        self.database = database
        self.connect = connect
        self.cfg = cfg
        self.schema = schema
        self.tables = tables
        # Tests build a forwarder without a database entry: one unvalidated stand-in.
        self.db_cfg = db_cfg or DatabaseConfig.model_construct(
            name=database, dsn="", schema_=schema,
            tables={n: tables(n) for n in ("operation_traces", "merge_performance_metrics",
                                           "branches") if tables(n) != n})
        self.state_path = Path(state_dir) / f"{database}.traces.json"
        self.self_metrics = self_metrics
        self.on_change = on_change
        self.label_cap = label_cap
        self.poll_interval = poll_interval
        self.full_pass_interval = full_pass_interval
        self.native = native
        self.quick_window = QUICK_WINDOW
        self.gap_grace = gap_grace
        self.want_merges = merges and cfg.merges_as_traces
        self._span_buckets = tuple(span_buckets)
        self.spans = SpanReader(schema, tables)
        self.merges: MergeReader | None = None
        self.enabled: dict[str, bool] | None = None
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
        # (`self.handover`, checkpointed, restored by `_load`).
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
        self._lock = threading.Lock()
        self._reader = ThreadPoolExecutor(1, thread_name_prefix=f"pggit-traces-read-{database}")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._polls = 0
        self._timed_out_at = 0
        self._dirty = True
        self._throttled = False
        self._more = False
        self._saved_at = float("-inf")
        self.save_interval = SAVE_INTERVAL
        self.late_ends = 0
        self._load()
        self._published = self._parts()
        if self.sender is not None:
            for result in ("exported", "dropped", "timed_out"):
                self._counter(result)
            self._counter("dropped").inc(self.counts.get("dropped", 0))
        if self.lease is not None:
            self._counter("unguarded").inc(self.counts.get("unguarded", 0))
            self._lease_gauge(False)

    # -- state --------------------------------------------------------------------------------

    def _load(self) -> None:
        """Restore the checkpoint; a version-1 file is migrated (spans: read as is, their
        next pass is a full one; merges: an id cursor built on the first poll)."""
        data = read_state(self.state_path) or {}
        version = data.get("version", STATE_VERSION) if data else STATE_VERSION
        if version not in (1, STATE_VERSION):
            raise ValueError(f"{self.state_path}: unknown state version {version}")
        self.span_scan = ChangeScan.from_json(data.get("spans"))
        self.merge_cursor: IdCursor | None = IdCursor()
        self.merge_migration: dict[str, Any] | None = None
        if version == 1:
            if data.get("merges"):
                self.merge_cursor = None
                self.merge_migration = data["merges"]
            log.info("trace state migrated from version 1",
                     extra={"database": self.database, "path": str(self.state_path)})
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

    def _buckets(self) -> tuple[float, ...]:
        return self._span_buckets

    def _save(self) -> None:
        """Checkpoint, then publish what was checkpointed to /metrics.

        Publishing only saved state keeps the exporter's promise that a scrape never shows a
        count a crash could take back: while a backlog is read, checkpoints (and so the span
        metrics) move at most once per SAVE_INTERVAL.
        """
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
            parts = self._parts()
        write_atomic(self.state_path, data)
        self._saved_at = time.monotonic()
        self._published = parts

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

    def _discover(self, conn: psycopg.Connection) -> None:
        """Which of the two sources this database has, through the same discovery as the
        metrics collectors; a missing table or column turns its source off with one line."""
        found = discover(conn, self.db_cfg)
        conn.rollback()
        disabled = set(self.db_cfg.disabled_collectors)
        why = {SPANS: "disabled in the configuration" if SPANS in disabled
               else found.missing("operation_traces", SPAN_COLUMNS)}
        if not self.want_merges or MERGES in disabled:
            why[MERGES] = "disabled in the configuration"
        else:
            why[MERGES] = found.missing("merge_performance_metrics", MERGE_COLUMNS)
        enabled = {c: w is None for c, w in why.items()}
        for collector, ok in enabled.items():
            if self.enabled is None or self.enabled.get(collector) != ok:
                if ok:
                    log.info("collector enabled",
                             extra={"database": self.database, "collector": collector})
                else:
                    log.warning("collector disabled", extra={
                        "database": self.database, "collector": collector,
                        "reason": why[collector]})
        self.self_metrics.database(self.database).collectors(enabled, source="traces")
        names = found.missing("branches", frozenset({"branch_id", "branch_name"})) is None
        if enabled[MERGES]:
            self.merges = MergeReader(self.schema, self.tables, names)
            self.self_metrics["pggit_exporter_read_mode"].labels(
                self.database, "merge_performance_metrics", "id_cursor").set(1)
        self.enabled = enabled

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
        """Spans the last run had not confirmed sent: re-read by key, same ids."""
        keys, self.unsent = self.unsent, []
        span_keys = [k[2:] for k in keys if k[:2] in ("s:", "t:")]
        rows = {r.span_id: r for r in self.spans.by_ids(conn, span_keys, xmax)}
        merge_ids = [int(k[2:]) for k in keys if k.startswith("m:")]
        merges = ({r.merge_metric_id: r for r in self.merges.by_ids(conn, merge_ids)}
                  if self.merges is not None else {})
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

    def _merges(self, conn: psycopg.Connection, limit: int, out: list[Group]) -> int:
        """Completed merges past the id cursor (merges only become spans: no sender, no
        reading)."""
        if self.merges is None or self.sender is None or limit <= 0:
            return 0
        snap = take_snapshot(conn, time.time())
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

    def poll_once(self) -> int:
        """One poll; returns the rows read. `_more` says whether to poll again at once: only
        while a pass or a merge backlog continues, never for a poll that only re-read rows
        it had handled already."""
        healthy = self.sender.stats.healthy if self.sender is not None else True
        batch = self.cfg.batch_size
        # Healthy: read when no more than a batch waits, up to PAGES batches, and leave the
        # rest in the table; the queue's capacity is for outages. A poll costs a snapshot,
        # a few round trips and a checkpoint, so it reads batches, not the odd few spans.
        if self.sender is None:
            limit = batch * PAGES
        elif healthy:
            limit = (min(batch * PAGES, self.queue.room()) if self.queue.depth <= batch
                     else 0)
        else:
            limit = batch
        self._throttled = limit == 0
        self._more = False
        out: list[Group] = []
        consumed = dropped = timed_out = handed = 0
        if self.lease is not None:
            self._lease_step()
        with self.connect() as conn:
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.rollback()
            if self.enabled is None:
                self._discover(conn)
            assert self.enabled is not None
            spans_on = self.enabled[SPANS]
            bound = read_bound(conn) if spans_on else None
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                snap_text, now_us, self.recovery = conn.execute(
                    "SELECT pg_current_snapshot()::text, "
                    "(extract(epoch FROM statement_timestamp()) * 1000000)::bigint, "
                    "pg_is_in_recovery()").fetchone()  # type: ignore[misc]
                if bound is not None:
                    # On a hot standby pg_stat_activity lists the standby's sessions, not the
                    # primary's transactions whose rows are still to come: a start-time
                    # window bounded by it would miss their spans. Full scans are exact.
                    if self.recovery and bound.privileged:
                        bound = replace(bound, privileged=False, oldest=None)
                    self._set_mode(bound.privileged)
                current = Snapshot.parse(snap_text)
                if self.unsent:
                    # Queued first, before newer spans, as they were read first.
                    resent: list[Group] = []
                    with self._lock:
                        self._resend(conn, current.xmax, now_us, resent)
                    dropped += self._offer(resent, healthy)
                    handed = len(resent)
                if spans_on and limit > 0:
                    assert bound is not None
                    with self._lock:
                        self.span_scan.begin(current, bound, now_us / 1e6,
                                             self.full_pass_interval, self.quick_window)
                    consumed, lost = self._pages(conn, current, limit, healthy)
                    dropped += lost
                    self._more = self.span_scan.in_pass
                with self._lock:
                    if spans_on:
                        self._updates(conn, current.xmax, out)
                    consumed += self._merges(conn, limit - consumed, out)
                    if spans_on:
                        timed_out = self._timeouts(conn, current.xmax, now_us, out)
                    self._polls += 1
        dropped += self._offer(out, healthy)
        handed += len(out)
        if dropped:
            with self._lock:
                self._dropped(dropped)
            log.warning("%s: span queue full, %d spans dropped", self.database, dropped)
        if timed_out:
            self._counter("timed_out").inc(timed_out)
        self._depth()
        backlog = self._more
        if (consumed or handed or self._dirty or self.span_scan.in_pass) and not (
                backlog and time.monotonic() - self._saved_at < self.save_interval):
            self._dirty = False
            self._save()
        self.on_change()
        return consumed

    # -- lifecycle ----------------------------------------------------------------------------

    def _run(self) -> None:
        delay = 0.0
        while not self._stop.wait(delay):
            try:
                self.poll_once()
                delay = 0.0 if self._more else self.poll_interval
                if self._throttled:
                    # Held back by a busy sender: read again as soon as it has sent a batch.
                    self.queue.wait_depth(self.cfg.batch_size, self.poll_interval)
                    delay = 0.0
            except (PoolTimeout, psycopg.OperationalError) as exc:
                # The database's poller reports the outage (pggit_up 0, stage="connect");
                # counting it here too would count one outage twice.
                log.info("%s: trace poll could not connect: %s", self.database, exc)
                self.enabled = None
                delay = self.poll_interval
            except Exception as exc:
                log.warning("%s: trace poll failed: %s", self.database, exc)
                self.self_metrics["pggit_exporter_errors_total"].labels(
                    database=self.database, stage="read", reason=connect_errors.reason(exc)).inc()
                self.enabled = None
                self.on_change()
                delay = self.poll_interval

    def start(self) -> None:
        if self.sender is not None:
            self.sender.start()
        self._thread = threading.Thread(target=self._run, name=f"pggit-traces-{self.database}",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 3.0) -> None:
        """Stop polling, send what can be sent within `timeout`, save what was not."""
        deadline = time.monotonic() + timeout
        self._stop.set()
        self.queue.wake()
        if self._thread is not None:
            self._thread.join(timeout)
        self._reader.shutdown(wait=False)
        if self.sender is not None:
            self.sender.drain(deadline)
        try:
            self._save()
        except OSError as exc:
            log.warning("%s: could not save trace state: %s", self.database, exc)
        if self.lease is not None:
            self.lease.close()

    def send_pending(self) -> bool | None:
        """Send one batch now (tests drive the sender without its thread)."""
        return self.sender.send_once() if self.sender is not None else None
