-- Later pgGit additions (anomalies, snoozes, notifications, recalculation runs, scheduled jobs,
-- correlations). A given database may lack any of them, so this file is optional on top of
-- core.sql. Columns and constraints follow PGGIT_SCHEMA.md, except alert_notification_webhooks,
-- which the page does not describe: it is a minimal plausible version that the queue, the log
-- and v_notification_queue_health need (webhook_type, is_enabled, last_test_status).

CREATE TABLE pggit.performance_anomalies (
    anomaly_id bigserial NOT NULL,
    metric_id bigint NOT NULL,
    operation_type text NOT NULL,
    anomaly_type text NOT NULL,
    severity text NOT NULL,
    duration_ms numeric,
    baseline_p99_ms numeric,
    z_score numeric,
    deviation_percent numeric,
    degradation_percent numeric,
    trend_slope numeric,
    confidence numeric,
    detected_at timestamp without time zone NOT NULL DEFAULT CURRENT_TIMESTAMP,
    alert_generated boolean DEFAULT false,
    investigation_notes text,
    resolved_at timestamp without time zone,
    CONSTRAINT performance_anomalies_pkey PRIMARY KEY (anomaly_id),
    CONSTRAINT chk_anomaly_type
        CHECK (anomaly_type = ANY (ARRAY['STATISTICAL_OUTLIER'::text,
                                         'PERFORMANCE_DEGRADATION'::text, 'COMBINED'::text])),
    CONSTRAINT chk_anomaly_severity
        CHECK (severity = ANY (ARRAY['INFO'::text, 'WARNING'::text, 'CRITICAL'::text])),
    CONSTRAINT performance_anomalies_metric_id_fkey
        FOREIGN KEY (metric_id) REFERENCES pggit.performance_metrics (metric_id)
        ON DELETE CASCADE
);

CREATE INDEX idx_performance_anomalies_detected_at
    ON pggit.performance_anomalies (detected_at DESC);
CREATE INDEX idx_performance_anomalies_operation
    ON pggit.performance_anomalies (operation_type, detected_at DESC);

CREATE TABLE pggit.alert_snooze (
    snooze_id bigserial NOT NULL,
    operation_type text NOT NULL,
    alert_type text NOT NULL,
    snooze_until timestamp without time zone NOT NULL,
    snooze_reason text,
    created_by text NOT NULL DEFAULT CURRENT_USER,
    created_at timestamp without time zone DEFAULT CURRENT_TIMESTAMP,
    is_active boolean DEFAULT true,
    CONSTRAINT alert_snooze_pkey PRIMARY KEY (snooze_id),
    CONSTRAINT chk_snooze_alert_type
        CHECK (alert_type = ANY (ARRAY['THRESHOLD_EXCEEDED'::text, 'ANOMALY'::text,
                                       'DEGRADATION'::text, 'CORRELATION'::text,
                                       'BASELINE_RECALC_ERROR'::text])),
    CONSTRAINT alert_snooze_operation_type_fkey
        FOREIGN KEY (operation_type)
        REFERENCES pggit.performance_operation_types (operation_type)
);

CREATE INDEX idx_alert_snooze_active
    ON pggit.alert_snooze (operation_type, alert_type, snooze_until) WHERE is_active = true;

CREATE TABLE pggit.alert_notification_webhooks (
    webhook_id bigserial NOT NULL,
    webhook_type text NOT NULL,
    webhook_url text,
    is_enabled boolean DEFAULT true,
    last_test_status text,
    created_at timestamp without time zone DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT alert_notification_webhooks_pkey PRIMARY KEY (webhook_id),
    CONSTRAINT chk_webhook_type
        CHECK (webhook_type = ANY (ARRAY['slack'::text, 'mattermost'::text, 'email'::text,
                                         'pagerduty'::text, 'generic'::text]))
);

CREATE TABLE pggit.alert_notification_queue (
    queue_id bigserial NOT NULL,
    alert_id bigint,
    webhook_id bigint,
    message_body text NOT NULL,
    message_format text DEFAULT 'json'::text,
    status text DEFAULT 'pending'::text,
    retry_count integer DEFAULT 0,
    max_retries integer DEFAULT 3,
    error_message text,
    created_at timestamp without time zone DEFAULT CURRENT_TIMESTAMP,
    sent_at timestamp without time zone,
    CONSTRAINT alert_notification_queue_pkey PRIMARY KEY (queue_id),
    CONSTRAINT chk_queue_status
        CHECK (status = ANY (ARRAY['pending'::text, 'sent'::text, 'failed'::text,
                                   'retrying'::text])),
    CONSTRAINT alert_notification_queue_alert_id_fkey
        FOREIGN KEY (alert_id) REFERENCES pggit.performance_alerts (alert_id) ON DELETE CASCADE,
    CONSTRAINT alert_notification_queue_webhook_id_fkey
        FOREIGN KEY (webhook_id) REFERENCES pggit.alert_notification_webhooks (webhook_id)
);

CREATE INDEX idx_alert_notification_queue_status
    ON pggit.alert_notification_queue (status, created_at);

CREATE TABLE pggit.alert_notification_log (
    log_id bigserial NOT NULL,
    alert_id bigint,
    webhook_id bigint,
    webhook_type text NOT NULL,
    status text NOT NULL,
    delivery_time_ms integer,
    http_status_code integer,
    error_message text,
    sent_at timestamp without time zone DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT alert_notification_log_pkey PRIMARY KEY (log_id),
    CONSTRAINT alert_notification_log_alert_id_fkey
        FOREIGN KEY (alert_id) REFERENCES pggit.performance_alerts (alert_id) ON DELETE CASCADE,
    CONSTRAINT alert_notification_log_webhook_id_fkey
        FOREIGN KEY (webhook_id) REFERENCES pggit.alert_notification_webhooks (webhook_id)
);

CREATE INDEX idx_alert_notification_log_sent_at ON pggit.alert_notification_log (sent_at DESC);

CREATE TABLE pggit.baseline_recalc_execution (
    execution_id bigserial NOT NULL,
    operation_type text NOT NULL,
    start_time timestamp without time zone NOT NULL DEFAULT CURRENT_TIMESTAMP,
    end_time timestamp without time zone,
    status text NOT NULL DEFAULT 'RUNNING'::text,
    duration_ms integer,
    records_affected integer,
    error_message text,
    error_details jsonb,
    CONSTRAINT baseline_recalc_execution_pkey PRIMARY KEY (execution_id),
    CONSTRAINT chk_recalc_status
        CHECK (status = ANY (ARRAY['RUNNING'::text, 'SUCCESS'::text, 'FAILED'::text])),
    CONSTRAINT baseline_recalc_execution_operation_type_fkey
        FOREIGN KEY (operation_type)
        REFERENCES pggit.performance_operation_types (operation_type)
);

CREATE INDEX idx_baseline_recalc_execution_start
    ON pggit.baseline_recalc_execution (operation_type, start_time DESC);

CREATE TABLE pggit.performance_baseline_history (
    history_id bigserial NOT NULL,
    operation_type text NOT NULL,
    old_baseline_id bigint,
    new_baseline_id bigint,
    old_p99_microseconds bigint,
    new_p99_microseconds bigint,
    percent_change numeric(8,2),
    sample_count integer,
    lookback_days integer,
    calculated_at timestamp without time zone DEFAULT CURRENT_TIMESTAMP,
    reason text,
    CONSTRAINT performance_baseline_history_pkey PRIMARY KEY (history_id),
    CONSTRAINT performance_baseline_history_operation_type_fkey
        FOREIGN KEY (operation_type)
        REFERENCES pggit.performance_operation_types (operation_type)
);

CREATE INDEX idx_performance_baseline_history_calculated
    ON pggit.performance_baseline_history (operation_type, calculated_at DESC);

CREATE TABLE pggit.scheduled_job_execution (
    job_execution_id bigserial NOT NULL,
    job_name text NOT NULL,
    cron_schedule text NOT NULL,
    execution_start timestamp without time zone NOT NULL DEFAULT CURRENT_TIMESTAMP,
    execution_end timestamp without time zone,
    status text NOT NULL DEFAULT 'RUNNING'::text,
    duration_ms integer,
    rows_affected integer,
    error_message text,
    execution_context jsonb,
    CONSTRAINT scheduled_job_execution_pkey PRIMARY KEY (job_execution_id),
    CONSTRAINT chk_job_status
        CHECK (status = ANY (ARRAY['RUNNING'::text, 'SUCCESS'::text, 'FAILED'::text,
                                   'SKIPPED'::text])),
    CONSTRAINT scheduled_job_execution_job_name_execution_start_key
        UNIQUE (job_name, execution_start)
);

CREATE TABLE pggit.performance_correlations (
    correlation_id bigserial NOT NULL,
    operation_type_1 text NOT NULL,
    operation_type_2 text NOT NULL,
    correlation_coefficient numeric(5,2) NOT NULL,
    confidence numeric(5,2),
    shared_bottleneck text,
    lookback_hours integer DEFAULT 24,
    sample_pairs integer,
    recommendation text,
    severity text DEFAULT 'INFO'::text,
    analyzed_at timestamp without time zone NOT NULL DEFAULT CURRENT_TIMESTAMP,
    is_active boolean DEFAULT true,
    CONSTRAINT performance_correlations_pkey PRIMARY KEY (correlation_id),
    CONSTRAINT chk_correlation_confidence
        CHECK ((confidence IS NULL) OR ((confidence >= 0::numeric) AND (confidence <= 1::numeric))),
    CONSTRAINT chk_correlation_coefficient
        CHECK ((correlation_coefficient >= ('-1'::integer)::numeric)
               AND (correlation_coefficient <= 1::numeric)),
    CONSTRAINT performance_correlations_operation_type_1_operation_type_2_key
        UNIQUE (operation_type_1, operation_type_2)
);

INSERT INTO pggit.alert_notification_webhooks (webhook_type, webhook_url, is_enabled,
                                               last_test_status)
VALUES
    ('slack', 'https://hooks.slack.example/services/T000/B000/demo', true, 'OK'),
    ('mattermost', 'https://chat.example/hooks/demo', true, 'OK'),
    ('email', 'mailto:oncall@example.com', true, 'OK'),
    ('pagerduty', 'https://events.pagerduty.example/v2/enqueue', true, 'FAILED'),
    ('generic', 'https://alerts.example/webhook', false, NULL);
