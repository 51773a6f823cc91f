-- Writers for the later tables (anomalies, notifications, scheduled jobs, snoozes,
-- correlations, baseline recalculation runs). Installed only together with later.sql.

CREATE OR REPLACE FUNCTION pggit.record_performance_anomaly(
    p_metric_id bigint,
    p_anomaly_type text,
    p_severity text,
    p_z_score numeric DEFAULT NULL,
    p_deviation_percent numeric DEFAULT NULL,
    p_degradation_percent numeric DEFAULT NULL,
    p_trend_slope numeric DEFAULT NULL,
    p_confidence numeric DEFAULT NULL,
    p_create_alert boolean DEFAULT false
)
RETURNS bigint
LANGUAGE plpgsql
AS $$
-- Copies the metric's duration and the active baseline's p99 into the anomaly, as pgGit's
-- detectors do, and optionally raises an ANOMALY alert for it (alert_generated = true).
DECLARE
    v_metric pggit.performance_metrics%ROWTYPE;
    v_p99 bigint;
    v_id bigint;
BEGIN
    SELECT * INTO v_metric FROM pggit.performance_metrics WHERE metric_id = p_metric_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT b.p99_microseconds INTO v_p99
    FROM pggit.performance_baselines b
    WHERE b.operation_type = v_metric.operation_type AND b.is_active
      AND (b.branch_id IS NULL OR b.branch_id = v_metric.branch_id)
    ORDER BY b.calculation_timestamp DESC, b.baseline_id DESC
    LIMIT 1;

    INSERT INTO pggit.performance_anomalies (
        metric_id, operation_type, anomaly_type, severity, duration_ms, baseline_p99_ms,
        z_score, deviation_percent, degradation_percent, trend_slope, confidence,
        alert_generated)
    VALUES (
        p_metric_id, v_metric.operation_type, p_anomaly_type, p_severity,
        v_metric.duration_ms, v_p99 / 1000.0, p_z_score, p_deviation_percent,
        p_degradation_percent, p_trend_slope, p_confidence, p_create_alert)
    RETURNING anomaly_id INTO v_id;

    IF p_create_alert THEN
        INSERT INTO pggit.performance_alerts (
            metric_id, operation_type, alert_type, severity, baseline_p99_microseconds,
            actual_duration_microseconds, violation_multiplier, branch_id, user_name)
        VALUES (
            p_metric_id, v_metric.operation_type, 'ANOMALY', p_severity, v_p99,
            v_metric.duration_microseconds,
            LEAST(round(COALESCE(p_z_score, 0), 2), 9999.99),
            v_metric.branch_id, v_metric.user_name);
    END IF;
    RETURN v_id;
END;
$$;

CREATE OR REPLACE FUNCTION pggit.enqueue_alert_notification(
    p_alert_id bigint,
    p_webhook_id bigint,
    p_message_format text DEFAULT 'json'
)
RETURNS bigint
LANGUAGE plpgsql
AS $$
-- Queues one delivery of an alert to one webhook; delivery is asynchronous (seed 004).
DECLARE
    v_alert pggit.performance_alerts%ROWTYPE;
    v_id bigint;
BEGIN
    SELECT * INTO v_alert FROM pggit.performance_alerts WHERE alert_id = p_alert_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    INSERT INTO pggit.alert_notification_queue (alert_id, webhook_id, message_body,
                                                message_format)
    VALUES (
        p_alert_id, p_webhook_id,
        jsonb_build_object(
            'title', format('Performance %s: %s [%s]', v_alert.alert_type,
                            v_alert.operation_type, v_alert.severity),
            'alert_id', v_alert.alert_id,
            'operation_type', v_alert.operation_type,
            'severity', v_alert.severity,
            'actual_ms', v_alert.actual_duration_microseconds / 1000.0,
            'baseline_p99_ms', v_alert.baseline_p99_microseconds / 1000.0,
            'multiplier', v_alert.violation_multiplier)::text,
        p_message_format)
    RETURNING queue_id INTO v_id;
    RETURN v_id;
END;
$$;

CREATE OR REPLACE FUNCTION pggit.deliver_alert_notification(
    p_queue_id bigint,
    p_success boolean,
    p_delivery_time_ms integer DEFAULT NULL,
    p_http_status_code integer DEFAULT NULL,
    p_error_message text DEFAULT NULL
)
RETURNS text
LANGUAGE plpgsql
AS $$
-- Records one delivery attempt: a log row every time, and the queue item becomes 'sent',
-- 'retrying' or, once max_retries attempts have failed, 'failed'. Returns the new status.
DECLARE
    v_item pggit.alert_notification_queue%ROWTYPE;
    v_type text;
    v_status text;
BEGIN
    SELECT * INTO v_item FROM pggit.alert_notification_queue WHERE queue_id = p_queue_id
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT webhook_type INTO v_type
    FROM pggit.alert_notification_webhooks WHERE webhook_id = v_item.webhook_id;

    IF p_success THEN
        v_status := 'sent';
    ELSIF COALESCE(v_item.retry_count, 0) + 1 >= COALESCE(v_item.max_retries, 3) THEN
        v_status := 'failed';
    ELSE
        v_status := 'retrying';
    END IF;

    UPDATE pggit.alert_notification_queue
       SET status = v_status,
           retry_count = CASE WHEN p_success THEN retry_count
                              ELSE COALESCE(retry_count, 0) + 1 END,
           error_message = CASE WHEN p_success THEN NULL ELSE p_error_message END,
           sent_at = CASE WHEN p_success THEN CURRENT_TIMESTAMP ELSE sent_at END
     WHERE queue_id = p_queue_id;

    INSERT INTO pggit.alert_notification_log (alert_id, webhook_id, webhook_type, status,
                                              delivery_time_ms, http_status_code,
                                              error_message)
    VALUES (v_item.alert_id, v_item.webhook_id, COALESCE(v_type, 'generic'),
            CASE WHEN p_success THEN 'sent' ELSE 'failed' END,
            p_delivery_time_ms, p_http_status_code, p_error_message);
    RETURN v_status;
END;
$$;

CREATE OR REPLACE FUNCTION pggit.start_scheduled_job(
    p_job_name text,
    p_cron_schedule text,
    p_execution_context jsonb DEFAULT NULL
)
RETURNS bigint
LANGUAGE plpgsql
AS $$
-- clock_timestamp(): (job_name, execution_start) is unique, and two runs started in one
-- transaction would otherwise share CURRENT_TIMESTAMP.
DECLARE
    v_id bigint;
BEGIN
    INSERT INTO pggit.scheduled_job_execution (job_name, cron_schedule, execution_start,
                                               status, execution_context)
    VALUES (p_job_name, p_cron_schedule, clock_timestamp()::timestamp without time zone,
            'RUNNING', p_execution_context)
    RETURNING job_execution_id INTO v_id;
    RETURN v_id;
END;
$$;

CREATE OR REPLACE FUNCTION pggit.finish_scheduled_job(
    p_job_execution_id bigint,
    p_status text DEFAULT 'SUCCESS',
    p_rows_affected integer DEFAULT NULL,
    p_error_message text DEFAULT NULL
)
RETURNS integer
LANGUAGE plpgsql
AS $$
-- Updates the run in place and returns its duration in milliseconds.
DECLARE
    v_end timestamp without time zone := clock_timestamp()::timestamp without time zone;
    v_ms integer;
BEGIN
    UPDATE pggit.scheduled_job_execution
       SET execution_end = GREATEST(v_end, execution_start),
           status = p_status,
           duration_ms = GREATEST(round(extract(epoch FROM (v_end - execution_start)) * 1000),
                                  0)::integer,
           rows_affected = p_rows_affected,
           error_message = p_error_message
     WHERE job_execution_id = p_job_execution_id
    RETURNING duration_ms INTO v_ms;
    RETURN v_ms;
END;
$$;

CREATE OR REPLACE FUNCTION pggit.snooze_alerts(
    p_operation_type text,
    p_alert_type text,
    p_duration interval,
    p_reason text DEFAULT NULL,
    p_created_by text DEFAULT CURRENT_USER
)
RETURNS bigint
LANGUAGE plpgsql
AS $$
-- A new snooze replaces the active one for the same operation and alert type.
DECLARE
    v_id bigint;
BEGIN
    UPDATE pggit.alert_snooze
       SET is_active = false
     WHERE operation_type = p_operation_type AND alert_type = p_alert_type AND is_active;
    INSERT INTO pggit.alert_snooze (operation_type, alert_type, snooze_until, snooze_reason,
                                    created_by)
    VALUES (p_operation_type, p_alert_type, CURRENT_TIMESTAMP + p_duration, p_reason,
            p_created_by)
    RETURNING snooze_id INTO v_id;
    RETURN v_id;
END;
$$;

CREATE OR REPLACE FUNCTION pggit.store_correlation_analysis(
    p_operation_type_1 text,
    p_operation_type_2 text,
    p_correlation_coefficient numeric,
    p_confidence numeric DEFAULT NULL,
    p_shared_bottleneck text DEFAULT NULL,
    p_sample_pairs integer DEFAULT NULL,
    p_recommendation text DEFAULT NULL,
    p_severity text DEFAULT 'INFO',
    p_lookback_hours integer DEFAULT 24
)
RETURNS bigint
LANGUAGE plpgsql
AS $$
-- One row per unordered pair (stored with the smaller name first), refreshed in place.
DECLARE
    v_a text := LEAST(p_operation_type_1, p_operation_type_2);
    v_b text := GREATEST(p_operation_type_1, p_operation_type_2);
    v_id bigint;
BEGIN
    INSERT INTO pggit.performance_correlations AS c (
        operation_type_1, operation_type_2, correlation_coefficient, confidence,
        shared_bottleneck, lookback_hours, sample_pairs, recommendation, severity)
    VALUES (v_a, v_b, p_correlation_coefficient, p_confidence, p_shared_bottleneck,
            p_lookback_hours, p_sample_pairs, p_recommendation, p_severity)
    ON CONFLICT (operation_type_1, operation_type_2) DO UPDATE
       SET correlation_coefficient = EXCLUDED.correlation_coefficient,
           confidence = EXCLUDED.confidence,
           shared_bottleneck = EXCLUDED.shared_bottleneck,
           lookback_hours = EXCLUDED.lookback_hours,
           sample_pairs = EXCLUDED.sample_pairs,
           recommendation = EXCLUDED.recommendation,
           severity = EXCLUDED.severity,
           analyzed_at = CURRENT_TIMESTAMP,
           is_active = true
    RETURNING c.correlation_id INTO v_id;
    RETURN v_id;
END;
$$;

CREATE OR REPLACE FUNCTION pggit.recalculate_all_baselines_rolling(
    p_lookback_days integer DEFAULT 7,
    p_min_samples integer DEFAULT 10,
    p_force_recalc boolean DEFAULT false,
    p_reason text DEFAULT 'scheduled'
)
RETURNS TABLE (
    operation_type text,
    baseline_id bigint,
    sample_count integer,
    p99_old_ms numeric,
    p99_new_ms numeric,
    percent_change numeric
)
LANGUAGE plpgsql
AS $$
-- Seed 002's rolling recalculation: every tracked operation type with enough samples gets a
-- new all-branches baseline when its p99 moved by more than 5% (or when forced). Each type
-- leaves a baseline_recalc_execution row; a failing type is recorded as FAILED and does not
-- stop the others. Changes are logged in performance_baseline_history.
DECLARE
    v_type text;
    v_exec_id bigint;
    v_started timestamp without time zone;
    v_old pggit.performance_baselines%ROWTYPE;
    v_new pggit.performance_baselines%ROWTYPE;
    v_new_p99 bigint;
    v_samples integer;
    v_change numeric;
    v_new_id bigint;
BEGIN
    FOR v_type IN
        SELECT t.operation_type FROM pggit.performance_operation_types t
        WHERE t.is_tracked ORDER BY t.operation_type
    LOOP
        v_started := clock_timestamp()::timestamp without time zone;
        INSERT INTO pggit.baseline_recalc_execution (operation_type, start_time, status)
        VALUES (v_type, v_started, 'RUNNING')
        RETURNING execution_id INTO v_exec_id;
        BEGIN
            SELECT count(*),
                   percentile_cont(0.99) WITHIN GROUP (ORDER BY m.duration_microseconds)
              INTO v_samples, v_new_p99
            FROM pggit.performance_metrics m
            WHERE m.operation_type = v_type
              AND m.recorded_at >= CURRENT_TIMESTAMP - make_interval(days => p_lookback_days);

            v_new_id := NULL;
            v_change := NULL;
            SELECT * INTO v_old FROM pggit.performance_baselines b
            WHERE b.operation_type = v_type AND b.branch_id IS NULL AND b.is_active
            ORDER BY b.calculation_timestamp DESC, b.baseline_id DESC LIMIT 1;
            IF FOUND AND v_old.p99_microseconds > 0 AND v_new_p99 IS NOT NULL THEN
                v_change := round((v_new_p99 - v_old.p99_microseconds) * 100.0
                                  / v_old.p99_microseconds, 2);
            END IF;

            IF v_samples >= p_min_samples
               AND (p_force_recalc OR v_change IS NULL OR abs(v_change) > 5) THEN
                v_new_id := pggit.calculate_performance_baseline(v_type, NULL, p_lookback_days);
            END IF;

            IF v_new_id IS NOT NULL THEN
                SELECT * INTO v_new FROM pggit.performance_baselines b
                WHERE b.baseline_id = v_new_id;
                INSERT INTO pggit.performance_baseline_history (
                    operation_type, old_baseline_id, new_baseline_id, old_p99_microseconds,
                    new_p99_microseconds, percent_change, sample_count, lookback_days, reason)
                VALUES (v_type, v_old.baseline_id, v_new_id, v_old.p99_microseconds,
                        v_new.p99_microseconds, LEAST(GREATEST(v_change, -999999.99), 999999.99),
                        v_new.sample_count, p_lookback_days,
                        CASE WHEN p_force_recalc THEN 'force' ELSE p_reason END);
                operation_type := v_type;
                baseline_id := v_new_id;
                sample_count := v_new.sample_count;
                p99_old_ms := v_old.p99_microseconds / 1000.0;
                p99_new_ms := v_new.p99_microseconds / 1000.0;
                percent_change := v_change;
                RETURN NEXT;
            END IF;

            UPDATE pggit.baseline_recalc_execution e
               SET end_time = clock_timestamp()::timestamp without time zone,
                   status = 'SUCCESS',
                   duration_ms = round(extract(epoch FROM (clock_timestamp()::timestamp
                                                           without time zone - v_started))
                                       * 1000)::integer,
                   records_affected = CASE WHEN v_new_id IS NULL THEN 0 ELSE 1 END
             WHERE e.execution_id = v_exec_id;
        EXCEPTION WHEN OTHERS THEN
            UPDATE pggit.baseline_recalc_execution e
               SET end_time = clock_timestamp()::timestamp without time zone,
                   status = 'FAILED',
                   duration_ms = round(extract(epoch FROM (clock_timestamp()::timestamp
                                                           without time zone - v_started))
                                       * 1000)::integer,
                   error_message = SQLERRM,
                   error_details = jsonb_build_object('sqlstate', SQLSTATE)
             WHERE e.execution_id = v_exec_id;
        END;
        v_old := NULL;
    END LOOP;
END;
$$;
