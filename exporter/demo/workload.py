"""A live pgGit workload: writes through pgGit's own functions, the way pgGit itself would.

The exporter's traps (local timestamps, transaction-start times, ids committed out of order,
holes from rollbacks, spans updated in place or left RUNNING, baselines replaced, alerts
regraded) only show up with concurrent writers, so several threads write at once, each on its
own connection, and the workload deliberately produces the awkward cases too. It needs nothing
but psycopg and the standard library, and it survives server restarts: every thread reconnects
with backoff and never dies of a database error.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

log = logging.getLogger(__name__)

LATER_TABLES = (
    "performance_anomalies",
    "alert_snooze",
    "alert_notification_webhooks",
    "alert_notification_queue",
    "alert_notification_log",
    "baseline_recalc_execution",
    "performance_baseline_history",
    "scheduled_job_execution",
    "performance_correlations",
)
LATER_FUNCTIONS = (
    "record_performance_anomaly",
    "enqueue_alert_notification",
    "deliver_alert_notification",
    "start_scheduled_job",
    "finish_scheduled_job",
    "snooze_alerts",
    "store_correlation_analysis",
    "recalculate_all_baselines_rolling",
)

USERS = ("alice", "bob", "carol", "dave", "erin", "ci-bot", "deploy@example.com")

# How often each operation type happens relative to the others; unlisted types weigh 2.
OPERATION_WEIGHTS = {
    "commit": 12, "ddl_capture": 10, "get_history": 9, "blob_store": 8, "branch_list": 7,
    "status": 7, "diff": 6, "object_diff": 5, "checkout": 5, "dependency_resolve": 4,
    "branch_switch": 4, "get_object_timeline": 4, "merge_branches": 3, "merge": 3,
    "branch_create": 3, "tag_create": 3, "rollback_commit": 2, "rollback": 1.5,
    "rollback_cascade": 0.7, "rebase": 1, "schema_snapshot": 1, "compress_branch": 0.4,
    "garbage_collect": 0.3, "vacuum_history": 0.2, "index_rebuild": 0.2,
}

# Child operations a traced operation fans out to, per category of the parent.
CHILD_OPERATIONS = {
    "core": ("ddl_capture", "object_diff", "blob_store", "dependency_resolve"),
    "merge": ("merge_base_find", "merge_conflict_detect", "merge_auto_resolve", "object_diff"),
    "rollback": ("rollback_validate", "dependency_resolve", "checkout", "blob_store"),
    "branch": ("blob_dedup", "blob_store", "schema_snapshot"),
    "history": ("object_diff", "blob_store"),
    "schema": ("ddl_capture", "dependency_resolve", "blob_store"),
    "storage": ("blob_dedup", "blob_store"),
}

ERRORS = (
    ("40P01", "deadlock detected", {"relation": "pggit.commits", "retry": 1}),
    ("55P03", "could not obtain lock on relation \"branches\"", {"lock": "AccessExclusive"}),
    ("57014", "canceling statement due to statement timeout", {"timeout_ms": 30000}),
    ("23505", "duplicate key value violates unique constraint \"branches_branch_name_key\"",
     {"constraint": "branches_branch_name_key"}),
    ("P0001", "merge conflict could not be resolved automatically",
     {"conflicts": {"tables": ["orders"], "columns": ["status"]}}),
)

JOBS = {
    "deliver_notifications": "* * * * *",
    "detect_anomalies": "*/5 * * * *",
    "check_alert_escalation": "*/10 * * * *",
    "analyze_correlations": "0 * * * *",
    "recalculate_baselines": "0 2 * * *",
}

BOTTLENECKS = (
    "lock contention on pggit.branches",
    "WAL flush latency",
    "blob storage I/O",
    "catalog scans in dependency resolution",
)

ROUTES = {
    "CRITICAL": ("slack", "email", "pagerduty"),
    "WARNING": ("slack", "mattermost"),
    "INFO": ("email",),
}


@dataclass(frozen=True)
class OperationType:
    name: str
    category: str
    typical_us: float
    sigma: float


@dataclass
class Slowdown:
    """A shared bottleneck: several operation types get slower together for a while, which
    is what makes correlations and degradation anomalies real rather than invented."""

    operations: frozenset[str] = frozenset()
    factor: float = 1.0
    until: float = 0.0

    def factor_for(self, operation: str) -> float:
        if operation in self.operations and time.monotonic() < self.until:
            return self.factor
        return 1.0


def operation_type(name: str, category: str, typical_ms: float) -> OperationType:
    """A row of performance_operation_types as the workload draws it: heavier operations vary
    more (I/O, locks), light ones are CPU-bound and steady."""
    sigma = 0.25 + min(0.3, math.log10(max(typical_ms, 1.0)) * 0.1)
    return OperationType(name, category, max(typical_ms, 0.05) * 1000.0, sigma)


def draw_duration_us(rng: random.Random, op: OperationType, factor: float,
                     outlier_probability: float) -> int:
    """Log-normal around the type's typical duration, times the slowdown in force, with rare
    far outliers that exceed any sane baseline threshold (2 x p99) so threshold alerts fire."""
    value = rng.lognormvariate(math.log(op.typical_us), op.sigma) * factor
    if rng.random() < outlier_probability:
        value *= rng.uniform(8.0, 30.0)
    return max(1, int(value))


def next_slowdown(rng: random.Random, operations: list[OperationType], now: float,
                  interval: float, incidents_per_hour: float,
                  slowdowns_per_hour: float) -> Slowdown | None:
    """The slowdown that starts in the next `interval` seconds, if any (Poisson rates)."""
    roll = rng.random()
    incident = incidents_per_hour * interval / 3600.0
    if roll < incident:
        busy = sorted(operations, key=lambda o: -OPERATION_WEIGHTS.get(o.name, 2))[:6]
        return Slowdown(frozenset({rng.choice(busy).name}), rng.uniform(4.0, 8.0),
                        now + rng.uniform(20.0, 60.0))
    if roll < incident + slowdowns_per_hour * interval / 3600.0:
        names = [o.name for o in operations]
        group = frozenset(rng.sample(names, min(len(names), rng.randint(2, 5))))
        return Slowdown(group, rng.uniform(1.2, 1.8), now + rng.uniform(30.0, 120.0))
    return None


def simulate(operations: list[OperationType], seconds: float, *, seed: int = 0,
             ops_per_second: float = 50.0, outlier_probability: float = 0.00002,
             incidents_per_hour: float = 1.0, slowdowns_per_hour: float = 12.0,
             ) -> Iterator[tuple[float, str, int]]:
    """The workload's operations as (second, operation type, duration in µs), in simulated
    time and without a database: the same weights, durations, outliers and slowdowns as the
    threads draw, for counting what the alert rules make of an hour of it."""
    rng = random.Random(f"{seed}:simulate")
    weights = [float(OPERATION_WEIGHTS.get(o.name, 2)) for o in operations]
    slowdown = Slowdown()
    t = next_tick = 0.0
    while True:
        t += rng.expovariate(ops_per_second)
        if t >= seconds:
            return
        while next_tick <= t:
            if slowdown.until <= next_tick:
                slowdown = next_slowdown(rng, operations, next_tick, 1.0, incidents_per_hour,
                                         slowdowns_per_hour) or slowdown
            next_tick += 1.0
        op = rng.choices(operations, weights)[0]
        factor = slowdown.factor if op.name in slowdown.operations and t < slowdown.until \
            else 1.0
        yield t, op.name, draw_duration_us(rng, op, factor, outlier_probability)


@dataclass
class _PendingMerge:
    merge_id: int
    due: float
    status: str


@dataclass
class _Catalog:
    operations: list[OperationType] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    branches: list[tuple[int, str]] = field(default_factory=list)


class _Session:
    """One thread's connection: (re)connects with exponential backoff until stopped."""

    def __init__(self, dsn: str, name: str, stop: threading.Event,
                 on_reconnect: Callable[[], None]) -> None:
        self.dsn = dsn
        self.name = name
        self.stop = stop
        self.on_reconnect = on_reconnect
        self.conn: psycopg.Connection | None = None
        self.connects = 0

    def get(self) -> psycopg.Connection | None:
        """A usable connection, or None once the workload is stopping."""
        if self.conn is not None and not self.conn.closed and not self.conn.broken:
            return self.conn
        self.reset()
        delay = 0.05
        while not self.stop.is_set():
            try:
                self.conn = psycopg.connect(
                    self.dsn, autocommit=True, connect_timeout=2,
                    application_name=f"pggit-workload-{self.name}",
                    # A write stuck behind a lock must not hold stop() up for long.
                    options="-c statement_timeout=5000 -c lock_timeout=2000",
                )
            except psycopg.Error as exc:
                log.debug("workload %s: connect failed: %s", self.name, exc)
                self.stop.wait(delay)
                delay = min(delay * 2, 1.0)
                continue
            if self.connects:
                self.on_reconnect()
            self.connects += 1
            return self.conn
        return None

    def reset(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(psycopg.Error):
                self.conn.close()
            self.conn = None


class Workload:
    """Writes a realistic pgGit workload to ``dsn`` until stopped.

    ``ops_per_second`` is the total rate of worker operations (Poisson arrivals, shared by the
    ``threads`` workers); one extra maintenance thread recalculates baselines, escalates and
    acknowledges alerts and, when the later tables exist, detects anomalies, delivers
    notifications, runs scheduled jobs and recalculation runs, snoozes and correlates.
    ``later_tables=None`` detects whether the later tables and their functions are installed.
    ``seed`` makes each thread's choices reproducible; thread interleaving is not.

    Its rates are a production system's, in wall time, so the shipped rules page on it about
    as often as they would in production (tests/test_noise_budget.py counts them over a
    simulated hour): an operation is a far outlier once in ``1/outlier_probability`` runs,
    ``incidents_per_hour`` severe incidents (one busy type 4-8 times slower for 20-60 s,
    which pages) and ``slowdowns_per_hour`` mild shared slowdowns (several types 1.2-1.8
    times slower for 30-120 s: anomalies and correlations, no page) happen on average.
    """

    def __init__(
        self,
        dsn: str,
        *,
        seed: int = 0,
        ops_per_second: float = 50.0,
        threads: int = 4,
        later_tables: bool | None = None,
        maintenance_interval: float = 1.0,
        outlier_probability: float = 0.00002,
        failure_probability: float = 0.03,
        incidents_per_hour: float = 1.0,
        slowdowns_per_hour: float = 12.0,
    ) -> None:
        if ops_per_second <= 0 or threads < 1:
            raise ValueError("ops_per_second must be > 0 and threads >= 1")
        self.dsn = dsn
        self.seed = seed
        self.ops_per_second = ops_per_second
        self.threads = threads
        self.later_tables = later_tables
        self.maintenance_interval = maintenance_interval
        self.outlier_probability = outlier_probability
        self.incidents_per_hour = incidents_per_hour
        self.slowdowns_per_hour = slowdowns_per_hour
        self.failure_probability = failure_probability
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._catalog = _Catalog()
        self._slowdown = Slowdown()
        self._started_at: float | None = None

    # -- public API -------------------------------------------------------------------------

    def start(self) -> None:
        """Load operation types and branches, then start the threads; fails fast if the
        database is unreachable now (later outages are ridden out)."""
        if self._threads:
            return
        self._stop.clear()
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
            self._catalog = self._load_catalog(conn)
            if self.later_tables is None:
                self.later_tables = self._detect_later(conn)
        self._started_at = time.monotonic()
        for index in range(self.threads):
            self._spawn(f"worker-{index}", self._worker, index)
        self._spawn("maintenance", self._maintenance)

    def stop(self, timeout: float = 5.0) -> None:
        """Signal every thread and wait for them; each closes its own connection."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("workload thread %s did not stop within %.1fs", thread.name,
                            timeout)
        self._threads = [t for t in self._threads if t.is_alive()]

    def run_for(self, seconds: float) -> dict[str, int]:
        """Run, then stop; returns the counts."""
        self.start()
        try:
            self._stop.wait(seconds)
        finally:
            self.stop()
        return self.counts()

    def counts(self) -> dict[str, int]:
        """What was written (committed) so far, by kind: metrics, alerts, spans, merges, ..."""
        with self._lock:
            return dict(self._counts)

    @property
    def metrics(self) -> int:
        return self.counts().get("metrics", 0)

    @property
    def alerts(self) -> int:
        return self.counts().get("alerts", 0)

    @property
    def spans(self) -> int:
        return self.counts().get("spans", 0)

    @property
    def merges(self) -> int:
        return self.counts().get("merges", 0)

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def __enter__(self) -> Workload:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- setup ------------------------------------------------------------------------------

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=self._guard, args=(name, target, *args),
                                  name=f"pggit-workload-{name}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _guard(self, name: str, target: Callable[..., None], *args: Any) -> None:
        """Last line of defence: a bug in one step must not silently end a thread early."""
        while not self._stop.is_set():
            try:
                target(*args)
                return
            except Exception:  # the thread must outlive anything
                log.exception("workload thread %s failed; restarting it", name)
                self._count("thread_restarts")
                self._stop.wait(0.5)

    @staticmethod
    def _load_catalog(conn: psycopg.Connection) -> _Catalog:
        catalog = _Catalog()
        rows = conn.execute(
            "SELECT operation_type, COALESCE(category, 'core'),"
            " COALESCE(typical_duration_ms, 10)::float8"
            " FROM pggit.performance_operation_types ORDER BY operation_type"
        ).fetchall()
        for name, category, typical_ms in rows:
            catalog.operations.append(operation_type(name, category, typical_ms))
            catalog.weights.append(float(OPERATION_WEIGHTS.get(name, 2)))
        # pgGit drafts called the key "id"; the deployed table has branch_id.
        columns = {r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = 'pggit' AND table_name = 'branches'").fetchall()}
        id_col = "branch_id" if "branch_id" in columns else "id"
        name_col = "branch_name" if "branch_name" in columns else "name"
        catalog.branches = [(int(r[0]), str(r[1])) for r in conn.execute(
            f"SELECT {id_col}, {name_col} FROM pggit.branches ORDER BY 1").fetchall()]
        if not catalog.operations or len(catalog.branches) < 2:
            raise RuntimeError("pggit.performance_operation_types or pggit.branches is empty")
        return catalog

    @staticmethod
    def _detect_later(conn: psycopg.Connection) -> bool:
        tables = conn.execute(
            "SELECT count(*) FROM unnest(%s::text[]) t"
            " WHERE to_regclass('pggit.' || t) IS NOT NULL", (list(LATER_TABLES),)
        ).fetchone()
        functions = conn.execute(
            "SELECT count(DISTINCT p.proname) FROM pg_proc p"
            " JOIN pg_namespace n ON n.oid = p.pronamespace"
            " WHERE n.nspname = 'pggit' AND p.proname = ANY(%s)", (list(LATER_FUNCTIONS),)
        ).fetchone()
        return bool(tables and functions and tables[0] == len(LATER_TABLES)
                    and functions[0] == len(LATER_FUNCTIONS))

    # -- bookkeeping ------------------------------------------------------------------------

    def _count(self, kind: str, n: int = 1) -> None:
        if n:
            with self._lock:
                self._counts[kind] += n

    def _run_step(self, session: _Session, step: Callable[[psycopg.Connection], None]) -> None:
        """Run one unit of work; database trouble costs the unit, never the thread."""
        conn = session.get()
        if conn is None:
            return
        try:
            step(conn)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            log.debug("workload %s: connection trouble: %s", session.name, exc)
            self._count("connection_errors")
            session.reset()
        except psycopg.Error as exc:
            log.debug("workload %s: statement failed: %s", session.name, exc)
            self._count("statement_errors")
            if conn.broken:
                session.reset()

    # -- workers ----------------------------------------------------------------------------

    def _worker(self, index: int) -> None:
        rng = random.Random(f"{self.seed}:worker:{index}")
        session = _Session(self.dsn, f"worker-{index}", self._stop,
                           lambda: self._count("reconnects"))
        pending: list[_PendingMerge] = []
        rate = self.ops_per_second / self.threads
        next_at = time.monotonic()
        try:
            while not self._stop.is_set():
                next_at += rng.expovariate(rate)
                delay = next_at - time.monotonic()
                if delay > 0:
                    if self._stop.wait(delay):
                        break
                elif delay < -1.0:
                    next_at = time.monotonic()  # after an outage, resume; do not burst
                if pending and pending[0].due <= time.monotonic():
                    merge = pending.pop(0)
                    self._run_step(session, lambda c, m=merge: self._complete_merge(c, m))
                    continue
                roll = rng.random()
                if roll < 0.70:
                    self._run_step(session, lambda c: self._plain_operation(c, rng, session))
                elif roll < 0.86:
                    self._run_step(session, lambda c: self._traced_operation(c, rng, session))
                elif roll < 0.96:
                    self._run_step(session,
                                   lambda c: self._merge(c, rng, session, pending))
                else:
                    self._run_step(session, lambda c: self._odd_transaction(c, rng, session))
        finally:
            session.reset()

    def _pick_operation(self, rng: random.Random) -> OperationType:
        return rng.choices(self._catalog.operations, self._catalog.weights)[0]

    def _duration_us(self, rng: random.Random, op: OperationType) -> int:
        return draw_duration_us(rng, op, self._slowdown.factor_for(op.name),
                                self.outlier_probability)

    def _metric_args(self, rng: random.Random, op: OperationType, session: _Session,
                     branch: tuple[int, str] | None = None,
                     duration_us: int | None = None) -> dict[str, Any]:
        branch = branch or rng.choice(self._catalog.branches)
        duration = duration_us if duration_us is not None else self._duration_us(rng, op)
        failed = rng.random() < self.failure_probability
        error = None
        if failed:
            code, message, context = rng.choice(ERRORS)
            error = Jsonb({"error_code": code, "message": message, "context": context})
        return {
            "op": op.name,
            "duration": duration,
            "name": f"{op.name}:{branch[1]}",
            "branch": branch[0] if rng.random() < 0.9 else None,
            "user": rng.choice(USERS),
            "session": f"{session.name}/{session.connects}",
            "rows": rng.randint(0, 500) if rng.random() < 0.7 else None,
            "memory": int(rng.lognormvariate(math.log(2_000_000), 0.8)),
            "cpu": int(duration * rng.uniform(0.2, 0.9)),
            "metadata": Jsonb({
                "client": {"app": "pggit-cli", "version": rng.choice(["1.4.2", "1.5.0"])},
                "objects": {"tables": rng.randint(0, 12), "functions": rng.randint(0, 4)},
                "branch": branch[1],
            }),
            "error": error,
        }

    def _record_metric(self, conn: psycopg.Connection, args: dict[str, Any]) -> int:
        row = conn.execute(
            "SELECT pggit.record_performance_metric(%(op)s, %(duration)s, %(name)s, %(branch)s,"
            " %(user)s, %(session)s, %(rows)s, %(memory)s, %(cpu)s, %(metadata)s, %(error)s)",
            args,
        ).fetchone()
        assert row is not None
        return int(row[0])

    def _alerts_for(self, conn: psycopg.Connection, metric_id: int) -> int:
        row = conn.execute("SELECT count(*) FROM pggit.performance_alerts WHERE metric_id = %s",
                           (metric_id,)).fetchone()
        return int(row[0]) if row else 0

    def _plain_operation(self, conn: psycopg.Connection, rng: random.Random,
                         session: _Session) -> None:
        op = self._pick_operation(rng)
        metric_id = self._record_metric(conn, self._metric_args(rng, op, session))
        self._count("metrics")
        self._count("alerts", self._alerts_for(conn, metric_id))

    def _traced_operation(self, conn: psycopg.Connection, rng: random.Random,
                          session: _Session) -> None:
        """A span tree (depth up to 5) around one operation; the operation's metric is
        recorded once the root span has ended."""
        op = self._pick_operation(rng)
        branch = rng.choice(self._catalog.branches)
        user = rng.choice(USERS)
        trace_id = None
        if rng.random() < 0.3:
            # Callers may pass their own text ids, e.g. span_merge_workflow_001.
            trace_id = f"span_{op.name}_workflow_{rng.getrandbits(40):010x}"
        status = self._span_tree(conn, rng, session, op, branch, user, None, trace_id, 1)
        args = self._metric_args(rng, op, session, branch)
        if status == "FAILED" and args["error"] is None:
            args["error"] = Jsonb({"error_code": "XX000", "message": "child span failed"})
        metric_id = self._record_metric(conn, args)
        self._count("metrics")
        self._count("alerts", self._alerts_for(conn, metric_id))

    def _span_tree(self, conn: psycopg.Connection, rng: random.Random, session: _Session,
                   op: OperationType, branch: tuple[int, str], user: str,
                   parent: str | None, trace_id: str | None, depth: int) -> str:
        """Start a span, run its children to completion, end it; returns its status.

        Children always end before their parent. Rarely a span is left RUNNING for good, as
        when the caller crashed; its ancestors still end.
        """
        attributes = Jsonb({
            "pggit": {"operation": op.name, "branch": {"id": branch[0], "name": branch[1]}},
            "db": {"statements": rng.randint(1, 40), "schema": rng.choice(["public", "sales"])},
            "depth": depth,
        })
        span_id = None
        if rng.random() < 0.2:
            span_id = f"span_{op.name}_{rng.getrandbits(48):012x}"
        row = conn.execute(
            "SELECT pggit.start_performance_trace(%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (trace_id, span_id, parent, op.name, f"{op.name}.{op.category}", branch[0], user,
             f"{session.name}/{session.connects}", attributes),
        ).fetchone()
        assert row is not None
        span_id = str(row[0])
        self._count("spans")
        child_probability = 0.75 if depth == 1 else 0.55
        children = 0
        while depth < 5 and children < 3 and rng.random() < child_probability:
            children += 1
            child_names = CHILD_OPERATIONS.get(op.category, CHILD_OPERATIONS["core"])
            child = next((o for o in self._catalog.operations
                          if o.name == rng.choice(child_names)), op)
            status = self._span_tree(conn, rng, session, child, branch, user, span_id, None,
                                     depth + 1)
            if status == "FAILED" and rng.random() < 0.5:
                self._end_span(conn, span_id, "FAILED", "XX000", "child span failed",
                               {"failed_child_depth": depth + 1})
                return "FAILED"
        time.sleep(rng.uniform(0.0005, 0.004))
        if rng.random() < 0.004:
            self._count("spans_left_running")
            return "RUNNING"
        if rng.random() < 0.06:
            code, message, context = rng.choice(ERRORS)
            self._end_span(conn, span_id, "FAILED", code, message, context)
            return "FAILED"
        self._end_span(conn, span_id, "SUCCESS", None, None, None)
        return "SUCCESS"

    def _end_span(self, conn: psycopg.Connection, span_id: str, status: str, code: str | None,
                  message: str | None, details: dict[str, Any] | None) -> None:
        conn.execute("SELECT pggit.end_performance_trace(%s, %s, %s, %s, %s)",
                     (span_id, status, message, code, Jsonb(details) if details else None))
        self._count("spans_ended")

    def _merge(self, conn: psycopg.Connection, rng: random.Random, session: _Session,
               pending: list[_PendingMerge]) -> None:
        """A three-way merge: spans and metrics per phase plus the merge_performance row."""
        source, target = rng.sample(self._catalog.branches, 2)
        user = rng.choice(USERS)
        by_name = {o.name: o for o in self._catalog.operations}

        def phase(name: str, fallback_us: float) -> int:
            op = by_name.get(name) or OperationType(name, "merge", fallback_us, 0.4)
            return self._duration_us(rng, op)

        base_us = phase("merge_base_find", 8000)
        detect_us = phase("merge_conflict_detect", 20000)
        conflicts = 0 if rng.random() < 0.55 else min(int(rng.expovariate(0.3)) + 1, 40)
        resolve_us = phase("merge_auto_resolve", 15000) if conflicts else None
        failures = sum(rng.random() < 0.15 for _ in range(conflicts))
        successes = conflicts - failures
        roll = rng.random()
        if roll < 0.03:
            status = "ABANDONED"
        elif roll < 0.08:
            status = "FAILED"
        elif failures:
            status = "PARTIAL_SUCCESS" if successes else "FAILED"
        else:
            status = "SUCCESS"
        total_us = base_us + detect_us + (resolve_us or 0) + rng.randint(200, 3000)

        root = conn.execute(
            "SELECT pggit.start_performance_trace(NULL, NULL, NULL, 'merge_branches', %s, %s,"
            " %s, %s, %s)",
            (f"merge {source[1]} -> {target[1]}", target[0], user, session.name,
             Jsonb({"merge": {"source": source[1], "target": target[1]}})),
        ).fetchone()
        assert root is not None
        self._count("spans")
        for name, us in (("merge_base_find", base_us), ("merge_conflict_detect", detect_us),
                         ("merge_auto_resolve", resolve_us)):
            if us is None:
                continue
            child = conn.execute(
                "SELECT pggit.start_performance_trace(NULL, NULL, %s, %s, %s, %s, %s, %s, %s)",
                (root[0], name, name, target[0], user, session.name,
                 Jsonb({"merge": {"phase": name, "conflicts": conflicts}})),
            ).fetchone()
            assert child is not None
            self._count("spans")
            time.sleep(min(us / 1e6, 0.003))
            child_failed = name == "merge_auto_resolve" and failures > 0
            self._end_span(conn, str(child[0]), "FAILED" if child_failed else "SUCCESS",
                           "P0001" if child_failed else None,
                           f"{failures} conflicts need manual resolution" if child_failed
                           else None,
                           {"unresolved": failures} if child_failed else None)
            args = self._metric_args(rng, by_name.get(name) or self._catalog.operations[0],
                                     session, target, us)
            args["op"] = name
            args["user"] = user
            self._count("alerts", self._alerts_for(conn, self._record_metric(conn, args)))
            self._count("metrics")
        failed = status in ("FAILED", "ABANDONED")
        self._end_span(conn, str(root[0]), "FAILED" if failed else "SUCCESS",
                       "P0001" if failed else None,
                       f"merge {status.lower()}" if failed else None,
                       {"conflicts": conflicts, "unresolved": failures} if failed else None)

        running = rng.random() < 0.1
        row = conn.execute(
            "SELECT pggit.record_merge_performance(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
            " %s, %s, %s, %s)",
            (source[0], target[0], status, base_us, detect_us, conflicts, resolve_us,
             successes, failures, total_us, f"{rng.getrandbits(256):064x}",
             Jsonb({"conflicts": {"total": conflicts, "auto_resolved": successes,
                                  "manual": failures},
                    "objects": {"tables": rng.randint(1, 20)}}),
             user, session.name, not running),
        ).fetchone()
        assert row is not None
        self._count("merges")
        if running and rng.random() > 0.05:
            # Most running merges finish a little later; a few never do (crashed client).
            pending.append(_PendingMerge(int(row[0]), time.monotonic() + rng.uniform(0.2, 2.0),
                                         status))
            pending.sort(key=lambda m: m.due)
        elif running:
            self._count("merges_left_running")

    def _complete_merge(self, conn: psycopg.Connection, merge: _PendingMerge) -> None:
        conn.execute("SELECT pggit.complete_merge_performance(%s, %s)",
                     (merge.merge_id, merge.status))
        self._count("merges_completed")

    def _odd_transaction(self, conn: psycopg.Connection, rng: random.Random,
                         session: _Session) -> None:
        """The cases that break naive readers: a transaction that stays open while others
        commit (ids and CURRENT_TIMESTAMP committed out of order) and one that rolls back
        (a hole in metric_id that is never filled)."""
        op = self._pick_operation(rng)
        rollback = rng.random() < 0.35
        with conn.transaction(force_rollback=rollback):
            metric_id = self._record_metric(conn, self._metric_args(rng, op, session))
            alerts = self._alerts_for(conn, metric_id)
            if not rollback:
                self._stop.wait(rng.uniform(0.3, 1.5))
        if rollback:
            self._count("metrics_rolled_back")
        else:
            self._count("metrics")
            self._count("alerts", alerts)
            self._count("slow_transactions")

    # -- maintenance ------------------------------------------------------------------------

    def _maintenance(self) -> None:
        rng = random.Random(f"{self.seed}:maintenance")
        session = _Session(self.dsn, "maintenance", self._stop,
                           lambda: self._count("reconnects"))
        cycle = 0
        try:
            while not self._stop.wait(self.maintenance_interval):
                cycle += 1
                self._maybe_slowdown(rng)
                self._run_step(session, lambda c: self._baselines(c, rng))
                self._run_step(session, lambda c: self._escalate(c))
                self._run_step(session, lambda c: self._acknowledge(c, rng))
                if not self.later_tables:
                    continue
                self._job(session, rng, "deliver_notifications",
                          lambda c: self._notifications(c, rng))
                self._job(session, rng, "detect_anomalies", lambda c: self._anomalies(c, rng))
                if cycle % 3 == 1:
                    self._job(session, rng, "analyze_correlations",
                              lambda c: self._correlations(c, rng))
                if cycle % 5 == 2:
                    self._job(session, rng, "recalculate_baselines",
                              lambda c: self._recalculate(c, rng))
                if cycle == 2 or rng.random() < 0.05:
                    self._run_step(session, lambda c: self._snooze(c, rng))
        finally:
            session.reset()

    def _maybe_slowdown(self, rng: random.Random) -> None:
        now = time.monotonic()
        if now < self._slowdown.until:
            return
        slowdown = next_slowdown(rng, self._catalog.operations, now, self.maintenance_interval,
                                 self.incidents_per_hour, self.slowdowns_per_hour)
        if slowdown is not None:
            self._slowdown = slowdown

    def _baselines(self, conn: psycopg.Connection, rng: random.Random) -> int:
        """New baselines for types without one plus a random few; rarely per branch."""
        missing = [r[0] for r in conn.execute(
            "SELECT t.operation_type FROM pggit.performance_operation_types t"
            " WHERE NOT EXISTS (SELECT 1 FROM pggit.performance_baselines b"
            "   WHERE b.operation_type = t.operation_type AND b.is_active)").fetchall()]
        names = [o.name for o in self._catalog.operations]
        todo = set(missing) | set(rng.sample(names, min(3, len(names))))
        created = 0
        for name in sorted(todo):
            branch = self._catalog.branches[0][0] if rng.random() < 0.15 else None
            multiplier = 2.0 if rng.random() < 0.85 else rng.choice([1.5, 3.0])
            row = conn.execute(
                "SELECT pggit.calculate_performance_baseline(%s, %s::integer, 7, %s::numeric)",
                (name, branch, multiplier)).fetchone()
            if row and row[0] is not None:
                created += 1
        self._count("baselines", created)
        return created

    def _escalate(self, conn: psycopg.Connection) -> None:
        row = conn.execute("SELECT pggit.check_alert_escalation()").fetchone()
        self._count("alerts_escalated", int(row[0]) if row and row[0] else 0)

    def _acknowledge(self, conn: psycopg.Connection, rng: random.Random) -> None:
        rows = conn.execute(
            "SELECT alert_id FROM pggit.performance_alerts"
            " WHERE NOT COALESCE(is_acknowledged, false)"
            " ORDER BY alert_id DESC LIMIT 20").fetchall()
        for (alert_id,) in rows:
            if rng.random() < 0.25:
                conn.execute("SELECT pggit.acknowledge_performance_alert(%s, %s, %s)",
                             (alert_id, rng.choice(USERS),
                              rng.choice([None, "known slow deploy", "investigating"])))
                self._count("alerts_acknowledged")

    def _job(self, session: _Session, rng: random.Random, name: str,
             work: Callable[[psycopg.Connection], int]) -> None:
        """A scheduled_job_execution row is committed RUNNING before the work and updated
        after it, like pg_cron-driven jobs; some fail, a very few never finish."""

        def step(conn: psycopg.Connection) -> None:
            row = conn.execute("SELECT pggit.start_scheduled_job(%s, %s, %s)",
                               (name, JOBS[name], Jsonb({"worker": "maintenance",
                                                         "seed": self.seed}))).fetchone()
            assert row is not None
            job_id = int(row[0])
            self._count("jobs")
            roll = rng.random()
            if roll < 0.003:
                self._count("jobs_left_running")
                return
            if roll < 0.05:
                conn.execute("SELECT pggit.finish_scheduled_job(%s, 'FAILED', NULL, %s)",
                             (job_id, "canceling statement due to statement timeout"))
                return
            if roll < 0.07:
                conn.execute("SELECT pggit.finish_scheduled_job(%s, 'SKIPPED', 0, %s)",
                             (job_id, "previous run still active"))
                return
            try:
                affected = work(conn)
            except psycopg.Error as exc:
                if not conn.broken:
                    conn.execute("SELECT pggit.finish_scheduled_job(%s, 'FAILED', NULL, %s)",
                                 (job_id, str(exc)[:500]))
                raise
            conn.execute("SELECT pggit.finish_scheduled_job(%s, 'SUCCESS', %s, NULL)",
                         (job_id, affected))

        self._run_step(session, step)

    def _notifications(self, conn: psycopg.Connection, rng: random.Random) -> int:
        """Queue new alerts to their channels, then attempt deliveries (some fail, some wait)."""
        webhooks: dict[str, list[int]] = {}
        for webhook_id, kind in conn.execute(
                "SELECT webhook_id, webhook_type FROM pggit.alert_notification_webhooks"
                " WHERE COALESCE(is_enabled, true)").fetchall():
            webhooks.setdefault(kind, []).append(int(webhook_id))
        alerts = conn.execute(
            "SELECT a.alert_id, COALESCE(a.severity, 'WARNING') FROM pggit.performance_alerts a"
            " WHERE NOT EXISTS (SELECT 1 FROM pggit.alert_notification_queue q"
            "   WHERE q.alert_id = a.alert_id)"
            "   AND a.created_at >= CURRENT_TIMESTAMP - interval '1 hour'"
            " ORDER BY a.alert_id LIMIT 50").fetchall()
        affected = 0
        for alert_id, severity in alerts:
            for kind in ROUTES.get(severity, ("slack",)):
                for webhook_id in webhooks.get(kind, []):
                    conn.execute("SELECT pggit.enqueue_alert_notification(%s, %s, %s)",
                                 (alert_id, webhook_id, "markdown" if kind == "mattermost"
                                  else "json"))
                    self._count("notifications_queued")
                    affected += 1
        due = conn.execute(
            "SELECT q.queue_id, w.webhook_type FROM pggit.alert_notification_queue q"
            " JOIN pggit.alert_notification_webhooks w USING (webhook_id)"
            " WHERE q.status IN ('pending', 'retrying') ORDER BY q.queue_id LIMIT 40").fetchall()
        for queue_id, kind in due:
            if rng.random() < 0.3:
                continue  # not picked up this round: stays pending, ages
            failure_rate = 0.4 if kind == "pagerduty" else 0.08
            ok = rng.random() >= failure_rate
            code = 200 if ok else rng.choice([500, 502, 429, None])
            conn.execute(
                "SELECT pggit.deliver_alert_notification(%s, %s, %s, %s, %s)",
                (queue_id, ok, int(rng.lognormvariate(math.log(120), 0.6)), code,
                 None if ok else ("timeout after 5000 ms" if code is None
                                  else f"HTTP {code} from {kind}")))
            self._count("notifications_delivered" if ok else "notifications_failed")
            affected += 1
        return affected

    def _anomalies(self, conn: psycopg.Connection, rng: random.Random) -> int:
        """z-score against the active baseline for recent metrics; slowdowns add degradation
        anomalies, so both detectors of seed 004 leave rows."""
        rows = conn.execute(
            "SELECT m.metric_id, m.operation_type,"
            "  (m.duration_microseconds - b.mean_microseconds)"
            "    / NULLIF(b.stddev_microseconds, 0) AS z,"
            "  (m.duration_microseconds - b.p99_microseconds) * 100.0"
            "    / NULLIF(b.p99_microseconds, 0) AS deviation"
            " FROM pggit.performance_metrics m"
            " CROSS JOIN LATERAL (SELECT * FROM pggit.performance_baselines b"
            "   WHERE b.operation_type = m.operation_type AND b.is_active"
            "   ORDER BY b.calculation_timestamp DESC LIMIT 1) b"
            " WHERE m.recorded_at >= CURRENT_TIMESTAMP - interval '10 seconds'"
            "   AND NOT EXISTS (SELECT 1 FROM pggit.performance_anomalies a"
            "     WHERE a.metric_id = m.metric_id)"
            " ORDER BY m.metric_id DESC LIMIT 500").fetchall()
        created = 0
        for metric_id, operation, z, deviation in rows:
            slow_factor = self._slowdown.factor_for(operation)
            outlier = z is not None and z > 3
            degraded = slow_factor > 1.0 and rng.random() < 0.1
            if not (outlier or degraded):
                continue
            kind = ("COMBINED" if outlier and degraded
                    else "STATISTICAL_OUTLIER" if outlier else "PERFORMANCE_DEGRADATION")
            z_value = float(z) if z is not None else 0.0
            severity = "CRITICAL" if z_value > 6 else "WARNING" if z_value > 4 else "INFO"
            conn.execute(
                "SELECT pggit.record_performance_anomaly(%s, %s, %s, %s::numeric, %s::numeric,"
                " %s::numeric, %s::numeric, %s::numeric, %s)",
                (metric_id, kind, severity, round(z_value, 3),
                 round(float(deviation), 2) if deviation is not None else None,
                 round((slow_factor - 1) * 100, 2) if degraded else None,
                 round(rng.uniform(0.5, 4.0), 3) if degraded else None,
                 round(min(0.99, 0.5 + z_value / 20), 2) if outlier else 0.6,
                 severity == "CRITICAL"),
            )
            created += 1
            if severity == "CRITICAL":
                self._count("alerts")  # the ANOMALY alert record_performance_anomaly raised
        self._count("anomalies", created)
        return created

    def _correlations(self, conn: psycopg.Connection, rng: random.Random) -> int:
        """Pearson correlation of per-second mean durations between busy operation types."""
        rows = conn.execute(
            "WITH b AS (SELECT operation_type, date_trunc('second', recorded_at) AS s,"
            "   avg(duration_microseconds) AS d FROM pggit.performance_metrics"
            "   WHERE recorded_at >= CURRENT_TIMESTAMP - interval '15 minutes'"
            "   GROUP BY 1, 2)"
            " SELECT x.operation_type, y.operation_type, corr(x.d, y.d), count(*)"
            " FROM b x JOIN b y ON x.s = y.s AND x.operation_type < y.operation_type"
            " GROUP BY 1, 2 HAVING count(*) >= 4 ORDER BY count(*) DESC LIMIT 60").fetchall()
        stored = 0
        for first, second, coefficient, pairs in rows:
            if coefficient is None or (abs(coefficient) < 0.3 and rng.random() > 0.1):
                continue
            value = max(-1.0, min(1.0, round(float(coefficient), 2)))
            strong = abs(value) >= 0.75
            conn.execute(
                "SELECT pggit.store_correlation_analysis(%s, %s, %s::numeric, %s::numeric, %s, %s,"
                " %s, %s, %s)",
                (first, second, value, round(min(1.0, pairs / 60), 2),
                 rng.choice(BOTTLENECKS) if strong else None, pairs,
                 f"Investigate {first} and {second} together" if strong else None,
                 "CRITICAL" if abs(value) >= 0.9 else "WARNING" if strong else "INFO", 24))
            stored += 1
        self._count("correlations", stored)
        return stored

    def _recalculate(self, conn: psycopg.Connection, rng: random.Random) -> int:
        rows = conn.execute(
            "SELECT count(*) FROM pggit.recalculate_all_baselines_rolling(7, 10, %s, %s)",
            (rng.random() < 0.3, "scheduled")).fetchone()
        self._count("recalculations")
        changed = int(rows[0]) if rows else 0
        self._count("baselines", changed)
        return changed

    def _snooze(self, conn: psycopg.Connection, rng: random.Random) -> None:
        op = self._pick_operation(rng)
        conn.execute(
            "SELECT pggit.snooze_alerts(%s, %s, %s::interval, %s, %s)",
            (op.name, rng.choice(["THRESHOLD_EXCEEDED", "ANOMALY", "DEGRADATION"]),
             f"{rng.choice([5, 15, 60, 240])} minutes",
             rng.choice(["noisy during deploy", "known regression, ticket open", None]),
             rng.choice(USERS)))
        self._count("snoozes")
