"""Spans of one trace split over requests, in any order, and re-sent: traces,
steps, conversations and rollups end up as if everything came at once, and the
rollups equal a rebuild from raw rows."""

import json
from datetime import timedelta

import pytest
from django.test import Client

from agents.models import Session, Trace, TraceStep
from metrics.models import DailyRollup, HourlyRollup
from metrics.rebuild import rollups_rebuild
from otel.models import ReceivedSpan

from .conftest import _tenant
from .otlp import T0, agent_turn, json_export, json_span, ns, protobuf_of, sdk_tracer

URL = "/api/otel/v1/traces"
A, B = "0af7651916cd43dd8448eb211c80319c", "4bf92f3577b34da6a3ce929d0e0e4736"


def _spans() -> dict[str, dict]:
    """Two agent replies of one conversation, the first starting just before an
    hour edge and failing in its tool; ids of the form <reply><span>."""
    t, m = ns(T0), 1_000_000
    agent = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.id": "agent_support",
        "gen_ai.conversation.id": "conv-9",
    }
    chat = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini"}
    return {
        "a1": json_span(A, "00000000000000a1", "invoke_agent", t, t + 1500 * m, attributes=agent),
        "a2": json_span(
            A,
            "00000000000000a2",
            "chat",
            t + 600 * m,
            t + 900 * m,
            parent="00000000000000a1",
            attributes={**chat, "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 10},
        ),
        "a3": json_span(
            A,
            "00000000000000a3",
            "execute_tool lookup",
            t + 950 * m,
            t + 1000 * m,
            parent="00000000000000a1",
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "lookup",
                "error.type": "KeyError",
            },
        ),
        "b1": json_span(
            B, "00000000000000b1", "invoke_agent", t + 300_000 * m, t + 300_800 * m, attributes=agent
        ),
        "b2": json_span(
            B,
            "00000000000000b2",
            "chat",
            t + 300_100 * m,
            t + 300_700 * m,
            parent="00000000000000b1",
            attributes={**chat, "gen_ai.usage.input_tokens": 50, "gen_ai.usage.output_tokens": 5},
        ),
    }


def _send(key: str, body: bytes, content_type: str = "application/json") -> None:
    r = Client().post(URL, body, content_type=content_type, HTTP_AUTHORIZATION=f"Bearer {key}")
    assert r.status_code == 200, r.content
    assert b"rejected" not in r.content


def _send_json(key: str, names: list[str]) -> None:
    spans = _spans()
    _send(key, json.dumps(json_export([spans[n] for n in names])).encode())


def _state(organisation) -> dict:
    """Everything the product shows about an organisation's traces, without row ids."""
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
            "output",
            "model",
            "input_tokens",
            "output_tokens",
            "latency_ms",
            "cost_usd",
            "cost_source",
            "status",
            "error",
            "tool_calls",
            "tool_call_count",
            "created_at",
        )
    )
    steps = list(
        TraceStep.objects.filter(trace__organisation=organisation)
        .order_by("trace__public_id", "position")
        .values(
            "trace__public_id",
            "position",
            "span_id",
            "kind",
            "latency_ms",
            "input_tokens",
            "cost_usd",
            "error",
        )
    )
    sessions = list(
        Session.objects.filter(organisation=organisation)
        .order_by("public_id")
        .values("public_id", "agent__public_id", "channel", "started_at", "trace_count", "error_count")
    )
    return {"traces": traces, "steps": steps, "sessions": sessions, "rollups": _rollups(organisation)}


def _rollups(organisation) -> dict:
    out = {}
    for model in (HourlyRollup, DailyRollup):
        for row in model.objects.filter(organisation=organisation).values(
            *_rollup_columns(model), "agent__public_id"
        ):
            key = (
                model.__name__,
                row.pop("agent__public_id"),
                row["channel"],
                row["deployment_version"],
                row["bucket_start"],
            )
            out[key] = row
    return out


def _rollup_columns(model) -> list[str]:
    return [
        f.attname
        for f in model._meta.concrete_fields
        if f.attname not in ("id", "organisation_id", "agent_id")
    ]


def _rebuilt(organisation) -> dict:
    rollups_rebuild(start=T0 - timedelta(days=1), end=T0 + timedelta(days=1), organisation_id=organisation.pk)
    return _rollups(organisation)


@pytest.fixture
def at_once(tenant) -> dict:
    _send_json(tenant.keys["ingest"], ["a1", "a2", "a3", "b1", "b2"])
    state = _state(tenant.organisation)
    assert [t["status"] for t in state["traces"]] == ["error", "success"]
    assert state["sessions"] == [
        {
            "public_id": "conv-9",
            "agent__public_id": "agent_support",
            "channel": "chat",
            "started_at": T0,
            "trace_count": 2,
            "error_count": 1,
        }
    ]
    return state


@pytest.mark.parametrize(
    "requests",
    [
        [["a2", "b2"], ["a1", "b1", "a3"]],  # children first: they stand in for the agent until it arrives
        [["a1", "a3", "b1"], ["b2", "a2"]],  # agents first
        [["a3"], ["b1"], ["a1"], ["b2"], ["a2"]],
        [["a2", "b1", "b2"], ["a2", "b2"], ["a3", "a1", "b2"]],  # with re-sends along the way
    ],
)
def test_split_and_resent_spans_end_up_as_if_sent_at_once(at_once, outsider, requests):
    key = outsider.keys["ingest"]
    for names in requests:
        _send_json(key, names)
    assert _state(outsider.organisation) == at_once
    _send_json(key, ["a1", "a2", "a3", "b1", "b2"])  # the whole export again
    assert _state(outsider.organisation) == at_once
    assert ReceivedSpan.objects.filter(organisation=outsider.organisation).count() == 5
    assert _rebuilt(outsider.organisation) == at_once["rollups"]


def test_the_rollups_of_a_single_send_equal_a_rebuild(at_once, tenant):
    assert _rebuilt(tenant.organisation) == at_once["rollups"]


def test_children_exported_before_their_parent_wait_for_it(db):
    """The SDK says that a child's parent is in the same process: the trace is not
    shown before the agent span arrives, so no partial agent or conversation appears."""
    first, second = _tenant("first"), _tenant("second")
    tracer, exporter = sdk_tracer()
    agent_turn(tracer)
    spans = exporter.get_finished_spans()  # in the order they ended: chat, tool, agent
    _send(first.keys["ingest"], protobuf_of(spans), "application/x-protobuf")
    _send(second.keys["ingest"], protobuf_of(spans[:2]), "application/x-protobuf")
    assert not Trace.objects.filter(organisation=second.organisation).exists()
    assert not Session.objects.filter(organisation=second.organisation).exists()
    _send(second.keys["ingest"], protobuf_of(spans[2:]), "application/x-protobuf")
    assert _state(second.organisation) == _state(first.organisation)
    assert second.organisation.agents.count() == 1


def test_a_late_span_changes_the_trace_and_its_rollups(at_once, outsider):
    """A span arriving after its trace was derived (a tool from another service)
    adds its tokens and failure to the trace and the rollups."""
    key = outsider.keys["ingest"]
    _send_json(key, ["b1", "b2"])
    before = Trace.objects.get(organisation=outsider.organisation, public_id=f"otel-{B}")
    assert (before.status, before.input_tokens) == ("success", 50)
    late = json_span(
        B,
        "00000000000000b3",
        "chat",
        ns(T0, 300_710),
        ns(T0, 300_790),
        parent="00000000000000b1",
        attributes={"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 7, "error.type": "500"},
    )
    _send(key, json.dumps(json_export([late])).encode())
    after = Trace.objects.get(organisation=outsider.organisation, public_id=f"otel-{B}")
    assert (after.status, after.input_tokens, after.cost_source) == ("error", 57, "unpriced")
    rollups = _rollups(outsider.organisation)
    hour = [r for k, r in rollups.items() if k[0] == "HourlyRollup"]
    assert [(r["traces"], r["error_traces"], r["input_tokens"], r["unpriced_traces"]) for r in hour] == [
        (1, 1, 57, 1)
    ]
    assert hour[0]["conversations"] == 1 and hour[0]["failed_conversations"] == 1
    assert _rebuilt(outsider.organisation) == rollups


def test_scores_follow_a_trace_that_moves(outsider):
    """A score attached while only a child had arrived moves with the trace to
    its agent span's hour, agent and conversation."""
    key = outsider.keys["ingest"]
    _send_json(key, ["a2"])  # no span flags: the child stands in for its agent span
    provisional = Trace.objects.get(public_id=f"otel-{A}")
    assert provisional.created_at.hour == 14 and provisional.agent.public_id == "support-service"
    r = Client().post(
        f"/api/traces/otel-{A}/scores",
        json.dumps({"value": 4}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    assert r.status_code == 201
    _send_json(key, ["a1", "a3"])
    score = Trace.objects.get(public_id=f"otel-{A}").scores.get()
    assert (score.trace_created_at, score.agent.public_id) == (T0, "agent_support")
    rollups = _rollups(outsider.organisation)
    scored = {k[4].hour: r["score_count"] for k, r in rollups.items() if k[0] == "HourlyRollup"}
    assert scored == {13: 1}
    assert _rebuilt(outsider.organisation) == rollups
    assert not Session.objects.filter(public_id=f"otel-{A}").exists()  # its stand-in conversation is gone
