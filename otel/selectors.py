"""Reads of received OpenTelemetry data."""

from thinnest_analytics.errors import ApiError, not_found

from .compaction import compacted_of, compacted_spans
from .mapping import public_id_of
from .models import ReceivedSpan, ReceivedTrace

OTEL_PREFIX = public_id_of("")
SPAN_COLUMNS = (
    "span_id",
    "parent_span_id",
    "parent_is_remote",
    "name",
    "kind",
    "start_ns",
    "end_ns",
    "status_code",
    "status_message",
    "attributes",
    "events",
    "resource",
    "scope",
    "received_at",
)


def received_spans(*, organisation, public_id: str) -> dict:
    """The spans of trace ``public_id`` (``otel-<32 hex digits>``) as they
    arrived, in start order (times in Unix nanoseconds), and its GenAI log
    records in arrival order, whether the spans are still rows or compacted
    (``otel.compaction``). Not found for any other id or organisation."""
    trace_id = public_id.removeprefix(OTEL_PREFIX)
    received = (
        ReceivedTrace.objects.filter(organisation=organisation, trace_id=trace_id)
        .values("trace_id", "log_records", "compacted")
        .first()
        if public_id.startswith(OTEL_PREFIX)
        else None
    )
    if received is None:
        raise not_found(f"trace '{public_id}'")
    packed = compacted_of(organisation.pk, [trace_id]).get(trace_id) if received["compacted"] else None
    if packed is not None:
        spans = compacted_spans(organisation_id=organisation.pk, trace_id=trace_id, packed=packed)
        spans = [
            {c: s[c] for c in SPAN_COLUMNS}
            for s in sorted(spans, key=lambda s: (s["start_ns"], s["span_id"]))
        ]
    else:
        spans = list(
            ReceivedSpan.objects.filter(organisation=organisation, trace_id=trace_id)
            .order_by("start_ns", "span_id")
            .values(*SPAN_COLUMNS)
        )
    return {
        "trace_id": public_id,
        "otel_trace_id": trace_id,
        "spans": spans,
        "log_records": [{k: v for k, v in r.items() if k != "key"} for r in received["log_records"]],
    }


def raw_spans(*, organisation, public_id: str) -> dict | None:
    """``received_spans`` for a trace that came over OTLP, None for any other."""
    if not public_id.startswith(OTEL_PREFIX):
        return None
    try:
        return received_spans(organisation=organisation, public_id=public_id)
    except ApiError:
        return None
