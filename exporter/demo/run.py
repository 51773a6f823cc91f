"""`pggit-exporter demo`: a throwaway pgGit database with a live workload, exported.

It is the first command of the README, so it must work on a bare machine (PostgreSQL comes
from the pgserver wheel), say clearly where to look, and leave nothing behind on Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
from pathlib import Path

import psycopg

from exporter import config, logs
from exporter.cli import serve
from exporter.demo.embedded import EmbeddedPostgres, EmbeddedPostgresError
from exporter.demo.schema import install_schema
from exporter.demo.workload import Workload
from exporter.service import Service

log = logging.getLogger("exporter.demo")


def _ensure_schema(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        present = conn.execute(
            "SELECT to_regclass('pggit.performance_metrics') IS NOT NULL").fetchone()[0]
    if not present:
        install_schema(dsn)
        log.info("pgGit schema installed", extra={"database": dsn_label(dsn)})


def dsn_label(dsn: str) -> str:
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    return f"{params.get('host', 'localhost')}:{params.get('port', 5432)}/{params.get('dbname')}"


def run_demo(args: argparse.Namespace) -> int:
    logs.setup("logfmt", "info")
    scratch = Path(tempfile.mkdtemp(prefix="pggit-demo-"))
    server: EmbeddedPostgres | None = None
    workload: Workload | None = None
    try:
        if args.dsn:
            dsn = args.dsn
        else:
            try:
                server = EmbeddedPostgres()
                server.start()
            except EmbeddedPostgresError as exc:
                print(f"pggit-exporter demo: {exc}", file=sys.stderr)
                return 1
            dsn = server.create_database("pggit")
        _ensure_schema(dsn)
        data = {
            "listen": args.listen,
            "state_dir": str(args.state_dir or scratch / "state"),
            "poll_interval": "1s",
            "gauge_interval": "5s",
            "databases": [{"name": "demo", "dsn": dsn}],
        }
        if args.otlp_endpoint:
            data["traces"] = {"endpoint": args.otlp_endpoint}
        problems: list[str] = []
        cfg = config.parse(data, problems, dsn_from_env=True)
        if problems:
            for problem in problems:
                print(problem, file=sys.stderr)
            return 2
        workload = Workload(dsn, ops_per_second=args.ops_per_second)
        workload.start()
        service = Service(cfg)
        host, port = cfg.listen_address
        print(f"pggit-exporter demo: workload running on {dsn_label(dsn)}\n"
              f"  metrics:  http://{host}:{port}/metrics\n"
              f"  status:   http://{host}:{port}/\n"
              f"Ctrl-C stops it and removes the demo database.", file=sys.stderr, flush=True)
        return serve(service, args.duration)
    finally:
        if workload is not None:
            workload.stop()
        if server is not None:
            server.close()
        shutil.rmtree(scratch, ignore_errors=True)
