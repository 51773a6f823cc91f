"""alert_notification_log: deliveries, read row by row (mapped in `exporter.map`'s module of the
same name)."""

from __future__ import annotations

from exporter.read.spec import Incremental

INCREMENTAL = Incremental(id_column="log_id", select="webhook_type, status, delivery_time_ms",
                          time="sent_at")
