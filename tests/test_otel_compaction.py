"""Received spans of settled traces are compacted (by the management command
and the beat task): the spans endpoint and the trace page read them back as
received, a span that comes later still makes the exact trace, retention
counts and deletes them, and no text the trace already holds is kept twice."""

import io
import json
import zlib
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from agents.models import Session, Trace, TraceStep
from metrics.models import DailyRollup, HourlyRollup
from otel import compaction
from otel.models import CompactedSpans, ReceivedSpan, ReceivedTrace
from thinnest_analytics.celery import app

from .otlp import T0, agent_turn, json_export, json_span, ns, protobuf_of, sdk_tracer

URL = "/api/otel/v1/traces"
A, B = "0af7651916cd43dd8448eb211c80319c", "4bf92f3577b34da6a3ce929d0e0e4736"
MS = 1_000_000
PROMPT = (
    "I ordered a pair of hiking boots three weeks ago (order #4711) and the tracking page has said "
    "'label created' ever since. Can you check where the parcel is?"
)
COMPLETION = "I checked order #4711: the parcel left our warehouse this morning and is due on Thursday."


def _spans() -> dict[str, dict]:
    """Two replies of one conversation: an agent span, a chat span with its
    prompt and completion as text, and a failing tool span with JSON arguments."""
    t = ns(T0)
    agent = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": "Support Agent",
        "gen_ai.conversation.id": "conv-7",
    }
    chat = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": 120,
        "gen_ai.usage.output_tokens": 30,
        "gen_ai.prompt": PROMPT,
        "gen_ai.completion": COMPLETION,
    }
    tool = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "lookup_order",
        "gen_ai.tool.call.id": "call_1",
        "gen_ai.tool.call.arguments": json.dumps({"order_id": 4711, "verbose": True}),
        "error.type": "TimeoutError",
    }
    return {
        "a1": json_span(
            A, "00000000000000a1", "invoke_agent Support Agent", t, t + 1500 * MS, attributes=agent
        ),
        "a2": json_span(
            A,
            "00000000000000a2",
            "chat gpt-4o-mini",
            t + 5 * MS,
            t + 900 * MS,
            "00000000000000a1",
            attributes=chat,
        ),
        "a3": json_span(
            A,
            "00000000000000a3",
            "execute_tool lookup_order",
            t + 950 * MS,
            t + 1200 * MS,
            "00000000000000a1",
            attributes=tool,
        ),
        "b1": json_span(
            B,
            "00000000000000b1",
            "invoke_agent Support Agent",
            t + 60_000 * MS,
            t + 61_000 * MS,
            attributes=agent,
        ),
        "b2": json_span(
            B,
            "00000000000000b2",
            "chat gpt-4o-mini",
            t + 60_005 * MS,
            t + 60_800 * MS,
            "00000000000000b1",
            attributes=chat,
        ),
    }


def _send(key: str, names: list[str], **fields) -> None:
    spans = _spans()
    body = json.dumps(json_export([{**spans[n], **fields} for n in names])).encode()
    r = Client().post(URL, body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert r.status_code == 200, r.content
    assert b"rejected" not in r.content


def _compact(*args: str) -> str:
    out = io.StringIO()
    call_command("compact_spans", *args, stdout=out)
    return out.getvalue()


def _state(organisation) -> dict:
    """Everything stored about an organisation's traces, without row ids or arrival times."""
    traces = list(
        Trace.objects.filter(organisation=organisation)
        .order_by("public_id")
        .values(
            "public_id",
            "agent__public_id",
            "session__public_id",
            "channel",
            "deployment_version",
            "input",
            "reasoning",
            "output",
            "tool_calls",
            "tool_call_count",
            "model",
            "input_tokens",
            "output_tokens",
            "latency_ms",
            "cost_usd",
            "cost_source",
            "status",
            "error",
            "metadata",
            "created_at",
        )
    )
    steps = list(
        TraceStep.objects.filter(trace__organisation=organisation)
        .order_by("trace__public_id", "position")
        .values(
            "trace__public_id",
            *(f.attname for f in TraceStep._meta.concrete_fields if f.attname not in ("id", "trace_id")),
        )
    )
    sessions = list(
        Session.objects.filter(organisation=organisation)
        .order_by("public_id")
        .values("public_id", "agent__public_id", "channel", "started_at", "trace_count", "error_count")
    )
    rollups = sorted(
        (
            model.__name__,
            row["channel"],
            str(row["bucket_start"]),
            row["traces"],
            row["error_traces"],
            str(row),
        )
        for model in (HourlyRollup, DailyRollup)
        for row in model.objects.filter(organisation=organisation).values(
            *(
                f.attname
                for f in model._meta.concrete_fields
                if f.attname not in ("id", "organisation_id", "agent_id")
            )
        )
    )
    return {"traces": traces, "steps": steps, "sessions": sessions, "rollups": rollups}


def _raw_spans(reader, trace_id: str) -> dict:
    r = reader.get(f"/api/traces/otel-{trace_id}/spans")
    assert r.status_code == 200, r.content
    return r.json()


def _packed_text(trace_id: str) -> bytes:
    packed = bytes(CompactedSpans.objects.get(trace_id=trace_id).packed)
    unpacker = zlib.decompressobj(-15, zdict=compaction.ZDICT)
    return unpacker.decompress(packed[1:]) + unpacker.flush()


# --- the command ---------------------------------------------------------------------------


def test_compact_spans_packs_every_trace_with_older_than_zero(tenant):
    _send(tenant.keys["ingest"], ["a1", "a2", "a3", "b1", "b2"])
    out = _compact("--older-than", "0")
    assert "Compacted 2 traces (5 spans) in 1 batches" in out
    assert not ReceivedSpan.objects.exists()
    assert ReceivedTrace.objects.filter(compacted=True).count() == 2


def test_compact_spans_works_in_batches_of_the_size_asked(tenant):
    _send(tenant.keys["ingest"], ["a1", "a2", "a3", "b1", "b2"])
    out = _compact("--older-than", "0", "--batch-size", "1", "--verbosity", "2")
    assert out.count("batch: 1 traces") == 2
    assert "Compacted 2 traces (5 spans) in 2 batches" in out


def test_compact_spans_leaves_traces_that_received_spans_within_the_settling_time(tenant):
    _send(tenant.keys["ingest"], ["a1", "a2", "a3"])
    _send(tenant.keys["ingest"], ["b1", "b2"])
    ReceivedTrace.objects.filter(trace_id=A).update(last_received_at=timezone.now() - timedelta(seconds=120))
    assert "Compacted 1 traces (3 spans)" in _compact("--older-than", "60")
    assert set(ReceivedSpan.objects.values_list("trace_id", flat=True)) == {B}
    assert "Compacted 0 traces" in _compact("--older-than", "60")


def test_compact_spans_refuses_a_negative_age(db):
    with pytest.raises(CommandError, match="--older-than"):
        _compact("--older-than", "-1")


# --- the beat task -------------------------------------------------------------------------


def test_beat_compacts_traces_settled_for_the_configured_time(tenant, settings):
    _send(tenant.keys["ingest"], ["a1", "a2", "a3", "b1", "b2"])
    settings.OTEL_SPAN_SETTLE_SECONDS = 600
    ReceivedTrace.objects.filter(trace_id=A).update(last_received_at=timezone.now() - timedelta(seconds=601))
    from otel.tasks import compact_spans

    assert app.conf.beat_schedule["compact-received-spans"]["task"] == compact_spans.name
    assert compact_spans.apply().get() == 1
    assert set(ReceivedSpan.objects.values_list("trace_id", flat=True)) == {B}
    assert ReceivedTrace.objects.get(trace_id=A).compacted
    assert CompactedSpans.objects.filter(trace_id=A).exists()


# --- reading back --------------------------------------------------------------------------


def test_the_spans_endpoint_answers_the_same_after_compaction(tenant, reader):
    _send(tenant.keys["ingest"], ["a1", "a2", "a3"])
    before = _raw_spans(reader, A)
    _compact("--older-than", "0")
    assert _raw_spans(reader, A) == before
    assert [s["span_id"] for s in before["spans"]] == [
        "00000000000000a1",
        "00000000000000a2",
        "00000000000000a3",
    ]


def test_spans_of_the_sdk_read_back_exactly_after_compaction(tenant, reader):
    """Messages as JSON attributes (their step holds them decoded) and a failed tool."""
    tracer, exporter = sdk_tracer()
    trace_id = f"{agent_turn(tracer):032x}"
    r = Client().post(
        URL,
        protobuf_of(exporter.get_finished_spans()),
        content_type="application/x-protobuf",
        HTTP_AUTHORIZATION=f"Bearer {tenant.keys['ingest']}",
    )
    assert r.status_code == 200
    before = _raw_spans(reader, trace_id)
    _compact("--older-than", "0")
    assert _raw_spans(reader, trace_id) == before
    assert b"What are your hours?" not in _packed_text(trace_id)


def test_the_trace_page_shows_the_raw_spans_after_compaction(tenant, members):
    _send(tenant.keys["ingest"], ["a1", "a2", "a3"])
    _compact("--older-than", "0")
    page = members["viewer"].get(f"/traces/otel-{A}/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "Raw spans" in text and "gen_ai.usage.input_tokens" in text and "00000000000000a3" in text


def test_the_compacted_form_keeps_no_text_the_trace_already_holds(tenant):
    _send(tenant.keys["ingest"], ["a1", "a2", "a3"])
    _compact("--older-than", "0")
    packed = _packed_text(A)
    assert PROMPT.encode() not in packed and COMPLETION.encode() not in packed
    assert b"gpt-4o-mini" in packed  # the span's name: no step holds it as such
    assert b"gen_ai.usage.input_tokens" in packed and b"120" not in packed  # the value is the step's


# --- the trace after compaction ------------------------------------------------------------


def test_compaction_changes_no_trace_step_conversation_or_rollup(tenant):
    _send(tenant.keys["ingest"], ["a1", "a2", "a3", "b1", "b2"])
    before = _state(tenant.organisation)
    _compact("--older-than", "0")
    assert _state(tenant.organisation) == before


def test_a_span_arriving_after_compaction_makes_the_exact_trace(tenant, outsider):
    _send(tenant.keys["ingest"], ["a1", "a2", "a3", "b1", "b2"])
    at_once = _state(tenant.organisation)
    key = outsider.keys["ingest"]
    _send(key, ["a1", "a2", "b1", "b2"])
    _compact("--older-than", "0")
    assert Trace.objects.get(organisation=outsider.organisation, public_id=f"otel-{A}").status == "success"
    _send(key, ["a3"])  # the failing tool span, late
    assert _state(outsider.organisation) == at_once
    assert ReceivedSpan.objects.filter(organisation=outsider.organisation, trace_id=A).count() == 3
    _compact("--older-than", "0")
    assert _state(outsider.organisation) == at_once


def test_a_late_span_reopens_its_trace_with_each_span_as_received(tenant, outsider, reader):
    key = outsider.keys["ingest"]
    _send(key, ["a1", "a2"])
    first = outsider.api("read").get(f"/api/traces/otel-{A}/spans").json()["spans"]
    _compact("--older-than", "0")
    _send(key, ["a3"])
    spans = outsider.api("read").get(f"/api/traces/otel-{A}/spans").json()["spans"]
    assert spans[:2] == first
    assert spans[2]["span_id"] == "00000000000000a3" and spans[2]["received_at"] >= first[1]["received_at"]
    assert not ReceivedTrace.objects.get(organisation=outsider.organisation, trace_id=A).compacted
    assert not CompactedSpans.objects.filter(organisation=outsider.organisation, trace_id=A).exists()


def test_a_resent_span_after_compaction_changes_nothing(tenant):
    key = tenant.keys["ingest"]
    _send(key, ["a1", "a2", "a3"])
    before = _state(tenant.organisation)
    _compact("--older-than", "0")
    _send(key, ["a2"])
    assert _state(tenant.organisation) == before
    assert ReceivedTrace.objects.get(trace_id=A).span_count == 3


# --- retention -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)  # retention drops partitions: rows committed
def test_retention_deletes_compacted_spans_with_their_traces(tenant, settings):
    _send(tenant.keys["ingest"], ["a1", "a2", "a3", "b1", "b2"])
    _compact("--older-than", "0")
    settings.RETENTION_DAYS = 30  # T0 is older than that
    out = io.StringIO()
    call_command("apply_retention", "--dry-run", stdout=out)
    assert "Would delete 2 traces (3 steps, 0 scores, 5 OpenTelemetry spans)" in out.getvalue()
    out = io.StringIO()
    call_command("apply_retention", "--verbosity", "0", stdout=out)
    assert "Deleted 2 traces (3 steps, 0 scores, 5 OpenTelemetry spans)" in out.getvalue()
    assert not ReceivedTrace.objects.exists() and not ReceivedSpan.objects.exists()
    assert not CompactedSpans.objects.exists()


def test_compacted_spans_lie_in_the_partition_of_their_traces_day(tenant):
    _send(tenant.keys["ingest"], ["a1", "a2", "a3"])
    _compact("--older-than", "0")
    trace = Trace.objects.get(public_id=f"otel-{A}")
    assert CompactedSpans.objects.get(trace_id=A).created_at == trace.created_at


@pytest.mark.django_db(transaction=True)  # retention drops partitions: rows committed
def test_retention_expires_compacted_spans_of_a_trace_whose_root_never_came(tenant, settings):
    _send(tenant.keys["ingest"], ["a2", "a3"], flags=0x100)  # their parent is in this process: wait
    assert not ReceivedTrace.objects.get(trace_id=A).derived
    old = timezone.now() - timedelta(days=40)
    ReceivedTrace.objects.filter(trace_id=A).update(last_received_at=old)
    assert "Compacted 1 traces (2 spans)" in _compact("--older-than", "0")
    settings.RETENTION_DAYS = 30
    out = io.StringIO()
    call_command("apply_retention", "--verbosity", "0", stdout=out)
    assert "2 OpenTelemetry spans" in out.getvalue()
    assert not ReceivedTrace.objects.exists() and not CompactedSpans.objects.exists()
