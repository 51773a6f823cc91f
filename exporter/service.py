"""The long-running exporter: one poller per database, the HTTP server, optional senders.

Databases are independent: one being down, slow or missing tables never holds up another,
and each keeps its own state file in the state directory.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from exporter import __version__
from exporter.config import Config
from exporter.db import Database
from exporter.expose import web_config
from exporter.expose.http import HttpServer
from exporter.expose.registry import Exposition
from exporter.expose.self_metrics import SelfMetrics
from exporter.poller import DatabasePoller
from exporter.send.forwarder import TraceForwarder, tracing_enabled

log = logging.getLogger("exporter.service")


class Service:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.web = (web_config.load(cfg.web_config_file) if cfg.web_config_file
                    else web_config.WebConfig())
        self.exposition = Exposition()
        self.self_metrics = SelfMetrics(self.exposition.registry)
        self.databases: list[Database] = []
        self.pollers: list[DatabasePoller] = []
        self.components: list[Any] = []
        self.forwarders: dict[str, TraceForwarder] = {}
        for db_cfg in cfg.databases:
            database = Database(db_cfg)
            poller = DatabasePoller(cfg, db_cfg, database, self.self_metrics, self.exposition)
            self.databases.append(database)
            self.pollers.append(poller)
            self.exposition.add_source(poller.collect)
            self.self_metrics["pggit_up"].labels(db_cfg.name).set(0)
            self._add_senders(db_cfg, database, poller)
        self.http = HttpServer(cfg.listen_address, self.exposition, self.status, self.web)

    def _add_senders(self, db_cfg: Any, database: Database, poller: DatabasePoller) -> None:
        """Span sources (metrics always, OTLP when configured) and snooze silences share the
        database's pool. `disabled_collectors: [operation_traces]` starts no forwarder."""
        sending = tracing_enabled(self.cfg.traces, os.environ)
        if "operation_traces" not in db_cfg.disabled_collectors:
            forwarder = TraceForwarder(
                db_cfg.name, database.connect, db_cfg.schema, db_cfg.table, self.cfg.traces,
                self.cfg.state_dir, self.self_metrics, self.exposition.changed,
                self.cfg.span_buckets, poller.cap, db_cfg.name,
                poll_interval=self.cfg.poll_interval, send=sending, db_cfg=db_cfg,
                full_pass_interval=self.cfg.traces.full_pass_interval,
                gap_grace=self.cfg.gap_grace)
            self.components.append(forwarder)
            self.forwarders[db_cfg.name] = forwarder
            self.exposition.add_source(forwarder.collect)
        else:
            for collector in ("operation_traces", "merge_traces"):
                self.self_metrics["pggit_exporter_collector_enabled"].labels(
                    db_cfg.name, collector).set(0)
        if self.cfg.silences.enabled:
            from exporter.silences import SnoozeSilencer

            self.components.append(SnoozeSilencer(
                db_cfg.name, database.connect, database.table("alert_snooze"), self.cfg.silences,
                self.self_metrics))

    def start(self) -> None:
        self.cfg.state_dir.mkdir(parents=True, exist_ok=True)
        for poller in self.pollers:
            poller.load()
        self.http.start()
        for poller in self.pollers:
            poller.start()
        for component in self.components:
            component.start()
        host, _ = self.cfg.listen_address
        log.info("listening", extra={"address": f"{host}:{self.http.port}",
                                     "version": __version__,
                                     "databases": ",".join(p.name for p in self.pollers),
                                     "tls": self.web.tls is not None,
                                     "basic_auth": bool(self.web.users)})

    def stop(self) -> None:
        for component in self.components:
            component.stop()
        for poller in self.pollers:
            poller.stop()
        self.http.stop()
        for database in self.databases:
            database.close()
        log.info("stopped")

    def status(self) -> dict[str, Any]:
        databases = [{
            "name": p.name, "up": p.up, "caught_up": p.caught_up,
            "collectors": dict(p.enabled), "lag_seconds": dict(p.lag),
            "last_error": p.last_error,
        } for p in self.pollers]
        return {"version": __version__,
                "ready": all(d["up"] and d["caught_up"] for d in databases),
                "databases": databases,
                "components": {f"{name}: spans read by": f.mode_text()
                               for name, f in self.forwarders.items()}}
