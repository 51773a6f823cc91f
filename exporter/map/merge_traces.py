"""A completed merge becomes a trace: one root span, one child span per phase.

`merge_performance_metrics` records phase durations, not phase times. pgGit runs the phases
one after another (merge base, conflict detection, auto-resolution), so each child starts
where the previous ended; that is what makes the bottleneck visible in a trace view.
Ids are hashed from the database name and the serial `merge_metric_id`, which are stable
across restarts but, unlike span texts, not unique across databases on their own.
"""

from __future__ import annotations

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode

from exporter.map.operation_traces import SAMPLED, SpanStyle, user_attribute
from exporter.read.operation_traces import MergeRow
from exporter.send import ids
from exporter.send.attributes import AttrValue

PHASES = (
    ("merge_base_calculation", "merge_base_us"),
    ("conflict_detection", "conflict_detection_us"),
    ("auto_resolution", "auto_resolution_us"),
)


def merge_ids(database: str, merge_metric_id: int) -> tuple[int, int]:
    key = f"merge:{database}:{merge_metric_id}"
    return ids.trace_id(key), ids.span_id(key)


def to_spans(row: MergeRow, database: str, style: SpanStyle) -> list[ReadableSpan]:
    trace, root_id = merge_ids(database, row.merge_metric_id)
    root_ctx = SpanContext(trace, root_id, is_remote=False, trace_flags=SAMPLED)
    start = row.started_us
    end = row.completed_us if row.completed_us is not None else start + row.total_merge_us
    attrs: dict[str, AttrValue] = {
        "pggit.merge_metric_id": row.merge_metric_id,
        "pggit.merge.status": row.merge_status,
        "pggit.merge.source_branch_id": row.source_branch_id,
        "pggit.merge.target_branch_id": row.target_branch_id,
        "pggit.merge.total_microseconds": row.total_merge_us,
    }
    if row.source_branch is not None:
        attrs["pggit.merge.source_branch"] = row.source_branch
    if row.target_branch is not None:
        attrs["pggit.merge.target_branch"] = row.target_branch
    for key in ("conflict_count", "auto_resolution_success_count",
                "auto_resolution_failure_count"):
        value = getattr(row, key)
        if value is not None:
            attrs[f"pggit.merge.{key}"] = value
    if row.session_id is not None:
        attrs["pggit.session_id"] = row.session_id
    attrs.update(user_attribute(style.user_name, row.user_name))
    failed = row.merge_status in ("FAILED", "ABANDONED")
    status = Status(StatusCode.ERROR, row.merge_status) if failed else Status(StatusCode.OK)
    spans = [ReadableSpan(
        name="merge", context=root_ctx, parent=None, resource=style.resource,
        attributes=attrs, kind=SpanKind.INTERNAL, status=status, start_time=start * 1000,
        end_time=max(end, start) * 1000, instrumentation_scope=style.scope)]
    at = start
    for name, field_name in PHASES:
        micros = getattr(row, field_name)
        if micros is None:
            continue
        child = SpanContext(trace, ids.span_id(f"merge:{database}:{row.merge_metric_id}:{name}"),
                            is_remote=False, trace_flags=SAMPLED)
        spans.append(ReadableSpan(
            name=f"merge.{name}", context=child, parent=root_ctx, resource=style.resource,
            attributes={"pggit.merge.phase": name, "pggit.merge_metric_id": row.merge_metric_id},
            kind=SpanKind.INTERNAL, status=Status(StatusCode.UNSET), start_time=at * 1000,
            end_time=(at + max(micros, 0)) * 1000, instrumentation_scope=style.scope))
        at += max(micros, 0)
    return spans
