"""alert_notification_log -> deliveries and delivery time by channel and status."""

from __future__ import annotations

from typing import Any

from exporter.counts import NEGATIVE
from exporter.map.base import Context, Mapping
from exporter.read import alert_notification_log as read

TOTAL = "pggit_notification_deliveries_total"
SECONDS = "pggit_notification_delivery_seconds_total"


class AlertNotificationLog(Mapping):
    collector = "alert_notification_log"
    table = "alert_notification_log"
    needs = frozenset({"log_id", "webhook_type", "status", "delivery_time_ms", "sent_at"})
    incremental = read.INCREMENTAL
    counters = (TOTAL, SECONDS)

    def observe(self, ctx: Context, row: tuple[Any, ...]) -> None:
        key, _, channel, status, ms, _ = row
        labels = (ctx.cap("channel", channel), ctx.cap("status", status))
        ctx.agg.inc(TOTAL, labels)
        if ms is not None and ms < 0:
            ctx.invalid(self.table, key, "delivery_time_ms", NEGATIVE, ms)
        elif ms is not None:
            ctx.agg.inc(SECONDS, labels, ms / 1000)
