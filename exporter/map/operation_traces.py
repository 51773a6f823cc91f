"""A pgGit span row becomes an OTLP span (wire bytes) and span metrics.

The span metrics (`pggit_span_duration_seconds`, `pggit_spans_running`) are mapped here, like
every other table's metrics in `exporter.map`, so that whoever reads the rows (today the span
source in `exporter.spans`) only hands rows over and decides nothing about metrics.

Ids come from `exporter.otlp.ids`: the trace id from the row's *root* `trace_id` (pgGit gives
every row its own), the parent from `parent_span_id`, so a tree leaves as one trace whatever
order its spans end in. Timestamps arrive as exact epoch microseconds (the reader converts
pgGit's local `timestamp without time zone` in the writers' time zone).

The span is encoded here, once, straight from the row (`exporter.otlp.encode` says why no
SDK `ReadableSpan` is built); the attributes are those the SDK path would carry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from exporter.aggregates import Aggregates, Labels
from exporter.labels import LabelCap
from exporter.otlp import encode, ids
from exporter.otlp.attributes import AttrValue, cut, flatten, parse
from exporter.read.operation_traces import SpanRow

TIMED_OUT_MESSAGE = "span still RUNNING after the running timeout"
HISTOGRAM = "pggit_span_duration_seconds"
RUNNING = "pggit_spans_running"
HISTOGRAM_LABELS = ("operation_type", "span_name")
"""The capped labels of `HISTOGRAM`, by position (the third, the status, is a closed set)."""


@dataclass(frozen=True)
class SpanStyle:
    """What every span of one database shares: resource, scope, privacy and size caps."""

    resource: Resource
    scope: InstrumentationScope
    user_name: str = "off"
    max_attribute_length: int = 4096
    max_attributes: int = 128


def user_attribute(mode: str, user: str | None) -> dict[str, str]:
    """`user_name` is personal data: off by default, else plain or a stable hash."""
    if not user or mode == "off":
        return {}
    if mode == "plain":
        return {"enduser.id": user}
    return {"pggit.user_name_hash": hashlib.sha256(user.encode("utf-8")).hexdigest()[:16]}


def to_span(row: SpanRow, style: SpanStyle, timed_out_at_us: int | None = None) -> bytes:
    """The OTLP span of a row; `timed_out_at_us` marks a span sent unfinished at that time."""
    limit = style.max_attribute_length
    own: dict[str, AttrValue] = {
        "pggit.trace_id": cut(row.trace_id, limit),
        "pggit.span_id": cut(row.span_id, limit),
        "pggit.operation_type": cut(row.operation_type, limit),
        "pggit.span_status": row.span_status or "PENDING",
    }
    if row.root_trace_id != row.trace_id:
        own["pggit.root_trace_id"] = cut(row.root_trace_id, limit)
    if row.parent_span_id is not None:
        own["pggit.parent_span_id"] = cut(row.parent_span_id, limit)
    if row.branch_id is not None:
        own["pggit.branch_id"] = row.branch_id
    if row.branch_name is not None:
        own["pggit.branch.name"] = cut(row.branch_name, limit)
    if row.session_id is not None:
        own["pggit.session_id"] = cut(row.session_id, limit)
    if row.memory_peak_bytes is not None:
        own["pggit.memory_peak_bytes"] = row.memory_peak_bytes
    if row.cpu_microseconds is not None:
        own["pggit.cpu_time_seconds"] = row.cpu_microseconds / 1e6
    if row.duration_us is not None:
        own["pggit.duration_microseconds"] = row.duration_us
    if style.user_name != "off":
        own.update(user_attribute(style.user_name, row.user_name))

    events = b""
    status, message = encode.STATUS_UNSET, None
    if timed_out_at_us is not None:
        own["pggit.span.timed_out"] = True
        status, message = encode.STATUS_ERROR, TIMED_OUT_MESSAGE
        end_us = max(timed_out_at_us, row.start_us)
    else:
        end_us = row.end_us if row.end_us is not None else row.start_us
        if row.span_status == "FAILED":
            message = cut(row.error_message or "FAILED", limit)
            status = encode.STATUS_ERROR
            event: dict[str, AttrValue | None] = {
                "exception.type": cut(row.error_code or "pggit.FAILED", limit),
                "exception.message": message,
                "pggit.error_code": row.error_code and cut(row.error_code, limit),
                "pggit.error_details": row.error_details and cut(row.error_details, limit),
            }
            events = encode.event("exception", end_us * 1000,
                                  encode.attributes(event.items(), encode.EVENT_ATTRIBUTE))
        elif row.span_status == "SUCCESS":
            status = encode.STATUS_OK

    # One slot stays free for the "dropped" count, so the cap holds with it.
    room = max(style.max_attributes - len(own) - 2, 0)
    if row.attributes_too_large:
        own["pggit.attributes.error"] = "attributes too large, left out"
    extra = b""
    if row.attributes is not None:
        value, problem = parse(row.attributes)
        if problem:
            own["pggit.attributes.error"] = problem
        if value is not None:
            if not isinstance(value, dict):
                value = {"pggit.attributes": value}
            pairs, dropped = flatten(value, limit, room)
            if dropped:
                own["pggit.attributes.dropped"] = dropped
            extra = encode.attributes((k, v) for k, v in pairs.items() if k not in own)
    parent = None if row.parent_span_id is None else ids.span_id(row.parent_span_id)
    return encode.span(ids.trace_id(row.root_trace_id), ids.span_id(row.span_id), parent,
                       cut(row.span_name, limit), row.start_us * 1000, end_us * 1000,
                       encode.attributes(own.items()) + extra, status, message, events)


def duration_seconds(row: SpanRow) -> float:
    """pgGit's own duration when written, else end - start."""
    if row.duration_us is not None:
        return max(row.duration_us, 0) / 1e6
    assert row.end_us is not None
    return max(row.end_us - row.start_us, 0) / 1e6


def observe(agg: Aggregates, row: SpanRow, cap: LabelCap) -> None:
    """An ended span's duration, with its root trace as exemplar, so that a slow bucket on a
    dashboard links to the trace that put it there (when the trace is forwarded)."""
    value = duration_seconds(row)
    labels = (cap("operation_type", row.operation_type), cap("span_name", row.span_name),
              row.span_status or "UNKNOWN")
    assert row.end_us is not None
    agg.observe(HISTOGRAM, labels, value,
                exemplar=(ids.trace_id(row.root_trace_id).hex(), value, row.end_us / 1e6))


def running(operation_types: Iterable[str | None], cap: LabelCap) -> dict[Labels, float]:
    """`pggit_spans_running` from the operation types of the spans still RUNNING.

    A gauge rebuilt each time: its labels go through the cap without spending it.
    """
    out: dict[Labels, float] = {}
    for operation_type in operation_types:
        key = (cap.peek("operation_type", operation_type),)
        out[key] = out.get(key, 0.0) + 1
    return out

