"""One database's loop: discover, read, map, checkpoint, publish — then wait and repeat.

All reads of a poll share one REPEATABLE READ snapshot, so the rows, the gaps and the gauges
agree with each other. The poll works on a copy of the state and publishes it only after the
checkpoint holding it is on disk: whatever a scrape has seen survives a crash, so a counter
never goes backwards and no row is counted twice or lost across a restart.
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import IsolationLevel, sql
from psycopg_pool import PoolTimeout

from exporter import checkpoint, connect_errors
from exporter.aggregates import Aggregates
from exporter.catalog import metric
from exporter.config import Config, DatabaseConfig
from exporter.counts import Counts
from exporter.db import Database
from exporter.discover import Found, Layout, discover, layout
from exporter.expose import families
from exporter.expose.families import Part
from exporter.expose.registry import Exposition
from exporter.expose.self_metrics import SelfMetrics
from exporter.failing import CollectorFailed, failing_as
from exporter.labels import LabelCap
from exporter.map.alert_notification_log import AlertNotificationLog
from exporter.map.alert_notification_queue import AlertNotificationQueue
from exporter.map.alert_snooze import AlertSnooze
from exporter.map.base import Context, Gauges, Mapping
from exporter.map.baseline_recalc_execution import BaselineRecalcExecution
from exporter.map.merge_performance_metrics import MergePerformanceMetrics
from exporter.map.performance_alerts import PerformanceAlerts
from exporter.map.performance_anomalies import PerformanceAnomalies
from exporter.map.performance_baseline_history import PerformanceBaselineHistory
from exporter.map.performance_baselines import PerformanceBaselines
from exporter.map.performance_correlations import PerformanceCorrelations
from exporter.map.performance_metrics import PerformanceMetrics
from exporter.map.performance_operation_types import PerformanceOperationTypes
from exporter.map.scheduled_job_execution import ScheduledJobExecution
from exporter.read.backfill import start_cursor
from exporter.read.branches import BranchNames
from exporter.read.cursor import IdCursor
from exporter.read.incremental import finite_epoch, read_table
from exporter.read.performance_baselines import refresh_history
from exporter.read.snapshot import Snapshot, take_snapshot
from exporter.spans import MERGES, SPANS, SpanSource

log = logging.getLogger("exporter.poller")

STATE_FORMAT = 2
"""Format 2: one file per database, the span sources' state in its `traces` section. Format 1
kept the metrics tables only, spans had their own `<database>.traces.json`: both are read and
folded into one file on the first checkpoint, after which the old trace file is removed."""
DISCOVER_EVERY = 60.0
ROWS_PER_POLL = 10
SAVE_INTERVAL = 1.0
"""Seconds between checkpoints while a backlog is read poll after poll.

An fsync per poll would cost more than reading the poll's rows. Skipping a checkpoint is safe:
the state on disk stays a consistent earlier one, and what a scrape shows is only ever what
was checkpointed, so a crash re-reads (and resends, with the same ids) what was read since,
and counts it once.
"""


def state_file(state_dir: Path, database: str) -> Path:
    return state_dir / f"{_safe(database)}.json"


def legacy_traces_file(state_dir: Path, database: str) -> Path:
    """Where releases with a separate span pipeline kept its state (migrated on load)."""
    return state_dir / f"{database}.traces.json"


def _safe(database: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", database)


@dataclass(frozen=True)
class Failing:
    """A collector skipped after a failed read: why, how often, and when to try again."""

    message: str
    attempts: int
    retry_at: float


class DatabasePoller:
    def __init__(self, cfg: Config, db_cfg: DatabaseConfig, database: Database,
                 self_metrics: SelfMetrics, exposition: Exposition,
                 spans: SpanSource | None = None):
        """`spans`: the span sources of this database, read by the same polls (None when
        `operation_traces` is disabled in the configuration)."""
        self.cfg = cfg
        self.name = db_cfg.name
        self.db_cfg = db_cfg
        self.database = database
        self.sm = self_metrics
        self.health = self_metrics.database(db_cfg.name)
        self.exposition = exposition
        self.path = state_file(cfg.state_dir, db_cfg.name)
        self.legacy_traces = legacy_traces_file(cfg.state_dir, db_cfg.name)
        self.save_interval = SAVE_INTERVAL
        self.spans = spans
        self._traces_kept: dict[str, Any] | None = None
        self._legacy_pending = False
        self._unsaved = False
        self._saved_at = float("-inf")
        self.baselines = PerformanceBaselines()
        self.mappings: list[Mapping] = [
            PerformanceMetrics(cfg.buckets, self.baselines.history, cfg.native),
            PerformanceAlerts(),
            MergePerformanceMetrics(), self.baselines, PerformanceOperationTypes(),
            PerformanceAnomalies(), AlertNotificationQueue(), AlertNotificationLog(),
            BaselineRecalcExecution(), PerformanceBaselineHistory(), ScheduledJobExecution(),
            AlertSnooze(), PerformanceCorrelations(),
        ]
        self.cap = LabelCap(cfg.max_label_values, cfg.max_label_length, self._overflow)
        if spans is not None:
            spans.attach(self.cap, exposition.changed if exposition is not None else _quiet)
        self.branches = BranchNames()
        self.bounds = {"pggit_operation_duration_seconds": cfg.buckets,
                       "pggit_merge_duration_seconds": cfg.merge_buckets}
        self.agg = Aggregates(self.bounds, cfg.native)
        self.counts = Counts()
        self.shown_agg, self.shown_counts = self.agg, self.counts
        self.cursors: dict[str, IdCursor] = {}
        self.newest: dict[str, float] = {}
        self.gauges: Gauges = {}
        self.enabled: dict[str, bool] = {}
        self.found: Found | None = None
        self.layout: Layout | None = None
        self.discovered_at = 0.0
        self.gauges_at = 0.0
        self.loaded = False
        self.caught_up = False
        self.up = False
        self.last_error: str | None = None
        self.last_reason: str | None = None
        self.lag: dict[str, float] = {}
        self.failing: dict[str, Failing] = {}
        self.read_now: set[str] = set()
        self._saved_cursors = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _overflow(self, label: str, rows: int) -> None:
        """Folds by readers sharing the cap without a checkpointed count of their own."""
        self.sm["pggit_exporter_label_overflow_total"].labels(self.name, label).inc(rows)

    def load(self) -> None:
        """Restore the checkpoint, if any, and re-admit its label values to the cap."""
        data = checkpoint.read(self.path)
        traces = None
        if data is not None:
            if data.get("format") not in (1, STATE_FORMAT):
                raise checkpoint.CheckpointError(
                    f"{self.path}: state format {data.get('format')!r} is not {STATE_FORMAT}")
            try:
                self.agg = Aggregates.from_json(data["aggregates"], self.bounds,
                                               self.cfg.native)
            except ValueError as exc:
                raise checkpoint.CheckpointError(f"{self.path}: {exc}; move the file away "
                                                 "to start counting afresh") from None
            self.cursors = {t: IdCursor.from_json(c) for t, c in data["cursors"].items()}
            self.newest = {t: float(v) for t, v in data.get("newest", {}).items()}
            self.counts = Counts.from_json(data.get("counts"))
            self._saved_cursors = json.dumps(data["cursors"], sort_keys=True)
            for (name, position), values in self.agg.label_values().items():
                self.cap.admit(metric(name).labels[position], values)
            traces = data.get("traces")
            log.info("state restored", extra={"database": self.name, "path": str(self.path),
                                              "tables": len(self.cursors)})
        if traces is None:
            traces = checkpoint.read(self.legacy_traces)
            if traces is not None:
                self._legacy_pending = True
                log.info("span state found in its own file; it moves into the database's "
                         "state file at the next checkpoint", extra={
                             "database": self.name, "path": str(self.legacy_traces)})
        if self.spans is not None:
            try:
                self.spans.restore(traces)
            except ValueError as exc:
                raise checkpoint.CheckpointError(f"{self.path}: {exc}") from None
        else:
            self._traces_kept = traces  # kept as it is, for when spans are read again
        self.shown_agg, self.shown_counts = self.agg, self.counts
        self._unsaved = self._legacy_pending or (data is not None and data["format"] == 1)
        self.loaded = True

    def start(self) -> None:
        if self.spans is not None:
            self.spans.start()
        self._thread = threading.Thread(target=self._run, name=f"poll-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 3.0) -> None:
        """Stop polling; send what spans can be sent within `timeout`; checkpoint the rest."""
        deadline = time.monotonic() + timeout
        self._stop.set()
        if self.spans is not None:
            self.spans.wake()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.spans is not None:
            self.spans.stop(deadline)
        if self._thread is not None and self._thread.is_alive():
            # Still inside a poll (a query past the join's wait): its state is half swapped,
            # so the last checkpoint on disk stays the one a restart resumes from.
            log.warning("stopped while a poll was still running; resuming from the last "
                        "checkpoint", extra={"database": self.name})
        elif self.loaded:
            try:
                self._checkpoint(force=True)
            except (OSError, checkpoint.CheckpointError) as exc:
                log.warning("could not save state", extra={"database": self.name,
                                                           "error": str(exc)})
        if self.spans is not None:
            self.spans.close()

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            backlog = False
            try:
                backlog = self.poll_once()
                failures = 0
            except CollectorFailed as exc:
                # That collector waits for its own retry time; the others poll on at the
                # usual pace. Backing the whole poll off as well would, with the jitter, start
                # the next poll after that retry time about half the time, and fail it again.
                before = self.failing.get(exc.collector)
                self._failed(exc, 1 + (before.attempts if before is not None else 0))
                failures = 0
            except Exception as exc:
                failures += 1
                self._failed(exc, failures)
            if backlog:
                continue
            delay = self.cfg.poll_interval
            if failures:
                delay = min(self.cfg.retry_backoff_max, self.cfg.poll_interval * 2 ** failures)
                delay *= random.uniform(0.8, 1.2)
            elif self.spans is not None and self.spans.throttled:
                # Spans held back by a busy sender: poll again as soon as it sent a batch.
                self.spans.wait_for_room(delay)
                continue
            self._stop.wait(delay)

    def _failed(self, exc: Exception, failures: int) -> None:
        if isinstance(exc, PoolTimeout | psycopg.OperationalError):
            stage = "connect"
            self.up = False
            self.health.contact(False)
        elif isinstance(exc, checkpoint.CheckpointError | OSError):
            stage = "checkpoint"
        else:
            stage = "read"
            self.found = None
        cause = exc.__cause__ if isinstance(exc, CollectorFailed) else exc
        message = connect_errors.describe(cause) if stage == "connect" else _one_line(cause)
        reason = connect_errors.reason(cause)
        extra = {"database": self.name, "stage": stage, "reason": reason, "error": message,
                 "attempt": failures}
        if isinstance(exc, CollectorFailed):
            self._collector_failed(exc.collector, message)
            extra["collector"] = exc.collector
            message = f"{exc.collector}: {message}"
        self.last_error = f"{stage}: {message}"
        self.last_reason = reason
        self.caught_up = False
        self.health.error(stage, reason)
        self.exposition.changed()
        level = logging.WARNING if failures > 1 else logging.ERROR
        log.log(level, "poll failed", extra=extra)

    def _collector_failed(self, collector: str, message: str) -> None:
        """Skip a collector whose read failed for a reason other than the connection, so the
        others keep reading, and retry it with backoff; it shows as failing until it works."""
        before = self.failing.get(collector)
        attempts = 1 if before is None else before.attempts + 1
        delay = min(self.cfg.retry_backoff_max, self.cfg.poll_interval * 2 ** attempts)
        self.failing[collector] = Failing(message, attempts, time.monotonic() + delay)
        self.health.failing({c: f.message for c, f in self.failing.items()})

    def _discover(self, conn: psycopg.Connection) -> None:
        found = discover(conn, self.db_cfg)
        conn.rollback()
        seen = layout(found.columns)
        if seen != self.layout:
            log.log(logging.INFO if seen.supported else logging.WARNING, "pgGit layout",
                    extra={"database": self.name, "layout": seen.describe()})
            self.layout = seen
        enabled: dict[str, bool] = {}
        reasons: dict[str, str] = {}
        for m in self.mappings:
            if m.collector in self.db_cfg.disabled_collectors:
                why: str | None = "disabled in the configuration"
            else:
                why = found.missing(m.table, m.needs)
            enabled[m.collector] = why is None
            if why is not None:
                reasons[m.collector] = why
        if self.spans is not None:
            for collector, why in self.spans.configure(
                    found, set(self.db_cfg.disabled_collectors)).items():
                enabled[collector] = why is None
                if why is not None:
                    reasons[collector] = why
        else:
            for collector in (SPANS, MERGES):
                enabled[collector] = False
                reasons[collector] = "disabled in the configuration"
        branch_problem = self.branches.configure(found)
        if branch_problem is not None:
            reasons["branches"] = branch_problem + " (branch labels show ids)"
        for collector, ok in enabled.items():
            if self.enabled.get(collector) != ok:
                if ok:
                    log.info("collector enabled",
                             extra={"database": self.name, "collector": collector})
                else:
                    log.warning("collector disabled", extra={
                        "database": self.name, "collector": collector,
                        "reason": reasons[collector]})
        if "branches" in reasons and self.found is None:
            log.warning("branch names unavailable",
                        extra={"database": self.name, "reason": reasons["branches"]})
        self.health.collectors(enabled)
        self.enabled = enabled
        self.failing = {c: f for c, f in self.failing.items() if enabled.get(c)}
        self.found = found
        self.discovered_at = time.monotonic()

    def poll_once(self) -> bool:
        """One poll; returns True when rows are left over and the next poll should not wait."""
        if not self.loaded:
            self.load()
        started = time.monotonic()
        spans = self._span_plan(started)
        with self.database.connect() as conn:
            if self.found is None or started - self.discovered_at > DISCOVER_EVERY:
                self._discover(conn)
                spans = self._span_plan(started)
            try:
                if spans is not None:
                    with failing_as(SPANS):
                        spans.prepare(conn, *self._spans_on(started))
                conn.isolation_level = IsolationLevel.REPEATABLE_READ
                conn.read_only = True
                try:
                    outcome = self._read(conn, started, spans)
                finally:
                    conn.rollback()
                    conn.isolation_level = None
                    conn.read_only = None
            finally:
                if spans is not None:
                    spans.finish()
        agg, counts, cursors, newest, gauges, rows_by_table, backlog, db_now = outcome
        self.agg, self.counts, self.cursors, self.newest = agg, counts, cursors, newest
        if any(rows_by_table.values()):
            self._unsaved = True
        self._checkpoint(force=not backlog)
        if gauges is not None:
            self.gauges = gauges
        self._publish(rows_by_table, backlog, db_now, time.monotonic() - started)
        return backlog

    def _span_plan(self, started: float) -> SpanSource | None:
        """The span sources, if this poll reads any of them."""
        if self.spans is None or not any(self._spans_on(started)):
            return None
        return self.spans

    def _spans_on(self, started: float) -> tuple[bool, bool]:
        """Whether this poll reads spans, and merges as traces: enabled and not waiting
        for a retry."""
        return tuple(bool(self.enabled.get(c)) and not self._skipped(c, started)
                     for c in (SPANS, MERGES))  # type: ignore[return-value]

    def _checkpoint(self, force: bool) -> None:
        """Write the state file if anything changed since the last one, then show what it
        holds. While a backlog is read (`force` False) at most once per SAVE_INTERVAL."""
        cursor_json = json.dumps({t: c.to_json() for t, c in self.cursors.items()},
                                 sort_keys=True)
        spans_changed = self.spans is not None and self.spans.changed
        if not (self._unsaved or spans_changed or cursor_json != self._saved_cursors):
            return
        if not force and time.monotonic() - self._saved_at < self.save_interval:
            return
        data: dict[str, Any] = {
            "format": STATE_FORMAT, "database": self.name, "aggregates": self.agg.to_json(),
            "cursors": json.loads(cursor_json), "newest": self.newest,
            "counts": self.counts.to_json()}
        traces = self.spans.section() if self.spans is not None else self._traces_kept
        if traces is not None:
            data["traces"] = traces
        checkpoint.write_atomic(self.path, data)
        self._saved_at = time.monotonic()
        self._saved_cursors = cursor_json
        self._unsaved = False
        self.shown_agg, self.shown_counts = self.agg, self.counts
        if self.spans is not None:
            self.spans.saved()
        if self._legacy_pending:
            self.legacy_traces.unlink(missing_ok=True)
            self._legacy_pending = False
            log.info("span state moved into the database's state file",
                     extra={"database": self.name, "path": str(self.path)})

    def _read(self, conn: psycopg.Connection, started: float,
              spans: SpanSource | None) -> tuple[Any, ...]:
        cursors = {t: c.copy() for t, c in self.cursors.items()}
        newest = dict(self.newest)
        snap = take_snapshot(conn, time.time())
        branches = self.database.table("branches")
        ctx = Context(self.name, self.agg, self.cap,
                      lambda b: self.branches.lookup(conn, branches, b), self.counts)
        active = [m for m in self.mappings if self.enabled.get(m.collector)
                  and not self._skipped(m.collector, started)]
        self.read_now = {m.collector for m in active}
        if spans is not None:
            self.read_now |= {c for c, on in zip((SPANS, MERGES), self._spans_on(started),
                                                 strict=True) if on}
        if self.baselines in active:
            with failing_as(self.baselines.collector):
                refresh_history(conn, self.database.table(self.baselines.table),
                                self.baselines.history)
        rows_by_table: dict[str, int] = {}
        backlog = False
        for m in active:
            if m.incremental is None:
                continue
            with failing_as(m.collector):
                backlog = self._read_table(conn, m, ctx, snap, cursors, newest,
                                           rows_by_table) or backlog
        gauges = None
        if started - self.gauges_at >= self.cfg.gauge_interval or not self.gauges:
            gauges = {}
            for m in active:
                if m.read_gauges is None:
                    continue
                with failing_as(m.collector):
                    rows = m.read_gauges(conn, self.database.table(m.table))
                    gauges.update(m.gauges(ctx, rows))
            self.gauges_at = started
        if spans is not None:
            with failing_as(SPANS):
                backlog = spans.read(conn, snap) or backlog
        return (ctx.result(), ctx.counts, cursors, newest, gauges, rows_by_table, backlog,
                snap.db_now)

    def _skipped(self, collector: str, now: float) -> bool:
        """A failing collector waits for its retry time; the others read meanwhile."""
        failing = self.failing.get(collector)
        return failing is not None and now < failing.retry_at

    def _read_table(self, conn: psycopg.Connection, m: Mapping, ctx: Context, snap: Snapshot,
                    cursors: dict[str, IdCursor], newest: dict[str, float],
                    rows_by_table: dict[str, int]) -> bool:
        """One incremental table's read in the poll; returns whether rows are left over."""
        assert m.incremental is not None
        table = self.database.table(m.table)
        if m.table not in cursors:
            conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(
                sql.Literal(int(self.db_cfg.backfill_statement_timeout * 1000))))
            cursors[m.table] = start_cursor(conn, m.incremental, table, snap,
                                            self.cfg.start_position, m.aggregate(ctx))
            latest = newest_time(conn, m, table)
            if latest is not None:
                newest[m.table] = latest
            conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(
                sql.Literal(int(self.db_cfg.statement_timeout * 1000))))
            log.info("read position initialised", extra={
                "database": self.name, "table": m.table, "mode": self.cfg.start_position,
                "max_id": cursors[m.table].max_seen})
        result = read_table(conn, m.incremental, table, cursors[m.table], snap,
                            self.cfg.batch_size, self.cfg.batch_size * ROWS_PER_POLL,
                            self.cfg.gap_grace, lambda rows: m.observe_page(ctx, rows))
        rows_by_table[m.table] = result.rows
        if result.newest is not None:
            newest[m.table] = max(result.newest, newest.get(m.table, result.newest))
        self._bound_gaps(m.table, cursors[m.table])
        return result.backlog

    def _bound_gaps(self, table: str, cursor: IdCursor) -> None:
        excess = len(cursor.gaps) - self.cfg.max_pending_gaps
        if excess > 0:
            del cursor.gaps[:excess]
            self.health.error("gaps_dropped", n=excess)
            log.error("too many pending gaps; oldest given up",
                      extra={"database": self.name, "table": table, "dropped": excess})

    def _publish(self, rows_by_table: dict[str, int], backlog: bool, db_now: float,
                 took: float) -> None:
        name = self.name
        self.lag = {t: max(0.0, db_now - at) for t, at in self.newest.items()
                    if t in rows_by_table}
        recovered = [c for c in self.failing if c in self.read_now]
        for collector in recovered:
            del self.failing[collector]
            log.info("collector reads again", extra={"database": name, "collector": collector})
        if recovered:
            self.health.failing({c: f.message for c, f in self.failing.items()})
        self.health.polled(
            rows=rows_by_table, lag=self.lag, counts=self.shown_counts, took=took,
            at=time.time(),
            pending={t: self.cursors[t].pending_count() for t in rows_by_table})
        if not self.up:
            log.info("database reachable", extra={"database": name})
        self.up = True
        self.health.contact(True)
        self.caught_up = not backlog and not (self.spans is not None and self.spans.catching_up)
        self.last_error = None
        self.last_reason = None
        self.exposition.changed()

    def collect(self) -> Iterator[Part]:
        """The published state, by reference (called at scrape time, any thread): a poll
        works on copies and only swaps them in, so what is handed over never changes."""
        agg, gauges, enabled = self.shown_agg, self.gauges, self.enabled
        prefix = (self.name,)
        # Before the first discovery (`enabled` empty) the checkpoint's counts are shown as
        # they are, so a restart or reload never makes a series blink out.
        shown = [m for m in self.mappings if enabled.get(m.collector, not enabled)]
        counters = tuple(c for m in shown for c in m.counters)
        tables = {m.table for m in shown}
        for part in families.from_aggregates(agg, prefix, counters):
            # A disabled collector's counts stay in the checkpoint, in case it comes back,
            # but are not shown: its table is gone or no longer read.
            if metric(part.name).source in tables:
                yield part
        for gauge_name, series in gauges.items():
            yield families.Series(gauge_name, series, prefix)
        if self.spans is not None and enabled.get(SPANS, not enabled):
            yield from self.spans.collect()


def _quiet() -> None:
    """What a detached poller (the reload's probe) tells instead of a page."""


def newest_time(conn: psycopg.Connection, m: Mapping, table: sql.Composed) -> float | None:
    """Time of the newest row by id (an index lookup), so lag is known from the first poll."""
    spec = m.incremental
    if spec is None or spec.time is None:
        return None
    row = conn.execute(sql.SQL(
        "SELECT {} FROM {} ORDER BY {} DESC LIMIT 1"
    ).format(sql.SQL(finite_epoch(spec.time)), table, sql.Identifier(spec.id_column))).fetchone()
    return None if row is None else row[0]


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
