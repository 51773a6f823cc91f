"""The `pggit-exporter` command: run (the default), check-config, healthcheck, demo, render."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from exporter import __version__, config, gc_tuning, logs

log = logging.getLogger("exporter.cli")

EXIT_CONFIG = 2


def _add_config_arg(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--config", "-c", type=Path, required=required, metavar="FILE",
                   help="YAML configuration file (see config/pggit-exporter.yml); "
                        "PGGIT_EXPORTER_* environment variables override it")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="pggit-exporter",
        description="Serve pgGit's performance tables as Prometheus metrics and OTLP spans.")
    top.add_argument("--version", action="version", version=f"pggit-exporter {__version__}")
    sub = top.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="run the exporter (the default command)")
    _add_config_arg(run)
    check = sub.add_parser("check-config",
                           help="validate the configuration; exit 0, or 2 listing each problem")
    _add_config_arg(check)
    health = sub.add_parser(
        "healthcheck", help="probe the running exporter over the TLS, auth and port its "
                            "config says; exit 0 healthy, 1 unhealthy, 2 bad config")
    _add_config_arg(health)
    from exporter import healthcheck
    healthcheck.configure_parser(health)
    demo = sub.add_parser(
        "demo", help="start a throwaway pgGit database with a live workload and export it")
    demo.add_argument("--dsn", help="run the workload against this existing database instead "
                                    "(its pggit schema is created if missing)")
    demo.add_argument("--listen", default="127.0.0.1:9863", help="host:port for /metrics")
    demo.add_argument("--state-dir", type=Path,
                      help="state directory (default: a temporary one, removed at exit)")
    demo.add_argument("--ops-per-second", type=float, default=50.0,
                      help="workload rate across all writer threads")
    demo.add_argument("--duration", type=float,
                      help="stop after this many seconds (default: until Ctrl-C)")
    demo.add_argument("--otlp-endpoint", help="also send the demo's spans to this OTLP endpoint")
    try:
        from exporter import render
    except ImportError:
        render = None
    if render is not None:
        r = sub.add_parser(
            "render", help="write Prometheus rules and the Alertmanager config "
                           "from a parameter file",
            description="Write prometheus/rules/pggit-recording.yml, "
                        "prometheus/rules/pggit-alerts.yml and alertmanager/alertmanager.yml "
                        "from a YAML file of parameters (thresholds, windows, label selectors, "
                        "job, runbook base URL, receivers). With --check, write nothing and "
                        "exit 1 if a file differs.")
        render.configure_parser(r)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    command = args.command or "run"
    if command == "check-config":
        return check_config(args.config)
    if command == "healthcheck":
        from exporter import healthcheck
        cfg = load_or_report(args.config)
        return healthcheck.EXIT_CONFIG if cfg is None else healthcheck.run(cfg, args)
    if command == "demo":
        from exporter.demo.run import run_demo
        return run_demo(args)
    if command == "render":
        from exporter import render
        return render.run(args)
    return run(getattr(args, "config", None))


def load_or_report(path: Path | None) -> config.Config | None:
    try:
        cfg = config.load(path)
        if cfg.web_config_file is not None:
            from exporter.expose import web_config
            web_config.load(cfg.web_config_file)
        return cfg
    except config.ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


def check_config(path: Path | None) -> int:
    cfg = load_or_report(path)
    if cfg is None:
        return EXIT_CONFIG
    print(f"configuration OK: {len(cfg.databases)} database(s), listen {cfg.listen}")
    if cfg.shard is not None:
        names = ", ".join(db.name for db in cfg.owned_databases) or "none"
        print(f"shard {cfg.shard.index} of 0..{cfg.shard.total - 1} reads: {names}")
    return 0


def run(path: Path | None) -> int:
    cfg = load_or_report(path)
    if cfg is None:
        return EXIT_CONFIG
    logs.setup(cfg.log_format, cfg.log_level)
    from exporter.service import Service
    try:
        service = Service(cfg, path, reloadable=True)
    except OSError as exc:
        log.error("cannot start", extra={"error": str(exc), "listen": cfg.listen})
        return 1
    return serve(service)


def serve(service: Any, duration: float | None = None) -> int:
    """Run until SIGINT/SIGTERM (or `duration`), reloading on SIGHUP; then stop everything.

    The handlers only set flags: a reload stops and starts threads, which is no work for a
    signal handler interrupting arbitrary code.
    """
    stop, hangup, wake = threading.Event(), threading.Event(), threading.Event()
    deadline = None if duration is None else time.monotonic() + duration

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal received, stopping", extra={"signal": signal.Signals(signum).name})
        stop.set()
        wake.set()

    def on_hangup(_signum: int, _frame: object) -> None:
        hangup.set()
        wake.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_hangup)
    service.start()
    gc_tuning.tune()
    try:
        while True:
            wake.wait(0.2)
            wake.clear()
            if hangup.is_set() and not stop.is_set():
                hangup.clear()
                log.info("signal received, reloading", extra={"signal": "SIGHUP"})
                service.reloader.reload()
            if stop.is_set():
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
    finally:
        service.stop()
    return 0
