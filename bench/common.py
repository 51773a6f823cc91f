"""Shared pieces of the benchmarks: a server, databases of N pgGit rows, timing and results.

Every benchmark needs a `performance_metrics` table of a given size that looks deployed: the
DDL from `exporter/demo/sql` with all its indexes, CHECK and FOREIGN KEY constraints, rows with
realistic operation types, branches and log-normal durations, a few baselines and some id holes
(rolled-back inserts). Writing 10M such rows through the indexes row by row takes many minutes,
so `generate` does what a bulk load does: drop the indexes and the keys, one INSERT ... SELECT
over generate_series, then rebuild them and check that the table's definition is the same as
before. Databases are named by size and reused while they still hold what was generated.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg import sql

from exporter import config
from exporter.demo.embedded import EmbeddedPostgres, find_bin_dir, free_port
from exporter.demo.schema import install_schema
from tests.prom_processes import ServedProcess

RESULTS_DIR = Path(__file__).resolve().parent / "results"
EXPORTER_ROLE = "bench_exporter"
EXPORTER_PASSWORD = "bench-exporter-pw"
PASSWORD_ENV = "PGGIT_BENCH_EXPORTER_PASSWORD"
os.environ.setdefault(PASSWORD_ENV, EXPORTER_PASSWORD)
HOLE_EVERY = 1009
"""Every id divisible by this is missing, as if its insert had rolled back."""
EXTRA_BRANCHES = 12
"""On top of the 8 seed branches: 20 branches x 33 operation types = 660 label sets at most."""
BASELINE_OPS = 10
"""Operation types given baselines (three calculations each, the newest active)."""

SERVER_SETTINGS: dict[str, str | int | float | bool] = {
    # A modest production-like server; only max_wal_size is raised, so the bulk load does not
    # checkpoint every few seconds (it changes nothing a poll does).
    "shared_buffers": "512MB",
    "maintenance_work_mem": "1GB",
    "max_wal_size": "8GB",
    "max_parallel_maintenance_workers": 0,
}


# -- the server -------------------------------------------------------------------------------

def _pkglibdir(bin_dir: Path) -> Path | None:
    pg_config = bin_dir / "pg_config"
    if not pg_config.exists():
        return None
    out = subprocess.run([str(pg_config), "--pkglibdir"], capture_output=True, text=True,
                         check=False)
    return Path(out.stdout.strip()) if out.returncode == 0 else None


def pick_bin_dir() -> tuple[Path, bool]:
    """PostgreSQL binaries to use, and whether they can load pg_stat_statements.

    pgserver's bundled server (what the tests use) comes without contrib; a machine
    PostgreSQL with contrib gives server-side statement times, which is what a poll's database
    cost should be measured with. `PGGIT_BENCH_PG_BIN` forces a choice.
    """
    forced = os.environ.get("PGGIT_BENCH_PG_BIN")
    candidates = [Path(forced)] if forced else [find_bin_dir(), *sorted(
        Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)]
    for bin_dir in candidates:
        lib = _pkglibdir(bin_dir)
        if lib is not None and (lib / "pg_stat_statements.so").exists():
            return bin_dir, True
    return candidates[0], False


class BenchServer:
    """One EmbeddedPostgres for a whole run; `data_dir` given means kept and reused."""

    def __init__(self, data_dir: Path | None = None):
        self.bin_dir, self.has_pgss = pick_bin_dir()
        settings = dict(SERVER_SETTINGS)
        if self.has_pgss:
            settings.update({"shared_preload_libraries": "pg_stat_statements",
                             "pg_stat_statements.track_planning": True,
                             "pg_stat_statements.max": 10000})
        self.pg = EmbeddedPostgres(data_dir, settings=settings)
        self.pg.bin_dir = self.bin_dir
        self.pg.start()
        with psycopg.connect(self.pg.dsn(), autocommit=True) as conn:
            self.version = conn.execute("SHOW server_version").fetchone()[0]
            if self.has_pgss:
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")

    def close(self) -> None:
        self.pg.close()

    def __enter__(self) -> BenchServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def superuser_dsn(self, dbname: str) -> str:
        return self.pg.dsn(dbname=dbname)

    def exporter_dsn(self, dbname: str) -> str:
        """The exporter connects as a SELECT-only role, as documented for deployments; the
        password comes from the environment (`PASSWORD_ENV`), never from the DSN."""
        return self.pg.dsn(dbname=dbname, user=EXPORTER_ROLE)

    def exporter_connect(self, dbname: str) -> psycopg.Connection:
        return psycopg.connect(self.exporter_dsn(dbname), password=EXPORTER_PASSWORD)


def _exit_on_term(signum: int, frame: object) -> None:
    sys.exit(128 + signum)


@contextlib.contextmanager
def server_from_args(args: argparse.Namespace) -> Iterator[BenchServer]:
    """The server for a command-line run; SIGTERM also stops it (a background job ignores
    SIGINT, and a kept data directory must not be left with a server running on it)."""
    signal.signal(signal.SIGTERM, _exit_on_term)
    server = BenchServer(Path(args.data_dir) if args.data_dir else None)
    try:
        yield server
    finally:
        server.close()


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="keep the server's data here and reuse the "
                        "generated databases next time (several GB at 10M rows)")
    parser.add_argument("--out", help="also write this benchmark's result as JSON here")


# -- generating pgGit rows ----------------------------------------------------------------------

_SETUP = """
INSERT INTO pggit.branches (branch_name, parent_branch_id, status, branch_type, created_by)
SELECT 'feature/bench-' || i, 2, 'ACTIVE', 'schema-only', 'bench'
FROM generate_series(1, %(extra)s) i
ON CONFLICT (branch_name) DO NOTHING;
"""

# Rows of performance_metrics computed from a series `g(i)`. Each row draws a skewed operation
# type (a few dominate, as in real use), a log-normal factor around the type's typical
# duration with rare 50x outliers, a branch (mostly main and develop, 5% NULL) and 1% errors.
# OFFSET 0 keeps the drawn values in one subquery evaluation, so duration_ms is derived from
# the same duration_microseconds the CHECK constraint compares it with.
_ROWS = """
WITH t AS (
    SELECT array_agg(operation_type ORDER BY operation_type_id) AS ops,
           array_agg(typical_duration_ms ORDER BY operation_type_id) AS med
    FROM pggit.performance_operation_types
), b AS (
    SELECT array_agg(branch_id ORDER BY branch_id) AS ids, count(*) AS n FROM pggit.branches
)
SELECT {id_value} d.op, d.op, d.us, d.us / 1000.0,
       d.at - make_interval(secs => d.us / 1e6), d.at, d.branch_id,
       'user' || (d.i % 17), 'sess-' || (d.i / 40), d.rows, d.us * 40, (d.us * 0.6)::bigint,
       CASE WHEN d.failed THEN '{{"error": "bench failure"}}'::jsonb END, d.at,
       date_trunc('hour', d.at)
FROM (
    SELECT g.i, t.ops[g.k] AS op,
           greatest(1, least(600000000, (t.med[g.k] * 1000 * g.f)::bigint)) AS us,
           {time_value} AS at,
           CASE WHEN g.u3 < 0.05 THEN NULL
                ELSE b.ids[1 + floor(g.u3 ^ 2 * b.n)::int] END AS branch_id,
           (g.u4 * 100)::int AS rows, g.u4 < 0.01 AS failed
    FROM t, b, (
        SELECT s.i,
               1 + floor(random() ^ 3 * (SELECT count(*)
                                         FROM pggit.performance_operation_types))::int AS k,
               exp(sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()) * 0.7)
                 * CASE WHEN random() < 0.001 THEN 50 ELSE 1 END AS f,
               random() AS u3, random() AS u4
        FROM {series} AS s(i)
        {where}
        OFFSET 0
    ) g
    OFFSET 0
) d
"""

_COLUMNS = ("operation_type, operation_name, duration_microseconds, duration_ms, start_time, "
            "end_time, branch_id, user_name, session_id, rows_affected, memory_bytes, "
            "cpu_microseconds, error_details, recorded_at, period_start")


def bulk_insert_sql(lo: int, hi: int, total: int, days: float = 30.0) -> str:
    """INSERT of ids lo..hi (minus holes), spread evenly over the last `days` days."""
    return (f"INSERT INTO pggit.performance_metrics (metric_id, {_COLUMNS}) " + _ROWS.format(
        id_value="d.i,", series=f"generate_series({lo}, {hi})",
        time_value=(f"localtimestamp - interval '{days} days' "
                    f"+ g.i * interval '{days * 86400 / total} seconds'"),
        where=f"WHERE s.i % {HOLE_EVERY} <> 0"))


def live_insert_sql(n: int) -> str:
    """INSERT of `n` new rows through the serial, as pgGit's writer functions would do."""
    return f"INSERT INTO pggit.performance_metrics ({_COLUMNS}) " + _ROWS.format(
        id_value="", series=f"generate_series(1, {n})", time_value="localtimestamp",
        where="")


_BASELINES = """
INSERT INTO pggit.performance_baselines
    (operation_type, branch_id, baseline_date, calculation_timestamp, sample_count,
     min_microseconds, max_microseconds, p50_microseconds, p75_microseconds, p90_microseconds,
     p95_microseconds, p99_microseconds, mean_microseconds, stddev_microseconds,
     alert_threshold_multiplier, is_active)
SELECT o.operation_type, NULL, (localtimestamp - d.ago)::date, localtimestamp - d.ago, 1000,
       m * 50, m * 30000, m * 1000, m * 1600, m * 2450, m * 3150, m * 5100, m * 1280, m * 900,
       2.0, d.ago = interval '1 day'
FROM (SELECT operation_type, typical_duration_ms::numeric AS m
      FROM pggit.performance_operation_types ORDER BY operation_type_id LIMIT %(n)s) o,
     (VALUES (interval '20 days'), (interval '10 days'), (interval '1 day')) d(ago)
"""


def _definition(conn: psycopg.Connection) -> list[str]:
    """Index and constraint definitions of performance_metrics, to prove the rebuild exact."""
    rows = conn.execute(
        """SELECT indexdef FROM pg_indexes
           WHERE schemaname = 'pggit' AND tablename = 'performance_metrics'
           UNION ALL
           SELECT conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
           FROM pg_constraint
           WHERE 'pggit.performance_metrics'::regclass IN (conrelid, confrelid)""").fetchall()
    return sorted(r[0] for r in rows)


def _parallel(dsn: str, statements: Sequence[str]) -> None:
    """Run statements on two connections at once (the machine has two cores)."""
    errors: list[BaseException] = []
    queue = list(statements)
    lock = threading.Lock()

    def worker() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            while True:
                with lock:
                    if not queue or errors:
                        return
                    stmt = queue.pop(0)
                try:
                    conn.execute(stmt)
                except BaseException as exc:
                    errors.append(exc)
                    return

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


@dataclass
class Generated:
    dbname: str
    rows: int
    max_id: int
    seconds: float | None
    reused: bool
    steps: dict[str, float] = field(default_factory=dict)


def database_for(server: BenchServer, rows: int, log: Callable[[str], None] = print
                 ) -> Generated:
    """A database holding `rows` metric rows (ids 1..max_id minus holes), made if missing."""
    dbname = f"bench_{rows}"
    with psycopg.connect(server.superuser_dsn("postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                              (dbname,)).fetchone()
        conn.execute(
            sql.SQL("""DO $$BEGIN
                         IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {r}) THEN
                           CREATE ROLE {i} LOGIN PASSWORD {p};
                         END IF;
                       END$$""").format(r=sql.Literal(EXPORTER_ROLE),
                                        i=sql.Identifier(EXPORTER_ROLE),
                                        p=sql.Literal(EXPORTER_PASSWORD)))
    if exists:
        with psycopg.connect(server.superuser_dsn(dbname)) as conn:
            meta = conn.execute("SELECT obj_description('pggit.performance_metrics'::regclass)"
                                ).fetchone()[0]
        if meta and json.loads(meta).get("bench_rows") == rows:
            data = json.loads(meta)
            log(f"reusing {dbname} ({rows} rows)")
            return Generated(dbname, rows, data["max_id"], None, True)
        with psycopg.connect(server.superuser_dsn("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(dbname)))
    server.pg.create_database(dbname)
    dsn = server.superuser_dsn(dbname)
    install_schema(dsn)
    # ids 1..max_id with every HOLE_EVERY-th missing hold exactly `rows` rows.
    max_id = rows + (rows - 1) // (HOLE_EVERY - 1)
    steps: dict[str, float] = {}
    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(_SETUP, {"extra": EXTRA_BRANCHES})
        conn.execute(_BASELINES, {"n": BASELINE_OPS})
        before = _definition(conn)
        indexes = [r[0] for r in conn.execute(
            """SELECT indexdef FROM pg_indexes i
               WHERE schemaname = 'pggit' AND tablename = 'performance_metrics'
                 AND NOT EXISTS (SELECT FROM pg_constraint c
                                 WHERE c.conname = i.indexname)""")]
        names = [r[0] for r in conn.execute(
            """SELECT indexname FROM pg_indexes i
               WHERE schemaname = 'pggit' AND tablename = 'performance_metrics'
                 AND NOT EXISTS (SELECT FROM pg_constraint c
                                 WHERE c.conname = i.indexname)""")]
        # Foreign keys into and out of the table (alerts and anomalies reference metric_id).
        fks = conn.execute(
            """SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
               FROM pg_constraint WHERE contype = 'f'
                 AND 'pggit.performance_metrics'::regclass IN (conrelid, confrelid)""").fetchall()
        for table, name, _ in fks:
            conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                sql.SQL(table), sql.Identifier(name)))
        conn.execute("ALTER TABLE pggit.performance_metrics "
                     "DROP CONSTRAINT performance_metrics_pkey")
        for name in names:
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier("pggit", name)))
        steps["prepare"] = time.perf_counter() - started
        t = time.perf_counter()
        half = max_id // 2
        _parallel(dsn, [bulk_insert_sql(1, half, max_id),
                        bulk_insert_sql(half + 1, max_id, max_id)])
        steps["insert"] = time.perf_counter() - t
        t = time.perf_counter()
        # The key's index is built like the others, so the builds can share the two cores;
        # ADD CONSTRAINT ... USING INDEX then only takes it over.
        _parallel(dsn, ["CREATE UNIQUE INDEX performance_metrics_pkey "
                        "ON pggit.performance_metrics (metric_id)", *indexes])
        conn.execute("ALTER TABLE pggit.performance_metrics ADD CONSTRAINT "
                     "performance_metrics_pkey PRIMARY KEY USING INDEX performance_metrics_pkey")
        steps["indexes"] = time.perf_counter() - t
        t = time.perf_counter()
        for table, name, definition in fks:
            conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                sql.SQL(table), sql.Identifier(name), sql.SQL(definition)))
        conn.execute("SELECT setval('pggit.performance_metrics_metric_id_seq', %s)", (max_id,))
        steps["foreign_key"] = time.perf_counter() - t
        after = _definition(conn)
        if before != after:
            raise RuntimeError(f"rebuilt table differs from the deployed DDL:\n{before}\n{after}")
        t = time.perf_counter()
        # A table that has been in use for weeks has been vacuumed and analysed.
        conn.execute("VACUUM (ANALYZE) pggit.performance_metrics")
        steps["vacuum_analyze"] = time.perf_counter() - t
        count = conn.execute("SELECT count(*) FROM pggit.performance_metrics").fetchone()[0]
        if count != rows:
            raise RuntimeError(f"generated {count} rows, wanted {rows}")
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA pggit TO {r}; "
                             "GRANT SELECT ON ALL TABLES IN SCHEMA pggit TO {r}").format(
                                 r=sql.Identifier(EXPORTER_ROLE)))
        conn.execute(sql.SQL("COMMENT ON TABLE pggit.performance_metrics IS {}").format(
            sql.Literal(json.dumps({"bench_rows": rows, "max_id": max_id}))))
    seconds = time.perf_counter() - started
    log(f"generated {dbname}: {rows} rows in {seconds:.1f} s "
        + ", ".join(f"{k} {v:.1f} s" for k, v in steps.items()))
    return Generated(dbname, rows, max_id, seconds, False, steps)


# -- exporter configuration -------------------------------------------------------------------

def exporter_config(dsn: str, state_dir: Path, **overrides: Any) -> config.Config:
    """A parsed configuration for one database `main`, as the CLI would build it."""
    data: dict[str, Any] = {"listen": "127.0.0.1:0", "state_dir": str(state_dir),
                            "poll_interval": "1s",
                            "databases": [{"name": "main", "dsn": dsn,
                                           "password_env": PASSWORD_ENV}]}
    data.update(overrides)
    problems: list[str] = []
    cfg = config.parse(data, problems)
    if problems:
        raise config.ConfigError(problems)
    return cfg


class LiveWriter:
    """Inserts `rate` rows per second in small transactions until stopped."""

    def __init__(self, dsn: str, rate: float, batch: int = 10):
        self.dsn = dsn
        self.interval = batch / rate
        self.batch = batch
        self.rows = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-writer", daemon=True)

    def _run(self) -> None:
        query = live_insert_sql(self.batch)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self._stop.wait(self.interval):
                conn.execute(query)
                self.rows += self.batch

    def __enter__(self) -> LiveWriter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- the exporter as a process -----------------------------------------------------------------

class ExporterProcess(ServedProcess):
    """`python -m exporter run --config FILE` as a child, as it runs in production.

    `tree` runs another revision's package (see `bench.bench_traces.export_tree`): `-m` puts
    the working directory first on the module path, ahead of the installed one. `resume`
    keeps the state a previous process left in `workdir`, so this one resumes from its
    checkpoint instead of starting first.
    """

    def __init__(self, dsn: str, workdir: Path, tree: Path | None = None, resume: bool = False,
                 **overrides: Any):
        self.workdir = workdir if resume and workdir.is_dir() else fresh_dir(workdir)
        port = free_port()
        data: dict[str, Any] = {
            "listen": f"127.0.0.1:{port}", "state_dir": str(self.workdir / "state"),
            "poll_interval": "1s", "log_format": "json",
            "databases": [{"name": "main", "dsn": dsn, "password_env": PASSWORD_ENV}]}
        data.update(overrides)
        self.config_path = self.workdir / "pggit-exporter.yml"
        self.config_path.write_text(yaml.safe_dump(data), encoding="utf-8")
        super().__init__(
            [sys.executable, "-m", "exporter", "run", "--config", str(self.config_path)],
            port, self.workdir / "exporter.log", "/readyz", cwd=tree)

    def get(self, path: str, timeout: float = 30.0) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def wait_ready(self, timeout: float = 600.0, interval: float = 0.05) -> float:
        """Seconds from process start until /readyz says up and caught up."""
        super().wait_ready(timeout, interval)
        return time.perf_counter() - self.started

    def memory_kb(self) -> dict[str, int]:
        """VmRSS (now) and VmHWM (peak resident) from /proc."""
        out = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key = line.split(":", 1)[0]
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(line.split()[1])
        return out


# -- server-side statement times (pg_stat_statements) -------------------------------------------

class StatementTimes:
    """Server-side time of the exporter role's statements in one database.

    `total_ms` covers execution and planning (track_planning is on), so it is the database's
    own cost of what the exporter asked, free of network and client time.
    """

    def __init__(self, server: BenchServer, dbname: str):
        self.server = server
        self.dbname = dbname
        self.conn = psycopg.connect(server.superuser_dsn(dbname), autocommit=True)
        self.conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        self.ids = self.conn.execute(
            "SELECT (SELECT oid FROM pg_roles WHERE rolname = %s),"
            " (SELECT oid FROM pg_database WHERE datname = %s)",
            (EXPORTER_ROLE, dbname)).fetchone()

    def reset(self) -> None:
        self.conn.execute("SELECT pg_stat_statements_reset(%s::oid, %s::oid, 0::bigint)", self.ids)

    def total_ms(self) -> float:
        row = self.conn.execute(
            "SELECT coalesce(sum(total_exec_time + total_plan_time), 0) FROM pg_stat_statements"
            " WHERE userid = %s::oid AND dbid = %s::oid", self.ids).fetchone()
        return float(row[0])

    def by_statement(self, limit: int = 12) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT calls, total_exec_time + total_plan_time, rows, query FROM pg_stat_statements"
            " WHERE userid = %s::oid AND dbid = %s::oid ORDER BY 2 DESC LIMIT %s",
            (*self.ids, limit)).fetchall()
        return [{"calls": c, "total_ms": round(t, 3), "rows": r,
                 "query": " ".join(q.split())[:300]} for c, t, r, q in rows]

    def close(self) -> None:
        self.conn.close()


# -- measuring and reporting --------------------------------------------------------------------

def summarize(samples: Sequence[float]) -> dict[str, float]:
    """Distribution of timings (whatever unit they are in)."""
    ordered = sorted(samples)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]

    return {"n": len(ordered), "min": ordered[0], "median": statistics.median(ordered),
            "mean": statistics.fmean(ordered), "p90": pct(90), "p99": pct(99),
            "max": ordered[-1]}


def best_of(fn: Callable[[], Any], repeat: int) -> tuple[float, list[float]]:
    """Minimum and all wall times of `fn` over `repeat` runs (the minimum is the least noisy
    estimate on a shared machine)."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times), times


def machine_info(server: BenchServer | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "mem_total_mb": _meminfo_mb("MemTotal"),
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
    }
    if server is not None:
        info["postgresql"] = server.version
        info["postgresql_bin"] = str(server.bin_dir)
        info["pg_stat_statements"] = server.has_pgss
        info["server_settings"] = {k: str(v) for k, v in SERVER_SETTINGS.items()}
    with contextlib.suppress(Exception):
        import prometheus_client

        info["prometheus_client"] = prometheus_client.__version__ if hasattr(
            prometheus_client, "__version__") else _dist_version("prometheus-client")
    info["psycopg"] = psycopg.__version__
    return info


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def _meminfo_mb(key: str) -> int | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) // 1024
    return None


def write_result(args: argparse.Namespace, name: str, result: dict[str, Any]) -> None:
    """Print the result; write it to --out when given."""
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if getattr(args, "out", None):
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n", encoding="utf-8")


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path
