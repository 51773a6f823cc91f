"""Reload: SIGHUP and `POST /-/reload` put an edited configuration in force without a restart.

The new configuration and web config are checked completely before anything changes, with
the same one-line-per-problem messages as `check-config`; a bad one changes nothing. A good
one restarts only what it changed: a database whose settings (or whose shared settings)
changed is stopped, which checkpoints it, and started again from that checkpoint, so no
count is lost or doubled; untouched databases keep polling. As in Prometheus and
Alertmanager, `pggit_exporter_config_last_reload_successful` says whether the file on disk
is the one in force.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from exporter import config, logs
from exporter.checkpoint import CheckpointError
from exporter.config import Config, ConfigError
from exporter.expose import web_config
from exporter.expose.families import Part, Series
from exporter.expose.self_metrics import SelfMetrics
from exporter.poller import DatabasePoller
from exporter.spans import SpanSource

if TYPE_CHECKING:
    from exporter.service import Service

log = logging.getLogger("exporter.reload")

NEEDS_RESTART = ("listen", "state_dir")
"""Settings a running process cannot change: the bound socket and where state lives."""

PER_PROCESS = ("databases", "web_config_file", "log_format", "log_level", "web_max_connections",
               "web_read_timeout", "web_idle_timeout", "web_tls_handshake_timeout")
"""Settings applied without touching the databases; any other change restarts them all."""


class Reloader:
    def __init__(self, service: Service, path: Path | None, enabled: bool = True):
        self.service = service
        self.path = path
        self.enabled = enabled
        self._lock = threading.Lock()
        self._config_ok = True
        self._web_ok = True
        self._success_at = time.time()

    def web_result(self, ok: bool) -> None:
        """The web config watcher re-read a changed file; `ok` is whether it is in force."""
        self._web_ok = ok
        if ok and self._config_ok:
            self._success_at = time.time()
        self.service.exposition.changed()

    def collect(self) -> Iterator[Part]:
        ok = self._config_ok and self._web_ok
        yield Series("pggit_exporter_config_last_reload_successful", {(): float(ok)})
        yield Series("pggit_exporter_config_last_reload_success_timestamp_seconds",
                     {(): self._success_at})

    def reload(self) -> list[str]:
        """Apply the files on disk; the problems found, or [] when they are in force."""
        if not self.enabled:
            problem = "reload: this process was not started from a configuration; restart it"
            log.error("reload rejected", extra={"problem": problem})
            return [problem]
        with self._lock:
            try:
                cfg = config.load(self.path)
                web = (web_config.load(cfg.web_config_file) if cfg.web_config_file
                       else web_config.WebConfig())
                cfg = self._keep_restart_only(cfg)
                changed = self._changed_databases(cfg)
            except ConfigError as exc:
                for problem in exc.problems:
                    log.error("reload rejected; the running configuration stays",
                              extra={"problem": problem})
                self._config_ok = False
                self.service.exposition.changed()
                return exc.problems
            self._apply(cfg, web, changed)
            self._config_ok = self._web_ok = True
            self._success_at = time.time()
            self.service.exposition.changed()
            log.info("configuration reloaded",
                     extra={"databases": ",".join(d.name for d in cfg.owned_databases),
                            "restarted": ",".join(changed) or "-"})
            return []

    def _keep_restart_only(self, cfg: Config) -> Config:
        running = self.service.cfg
        for key in NEEDS_RESTART:
            if getattr(cfg, key) != getattr(running, key):
                log.warning("setting changed; it takes effect at the next restart",
                            extra={"key": key, "running": str(getattr(running, key)),
                                   "configured": str(getattr(cfg, key))})
                cfg = cfg.model_copy(update={key: getattr(running, key)})
        return cfg

    def _changed_databases(self, cfg: Config) -> list[str]:
        """Names of databases to (re)start, after checking each can resume its state.

        A changed bucket layout, for one, cannot continue an existing checkpoint: that is
        found here, before anything stops, and rejects the whole reload.
        """
        running = self.service.cfg
        shared = {k: None for k in PER_PROCESS}
        restart_all = cfg.model_copy(update=shared) != running.model_copy(update=shared)
        old = {d.name: d for d in running.owned_databases}
        changed = [d.name for d in cfg.owned_databases
                   if restart_all or old.get(d.name) != d]
        problems = []
        for db_cfg in cfg.owned_databases:
            if db_cfg.name not in changed:
                continue
            # A detached poller (its self-metrics go nowhere, it never connects) with the span
            # source the database would have, minus sending: both parts of the state are tried.
            spans = (None if "operation_traces" in db_cfg.disabled_collectors else SpanSource(
                db_cfg.name, db_cfg.schema, db_cfg.table, cfg.traces, SelfMetrics(),
                cfg.span_buckets, db_cfg.name, send=False,
                full_pass_interval=cfg.traces.full_pass_interval, gap_grace=cfg.gap_grace,
                native=cfg.native))
            probe = DatabasePoller(cfg, db_cfg, None, SelfMetrics(), None,  # type: ignore[arg-type]
                                   spans)
            try:
                probe.load()
            except CheckpointError as exc:
                problems.append(f"databases: {db_cfg.name!r} cannot resume its state with the "
                                f"new settings: {exc}")
        if problems:
            raise ConfigError(problems)
        return changed

    def _apply(self, cfg: Config, web: web_config.WebConfig, changed: list[str]) -> None:
        service = self.service
        running = service.cfg
        if (cfg.log_format, cfg.log_level) != (running.log_format, running.log_level):
            logs.setup(cfg.log_format, cfg.log_level)
        service.web.replace(cfg.web_config_file, web)
        from exporter.service import limits
        service.http.limits = limits(cfg)
        service.cfg = cfg
        for name in [n for n in service.units if n not in {d.name for d in cfg.owned_databases}]:
            service.swap(name, None)
            log.info("database removed", extra={"database": name})
        for db_cfg in cfg.owned_databases:
            if db_cfg.name in changed:
                service.swap(db_cfg.name, service.build(db_cfg))
                log.info("database (re)started with its new settings",
                         extra={"database": db_cfg.name})
