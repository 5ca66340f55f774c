"""Compaction of received spans once their trace has settled.

A trace's received spans are kept as rows (``ReceivedSpan``) while the trace
can still change. Once nothing has arrived for it for
``OTEL_SPAN_SETTLE_SECONDS`` they are packed into one compressed value
(a ``CompactedSpans`` row, in the partition of its trace's day on PostgreSQL)
and the rows are deleted. The
packed form holds every field of every span, but no text the product already
stores: an attribute equal to its step's input or output (as text, or as that
JSON value written by ``json.dumps``), to the trace's input, output, reasoning
or error, or to the same attribute of its step is kept as a reference, read
back from the trace and its steps. So nothing is stored twice, and what is
read back is exactly what was received (a reference is made only when the
text it stands for is equal to it).

A trace that receives anything after compaction is reopened first: its spans
are read back from the packed form and stored as rows again (with the time
each had arrived), under the trace's lock, before the request derives the
trace again from all of its spans — exactly as if they had never been
compacted. It is compacted again once it settles.

The packed form: one format byte, then raw deflate (zlib, with ``ZDICT`` as
preset dictionary) of a JSON document ``{"t": the first start in Unix ns,
"r": [resources], "s": [scopes], "spans": [[span_id, parent (its position in
this list, or its id when not among these spans), parent_is_remote, name, kind,
start − t, end − start, status_code, status_message, attributes, resource
index, scope index, events, received_at in Unix µs − t / 1000], …]}`` in start
order, where ``attributes`` is a list of
``[name]`` (the same value as the step's attribute), ``[name, value]`` (the
value itself) or ``[name, null, reference]`` entries, in their order.
"""

import json
import time
import zlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from django.db import connection, transaction
from django.utils import timezone

from agents.models import TraceStep
from agents.partitions import Partitioned, partitions_ensure
from agents.selectors import traces_by_public_id
from agents.steps import steps_with_texts
from thinnest_analytics.db import delete_in, insert_ignore_conflicts, insert_rows, update_by_pk

from .mapping import public_id_of
from .models import CompactedSpans, ReceivedSpan, ReceivedTrace
from .otlp import SpanIn

FORMAT = 1
BATCH_SIZE = 500
# Words that recur in GenAI spans: deflate refers to them from the first span on.
ZDICT = (
    b'"service.name","service.version","telemetry.sdk.language","python","telemetry.sdk.name",'
    b'"opentelemetry","telemetry.sdk.version","openai","gen_ai.system","gen_ai.provider.name",'
    b'"gen_ai.agent.name","gen_ai.agent.id","gen_ai.conversation.id","session.id","user.id",'
    b'"gen_ai.request.model","gen_ai.response.model","gen_ai.usage.input_tokens",'
    b'"gen_ai.usage.output_tokens","gen_ai.response.finish_reasons","gen_ai.response.id",'
    b'"gen_ai.tool.name","gen_ai.tool.call.id","gen_ai.tool.call.arguments","gen_ai.tool.call.result",'
    b'"gen_ai.input.messages","gen_ai.output.messages","gen_ai.prompt","gen_ai.completion",'
    b'"gen_ai.operation.name","invoke_agent","execute_tool","chat","openinference.span.kind",'
    b'"llm.model_name","llm.token_count.prompt","llm.token_count.completion","input.value",'
    b'"output.value","input.mime_type","output.mime_type","application/json","text/plain",'
    b'"opentelemetry.instrumentation.openai_v2",[]]'
)
# The ways a JSON value is commonly written as text, tried in turn.
JSON_STYLES = (
    {},
    {"ensure_ascii": False},
    {"separators": (",", ":")},
    {"separators": (",", ":"), "ensure_ascii": False},
)
TRACE_TEXTS = {"ti": "input", "to": "output", "tr": "reasoning", "te": "error"}
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
    "resource",
    "scope",
    "events",
    "received_at",
)
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _same(a: Any, b: Any) -> bool:
    """Equal values of the same JSON types (``1`` is not ``true`` nor ``1.0``)."""
    if a is b:
        return True
    try:
        return _encode(a) == _encode(b)
    except (TypeError, msgspec.EncodeError):
        return False


@dataclass
class Texts:
    """What a trace already stores, that its spans' attributes may refer to:
    the trace's texts, and each step's input, output and attributes by span id."""

    trace: dict[str, Any]
    steps: dict[str, dict[str, Any]]

    def reference(self, span_id: str, value: Any) -> str | None:
        """A reference that reads back exactly ``value``, or None."""
        if not isinstance(value, str) or len(value) < 16:
            return None
        step = self.steps.get(span_id)
        if step is not None:
            for side in ("input", "output"):
                stored = step.get(side)
                if isinstance(stored, str):
                    if stored == value:
                        return side[0]
                elif stored is not None:
                    for style, kwargs in enumerate(JSON_STYLES):
                        if json.dumps(stored, **kwargs) == value:
                            return f"{side[0]}{style}"
        for ref, name in TRACE_TEXTS.items():
            if self.trace.get(name) == value:
                return ref
        return None

    def resolve(self, span_id: str, ref: str) -> str:
        if ref in TRACE_TEXTS:
            return self.trace[TRACE_TEXTS[ref]]
        stored = self.steps[span_id]["input" if ref[0] == "i" else "output"]
        if len(ref) == 1:
            return stored
        return json.dumps(stored, **JSON_STYLES[int(ref[1:])])


def _micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def spans_pack(spans: list[dict], texts: Texts) -> bytes:
    """The packed form of a trace's spans (dicts of ``SPAN_COLUMNS``)."""
    resources: list[Any] = []
    scopes: list[str] = []
    rows = []
    ordered = sorted(spans, key=lambda s: (s["start_ns"], s["span_id"]))
    base = ordered[0]["start_ns"] if ordered else 0
    position = {span["span_id"]: i for i, span in enumerate(ordered)}
    for span in ordered:
        step_attributes = (texts.steps.get(span["span_id"]) or {}).get("attributes") or {}
        attributes = []
        for name, value in span["attributes"].items():
            if name in step_attributes and _same(step_attributes[name], value):
                attributes.append([name])
                continue
            ref = texts.reference(span["span_id"], value)
            attributes.append([name, None, ref] if ref is not None else [name, value])
        if span["resource"] not in resources:
            resources.append(span["resource"])
        if span["scope"] not in scopes:
            scopes.append(span["scope"])
        rows.append(
            [
                span["span_id"],
                position.get(span["parent_span_id"], span["parent_span_id"]),
                span["parent_is_remote"],
                span["name"],
                span["kind"],
                span["start_ns"] - base,
                span["end_ns"] - span["start_ns"],
                span["status_code"],
                span["status_message"],
                attributes,
                resources.index(span["resource"]),
                scopes.index(span["scope"]),
                span["events"],
                _micros(span["received_at"]) - base // 1000,
            ]
        )
    packer = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zdict=ZDICT)
    document = _encode({"t": base, "r": resources, "s": scopes, "spans": rows})
    return bytes([FORMAT]) + packer.compress(document) + packer.flush()


def spans_unpack(packed: bytes, texts: Texts) -> list[dict]:
    """The spans of a packed form, as dicts of ``SPAN_COLUMNS``, exactly as received."""
    if packed[0] != FORMAT:
        raise ValueError(f"packed spans of unknown format {packed[0]}")
    unpacker = zlib.decompressobj(-15, zdict=ZDICT)
    document = _decode(unpacker.decompress(bytes(packed[1:])) + unpacker.flush())
    spans: list[dict] = []
    base = document["t"]
    ids = [row[0] for row in document["spans"]]
    for row in document["spans"]:
        span_id = row[0]
        step_attributes = (texts.steps.get(span_id) or {}).get("attributes") or {}
        attributes = {}
        for entry in row[9]:
            if len(entry) == 1:
                attributes[entry[0]] = step_attributes[entry[0]]
            elif len(entry) == 2:
                attributes[entry[0]] = entry[1]
            else:
                attributes[entry[0]] = texts.resolve(span_id, entry[2])
        spans.append(
            {
                "span_id": span_id,
                "parent_span_id": ids[row[1]] if isinstance(row[1], int) else row[1],
                "parent_is_remote": row[2],
                "name": row[3],
                "kind": row[4],
                "start_ns": base + row[5],
                "end_ns": base + row[5] + row[6],
                "status_code": row[7],
                "status_message": row[8],
                "attributes": attributes,
                "resource": document["r"][row[10]],
                "scope": document["s"][row[11]],
                "events": row[12],
                "received_at": EPOCH + timedelta(microseconds=base // 1000 + row[13]),
            }
        )
    return spans


def texts_of(organisation_id: int, trace_ids: list[str]) -> dict[str, Texts]:
    """What the product traces derived from ``trace_ids`` store, by trace id
    (empty ``Texts`` for a trace not derived)."""
    # Through the traces' keys: their days name the partitions to read.
    traces = {
        row["public_id"]: row
        for row in traces_by_public_id(
            organisation=organisation_id, public_ids=[public_id_of(t) for t in trace_ids]
        ).values("id", "public_id", "input", "output", "reasoning", "error", "created_at")
    }
    by_pk = {t["id"]: t for t in traces.values()}
    steps: dict[int, dict[str, dict]] = defaultdict(dict)
    for step in (
        TraceStep.objects.filter(
            trace_id__in=list(by_pk), trace_created_at__in={t["created_at"] for t in traces.values()}
        )
        .order_by("trace_id", "position")
        .values("trace_id", "span_id", "input", "output", "attributes", "texts_from_trace")
    ):
        steps_with_texts(by_pk[step["trace_id"]], [step])
        if step["span_id"]:
            steps[step["trace_id"]].setdefault(step["span_id"], step)
    out = {}
    for trace_id in trace_ids:
        trace = traces.get(public_id_of(trace_id))
        out[trace_id] = Texts(trace or {}, steps[trace["id"]] if trace else {})
    return out


# --- reading back ------------------------------------------------------------------


def compacted_spans(*, organisation_id: int, trace_id: str, packed: bytes) -> list[dict]:
    """The spans of a compacted trace, as dicts of ``SPAN_COLUMNS``."""
    return spans_unpack(packed, texts_of(organisation_id, [trace_id])[trace_id])


# Packed spans are partitioned by day like the traces (``agents.partitions``).
COMPACTED_PARTITIONS = Partitioned(CompactedSpans._meta.db_table, "created_at")

COMPACTED_SQL = """
SELECT trace_id, packed FROM otel_compactedspans
WHERE organisation_id = %(org)s AND trace_id = ANY(%(ids)b::text[])
"""


def compacted_of(organisation_id: int, trace_ids: list[str]) -> dict[str, bytes]:
    """The packed spans of those of ``trace_ids`` that are compacted."""
    return dict(
        CompactedSpans.objects.filter(organisation_id=organisation_id, trace_id__in=trace_ids).values_list(
            "trace_id", "packed"
        )
    )


def spans_reopen(
    organisation_id: int, packed: dict[str, bytes], stored: dict[str, dict[str, SpanIn]]
) -> None:
    """Reopen compacted traces (their ``ReceivedTrace`` rows locked by the
    caller, their product traces not yet rewritten): their spans are read back
    into ``stored`` and stored as rows again, with the time each had arrived."""
    if not packed:
        return
    texts = texts_of(organisation_id, sorted(packed))
    rows = []
    for trace_id in sorted(packed):
        for span in spans_unpack(packed[trace_id], texts[trace_id]):
            received_at = span.pop("received_at")
            stored[trace_id][span["span_id"]] = SpanIn(trace_id=trace_id, **span)
            rows.append((organisation_id, trace_id, *(span[c] for c in SPAN_COLUMNS[:-1]), received_at))
    insert_ignore_conflicts(
        ReceivedSpan,
        ("organisation", "trace_id", *SPAN_COLUMNS),
        rows,
        conflict_fields=("organisation", "trace_id", "span_id"),
        returning=("id",),
    )
    delete_in(CompactedSpans, "trace_id", sorted(packed), organisation_id=organisation_id)
    ReceivedTrace.objects.filter(organisation_id=organisation_id, trace_id__in=list(packed)).update(
        compacted=False
    )


# --- compacting ----------------------------------------------------------------------


@dataclass
class Compacted:
    """What a compaction pass did."""

    traces: int = 0
    spans: int = 0
    batches: int = 0
    # Bytes of the spans' attributes, resources and events as JSON, and of the packed forms.
    span_bytes: int = 0
    packed_bytes: int = 0


def settle_horizon(*, older_than: timedelta, now: datetime | None = None) -> datetime:
    return (now or timezone.now()) - older_than


def spans_compact_batch(*, horizon: datetime, batch_size: int = BATCH_SIZE) -> Compacted:
    """Compact up to ``batch_size`` traces that received nothing since
    ``horizon``, in one transaction. Traces being written meanwhile are
    skipped (they are changing): their rows are locked by the request."""
    done = Compacted()
    with transaction.atomic():
        claimed = ReceivedTrace.objects.filter(
            compacted=False, span_count__gt=0, last_received_at__lt=horizon
        ).order_by("id")
        if connection.features.has_select_for_update_skip_locked:
            claimed = claimed.select_for_update(skip_locked=True)
        claimed = list(
            claimed.values_list("pk", "organisation_id", "trace_id", "first_received_at")[:batch_size]
        )
        if not claimed:
            return done
        by_org: dict[int, list[tuple[int, str, datetime]]] = defaultdict(list)
        for pk, organisation_id, trace_id, first_received_at in claimed:
            by_org[organisation_id].append((pk, trace_id, first_received_at))
        rows = []
        for organisation_id, traces in sorted(by_org.items()):
            trace_ids = [trace_id for _, trace_id, _ in traces]
            spans: dict[str, list[dict]] = defaultdict(list)
            for span in ReceivedSpan.objects.filter(
                organisation_id=organisation_id, trace_id__in=trace_ids
            ).values("trace_id", *SPAN_COLUMNS):
                spans[span.pop("trace_id")].append(span)
            texts = texts_of(organisation_id, trace_ids)
            for _, trace_id, first_received_at in traces:
                packed = spans_pack(spans[trace_id], texts[trace_id])
                # In the partition of its trace's day (of its first span's arrival if none).
                created_at = texts[trace_id].trace.get("created_at") or first_received_at
                rows.append((organisation_id, trace_id, created_at, packed))
                done.spans += len(spans[trace_id])
                done.span_bytes += sum(
                    len(_encode([s["attributes"], s["resource"], s["events"]])) for s in spans[trace_id]
                )
                done.packed_bytes += len(packed)
            delete_in(ReceivedSpan, "trace_id", trace_ids, organisation_id=organisation_id)
        partitions_ensure(moments=[created_at for _, _, created_at, _ in rows])
        insert_rows(
            CompactedSpans, ("organisation", "trace_id", "created_at", "packed"), rows, returning=("id",)
        )
        update_by_pk(ReceivedTrace, ["compacted"], [(pk, True) for pk, *_ in claimed])
        done.traces, done.batches = len(claimed), 1
    return done


def spans_compact(
    *,
    older_than: timedelta,
    batch_size: int = BATCH_SIZE,
    now: datetime | None = None,
    max_seconds: float | None = None,
    progress: Callable[[Compacted], None] | None = None,
) -> Compacted:
    """Compact the received spans of every trace that received nothing for
    ``older_than``, ``batch_size`` traces per transaction, until none is left
    (or ``max_seconds`` have passed; the next pass goes on)."""
    horizon = settle_horizon(older_than=older_than, now=now)
    total = Compacted()
    started = time.monotonic()
    while True:
        batch = spans_compact_batch(horizon=horizon, batch_size=batch_size)
        if not batch.traces:
            return total
        for name in ("traces", "spans", "batches", "span_bytes", "packed_bytes"):
            setattr(total, name, getattr(total, name) + getattr(batch, name))
        if progress is not None:
            progress(batch)
        if batch.traces < batch_size or (
            max_seconds is not None and time.monotonic() - started > max_seconds
        ):
            return total
