"""The demo schema and writer functions, pinned against the deployed pgGit (PGGIT_SCHEMA.md).

DEPLOYED is the page's "Tables as deployed" section verbatim: if the DDL drifts from what
production has, the exporter's tests would pass against a database nobody runs.
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import psycopg
import pytest

from exporter.demo.schema import install_schema, script_names

DEPLOYED = """\
### pggit.performance_metrics

| column | type | null | default |
|---|---|---|---|
| metric_id | bigint | not null | serial |
| operation_type | text | not null |  |
| operation_name | text |  |  |
| duration_microseconds | bigint | not null |  |
| duration_ms | numeric(10,3) | not null |  |
| start_time | timestamp without time zone | not null |  |
| end_time | timestamp without time zone | not null |  |
| branch_id | integer |  |  |
| user_name | text | not null |  |
| session_id | text |  |  |
| rows_affected | integer |  |  |
| memory_bytes | bigint |  |  |
| cpu_microseconds | bigint |  |  |
| connection_count | integer |  | 1 |
| operation_metadata | jsonb |  |  |
| error_details | jsonb |  |  |
| recorded_at | timestamp without time zone | not null | CURRENT_TIMESTAMP |
| period_start | timestamp without time zone | not null |  |

Constraints:
- `CHECK ((duration_ms = ((duration_microseconds)::numeric / (1000)::numeric)))`
- `CHECK ((duration_microseconds > 0))`
- `CHECK ((length(TRIM(BOTH FROM operation_type)) > 0))`
- `CHECK ((start_time < end_time))`
- `CHECK ((length(TRIM(BOTH FROM user_name)) > 0))`
- `FOREIGN KEY (branch_id) REFERENCES pggit.branches(branch_id) ON DELETE SET NULL`
- `PRIMARY KEY (metric_id)`

### pggit.operation_traces

| column | type | null | default |
|---|---|---|---|
| trace_id | text | not null |  |
| span_id | text | not null |  |
| parent_span_id | text |  |  |
| operation_type | text | not null |  |
| span_name | text | not null |  |
| span_status | text |  | 'PENDING'::text |
| start_time | timestamp without time zone | not null |  |
| end_time | timestamp without time zone |  |  |
| duration_microseconds | bigint |  |  |
| branch_id | integer |  |  |
| user_name | text | not null |  |
| session_id | text |  |  |
| memory_peak_bytes | bigint |  |  |
| cpu_microseconds | bigint |  |  |
| error_message | text |  |  |
| error_code | text |  |  |
| error_details | jsonb |  |  |
| attributes | jsonb |  |  |
| recorded_at | timestamp without time zone | not null | CURRENT_TIMESTAMP |

Constraints:
- `CHECK ((span_status = ANY (ARRAY['PENDING'::text, 'RUNNING'::text, 'SUCCESS'::text,
    'FAILED'::text])))`
- `CHECK (((end_time IS NULL) OR (start_time <= end_time)))`
- `FOREIGN KEY (branch_id) REFERENCES pggit.branches(branch_id) ON DELETE SET NULL`
- `FOREIGN KEY (parent_span_id) REFERENCES pggit.operation_traces(span_id) ON DELETE CASCADE`
- `PRIMARY KEY (trace_id)`
- `UNIQUE (span_id)`

### pggit.performance_baselines

| column | type | null | default |
|---|---|---|---|
| baseline_id | bigint | not null | serial |
| operation_type | text | not null |  |
| branch_id | integer |  |  |
| baseline_date | date | not null |  |
| calculation_timestamp | timestamp without time zone | not null | CURRENT_TIMESTAMP |
| sample_count | integer | not null |  |
| min_microseconds | bigint | not null |  |
| max_microseconds | bigint | not null |  |
| p50_microseconds | bigint | not null |  |
| p75_microseconds | bigint | not null |  |
| p90_microseconds | bigint | not null |  |
| p95_microseconds | bigint | not null |  |
| p99_microseconds | bigint | not null |  |
| mean_microseconds | numeric(12,2) | not null |  |
| stddev_microseconds | numeric(12,2) |  |  |
| alert_threshold_multiplier | numeric(3,2) |  | 2.0 |
| is_active | boolean |  | true |
| calculated_from_days | integer |  | 7 |

Constraints:
- `CHECK ((alert_threshold_multiplier > (0)::numeric))`
- `CHECK ((min_microseconds <= max_microseconds))`
- `CHECK (((p50_microseconds <= p75_microseconds) AND (p75_microseconds <=
    p90_microseconds) AND (p90_microseconds <= p95_microseconds) AND (p95_microseconds <=
    p99_microseconds)))`
- `CHECK ((sample_count > 0))`
- `FOREIGN KEY (branch_id) REFERENCES pggit.branches(branch_id) ON DELETE CASCADE`
- `PRIMARY KEY (baseline_id)`

### pggit.performance_alerts

| column | type | null | default |
|---|---|---|---|
| alert_id | bigint | not null | serial |
| metric_id | bigint | not null |  |
| baseline_id | bigint |  |  |
| operation_type | text | not null |  |
| alert_type | text | not null |  |
| severity | text |  | 'WARNING'::text |
| baseline_p99_microseconds | bigint |  |  |
| actual_duration_microseconds | bigint | not null |  |
| violation_multiplier | numeric(6,2) |  |  |
| branch_id | integer |  |  |
| user_name | text |  |  |
| is_acknowledged | boolean |  | false |
| acknowledged_at | timestamp without time zone |  |  |
| acknowledged_by | text |  |  |
| resolution_notes | text |  |  |
| created_at | timestamp without time zone | not null | CURRENT_TIMESTAMP |

Constraints:
- `CHECK ((severity = ANY (ARRAY['CRITICAL'::text, 'WARNING'::text, 'INFO'::text])))`
- `CHECK ((alert_type = ANY (ARRAY['THRESHOLD_EXCEEDED'::text, 'ANOMALY'::text,
    'DEGRADATION'::text])))`
- `FOREIGN KEY (baseline_id) REFERENCES pggit.performance_baselines(baseline_id) ON DELETE
    SET NULL`
- `FOREIGN KEY (branch_id) REFERENCES pggit.branches(branch_id) ON DELETE SET NULL`
- `FOREIGN KEY (metric_id) REFERENCES pggit.performance_metrics(metric_id) ON DELETE CASCADE`
- `PRIMARY KEY (alert_id)`

### pggit.merge_performance_metrics

| column | type | null | default |
|---|---|---|---|
| merge_metric_id | bigint | not null | serial |
| source_branch_id | integer | not null |  |
| target_branch_id | integer | not null |  |
| merge_base_commit_hash | text |  |  |
| merge_base_calculation_us | bigint |  |  |
| conflict_detection_us | bigint |  |  |
| conflict_count | integer |  |  |
| auto_resolution_us | bigint |  |  |
| auto_resolution_success_count | integer |  | 0 |
| auto_resolution_failure_count | integer |  | 0 |
| total_merge_us | bigint | not null |  |
| merge_status | text | not null |  |
| merge_outcome_details | jsonb |  |  |
| user_name | text | not null |  |
| session_id | text |  |  |
| started_at | timestamp without time zone | not null |  |
| completed_at | timestamp without time zone |  |  |

Constraints:
- `CHECK ((merge_status = ANY (ARRAY['SUCCESS'::text, 'PARTIAL_SUCCESS'::text,
    'FAILED'::text, 'ABANDONED'::text])))`
- `CHECK (((completed_at IS NULL) OR (started_at <= completed_at)))`
- `PRIMARY KEY (merge_metric_id)`
- `FOREIGN KEY (source_branch_id) REFERENCES pggit.branches(branch_id) ON DELETE CASCADE`
- `FOREIGN KEY (target_branch_id) REFERENCES pggit.branches(branch_id) ON DELETE CASCADE`

### pggit.performance_operation_types

| column | type | null | default |
|---|---|---|---|
| operation_type_id | integer | not null | serial |
| operation_type | text | not null |  |
| description | text |  |  |
| category | text |  |  |
| typical_duration_ms | numeric(10,1) |  |  |
| is_tracked | boolean |  | true |

### pggit.branches

| column | type | null | default |
|---|---|---|---|
| branch_id | integer | not null | serial |
| branch_name | text | not null |  |
| parent_branch_id | integer |  |  |
| head_commit_hash | character(64) |  |  |
| status | text |  | 'ACTIVE'::text |
| branch_type | text |  | 'schema-only'::text |
| description | text |  |  |
| metadata | jsonb |  |  |
| object_count | integer |  | 0 |
| modified_objects | integer |  | 0 |
| storage_bytes | bigint |  | 0 |
| deduplication_ratio | numeric(5,2) |  | 100.00 |
| created_by | text | not null |  |
| created_at | timestamp without time zone |  | CURRENT_TIMESTAMP |
| merged_by | text |  |  |
| merged_at | timestamp without time zone |  |  |

Constraints:
- `UNIQUE (branch_name)`
- `CHECK ((branch_type = ANY (ARRAY['schema-only'::text, 'full'::text, 'temporal'::text,
    'compressed'::text])))`
- `FOREIGN KEY (head_commit_hash) REFERENCES pggit.commits(commit_hash)`
- `FOREIGN KEY (parent_branch_id) REFERENCES pggit.branches(branch_id)`
- `PRIMARY KEY (branch_id)`
- `CHECK ((status = ANY (ARRAY['ACTIVE'::text, 'MERGED'::text, 'DELETED'::text,
    'CONFLICTED'::text, 'STALE'::text])))`

### pggit.performance_anomalies

| column | type | null | default |
|---|---|---|---|
| anomaly_id | bigint | not null | serial |
| metric_id | bigint | not null |  |
| operation_type | text | not null |  |
| anomaly_type | text | not null |  |
| severity | text | not null |  |
| duration_ms | numeric |  |  |
| baseline_p99_ms | numeric |  |  |
| z_score | numeric |  |  |
| deviation_percent | numeric |  |  |
| degradation_percent | numeric |  |  |
| trend_slope | numeric |  |  |
| confidence | numeric |  |  |
| detected_at | timestamp without time zone | not null | CURRENT_TIMESTAMP |
| alert_generated | boolean |  | false |
| investigation_notes | text |  |  |
| resolved_at | timestamp without time zone |  |  |

Constraints:
- `CHECK ((anomaly_type = ANY (ARRAY['STATISTICAL_OUTLIER'::text,
    'PERFORMANCE_DEGRADATION'::text, 'COMBINED'::text])))`
- `FOREIGN KEY (metric_id) REFERENCES pggit.performance_metrics(metric_id) ON DELETE CASCADE`
- `PRIMARY KEY (anomaly_id)`
- `CHECK ((severity = ANY (ARRAY['INFO'::text, 'WARNING'::text, 'CRITICAL'::text])))`

### pggit.alert_snooze

| column | type | null | default |
|---|---|---|---|
| snooze_id | bigint | not null | serial |
| operation_type | text | not null |  |
| alert_type | text | not null |  |
| snooze_until | timestamp without time zone | not null |  |
| snooze_reason | text |  |  |
| created_by | text | not null | CURRENT_USER |
| created_at | timestamp without time zone |  | CURRENT_TIMESTAMP |
| is_active | boolean |  | true |

Constraints:
- `PRIMARY KEY (snooze_id)`
- `CHECK ((alert_type = ANY (ARRAY['THRESHOLD_EXCEEDED'::text, 'ANOMALY'::text,
    'DEGRADATION'::text, 'CORRELATION'::text, 'BASELINE_RECALC_ERROR'::text])))`
- `FOREIGN KEY (operation_type) REFERENCES pggit.performance_operation_types(operation_type)`

### pggit.alert_notification_queue

| column | type | null | default |
|---|---|---|---|
| queue_id | bigint | not null | serial |
| alert_id | bigint |  |  |
| webhook_id | bigint |  |  |
| message_body | text | not null |  |
| message_format | text |  | 'json'::text |
| status | text |  | 'pending'::text |
| retry_count | integer |  | 0 |
| max_retries | integer |  | 3 |
| error_message | text |  |  |
| created_at | timestamp without time zone |  | CURRENT_TIMESTAMP |
| sent_at | timestamp without time zone |  |  |

Constraints:
- `FOREIGN KEY (alert_id) REFERENCES pggit.performance_alerts(alert_id) ON DELETE CASCADE`
- `PRIMARY KEY (queue_id)`
- `FOREIGN KEY (webhook_id) REFERENCES pggit.alert_notification_webhooks(webhook_id)`
- `CHECK ((status = ANY (ARRAY['pending'::text, 'sent'::text, 'failed'::text,
    'retrying'::text])))`

### pggit.alert_notification_log

| column | type | null | default |
|---|---|---|---|
| log_id | bigint | not null | serial |
| alert_id | bigint |  |  |
| webhook_id | bigint |  |  |
| webhook_type | text | not null |  |
| status | text | not null |  |
| delivery_time_ms | integer |  |  |
| http_status_code | integer |  |  |
| error_message | text |  |  |
| sent_at | timestamp without time zone |  | CURRENT_TIMESTAMP |

Constraints:
- `FOREIGN KEY (alert_id) REFERENCES pggit.performance_alerts(alert_id) ON DELETE CASCADE`
- `PRIMARY KEY (log_id)`
- `FOREIGN KEY (webhook_id) REFERENCES pggit.alert_notification_webhooks(webhook_id)`

### pggit.baseline_recalc_execution

| column | type | null | default |
|---|---|---|---|
| execution_id | bigint | not null | serial |
| operation_type | text | not null |  |
| start_time | timestamp without time zone | not null | CURRENT_TIMESTAMP |
| end_time | timestamp without time zone |  |  |
| status | text | not null | 'RUNNING'::text |
| duration_ms | integer |  |  |
| records_affected | integer |  |  |
| error_message | text |  |  |
| error_details | jsonb |  |  |

Constraints:
- `PRIMARY KEY (execution_id)`
- `CHECK ((status = ANY (ARRAY['RUNNING'::text, 'SUCCESS'::text, 'FAILED'::text])))`
- `FOREIGN KEY (operation_type) REFERENCES pggit.performance_operation_types(operation_type)`

### pggit.performance_baseline_history

| column | type | null | default |
|---|---|---|---|
| history_id | bigint | not null | serial |
| operation_type | text | not null |  |
| old_baseline_id | bigint |  |  |
| new_baseline_id | bigint |  |  |
| old_p99_microseconds | bigint |  |  |
| new_p99_microseconds | bigint |  |  |
| percent_change | numeric(8,2) |  |  |
| sample_count | integer |  |  |
| lookback_days | integer |  |  |
| calculated_at | timestamp without time zone |  | CURRENT_TIMESTAMP |
| reason | text |  |  |

Constraints:
- `FOREIGN KEY (operation_type) REFERENCES pggit.performance_operation_types(operation_type)`
- `PRIMARY KEY (history_id)`

### pggit.scheduled_job_execution

| column | type | null | default |
|---|---|---|---|
| job_execution_id | bigint | not null | serial |
| job_name | text | not null |  |
| cron_schedule | text | not null |  |
| execution_start | timestamp without time zone | not null | CURRENT_TIMESTAMP |
| execution_end | timestamp without time zone |  |  |
| status | text | not null | 'RUNNING'::text |
| duration_ms | integer |  |  |
| rows_affected | integer |  |  |
| error_message | text |  |  |
| execution_context | jsonb |  |  |

Constraints:
- `CHECK ((status = ANY (ARRAY['RUNNING'::text, 'SUCCESS'::text, 'FAILED'::text,
    'SKIPPED'::text])))`
- `UNIQUE (job_name, execution_start)`
- `PRIMARY KEY (job_execution_id)`

### pggit.performance_correlations

| column | type | null | default |
|---|---|---|---|
| correlation_id | bigint | not null | serial |
| operation_type_1 | text | not null |  |
| operation_type_2 | text | not null |  |
| correlation_coefficient | numeric(5,2) | not null |  |
| confidence | numeric(5,2) |  |  |
| shared_bottleneck | text |  |  |
| lookback_hours | integer |  | 24 |
| sample_pairs | integer |  |  |
| recommendation | text |  |  |
| severity | text |  | 'INFO'::text |
| analyzed_at | timestamp without time zone | not null | CURRENT_TIMESTAMP |
| is_active | boolean |  | true |

Constraints:
- `CHECK (((confidence IS NULL) OR ((confidence >= (0)::numeric) AND (confidence <=
    (1)::numeric))))`
- `CHECK (((correlation_coefficient >= ('-1'::integer)::numeric) AND
    (correlation_coefficient <= (1)::numeric)))`
- `UNIQUE (operation_type_1, operation_type_2)`
- `PRIMARY KEY (correlation_id)`
"""

# Constraints the page does not list but the demo needs: alert_snooze and the recalculation
# tables reference performance_operation_types(operation_type), which requires it to be unique.
EXTRA_CONSTRAINTS = {
    "performance_operation_types": {"PRIMARY KEY (operation_type_id)", "UNIQUE (operation_type)"},
}


def parse_deployed() -> dict[str, tuple[list[tuple[str, str, str, str]], set[str]]]:
    """Table -> (columns as (name, type, null, default), constraint definitions).

    Constraint lines longer than the line limit are wrapped; a line indented by four spaces
    continues the previous one.
    """
    tables: dict[str, tuple[list[tuple[str, str, str, str]], set[str]]] = {}
    lines: list[str] = []
    for line in DEPLOYED.splitlines():
        if line.startswith("    ") and lines:
            lines[-1] += " " + line.strip()
        else:
            lines.append(line)
    current = ""
    for line in lines:
        if line.startswith("### pggit."):
            current = line.removeprefix("### pggit.")
            tables[current] = ([], set())
        elif line.startswith("| ") and not line.startswith("| column"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            tables[current][0].append((cells[0], cells[1], cells[2], cells[3]))
        elif line.startswith("- `"):
            tables[current][1].add(line.removeprefix("- `").removesuffix("`"))
    return tables


TABLES = parse_deployed()
LATER = (
    "performance_anomalies", "alert_snooze", "alert_notification_queue",
    "alert_notification_log", "baseline_recalc_execution", "performance_baseline_history",
    "scheduled_job_execution", "performance_correlations",
)


def columns_of(conn: psycopg.Connection, table: str) -> list[tuple[str, str, str, str]]:
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod),"
        "  CASE WHEN a.attnotnull THEN 'not null' ELSE '' END,"
        "  COALESCE(pg_get_expr(d.adbin, d.adrelid), '')"
        " FROM pg_attribute a"
        " LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
        " WHERE a.attrelid = ('pggit.' || %s)::regclass AND a.attnum > 0"
        "   AND NOT a.attisdropped ORDER BY a.attnum",
        (table,),
    ).fetchall()
    # The page writes a sequence default as "serial".
    return [(n, t, null, "serial" if d.startswith("nextval(") else d) for n, t, null, d in rows]


def constraints_of(conn: psycopg.Connection, table: str) -> set[str]:
    rows = conn.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = ('pggit.' || %s)::regclass AND contype IN ('c', 'f', 'p', 'u')",
        (table,),
    ).fetchall()
    return {r[0] for r in rows}


def test_page_parsed() -> None:
    assert len(TABLES) == 15
    assert ("metric_id", "bigint", "not null", "serial") in TABLES["performance_metrics"][0]


@pytest.mark.parametrize("table", sorted(TABLES))
def test_columns_match_deployed_page(pggit_dsn: str, table: str) -> None:
    with psycopg.connect(pggit_dsn) as conn:
        assert columns_of(conn, table) == TABLES[table][0]


@pytest.mark.parametrize("table", sorted(TABLES))
def test_constraints_match_deployed_page(pggit_dsn: str, table: str) -> None:
    with psycopg.connect(pggit_dsn) as conn:
        expected = TABLES[table][1] | EXTRA_CONSTRAINTS.get(table, set())
        assert constraints_of(conn, table) == expected


def test_tiers(pggit_dsn: str, pggit_core_dsn: str) -> None:
    with psycopg.connect(pggit_core_dsn) as conn:
        for table in LATER:
            assert conn.execute("SELECT to_regclass(%s)", (f"pggit.{table}",)).fetchone() == (
                None,)
        assert conn.execute("SELECT to_regprocedure('pggit.check_alert_escalation()')"
                            ).fetchone() != (None,)
    with psycopg.connect(pggit_dsn) as conn:
        for table in (*LATER, "alert_notification_webhooks"):
            assert conn.execute("SELECT to_regclass(%s)", (f"pggit.{table}",)).fetchone() != (
                None,)
    assert script_names(later_tables=False) == ["core.sql", "functions.sql"]
    assert script_names(functions=False) == ["core.sql", "later.sql"]


def test_seeded_lookup_rows(pggit_dsn: str) -> None:
    with psycopg.connect(pggit_dsn) as conn:
        types = dict(conn.execute(
            "SELECT operation_type, is_tracked FROM pggit.performance_operation_types"
        ).fetchall())
        assert len(types) == 33
        for name in ("commit", "merge", "rollback", "branch_create", "get_history",
                     "merge_branches", "rollback_commit"):
            assert types[name] is True
        assert 1 <= sum(not tracked for tracked in types.values()) <= 6
        assert conn.execute(
            "SELECT count(*) FROM pggit.performance_operation_types"
            " WHERE description IS NULL OR category IS NULL OR typical_duration_ms IS NULL"
        ).fetchone() == (0,)
        names = [r[0] for r in conn.execute(
            "SELECT branch_name FROM pggit.branches ORDER BY branch_id").fetchall()]
        assert names[:2] == ["main", "develop"]
        assert any(n.startswith("feature/") for n in names)
        assert any(n.startswith("release/") for n in names)


def test_install_into_existing_schema_fails_cleanly(pggit_dsn: str) -> None:
    """One transaction: a failed install leaves no half-created objects behind."""
    with pytest.raises(psycopg.errors.DuplicateTable):
        install_schema(pggit_dsn)
    with psycopg.connect(pggit_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM pggit.performance_operation_types"
                            ).fetchone() == (33,)


BAD_ROWS = [
    ("INSERT INTO pggit.performance_metrics (operation_type, duration_microseconds, duration_ms,"
     " start_time, end_time, user_name, period_start) VALUES ('commit', 0, 0,"
     " '2025-01-01 00:00', '2025-01-01 00:01', 'u', '2025-01-01')", "CheckViolation"),
    ("INSERT INTO pggit.performance_metrics (operation_type, duration_microseconds, duration_ms,"
     " start_time, end_time, user_name, period_start) VALUES ('commit', 1500, 1.4,"
     " '2025-01-01 00:00', '2025-01-01 00:01', 'u', '2025-01-01')", "CheckViolation"),
    ("INSERT INTO pggit.performance_metrics (operation_type, duration_microseconds, duration_ms,"
     " start_time, end_time, user_name, period_start) VALUES ('commit', 1000, 1,"
     " '2025-01-01 00:01', '2025-01-01 00:01', 'u', '2025-01-01')", "CheckViolation"),
    ("INSERT INTO pggit.performance_metrics (operation_type, duration_microseconds, duration_ms,"
     " start_time, end_time, user_name, period_start) VALUES ('  ', 1000, 1,"
     " '2025-01-01 00:00', '2025-01-01 00:01', 'u', '2025-01-01')", "CheckViolation"),
    ("INSERT INTO pggit.performance_metrics (operation_type, duration_microseconds, duration_ms,"
     " start_time, end_time, user_name, period_start) VALUES ('commit', 1000, 1,"
     " '2025-01-01 00:00', '2025-01-01 00:01', ' ', '2025-01-01')", "CheckViolation"),
    ("INSERT INTO pggit.performance_metrics (operation_type, duration_microseconds, duration_ms,"
     " start_time, end_time, user_name, period_start, branch_id) VALUES ('commit', 1000, 1,"
     " '2025-01-01 00:00', '2025-01-01 00:01', 'u', '2025-01-01', 999)", "ForeignKeyViolation"),
    ("INSERT INTO pggit.operation_traces (trace_id, span_id, operation_type, span_name,"
     " span_status, start_time, user_name) VALUES ('t', 's', 'commit', 'x', 'DONE', now(), 'u')",
     "CheckViolation"),
    ("INSERT INTO pggit.operation_traces (trace_id, span_id, operation_type, span_name,"
     " start_time, end_time, user_name) VALUES ('t', 's', 'commit', 'x',"
     " '2025-01-01 00:01', '2025-01-01 00:00', 'u')", "CheckViolation"),
    ("INSERT INTO pggit.operation_traces (trace_id, span_id, parent_span_id, operation_type,"
     " span_name, start_time, user_name) VALUES ('t', 's', 'nope', 'commit', 'x', now(), 'u')",
     "ForeignKeyViolation"),
    ("INSERT INTO pggit.performance_baselines (operation_type, baseline_date, sample_count,"
     " min_microseconds, max_microseconds, p50_microseconds, p75_microseconds,"
     " p90_microseconds, p95_microseconds, p99_microseconds, mean_microseconds)"
     " VALUES ('commit', current_date, 10, 1, 9, 5, 4, 6, 7, 8, 5)", "CheckViolation"),
    ("INSERT INTO pggit.performance_baselines (operation_type, baseline_date, sample_count,"
     " min_microseconds, max_microseconds, p50_microseconds, p75_microseconds,"
     " p90_microseconds, p95_microseconds, p99_microseconds, mean_microseconds)"
     " VALUES ('commit', current_date, 0, 1, 9, 4, 5, 6, 7, 8, 5)", "CheckViolation"),
    ("INSERT INTO pggit.performance_alerts (metric_id, operation_type, alert_type,"
     " actual_duration_microseconds) VALUES (424242, 'commit', 'THRESHOLD_EXCEEDED', 5)",
     "ForeignKeyViolation"),
    ("INSERT INTO pggit.merge_performance_metrics (source_branch_id, target_branch_id,"
     " total_merge_us, merge_status, user_name, started_at) VALUES (1, 2, 5, 'DONE', 'u', now())",
     "CheckViolation"),
    ("INSERT INTO pggit.branches (branch_name, created_by, branch_type)"
     " VALUES ('x', 'u', 'shallow')", "CheckViolation"),
    ("INSERT INTO pggit.branches (branch_name, created_by) VALUES ('main', 'u')",
     "UniqueViolation"),
    ("INSERT INTO pggit.performance_correlations (operation_type_1, operation_type_2,"
     " correlation_coefficient) VALUES ('a', 'b', 1.5)", "CheckViolation"),
    ("INSERT INTO pggit.performance_correlations (operation_type_1, operation_type_2,"
     " correlation_coefficient, confidence) VALUES ('a', 'b', 0.5, 2)", "CheckViolation"),
    ("INSERT INTO pggit.alert_snooze (operation_type, alert_type, snooze_until)"
     " VALUES ('commit', 'LOUD', now())", "CheckViolation"),
    ("INSERT INTO pggit.alert_snooze (operation_type, alert_type, snooze_until)"
     " VALUES ('no_such_op', 'ANOMALY', now())", "ForeignKeyViolation"),
    ("INSERT INTO pggit.alert_notification_queue (message_body, status)"
     " VALUES ('{}', 'queued')", "CheckViolation"),
    ("INSERT INTO pggit.scheduled_job_execution (job_name, cron_schedule, status)"
     " VALUES ('j', '* * * * *', 'DONE')", "CheckViolation"),
    ("INSERT INTO pggit.baseline_recalc_execution (operation_type, status)"
     " VALUES ('commit', 'SKIPPED')", "CheckViolation"),
]


@pytest.mark.parametrize(("statement", "error"), BAD_ROWS)
def test_constraints_reject_bad_rows(pggit_dsn: str, statement: str, error: str) -> None:
    with psycopg.connect(pggit_dsn) as conn, pytest.raises(getattr(psycopg.errors, error)):
        conn.execute(statement)


def test_scheduled_job_execution_unique_per_start(pggit_dsn: str) -> None:
    with psycopg.connect(pggit_dsn) as conn, pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute("INSERT INTO pggit.scheduled_job_execution (job_name, cron_schedule)"
                     " VALUES ('j', '* * * * *'), ('j', '* * * * *')")


def test_record_metric_times_and_columns(pggit_dsn: str) -> None:
    """start_time = transaction start - duration, end_time = transaction start (page item 11)."""
    with psycopg.connect(pggit_dsn) as conn:
        now = conn.execute("SELECT CURRENT_TIMESTAMP::timestamp").fetchone()[0]
        metric_id = conn.execute(
            "SELECT pggit.record_performance_metric('commit', 2500, 'c1', 2, 'alice', 's1', 7,"
            " 1024, 900, '{\"a\": {\"b\": 1}}', '{\"error_code\": \"40P01\"}')").fetchone()[0]
        row = conn.execute(
            "SELECT start_time, end_time, period_start, recorded_at, duration_ms, user_name,"
            " branch_id, operation_metadata, error_details, connection_count"
            " FROM pggit.performance_metrics WHERE metric_id = %s", (metric_id,)).fetchone()
        conn.commit()
    start, end, period, recorded, duration_ms, user, branch, metadata, error, count = row
    assert end == now == recorded
    assert end - start == timedelta(microseconds=2500)
    assert period == now.replace(hour=0, minute=0, second=0, microsecond=0)
    assert duration_ms == Decimal("2.500")
    assert (user, branch, count) == ("alice", 2, 1)
    assert metadata == {"a": {"b": 1}}
    assert error == {"error_code": "40P01"}


def test_record_metric_defaults_user_to_current_user(pggit_dsn: str) -> None:
    with psycopg.connect(pggit_dsn) as conn:
        metric_id = conn.execute("SELECT pggit.record_performance_metric('commit', 10)"
                                 ).fetchone()[0]
        assert conn.execute("SELECT user_name, error_details FROM pggit.performance_metrics"
                            " WHERE metric_id = %s", (metric_id,)).fetchone() == (
            "postgres", None)


def _record(conn: psycopg.Connection, op: str, us: int, branch: int | None = None) -> int:
    return conn.execute("SELECT pggit.record_performance_metric(%s, %s, NULL, %s::integer)",
                        (op, us, branch)).fetchone()[0]


def _alerts(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute(
        "SELECT metric_id, baseline_id, operation_type, alert_type, severity,"
        " baseline_p99_microseconds, actual_duration_microseconds, violation_multiplier,"
        " branch_id, user_name FROM pggit.performance_alerts ORDER BY alert_id").fetchall()


def test_baseline_needs_ten_samples_and_replaces_previous(pggit_dsn: str) -> None:
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        for i in range(9):
            _record(conn, "commit", 1000 + 100 * i)
        assert conn.execute("SELECT pggit.calculate_performance_baseline('commit')"
                            ).fetchone() == (None,)
        _record(conn, "commit", 1900)
        first = conn.execute("SELECT pggit.calculate_performance_baseline('commit')"
                             ).fetchone()[0]
        assert first is not None
        row = conn.execute(
            "SELECT sample_count, min_microseconds, max_microseconds, p50_microseconds,"
            " p99_microseconds, is_active, calculated_from_days, alert_threshold_multiplier,"
            " branch_id, baseline_date = current_date"
            " FROM pggit.performance_baselines WHERE baseline_id = %s", (first,)).fetchone()
        assert row == (10, 1000, 1900, 1450, 1891, True, 7, Decimal("2.00"), None, True)
        second = conn.execute(
            "SELECT pggit.calculate_performance_baseline('commit', NULL, 3, 1.5)").fetchone()[0]
        branch_scoped = conn.execute(
            "SELECT pggit.calculate_performance_baseline('commit', 1)").fetchone()[0]
        assert branch_scoped is None  # no commit on branch 1 yet
        active = conn.execute("SELECT baseline_id, calculated_from_days,"
                              " alert_threshold_multiplier FROM pggit.performance_baselines"
                              " WHERE is_active").fetchall()
        assert active == [(second, 3, Decimal("1.50"))]
        assert conn.execute("SELECT is_active FROM pggit.performance_baselines"
                            " WHERE baseline_id = %s", (first,)).fetchone() == (False,)


def test_slow_metric_writes_exactly_one_threshold_alert(pggit_dsn: str) -> None:
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        for i in range(20):
            _record(conn, "commit", 1000 + 10 * i, 2)
        baseline = conn.execute("SELECT pggit.calculate_performance_baseline('commit')"
                                ).fetchone()[0]
        p99 = conn.execute("SELECT p99_microseconds FROM pggit.performance_baselines"
                           " WHERE baseline_id = %s", (baseline,)).fetchone()[0]
        assert p99 == 1188
        _record(conn, "commit", 2 * p99, 2)  # at the threshold: not greater, no alert
        _record(conn, "get_history", 10_000_000, 2)  # no baseline for this type
        assert _alerts(conn) == []
        slow = _record(conn, "commit", 5000, 3)
        assert _alerts(conn) == [(slow, baseline, "commit", "THRESHOLD_EXCEEDED", "WARNING",
                                  1188, 5000, Decimal("4.21"), 3, "postgres")]


def test_newest_matching_baseline_wins(pggit_dsn: str) -> None:
    """A branch baseline applies to its branch only; otherwise the all-branches one."""
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        for i in range(10):
            _record(conn, "diff", 10_000 + i, 1)
            _record(conn, "diff", 1_000 + i, 2)
        overall = conn.execute("SELECT pggit.calculate_performance_baseline('diff')"
                               ).fetchone()[0]
        conn.execute("SELECT pg_sleep(0.01)")
        branch2 = conn.execute("SELECT pggit.calculate_performance_baseline('diff', 2)"
                               ).fetchone()[0]
        on_branch2 = _record(conn, "diff", 5_000, 2)  # > 2 x branch-2 p99 (1009)
        on_branch1 = _record(conn, "diff", 15_000, 1)  # < 2 x overall p99 (10009)
        alerts = _alerts(conn)
        assert [(a[0], a[1]) for a in alerts] == [(on_branch2, branch2)]
        assert on_branch1 not in [a[0] for a in alerts]
        assert overall is not None


def test_escalation_regrades_at_three_within_an_hour(pggit_dsn: str) -> None:
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        for i in range(10):
            _record(conn, "commit", 1000 + i)
            _record(conn, "diff", 1000 + i)
        conn.execute("SELECT pggit.calculate_performance_baseline('commit')")
        conn.execute("SELECT pggit.calculate_performance_baseline('diff')")
        escalate = "SELECT pggit.check_alert_escalation()"

        # Two recent plus one from two hours ago: not three within the hour.
        for _ in range(3):
            _record(conn, "commit", 50_000)
        conn.execute("UPDATE pggit.performance_alerts SET created_at = created_at"
                     " - interval '2 hours' WHERE alert_id = (SELECT min(alert_id)"
                     " FROM pggit.performance_alerts)")
        _record(conn, "diff", 50_000)
        _record(conn, "diff", 50_000)
        assert conn.execute(escalate).fetchone() == (0,)

        # The third diff alert within the hour escalates diff; an acknowledged one stays.
        first_diff = conn.execute("SELECT min(alert_id) FROM pggit.performance_alerts"
                                  " WHERE operation_type = 'diff'").fetchone()[0]
        conn.execute("SELECT pggit.acknowledge_performance_alert(%s, 'ops')", (first_diff,))
        _record(conn, "diff", 50_000)
        assert conn.execute(escalate).fetchone() == (2,)
        assert conn.execute(escalate).fetchone() == (0,)
        rows = conn.execute("SELECT operation_type, severity, is_acknowledged"
                            " FROM pggit.performance_alerts ORDER BY alert_id").fetchall()
    assert rows == [
        ("commit", "WARNING", False), ("commit", "WARNING", False),
        ("commit", "WARNING", False),
        ("diff", "WARNING", True), ("diff", "CRITICAL", False), ("diff", "CRITICAL", False),
    ]


def test_acknowledge_keeps_first_acknowledgement(pggit_dsn: str) -> None:
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        for i in range(10):
            _record(conn, "commit", 1000 + i)
        conn.execute("SELECT pggit.calculate_performance_baseline('commit')")
        _record(conn, "commit", 90_000)
        alert = conn.execute("SELECT alert_id FROM pggit.performance_alerts").fetchone()[0]
        ack = "SELECT pggit.acknowledge_performance_alert(%s, %s, %s)"
        assert conn.execute(ack, (alert, "ann", "deploy")).fetchone() == (True,)
        assert conn.execute(ack, (alert, "bob", None)).fetchone() == (False,)
        row = conn.execute("SELECT acknowledged_by, resolution_notes, acknowledged_at"
                           " IS NOT NULL FROM pggit.performance_alerts").fetchone()
    assert row == ("ann", "deploy", True)


def test_spans_start_running_and_are_updated_in_place(pggit_dsn: str) -> None:
    with psycopg.connect(pggit_dsn) as conn:
        root = conn.execute(
            "SELECT pggit.start_performance_trace('span_merge_workflow_001', 'root-span', NULL,"
            " 'merge_branches', 'merge feature into main', 1, 'alice', 's1',"
            " '{\"merge\": {\"source\": \"feature/x\"}}')").fetchone()[0]
        child = conn.execute(
            "SELECT pggit.start_performance_trace(NULL, NULL, %s, 'merge_base_find', NULL)",
            (root,)).fetchone()[0]
        rows = conn.execute(
            "SELECT span_id, trace_id, span_status, end_time, duration_microseconds, span_name"
            " FROM pggit.operation_traces ORDER BY start_time").fetchall()
        assert root == "root-span"
        assert rows[0][:5] == ("root-span", "span_merge_workflow_001", "RUNNING", None, None)
        assert rows[1][0] == child and re.fullmatch(r"[0-9a-f-]{36}", child)
        assert rows[1][1] != rows[0][1] and re.fullmatch(r"[0-9a-f-]{36}", rows[1][1])
        assert rows[1][2:] == ("RUNNING", None, None, "merge_base_find")

        conn.execute("SELECT pg_sleep(0.002)")
        child_us = conn.execute(
            "SELECT pggit.end_performance_trace(%s, 'FAILED', 'conflict', 'P0001',"
            " '{\"tables\": [\"orders\"]}')", (child,)).fetchone()[0]
        root_us = conn.execute("SELECT pggit.end_performance_trace('root-span')").fetchone()[0]
        rows = conn.execute(
            "SELECT span_id, span_status, start_time, end_time, duration_microseconds,"
            " error_message, error_code, error_details, parent_span_id"
            " FROM pggit.operation_traces ORDER BY start_time").fetchall()
        conn.commit()
    (_, r_status, r_start, r_end, r_us, r_msg, _, _, r_parent) = rows[0]
    (_, c_status, c_start, c_end, c_us, c_msg, c_code, c_details, c_parent) = rows[1]
    assert len(rows) == 2  # updated, not appended
    assert (r_status, r_msg, r_parent) == ("SUCCESS", None, None)
    assert (c_status, c_msg, c_code, c_details, c_parent) == (
        "FAILED", "conflict", "P0001", {"tables": ["orders"]}, "root-span")
    # One transaction, yet distinct times: spans use clock_timestamp().
    assert r_start < c_start <= c_end <= r_end
    assert c_us == child_us >= 2000 and r_us == root_us > c_us
    assert c_end - c_start == timedelta(microseconds=c_us)


def test_deleting_a_root_span_cascades(pggit_dsn: str) -> None:
    with psycopg.connect(pggit_dsn) as conn:
        root = conn.execute("SELECT pggit.start_performance_trace(p_operation_type => 'commit')"
                            ).fetchone()[0]
        conn.execute("SELECT pggit.start_performance_trace(NULL, NULL, %s, 'ddl_capture')",
                     (root,))
        conn.execute("DELETE FROM pggit.operation_traces WHERE span_id = %s", (root,))
        assert conn.execute("SELECT count(*) FROM pggit.operation_traces").fetchone() == (0,)


def test_merge_writer(pggit_dsn: str) -> None:
    with psycopg.connect(pggit_dsn) as conn:
        now = conn.execute("SELECT CURRENT_TIMESTAMP::timestamp").fetchone()[0]
        done = conn.execute(
            "SELECT pggit.record_merge_performance(3, 1, 'PARTIAL_SUCCESS', 1000, 2000, 4, 3000,"
            " 3, 1)").fetchone()[0]
        running = conn.execute(
            "SELECT pggit.record_merge_performance(2, 1, 'SUCCESS', p_completed => false)"
        ).fetchone()[0]
        rows = conn.execute(
            "SELECT merge_metric_id, total_merge_us, started_at, completed_at, conflict_count,"
            " auto_resolution_success_count, auto_resolution_failure_count"
            " FROM pggit.merge_performance_metrics ORDER BY 1").fetchall()
        conn.commit()
        assert rows[0] == (done, 6000, now - timedelta(microseconds=6000), now, 4, 3, 1)
        assert rows[1][0] == running and rows[1][2] == now and rows[1][3] is None
        conn.execute("SELECT pg_sleep(0.01)")
        conn.commit()
        total = conn.execute("SELECT pggit.complete_merge_performance(%s, 'ABANDONED')",
                             (running,)).fetchone()[0]
        row = conn.execute("SELECT merge_status, completed_at > started_at, total_merge_us"
                           " FROM pggit.merge_performance_metrics WHERE merge_metric_id = %s",
                           (running,)).fetchone()
        assert row == ("ABANDONED", True, total) and total >= 10_000
        assert conn.execute("SELECT pggit.complete_merge_performance(%s, 'SUCCESS')",
                            (running,)).fetchone() == (None,)


def test_later_writers(pggit_dsn: str) -> None:
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        for i in range(10):
            _record(conn, "commit", 1000 + i)
        conn.execute("SELECT pggit.calculate_performance_baseline('commit')")
        slow = _record(conn, "commit", 40_000)
        alert = conn.execute("SELECT alert_id FROM pggit.performance_alerts").fetchone()[0]

        anomaly = conn.execute(
            "SELECT pggit.record_performance_anomaly(%s, 'STATISTICAL_OUTLIER', 'CRITICAL',"
            " 7.5, 250, NULL, NULL, 0.9, true)", (slow,)).fetchone()[0]
        assert conn.execute(
            "SELECT operation_type, duration_ms, baseline_p99_ms, alert_generated"
            " FROM pggit.performance_anomalies WHERE anomaly_id = %s", (anomaly,)).fetchone() == (
            "commit", Decimal("40.000"), Decimal("1.009"), True)
        assert conn.execute("SELECT alert_type, severity FROM pggit.performance_alerts"
                            " WHERE alert_id > %s", (alert,)).fetchall() == [
            ("ANOMALY", "CRITICAL")]

        pagerduty = conn.execute("SELECT webhook_id FROM pggit.alert_notification_webhooks"
                                 " WHERE webhook_type = 'pagerduty'").fetchone()[0]
        queued = conn.execute("SELECT pggit.enqueue_alert_notification(%s, %s)",
                              (alert, pagerduty)).fetchone()[0]
        deliver = "SELECT pggit.deliver_alert_notification(%s, %s, 120, %s, %s)"
        statuses = [conn.execute(deliver, (queued, False, 502, "HTTP 502")).fetchone()[0]
                    for _ in range(3)]
        assert statuses == ["retrying", "retrying", "failed"]
        assert conn.execute("SELECT status, retry_count, sent_at FROM"
                            " pggit.alert_notification_queue").fetchone() == ("failed", 3, None)
        assert conn.execute("SELECT webhook_type, status, count(*) FROM"
                            " pggit.alert_notification_log GROUP BY 1, 2").fetchall() == [
            ("pagerduty", "failed", 3)]

        job = conn.execute("SELECT pggit.start_scheduled_job('detect_anomalies', '*/5 * * * *')"
                           ).fetchone()[0]
        assert conn.execute("SELECT status, execution_end FROM pggit.scheduled_job_execution"
                            ).fetchone() == ("RUNNING", None)
        conn.execute("SELECT pggit.finish_scheduled_job(%s, 'FAILED', NULL, 'timeout')", (job,))
        assert conn.execute("SELECT status, error_message, execution_end >= execution_start"
                            " FROM pggit.scheduled_job_execution").fetchone() == (
            "FAILED", "timeout", True)

        conn.execute("SELECT pggit.snooze_alerts('commit', 'ANOMALY', '1 hour', 'deploy')")
        conn.execute("SELECT pggit.snooze_alerts('commit', 'ANOMALY', '2 hours', 'longer')")
        assert conn.execute("SELECT snooze_reason FROM pggit.alert_snooze WHERE is_active"
                            ).fetchall() == [("longer",)]

        store = "SELECT pggit.store_correlation_analysis(%s, %s, %s::numeric, 0.8)"
        first = conn.execute(store, ("merge", "commit", 0.91)).fetchone()[0]
        again = conn.execute(store, ("commit", "merge", -0.2)).fetchone()[0]
        assert first == again
        assert conn.execute("SELECT operation_type_1, operation_type_2, correlation_coefficient"
                            " FROM pggit.performance_correlations").fetchall() == [
            ("commit", "merge", Decimal("-0.20"))]

        changed = conn.execute("SELECT operation_type, percent_change FROM"
                               " pggit.recalculate_all_baselines_rolling(7, 10, true)"
                               ).fetchall()
        assert [c[0] for c in changed] == ["commit"]
        tracked = conn.execute("SELECT count(*) FROM pggit.performance_operation_types"
                               " WHERE is_tracked").fetchone()[0]
        assert conn.execute("SELECT count(*), count(*) FILTER (WHERE status = 'SUCCESS')"
                            " FROM pggit.baseline_recalc_execution").fetchone() == (
            tracked, tracked)
        assert conn.execute("SELECT operation_type, reason, new_baseline_id IS NOT NULL"
                            " FROM pggit.performance_baseline_history").fetchall() == [
            ("commit", "force", True)]
