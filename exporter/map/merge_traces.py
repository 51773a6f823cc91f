"""A completed merge becomes a trace: one root span, one child span per phase.

`merge_performance_metrics` records phase durations, not phase times. pgGit runs the phases
one after another (merge base, conflict detection, auto-resolution), so each child starts
where the previous ended; that is what makes the bottleneck visible in a trace view.
Ids are hashed from the database name and the serial `merge_metric_id`, which are stable
across restarts but, unlike span texts, not unique across databases on their own.
"""

from __future__ import annotations

from exporter.map.operation_traces import SpanStyle, user_attribute
from exporter.otlp import encode, ids
from exporter.otlp.attributes import AttrValue
from exporter.read.merge_traces import MergeRow

PHASES = (
    ("merge_base_calculation", "merge_base_us"),
    ("conflict_detection", "conflict_detection_us"),
    ("auto_resolution", "auto_resolution_us"),
)


def merge_ids(database: str, merge_metric_id: int) -> tuple[bytes, bytes]:
    key = f"merge:{database}:{merge_metric_id}"
    return ids.trace_id(key), ids.span_id(key)


def to_spans(row: MergeRow, database: str, style: SpanStyle) -> list[bytes]:
    """The merge's spans, encoded (see `exporter.otlp.encode`); the root first."""
    trace, root_id = merge_ids(database, row.merge_metric_id)
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
    status = encode.STATUS_ERROR if failed else encode.STATUS_OK
    spans = [encode.span(trace, root_id, None, "merge", start * 1000, max(end, start) * 1000,
                         encode.attributes(attrs.items()), status,
                         row.merge_status if failed else None)]
    at = start
    for name, field_name in PHASES:
        micros = getattr(row, field_name)
        if micros is None:
            continue
        child = ids.span_id(f"merge:{database}:{row.merge_metric_id}:{name}")
        phase = {"pggit.merge.phase": name, "pggit.merge_metric_id": row.merge_metric_id}
        spans.append(encode.span(trace, child, root_id, f"merge.{name}", at * 1000,
                                 (at + max(micros, 0)) * 1000,
                                 encode.attributes(phase.items())))
        at += max(micros, 0)
    return spans
