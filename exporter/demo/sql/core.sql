-- pgGit core tables as deployed (see PGGIT_SCHEMA.md, "Tables as deployed").
-- Column types, NULL-ness, defaults and constraints follow the deployed SQL, not the seed drafts:
-- branches are keyed by branch_id/branch_name, every timestamp is "timestamp without time zone"
-- filled with CURRENT_TIMESTAMP (transaction start, session TimeZone).

CREATE SCHEMA IF NOT EXISTS pggit;

-- pgGit's commit table is much wider; only what branches.head_commit_hash needs plus a few
-- columns that make the seeded history look real.
CREATE TABLE pggit.commits (
    commit_hash character(64) PRIMARY KEY,
    parent_commit_hash character(64) REFERENCES pggit.commits (commit_hash),
    branch_name text NOT NULL,
    author text NOT NULL,
    message text NOT NULL,
    committed_at timestamp without time zone NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE pggit.branches (
    branch_id serial PRIMARY KEY,
    branch_name text NOT NULL,
    parent_branch_id integer REFERENCES pggit.branches (branch_id),
    head_commit_hash character(64) REFERENCES pggit.commits (commit_hash),
    status text DEFAULT 'ACTIVE'::text,
    branch_type text DEFAULT 'schema-only'::text,
    description text,
    metadata jsonb,
    object_count integer DEFAULT 0,
    modified_objects integer DEFAULT 0,
    storage_bytes bigint DEFAULT 0,
    deduplication_ratio numeric(5,2) DEFAULT 100.00,
    created_by text NOT NULL,
    created_at timestamp without time zone DEFAULT CURRENT_TIMESTAMP,
    merged_by text,
    merged_at timestamp without time zone,
    CONSTRAINT branches_branch_name_key UNIQUE (branch_name),
    CONSTRAINT chk_branch_type
        CHECK (branch_type = ANY (ARRAY['schema-only'::text, 'full'::text, 'temporal'::text,
                                        'compressed'::text])),
    CONSTRAINT chk_branch_status
        CHECK (status = ANY (ARRAY['ACTIVE'::text, 'MERGED'::text, 'DELETED'::text,
                                   'CONFLICTED'::text, 'STALE'::text]))
);

CREATE TABLE pggit.performance_operation_types (
    operation_type_id serial PRIMARY KEY,
    operation_type text NOT NULL,
    description text,
    category text,
    typical_duration_ms numeric(10,1),
    is_tracked boolean DEFAULT true,
    CONSTRAINT performance_operation_types_operation_type_key UNIQUE (operation_type)
);

CREATE TABLE pggit.performance_metrics (
    metric_id bigserial NOT NULL,
    operation_type text NOT NULL,
    operation_name text,
    duration_microseconds bigint NOT NULL,
    duration_ms numeric(10,3) NOT NULL,
    start_time timestamp without time zone NOT NULL,
    end_time timestamp without time zone NOT NULL,
    branch_id integer,
    user_name text NOT NULL,
    session_id text,
    rows_affected integer,
    memory_bytes bigint,
    cpu_microseconds bigint,
    connection_count integer DEFAULT 1,
    operation_metadata jsonb,
    error_details jsonb,
    recorded_at timestamp without time zone NOT NULL DEFAULT CURRENT_TIMESTAMP,
    period_start timestamp without time zone NOT NULL,
    CONSTRAINT performance_metrics_pkey PRIMARY KEY (metric_id),
    CONSTRAINT chk_duration_consistency
        CHECK (duration_ms = (duration_microseconds::numeric / 1000::numeric)),
    CONSTRAINT chk_duration_positive CHECK (duration_microseconds > 0),
    CONSTRAINT chk_operation_type_not_empty CHECK (length(TRIM(BOTH FROM operation_type)) > 0),
    CONSTRAINT chk_time_order CHECK (start_time < end_time),
    CONSTRAINT chk_user_name_not_empty CHECK (length(TRIM(BOTH FROM user_name)) > 0),
    CONSTRAINT performance_metrics_branch_id_fkey
        FOREIGN KEY (branch_id) REFERENCES pggit.branches (branch_id) ON DELETE SET NULL
);

CREATE INDEX idx_performance_metrics_operation_type
    ON pggit.performance_metrics (operation_type, recorded_at);
CREATE INDEX idx_performance_metrics_recorded_at ON pggit.performance_metrics (recorded_at DESC);
CREATE INDEX idx_performance_metrics_period_start
    ON pggit.performance_metrics (period_start DESC);
CREATE INDEX idx_performance_metrics_composite
    ON pggit.performance_metrics (operation_type, period_start DESC, duration_microseconds DESC);
CREATE INDEX idx_performance_metrics_branch_id ON pggit.performance_metrics (branch_id);

CREATE TABLE pggit.operation_traces (
    trace_id text NOT NULL,
    span_id text NOT NULL,
    parent_span_id text,
    operation_type text NOT NULL,
    span_name text NOT NULL,
    span_status text DEFAULT 'PENDING'::text,
    start_time timestamp without time zone NOT NULL,
    end_time timestamp without time zone,
    duration_microseconds bigint,
    branch_id integer,
    user_name text NOT NULL,
    session_id text,
    memory_peak_bytes bigint,
    cpu_microseconds bigint,
    error_message text,
    error_code text,
    error_details jsonb,
    attributes jsonb,
    recorded_at timestamp without time zone NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT operation_traces_pkey PRIMARY KEY (trace_id),
    CONSTRAINT operation_traces_span_id_key UNIQUE (span_id),
    CONSTRAINT chk_trace_status
        CHECK (span_status = ANY (ARRAY['PENDING'::text, 'RUNNING'::text, 'SUCCESS'::text,
                                        'FAILED'::text])),
    CONSTRAINT chk_trace_times CHECK ((end_time IS NULL) OR (start_time <= end_time)),
    CONSTRAINT operation_traces_branch_id_fkey
        FOREIGN KEY (branch_id) REFERENCES pggit.branches (branch_id) ON DELETE SET NULL,
    CONSTRAINT operation_traces_parent_span_id_fkey
        FOREIGN KEY (parent_span_id) REFERENCES pggit.operation_traces (span_id)
        ON DELETE CASCADE
);

CREATE INDEX idx_operation_traces_parent_span_id ON pggit.operation_traces (parent_span_id);
CREATE INDEX idx_operation_traces_start_time ON pggit.operation_traces (start_time DESC);
CREATE INDEX idx_operation_traces_operation_type ON pggit.operation_traces (operation_type);
CREATE INDEX idx_operation_traces_running
    ON pggit.operation_traces (start_time) WHERE span_status = 'RUNNING';

CREATE TABLE pggit.performance_baselines (
    baseline_id bigserial NOT NULL,
    operation_type text NOT NULL,
    branch_id integer,
    baseline_date date NOT NULL,
    calculation_timestamp timestamp without time zone NOT NULL DEFAULT CURRENT_TIMESTAMP,
    sample_count integer NOT NULL,
    min_microseconds bigint NOT NULL,
    max_microseconds bigint NOT NULL,
    p50_microseconds bigint NOT NULL,
    p75_microseconds bigint NOT NULL,
    p90_microseconds bigint NOT NULL,
    p95_microseconds bigint NOT NULL,
    p99_microseconds bigint NOT NULL,
    mean_microseconds numeric(12,2) NOT NULL,
    stddev_microseconds numeric(12,2),
    alert_threshold_multiplier numeric(3,2) DEFAULT 2.0,
    is_active boolean DEFAULT true,
    calculated_from_days integer DEFAULT 7,
    CONSTRAINT performance_baselines_pkey PRIMARY KEY (baseline_id),
    CONSTRAINT chk_alert_threshold_positive CHECK (alert_threshold_multiplier > 0::numeric),
    CONSTRAINT chk_baseline_min_max CHECK (min_microseconds <= max_microseconds),
    CONSTRAINT chk_baseline_percentiles
        CHECK ((p50_microseconds <= p75_microseconds) AND (p75_microseconds <= p90_microseconds)
               AND (p90_microseconds <= p95_microseconds)
               AND (p95_microseconds <= p99_microseconds)),
    CONSTRAINT chk_sample_count_positive CHECK (sample_count > 0),
    CONSTRAINT performance_baselines_branch_id_fkey
        FOREIGN KEY (branch_id) REFERENCES pggit.branches (branch_id) ON DELETE CASCADE
);

-- The seed's partial unique index: one active baseline per operation, branch and day. A NULL
-- branch_id ("all branches") never collides with another NULL, so it does not stop two
-- concurrent calculations from both leaving an active all-branches row.
CREATE UNIQUE INDEX idx_performance_baselines_active
    ON pggit.performance_baselines (operation_type, branch_id, baseline_date)
    WHERE is_active = true;
CREATE INDEX idx_performance_baselines_lookup
    ON pggit.performance_baselines (operation_type, calculation_timestamp DESC)
    WHERE is_active = true;

CREATE TABLE pggit.performance_alerts (
    alert_id bigserial NOT NULL,
    metric_id bigint NOT NULL,
    baseline_id bigint,
    operation_type text NOT NULL,
    alert_type text NOT NULL,
    severity text DEFAULT 'WARNING'::text,
    baseline_p99_microseconds bigint,
    actual_duration_microseconds bigint NOT NULL,
    violation_multiplier numeric(6,2),
    branch_id integer,
    user_name text,
    is_acknowledged boolean DEFAULT false,
    acknowledged_at timestamp without time zone,
    acknowledged_by text,
    resolution_notes text,
    created_at timestamp without time zone NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT performance_alerts_pkey PRIMARY KEY (alert_id),
    CONSTRAINT chk_alert_severity
        CHECK (severity = ANY (ARRAY['CRITICAL'::text, 'WARNING'::text, 'INFO'::text])),
    CONSTRAINT chk_alert_type
        CHECK (alert_type = ANY (ARRAY['THRESHOLD_EXCEEDED'::text, 'ANOMALY'::text,
                                       'DEGRADATION'::text])),
    CONSTRAINT performance_alerts_baseline_id_fkey
        FOREIGN KEY (baseline_id) REFERENCES pggit.performance_baselines (baseline_id)
        ON DELETE SET NULL,
    CONSTRAINT performance_alerts_branch_id_fkey
        FOREIGN KEY (branch_id) REFERENCES pggit.branches (branch_id) ON DELETE SET NULL,
    CONSTRAINT performance_alerts_metric_id_fkey
        FOREIGN KEY (metric_id) REFERENCES pggit.performance_metrics (metric_id)
        ON DELETE CASCADE
);

CREATE INDEX idx_performance_alerts_is_acknowledged
    ON pggit.performance_alerts (is_acknowledged) WHERE is_acknowledged = false;
CREATE INDEX idx_performance_alerts_operation_created
    ON pggit.performance_alerts (operation_type, created_at DESC);
CREATE INDEX idx_performance_alerts_metric_id ON pggit.performance_alerts (metric_id);

CREATE TABLE pggit.merge_performance_metrics (
    merge_metric_id bigserial NOT NULL,
    source_branch_id integer NOT NULL,
    target_branch_id integer NOT NULL,
    merge_base_commit_hash text,
    merge_base_calculation_us bigint,
    conflict_detection_us bigint,
    conflict_count integer,
    auto_resolution_us bigint,
    auto_resolution_success_count integer DEFAULT 0,
    auto_resolution_failure_count integer DEFAULT 0,
    total_merge_us bigint NOT NULL,
    merge_status text NOT NULL,
    merge_outcome_details jsonb,
    user_name text NOT NULL,
    session_id text,
    started_at timestamp without time zone NOT NULL,
    completed_at timestamp without time zone,
    CONSTRAINT merge_performance_metrics_pkey PRIMARY KEY (merge_metric_id),
    CONSTRAINT chk_merge_status
        CHECK (merge_status = ANY (ARRAY['SUCCESS'::text, 'PARTIAL_SUCCESS'::text,
                                         'FAILED'::text, 'ABANDONED'::text])),
    CONSTRAINT chk_merge_times CHECK ((completed_at IS NULL) OR (started_at <= completed_at)),
    CONSTRAINT merge_performance_metrics_source_branch_id_fkey
        FOREIGN KEY (source_branch_id) REFERENCES pggit.branches (branch_id) ON DELETE CASCADE,
    CONSTRAINT merge_performance_metrics_target_branch_id_fkey
        FOREIGN KEY (target_branch_id) REFERENCES pggit.branches (branch_id) ON DELETE CASCADE
);

CREATE INDEX idx_merge_performance_started_at
    ON pggit.merge_performance_metrics (started_at DESC);
CREATE INDEX idx_merge_performance_branches
    ON pggit.merge_performance_metrics (source_branch_id, target_branch_id);

-- The 33 operation types pgGit ships. Maintenance operations are not tracked.
INSERT INTO pggit.performance_operation_types
    (operation_type, description, category, typical_duration_ms, is_tracked)
VALUES
    ('commit', 'Record a schema commit', 'core', 25.0, true),
    ('merge', 'Merge one branch into another', 'merge', 80.0, true),
    ('rollback', 'Roll the schema back to an earlier commit', 'rollback', 150.0, true),
    ('branch_create', 'Create a branch', 'branch', 15.0, true),
    ('branch_delete', 'Delete a branch', 'branch', 10.0, true),
    ('branch_switch', 'Switch the active branch', 'branch', 5.0, true),
    ('branch_list', 'List branches', 'branch', 2.0, true),
    ('get_history', 'Read the commit history of an object', 'history', 20.0, true),
    ('get_object_timeline', 'Read the timeline of one object', 'history', 30.0, true),
    ('diff', 'Diff two commits', 'core', 40.0, true),
    ('checkout', 'Check out a commit', 'core', 35.0, true),
    ('tag_create', 'Tag a commit', 'core', 3.0, true),
    ('cherry_pick', 'Apply one commit onto another branch', 'core', 60.0, true),
    ('rebase', 'Replay a branch onto a new base', 'core', 200.0, true),
    ('stash', 'Stash uncommitted schema changes', 'core', 10.0, true),
    ('merge_branches', 'Three-way merge of two branches', 'merge', 50.0, true),
    ('merge_base_find', 'Find the merge base (lowest common ancestor)', 'merge', 8.0, true),
    ('merge_conflict_detect', 'Detect merge conflicts', 'merge', 20.0, true),
    ('merge_auto_resolve', 'Resolve merge conflicts automatically', 'merge', 15.0, true),
    ('rollback_commit', 'Roll back a single commit', 'rollback', 100.0, true),
    ('rollback_cascade', 'Roll back a commit and its dependents', 'rollback', 250.0, true),
    ('rollback_validate', 'Validate a rollback plan', 'rollback', 20.0, true),
    ('schema_snapshot', 'Snapshot the whole schema', 'schema', 120.0, true),
    ('ddl_capture', 'Capture one DDL statement', 'schema', 4.0, true),
    ('object_diff', 'Diff the definition of one object', 'schema', 12.0, true),
    ('dependency_resolve', 'Resolve object dependencies', 'schema', 18.0, true),
    ('blob_store', 'Store an object definition blob', 'storage', 6.0, true),
    ('blob_dedup', 'Deduplicate stored blobs', 'storage', 45.0, true),
    ('compress_branch', 'Compress a branch''s storage', 'storage', 300.0, true),
    ('status', 'Show working state', 'query', 1.5, false),
    ('garbage_collect', 'Remove unreachable objects', 'maintenance', 500.0, false),
    ('vacuum_history', 'Prune old history rows', 'maintenance', 800.0, false),
    ('index_rebuild', 'Rebuild pgGit''s internal indexes', 'maintenance', 400.0, false);

INSERT INTO pggit.commits (commit_hash, parent_commit_hash, branch_name, author, message)
VALUES
    (encode(sha256('c1'::bytea), 'hex'), NULL, 'main', 'alice', 'Initial schema'),
    (encode(sha256('c2'::bytea), 'hex'), encode(sha256('c1'::bytea), 'hex'), 'main', 'bob',
     'Add orders table'),
    (encode(sha256('c3'::bytea), 'hex'), encode(sha256('c2'::bytea), 'hex'), 'develop', 'carol',
     'Add index on orders(customer_id)'),
    (encode(sha256('c4'::bytea), 'hex'), encode(sha256('c3'::bytea), 'hex'), 'feature/payments',
     'dave', 'Add payments schema');

INSERT INTO pggit.branches
    (branch_name, parent_branch_id, head_commit_hash, status, branch_type, description,
     created_by)
VALUES
    ('main', NULL, encode(sha256('c2'::bytea), 'hex'), 'ACTIVE', 'full', 'Production schema',
     'alice'),
    ('develop', 1, encode(sha256('c3'::bytea), 'hex'), 'ACTIVE', 'schema-only',
     'Integration branch', 'alice'),
    ('feature/payments', 2, encode(sha256('c4'::bytea), 'hex'), 'ACTIVE', 'schema-only',
     'Payments module', 'dave'),
    ('feature/search-index', 2, NULL, 'ACTIVE', 'schema-only', 'Full-text search', 'erin'),
    ('feature/audit-log', 2, NULL, 'ACTIVE', 'temporal', 'Audit trail', 'frank'),
    ('release/2.4', 1, encode(sha256('c2'::bytea), 'hex'), 'ACTIVE', 'compressed',
     'Release 2.4', 'alice'),
    ('release/2.3', 1, NULL, 'MERGED', 'compressed', 'Release 2.3', 'alice'),
    ('hotfix/login-timeout', 1, NULL, 'STALE', 'schema-only', 'Login timeout fix', 'bob');
