"""The received state of OTLP traces (``ReceivedTrace``, ``ReceivedSpan``)
read and written in as few round trips as a request allows.

On PostgreSQL a request makes two round trips here, each a psycopg pipeline
of statements that run one after the other (each with a fresh snapshot):

1. lock the received traces (created if missing) in trace id order, read
   their stored spans, and read the product traces already derived from them;
2. insert the new spans and update the received traces' counts, flags and
   log records.

Elsewhere (SQLite) the same reads and writes go through the ORM.
"""

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from django.db import connection

from thinnest_analytics.db import insert_ignore_conflicts, update_by_pk

from .compaction import COMPACTED_SQL, SPAN_COLUMNS, compacted_of, spans_reopen
from .models import ReceivedSpan, ReceivedTrace
from .otlp import SpanIn

# The columns of a received span row that a request writes (``received_at`` aside).
SPAN_FIELDS = ("trace_id", *(c for c in SPAN_COLUMNS if c != "received_at"))
# What a stored trace contributes to the rollups; a trace derived again whose
# facts are unchanged leaves them alone.
OLD_TRACE_FIELDS = (
    "id",
    "public_id",
    "agent_id",
    "session_id",
    "session__public_id",
    "channel",
    "deployment_version",
    "input",
    "output",
    "input_tokens",
    "output_tokens",
    "latency_ms",
    "tool_call_count",
    "status",
    "cost_usd",
    "created_at",
    "received_at",
)
_encode = msgspec.json.Encoder().encode
_decoder = msgspec.json.Decoder()


@dataclass
class Received:
    """A locked received trace: what the request reads and then updates."""

    pk: int
    trace_id: str
    span_count: int
    derived: bool
    log_records: list[dict]


def _json_text(value: Any) -> str:
    return _encode(value).decode()


def _json_value(text: str | bytes | None) -> Any:
    """A JSON column as read by a raw cursor (text): decoded as Django would
    (``json.loads``), with msgspec's faster reader where it gives the same."""
    if text is None or not isinstance(text, str | bytes):
        return text
    try:
        return _decoder.decode(text)
    except ValueError:  # what msgspec does not read (1e400), the standard reader does
        return json.loads(text)


@dataclass
class ReceivedState:
    received: dict[str, Received]
    stored: dict[str, dict[str, SpanIn]]
    # Product traces already derived, by public id, as ``OLD_TRACE_FIELDS``.
    old: dict[str, dict]


_LOCK = """
INSERT INTO otel_receivedtrace
    (organisation_id, trace_id, span_count, derived, first_received_at, last_received_at, log_records)
SELECT %(org)s, t, 0, false, %(now)s, %(now)s, '[]'::jsonb FROM unnest(%(ids)b::text[]) AS t ORDER BY t
ON CONFLICT (organisation_id, trace_id) DO UPDATE SET span_count = otel_receivedtrace.span_count
RETURNING id, trace_id, span_count, derived, log_records
"""
_SPANS = f"""
SELECT {", ".join(SPAN_FIELDS)} FROM otel_receivedspan
WHERE organisation_id = %(org)s AND trace_id = ANY(%(ids)b::text[])
"""
_OLD = """
SELECT t.id, t.public_id, t.agent_id, t.session_id, s.public_id, t.channel, t.deployment_version,
       t.input, t.output, t.input_tokens, t.output_tokens, t.latency_ms, t.tool_call_count, t.status,
       t.cost_usd, t.created_at, t.received_at
FROM agents_tracekey k
JOIN agents_trace t
  ON t.organisation_id = k.organisation_id AND t.created_at = k.created_at AND t.public_id = k.public_id
LEFT JOIN agents_session s ON s.id = t.session_id
WHERE k.organisation_id = %(org)s AND k.public_id = ANY(%(public_ids)b::text[])
"""


def received_lock(organisation, trace_ids: list[str], public_ids: list[str], now: datetime) -> ReceivedState:
    """Lock the received traces ``trace_ids`` (created if missing; in id order,
    so concurrent requests never deadlock), then read their stored spans and
    the product traces ``public_ids`` already stored. The reads come after the
    lock is held, so they see what the previous holder committed."""
    if connection.vendor != "postgresql":
        return _received_lock_orm(organisation, trace_ids, public_ids, now)
    import psycopg

    connection.ensure_connection()
    params = {"org": organisation.pk, "now": now, "ids": trace_ids, "public_ids": public_ids}
    raw = connection.connection
    with connection.wrap_database_errors:
        with raw.pipeline():
            lock, spans, old = psycopg.Cursor(raw), psycopg.Cursor(raw), psycopg.Cursor(raw)
            compacted = psycopg.Cursor(raw)
            lock.execute(_LOCK, params)
            spans.execute(_SPANS, params)
            old.execute(_OLD, params)
            compacted.execute(COMPACTED_SQL, params)
        received = {
            row[1]: Received(row[0], row[1], row[2], row[3], _json_value(row[4])) for row in lock.fetchall()
        }
        stored: dict[str, dict[str, SpanIn]] = {t: {} for t in trace_ids}
        for row in spans.fetchall():
            span = SpanIn(
                *row[:10], _json_value(row[10]), _json_value(row[11]), row[12], _json_value(row[13])
            )
            stored[span.trace_id][span.span_id] = span
        olds = {row[1]: dict(zip(OLD_TRACE_FIELDS, row, strict=True)) for row in old.fetchall()}
        packed = dict(compacted.fetchall())
        for cursor in (lock, spans, old, compacted):
            cursor.close()
    spans_reopen(organisation.pk, packed, stored)  # compacted traces: their spans as rows again
    return ReceivedState(received, stored, olds)


def _received_lock_orm(organisation, trace_ids, public_ids, now) -> ReceivedState:
    insert_ignore_conflicts(
        ReceivedTrace,
        (
            "organisation",
            "trace_id",
            "span_count",
            "derived",
            "first_received_at",
            "last_received_at",
            "log_records",
        ),
        [(organisation.pk, trace_id, 0, False, now, now, []) for trace_id in trace_ids],
        conflict_fields=("organisation", "trace_id"),
        returning=("id",),
    )
    locked = (
        ReceivedTrace.objects.select_for_update()
        .filter(organisation=organisation, trace_id__in=trace_ids)
        .order_by("trace_id")
    )
    received = {
        r.trace_id: Received(r.pk, r.trace_id, r.span_count, r.derived, r.log_records) for r in locked
    }
    stored: dict[str, dict[str, SpanIn]] = {t: {} for t in trace_ids}
    for row in ReceivedSpan.objects.filter(organisation=organisation, trace_id__in=trace_ids).values(
        *SPAN_FIELDS
    ):
        stored[row["trace_id"]][row["span_id"]] = SpanIn(**row)
    spans_reopen(organisation.pk, compacted_of(organisation.pk, trace_ids), stored)
    return ReceivedState(received, stored, old_traces(organisation, public_ids))


def old_traces(organisation, public_ids: list[str]) -> dict[str, dict]:
    """The stored product traces ``public_ids``, by public id, as ``OLD_TRACE_FIELDS``."""
    from agents.selectors import traces_by_public_id

    return {
        row["public_id"]: row
        for row in traces_by_public_id(organisation=organisation, public_ids=public_ids).values(
            *OLD_TRACE_FIELDS
        )
    }


# The spans travel as one JSON document that PostgreSQL expands into rows:
# encoded in one call (msgspec), their attributes are not encoded twice.
_SPANS_INSERT = f"""
INSERT INTO otel_receivedspan (organisation_id, {", ".join(SPAN_FIELDS)}, received_at)
SELECT %(org)s, {", ".join(SPAN_FIELDS)}, %(now)s
FROM json_to_recordset(%(spans)s::json) AS u(
    trace_id text, span_id text, parent_span_id text, parent_is_remote bool, name text, kind int,
    start_ns bigint, end_ns bigint, status_code int, status_message text, attributes jsonb,
    resource jsonb, scope text, events jsonb)
ON CONFLICT (organisation_id, trace_id, span_id) DO NOTHING
"""
# Arrays go in binary (%b): psycopg writes them without quoting each element.
_RECEIVED_UPDATE = """
UPDATE otel_receivedtrace r
SET span_count = r.span_count + u.added, derived = r.derived OR u.derived, last_received_at = %(now)s,
    log_records = COALESCE(u.log_records::jsonb, r.log_records)
FROM unnest(%(id)b::bigint[], %(added)b::int[], %(derived)b::bool[], %(log_records)b::text[])
     AS u(id, added, derived, log_records)
WHERE r.id = u.id
"""


def received_store(
    organisation,
    received: dict[str, Received],
    new_spans: dict[str, list[SpanIn]],
    new_logs: dict[str, list[dict]],
    derived: set[str],
    now: datetime,
) -> None:
    """Store the new spans and bring the received traces that got spans or log
    records up to date: span count, whether derived, last arrival, log records."""
    changed = [r for r in received.values() if r.trace_id in new_spans or r.trace_id in new_logs]
    if connection.vendor != "postgresql":
        _received_store_orm(organisation, changed, new_spans, new_logs, derived, now)
        return
    import psycopg

    spans = [
        {f: getattr(s, f) for f in SPAN_FIELDS} for trace_id in sorted(new_spans) for s in new_spans[trace_id]
    ]
    update = {
        "now": now,
        "id": [r.pk for r in changed],
        "added": [len(new_spans.get(r.trace_id, [])) for r in changed],
        "derived": [r.trace_id in derived for r in changed],
        "log_records": [
            _json_text([*r.log_records, *new_logs[r.trace_id]]) if r.trace_id in new_logs else None
            for r in changed
        ],
    }
    raw = connection.connection
    with connection.wrap_database_errors, raw.pipeline(), psycopg.Cursor(raw) as cursor:
        if spans:
            cursor.execute(_SPANS_INSERT, {"org": organisation.pk, "now": now, "spans": _json_text(spans)})
        if changed:
            cursor.execute(_RECEIVED_UPDATE, update)


def _received_store_orm(organisation, changed, new_spans, new_logs, derived, now) -> None:
    insert_ignore_conflicts(
        ReceivedSpan,
        ("organisation", *SPAN_FIELDS, "received_at"),
        [
            (organisation.pk, *(getattr(s, f) for f in SPAN_FIELDS), now)
            for trace_id in sorted(new_spans)
            for s in new_spans[trace_id]
        ],
        conflict_fields=("organisation", "trace_id", "span_id"),
        returning=("id",),
    )
    update_by_pk(
        ReceivedTrace,
        ["span_count", "derived", "last_received_at", "log_records"],
        [
            (
                r.pk,
                r.span_count + len(new_spans.get(r.trace_id, [])),
                r.derived or r.trace_id in derived,
                now,
                [*r.log_records, *new_logs.get(r.trace_id, [])],
            )
            for r in changed
        ],
    )
