-- pgGit's core writer functions (PGGIT_SCHEMA.md items 5, 6, 7, 9 and 11). They only touch the
-- core tables, so they work in databases without the later additions. Timestamps come from
-- CURRENT_TIMESTAMP (transaction start, session TimeZone) like pgGit's, except where noted.

CREATE OR REPLACE FUNCTION pggit.check_performance_baseline(p_metric_id bigint)
RETURNS bigint
LANGUAGE plpgsql
AS $$
-- Returns the id of the THRESHOLD_EXCEEDED alert it wrote, or NULL.
DECLARE
    v_metric pggit.performance_metrics%ROWTYPE;
    v_baseline pggit.performance_baselines%ROWTYPE;
    v_alert_id bigint;
BEGIN
    SELECT * INTO v_metric FROM pggit.performance_metrics WHERE metric_id = p_metric_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;

    SELECT * INTO v_baseline
    FROM pggit.performance_baselines b
    WHERE b.operation_type = v_metric.operation_type
      AND b.is_active
      AND (b.branch_id IS NULL OR b.branch_id = v_metric.branch_id)
    ORDER BY b.calculation_timestamp DESC, b.baseline_id DESC
    LIMIT 1;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;

    IF v_metric.duration_microseconds >
       v_baseline.p99_microseconds * COALESCE(v_baseline.alert_threshold_multiplier, 2.0) THEN
        INSERT INTO pggit.performance_alerts (
            metric_id, baseline_id, operation_type, alert_type, severity,
            baseline_p99_microseconds, actual_duration_microseconds, violation_multiplier,
            branch_id, user_name)
        VALUES (
            v_metric.metric_id, v_baseline.baseline_id, v_metric.operation_type,
            'THRESHOLD_EXCEEDED', 'WARNING',
            v_baseline.p99_microseconds, v_metric.duration_microseconds,
            -- numeric(6,2) tops out at 9999.99; a degenerate 1 us p99 must not make the
            -- metric's own insert fail.
            LEAST(round(v_metric.duration_microseconds::numeric
                        / GREATEST(v_baseline.p99_microseconds, 1), 2), 9999.99),
            v_metric.branch_id, v_metric.user_name)
        RETURNING alert_id INTO v_alert_id;
    END IF;
    RETURN v_alert_id;
END;
$$;

CREATE OR REPLACE FUNCTION pggit.record_performance_metric(
    p_operation_type text,
    p_duration_microseconds bigint,
    p_operation_name text DEFAULT NULL,
    p_branch_id integer DEFAULT NULL,
    p_user_name text DEFAULT CURRENT_USER,
    p_session_id text DEFAULT NULL,
    p_rows_affected integer DEFAULT NULL,
    p_memory_bytes bigint DEFAULT NULL,
    p_cpu_microseconds bigint DEFAULT NULL,
    p_operation_metadata jsonb DEFAULT NULL,
    p_error_details jsonb DEFAULT NULL
)
RETURNS bigint
LANGUAGE plpgsql
AS $$
-- The operation is taken to have just finished: it ends at the transaction's start time and
-- began one duration earlier. p_error_details is an addition for failed operations; pgGit's
-- ten-argument calls still resolve to this function.
DECLARE
    v_now timestamp without time zone := CURRENT_TIMESTAMP;
    v_metric_id bigint;
BEGIN
    INSERT INTO pggit.performance_metrics (
        operation_type, operation_name, duration_microseconds, duration_ms,
        start_time, end_time, branch_id, user_name, session_id, rows_affected,
        memory_bytes, cpu_microseconds, operation_metadata, error_details, period_start)
    VALUES (
        p_operation_type, p_operation_name, p_duration_microseconds,
        p_duration_microseconds / 1000.0,
        v_now - p_duration_microseconds * interval '1 microsecond', v_now,
        p_branch_id, p_user_name, p_session_id, p_rows_affected,
        p_memory_bytes, p_cpu_microseconds, p_operation_metadata, p_error_details,
        date_trunc('day', v_now))
    RETURNING metric_id INTO v_metric_id;

    PERFORM pggit.check_performance_baseline(v_metric_id);
    RETURN v_metric_id;
END;
$$;

CREATE OR REPLACE FUNCTION pggit.calculate_performance_baseline(
    p_operation_type text,
    p_branch_id integer DEFAULT NULL,
    p_lookback_days integer DEFAULT 7,
    p_alert_threshold_multiplier numeric DEFAULT 2.0
)
RETURNS bigint
LANGUAGE plpgsql
AS $$
-- Returns the new active baseline's id, or NULL when fewer than 10 samples exist (a baseline
-- from a handful of runs would make every ordinary run look like an outlier). A NULL branch
-- means "all branches" and deactivates only the previous all-branches baseline.
DECLARE
    v_count integer;
    v_min bigint;
    v_max bigint;
    v_p50 bigint;
    v_p75 bigint;
    v_p90 bigint;
    v_p95 bigint;
    v_p99 bigint;
    v_mean numeric;
    v_stddev numeric;
    v_baseline_id bigint;
BEGIN
    SELECT count(*),
           min(duration_microseconds),
           max(duration_microseconds),
           percentile_cont(0.50) WITHIN GROUP (ORDER BY duration_microseconds),
           percentile_cont(0.75) WITHIN GROUP (ORDER BY duration_microseconds),
           percentile_cont(0.90) WITHIN GROUP (ORDER BY duration_microseconds),
           percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_microseconds),
           percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_microseconds),
           avg(duration_microseconds),
           stddev(duration_microseconds)
      INTO v_count, v_min, v_max, v_p50, v_p75, v_p90, v_p95, v_p99, v_mean, v_stddev
    FROM pggit.performance_metrics
    WHERE operation_type = p_operation_type
      AND (p_branch_id IS NULL OR branch_id = p_branch_id)
      AND recorded_at >= CURRENT_TIMESTAMP - make_interval(days => p_lookback_days);

    IF v_count < 10 THEN
        RAISE NOTICE 'baseline for % needs at least 10 samples, found %',
            p_operation_type, v_count;
        RETURN NULL;
    END IF;

    UPDATE pggit.performance_baselines
       SET is_active = false
     WHERE operation_type = p_operation_type
       AND branch_id IS NOT DISTINCT FROM p_branch_id
       AND is_active;

    INSERT INTO pggit.performance_baselines (
        operation_type, branch_id, baseline_date, sample_count,
        min_microseconds, max_microseconds,
        p50_microseconds, p75_microseconds, p90_microseconds, p95_microseconds,
        p99_microseconds, mean_microseconds, stddev_microseconds,
        alert_threshold_multiplier, is_active, calculated_from_days)
    VALUES (
        p_operation_type, p_branch_id, CURRENT_DATE, v_count,
        v_min, v_max, v_p50, v_p75, v_p90, v_p95, v_p99,
        round(v_mean, 2), round(v_stddev, 2),
        p_alert_threshold_multiplier, true, p_lookback_days)
    RETURNING baseline_id INTO v_baseline_id;
    RETURN v_baseline_id;
END;
$$;

CREATE OR REPLACE FUNCTION pggit.start_performance_trace(
    p_trace_id text DEFAULT NULL,
    p_span_id text DEFAULT NULL,
    p_parent_span_id text DEFAULT NULL,
    p_operation_type text DEFAULT NULL,
    p_span_name text DEFAULT NULL,
    p_branch_id integer DEFAULT NULL,
    p_user_name text DEFAULT CURRENT_USER,
    p_session_id text DEFAULT NULL,
    p_attributes jsonb DEFAULT NULL
)
RETURNS text
LANGUAGE plpgsql
AS $$
-- Returns the span_id. trace_id is the table's primary key, so a child span gets its own
-- trace_id (generated when not given); its trace is found through parent_span_id.
-- start_time uses clock_timestamp(), not CURRENT_TIMESTAMP: the latter is the transaction's
-- start, so nested spans opened in one transaction would all start at the same instant and
-- their durations would include time spent before they began.
DECLARE
    v_span_id text := COALESCE(p_span_id, gen_random_uuid()::text);
BEGIN
    INSERT INTO pggit.operation_traces (
        trace_id, span_id, parent_span_id, operation_type, span_name, span_status,
        start_time, branch_id, user_name, session_id, attributes)
    VALUES (
        COALESCE(p_trace_id, gen_random_uuid()::text), v_span_id, p_parent_span_id,
        p_operation_type, COALESCE(p_span_name, p_operation_type), 'RUNNING',
        clock_timestamp()::timestamp without time zone, p_branch_id, p_user_name,
        p_session_id, p_attributes);
    RETURN v_span_id;
END;
$$;

CREATE OR REPLACE FUNCTION pggit.end_performance_trace(
    p_span_id text,
    p_span_status text DEFAULT 'SUCCESS',
    p_error_message text DEFAULT NULL,
    p_error_code text DEFAULT NULL,
    p_error_details jsonb DEFAULT NULL
)
RETURNS bigint
LANGUAGE plpgsql
AS $$
-- Updates the span in place (nothing records when) and returns its duration in microseconds,
-- or NULL for an unknown span. Uses clock_timestamp() for the same reason as the start.
DECLARE
    v_end timestamp without time zone := clock_timestamp()::timestamp without time zone;
    v_duration bigint;
BEGIN
    UPDATE pggit.operation_traces
       SET end_time = GREATEST(v_end, start_time),
           duration_microseconds =
               GREATEST(round(extract(epoch FROM (v_end - start_time)) * 1000000), 0)::bigint,
           span_status = p_span_status,
           error_message = p_error_message,
           error_code = p_error_code,
           error_details = p_error_details
     WHERE span_id = p_span_id
    RETURNING duration_microseconds INTO v_duration;
    RETURN v_duration;
END;
$$;

CREATE OR REPLACE FUNCTION pggit.check_alert_escalation()
RETURNS integer
LANGUAGE plpgsql
AS $$
-- Seed 002's rule, applied to all operation types at once: three or more threshold
-- violations of one operation type within the last hour make its unacknowledged alerts of
-- that hour CRITICAL. Returns how many alerts were regraded.
DECLARE
    v_regraded integer;
BEGIN
    WITH hot AS (
        SELECT operation_type
        FROM pggit.performance_alerts
        WHERE alert_type = 'THRESHOLD_EXCEEDED'
          AND created_at >= CURRENT_TIMESTAMP - interval '1 hour'
        GROUP BY operation_type
        HAVING count(*) >= 3
    )
    UPDATE pggit.performance_alerts a
       SET severity = 'CRITICAL'
      FROM hot
     WHERE a.operation_type = hot.operation_type
       AND a.alert_type = 'THRESHOLD_EXCEEDED'
       AND a.created_at >= CURRENT_TIMESTAMP - interval '1 hour'
       AND NOT COALESCE(a.is_acknowledged, false)
       AND a.severity IS DISTINCT FROM 'CRITICAL';
    GET DIAGNOSTICS v_regraded = ROW_COUNT;
    RETURN v_regraded;
END;
$$;

CREATE OR REPLACE FUNCTION pggit.record_merge_performance(
    p_source_branch_id integer,
    p_target_branch_id integer,
    p_merge_status text,
    p_merge_base_calculation_us bigint DEFAULT NULL,
    p_conflict_detection_us bigint DEFAULT NULL,
    p_conflict_count integer DEFAULT 0,
    p_auto_resolution_us bigint DEFAULT NULL,
    p_auto_resolution_success_count integer DEFAULT 0,
    p_auto_resolution_failure_count integer DEFAULT 0,
    p_total_merge_us bigint DEFAULT NULL,
    p_merge_base_commit_hash text DEFAULT NULL,
    p_merge_outcome_details jsonb DEFAULT NULL,
    p_user_name text DEFAULT CURRENT_USER,
    p_session_id text DEFAULT NULL,
    p_completed boolean DEFAULT true
)
RETURNS bigint
LANGUAGE plpgsql
AS $$
-- A finished merge ends now and started total_merge_us earlier (default: the sum of the
-- phases). With p_completed = false the merge is still running: it starts now and
-- completed_at stays NULL until complete_merge_performance().
DECLARE
    v_now timestamp without time zone := CURRENT_TIMESTAMP;
    v_total bigint := COALESCE(p_total_merge_us,
                               COALESCE(p_merge_base_calculation_us, 0)
                               + COALESCE(p_conflict_detection_us, 0)
                               + COALESCE(p_auto_resolution_us, 0));
    v_id bigint;
BEGIN
    INSERT INTO pggit.merge_performance_metrics (
        source_branch_id, target_branch_id, merge_base_commit_hash,
        merge_base_calculation_us, conflict_detection_us, conflict_count,
        auto_resolution_us, auto_resolution_success_count, auto_resolution_failure_count,
        total_merge_us, merge_status, merge_outcome_details, user_name, session_id,
        started_at, completed_at)
    VALUES (
        p_source_branch_id, p_target_branch_id, p_merge_base_commit_hash,
        p_merge_base_calculation_us, p_conflict_detection_us, p_conflict_count,
        p_auto_resolution_us, p_auto_resolution_success_count, p_auto_resolution_failure_count,
        v_total, p_merge_status, p_merge_outcome_details, p_user_name, p_session_id,
        CASE WHEN p_completed THEN v_now - v_total * interval '1 microsecond' ELSE v_now END,
        CASE WHEN p_completed THEN v_now END)
    RETURNING merge_metric_id INTO v_id;
    RETURN v_id;
END;
$$;

CREATE OR REPLACE FUNCTION pggit.complete_merge_performance(
    p_merge_metric_id bigint,
    p_merge_status text,
    p_auto_resolution_us bigint DEFAULT NULL,
    p_auto_resolution_success_count integer DEFAULT NULL,
    p_auto_resolution_failure_count integer DEFAULT NULL
)
RETURNS bigint
LANGUAGE plpgsql
AS $$
-- Finishes a running merge in place; total_merge_us becomes the wall time since started_at.
-- Returns that total, or NULL for an unknown or already completed merge.
DECLARE
    v_total bigint;
BEGIN
    UPDATE pggit.merge_performance_metrics
       SET completed_at = GREATEST(CURRENT_TIMESTAMP::timestamp without time zone, started_at),
           merge_status = p_merge_status,
           auto_resolution_us = COALESCE(p_auto_resolution_us, auto_resolution_us),
           auto_resolution_success_count =
               COALESCE(p_auto_resolution_success_count, auto_resolution_success_count),
           auto_resolution_failure_count =
               COALESCE(p_auto_resolution_failure_count, auto_resolution_failure_count),
           total_merge_us = GREATEST(
               round(extract(epoch FROM (CURRENT_TIMESTAMP::timestamp without time zone
                                         - started_at)) * 1000000)::bigint,
               total_merge_us)
     WHERE merge_metric_id = p_merge_metric_id
       AND completed_at IS NULL
    RETURNING total_merge_us INTO v_total;
    RETURN v_total;
END;
$$;

CREATE OR REPLACE FUNCTION pggit.acknowledge_performance_alert(
    p_alert_id bigint,
    p_acknowledged_by text DEFAULT CURRENT_USER,
    p_resolution_notes text DEFAULT NULL
)
RETURNS boolean
LANGUAGE plpgsql
AS $$
-- Marks an alert as reviewed in place; false when it does not exist or was already
-- acknowledged, so the first acknowledgement's time and author are kept.
BEGIN
    UPDATE pggit.performance_alerts
       SET is_acknowledged = true,
           acknowledged_at = CURRENT_TIMESTAMP,
           acknowledged_by = p_acknowledged_by,
           resolution_notes = COALESCE(p_resolution_notes, resolution_notes)
     WHERE alert_id = p_alert_id
       AND NOT COALESCE(is_acknowledged, false);
    RETURN FOUND;
END;
$$;
