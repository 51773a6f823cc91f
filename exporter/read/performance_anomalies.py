"""performance_anomalies: anomalies, read row by row."""

from __future__ import annotations

from exporter.read.spec import Incremental

INCREMENTAL = Incremental(id_column="anomaly_id", select="operation_type, anomaly_type, severity",
                          time="detected_at")
