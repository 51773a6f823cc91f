"""A pgGit span row becomes an OTLP span and a duration observation.

Ids come from `exporter.send.ids`: the trace id from the row's *root* `trace_id` (pgGit gives
every row its own), the parent from `parent_span_id`, so a tree leaves as one trace whatever
order its spans end in. Timestamps arrive as exact epoch microseconds (the reader converts
pgGit's local `timestamp without time zone` in the writers' time zone).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from exporter.read.operation_traces import SpanRow
from exporter.send import ids
from exporter.send.attributes import AttrValue, capped, cut, flatten, parse

SAMPLED = TraceFlags(TraceFlags.SAMPLED)

# Attributes the exporter sets itself; flattened user attributes never override them.
OWN_ATTRIBUTE_ROOM = 24


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


def context(row: SpanRow) -> SpanContext:
    return SpanContext(ids.trace_id(row.root_trace_id), ids.span_id(row.span_id),
                       is_remote=False, trace_flags=SAMPLED)


def to_span(row: SpanRow, style: SpanStyle, timed_out_at_us: int | None = None
            ) -> ReadableSpan:
    """The OTLP span of a row; `timed_out_at_us` marks a span sent unfinished at that time."""
    trace = ids.trace_id(row.root_trace_id)
    parent = None
    if row.parent_span_id is not None:
        parent = SpanContext(trace, ids.span_id(row.parent_span_id), is_remote=False,
                             trace_flags=SAMPLED)
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
    own.update(user_attribute(style.user_name, row.user_name))

    events: list[Event] = []
    status = Status(StatusCode.UNSET)
    if timed_out_at_us is not None:
        own["pggit.span.timed_out"] = True
        status = Status(StatusCode.ERROR, "span still RUNNING after the running timeout")
        end_us = max(timed_out_at_us, row.start_us)
    else:
        end_us = row.end_us if row.end_us is not None else row.start_us
        if row.span_status == "FAILED":
            message = cut(row.error_message or "FAILED", limit)
            status = Status(StatusCode.ERROR, message)
            event_attrs: dict[str, AttrValue] = {
                "exception.type": cut(row.error_code or "pggit.FAILED", limit),
                "exception.message": message,
            }
            if row.error_code is not None:
                event_attrs["pggit.error_code"] = cut(row.error_code, limit)
            if row.error_details is not None:
                event_attrs["pggit.error_details"] = cut(row.error_details, limit)
            events.append(Event("exception", event_attrs, timestamp=end_us * 1000))
        elif row.span_status == "SUCCESS":
            status = Status(StatusCode.OK)

    # One slot stays free for the "dropped" count, so the cap holds with it.
    room = max(style.max_attributes - len(own) - 2, 0)
    if row.attributes_too_large:
        own["pggit.attributes.error"] = "attributes too large, left out"
    value, problem = parse(row.attributes)
    if problem:
        own["pggit.attributes.error"] = problem
    extra: dict[str, AttrValue] = {}
    if value is not None:
        if not isinstance(value, dict):
            value = {"pggit.attributes": value}
        extra, dropped = capped(flatten(value, limit), room)
        if dropped:
            own["pggit.attributes.dropped"] = dropped
    attributes = {**extra, **own}

    return ReadableSpan(
        name=cut(row.span_name, limit), context=context(row), parent=parent,
        resource=style.resource, attributes=attributes, events=events, kind=SpanKind.INTERNAL,
        status=status, start_time=row.start_us * 1000, end_time=end_us * 1000,
        instrumentation_scope=style.scope)


def duration_seconds(row: SpanRow) -> float:
    """pgGit's own duration when written, else end - start."""
    if row.duration_us is not None:
        return max(row.duration_us, 0) / 1e6
    assert row.end_us is not None
    return max(row.end_us - row.start_us, 0) / 1e6
