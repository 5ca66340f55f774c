"""Voice frameworks' spans as voice calls, in-process: a Pipecat call recorded
from the real bot of ``test_otel_clients.py`` (``tests/fixtures/pipecat_call.json``,
re-recorded with ``RECORD_OTEL_FIXTURES=1``) replayed in batches while a live
subscriber listens, and LiveKit Agents' session, user and agent turn spans."""

import json
from datetime import timedelta
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.test import Client
from django.utils import timezone

from agents.models import Agent, Trace
from audit.services import Actor
from otel.otlp import EPOCH
from thinnest_analytics.asgi import application
from voice.models import VoiceCall, VoiceTurn

from . import voice
from .conftest import _tenant
from .otlp import attribute, json_export, json_span

RECORDED = json.loads((Path(__file__).resolve().parent / "fixtures" / "pipecat_call.json").read_text())
AGENT = "agent_pipecat"
MS = 1_000_000


def _ns(at) -> int:
    delta = at - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def _typed(value) -> dict:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    return {"stringValue": value}


def _otlp(spans: list[dict], shift_ns: int, trace_id: str = "5b8efff798038103d269b633813fc60c") -> bytes:
    """Spans as read back, in an OTLP JSON export, moved ``shift_ns`` later."""
    exported = []
    for s in spans:
        span = json_span(
            trace_id,
            s["span_id"],
            s["name"],
            s["start_ns"] + shift_ns,
            s["end_ns"] + shift_ns,
            s["parent_span_id"],
        )
        span["attributes"] = [{"key": k, "value": _typed(v)} for k, v in s["attributes"].items()]
        span["status"] = {"code": s["status_code"], "message": s["status_message"]}
        exported.append(span)
    return json.dumps(json_export(exported, service=AGENT)).encode()


def _post(tenant, body: bytes) -> None:
    r = Client().post(
        "/api/otel/v1/traces",
        body,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {tenant.keys['ingest']}",
    )
    assert r.status_code == 200 and b"rejected" not in r.content, r.content


def _shift_to_now() -> int:
    """How far to move the recording so that its call ended a second ago."""
    end = max(s["end_ns"] for s in RECORDED)
    return _ns(timezone.now() - timedelta(seconds=1)) - end


@pytest.mark.django_db(transaction=True)
def test_a_pipecat_call_moves_the_live_voice_metrics_as_its_spans_arrive(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.VOICE_LIVE_MIN_INTERVAL_MS = 100
    tenant = _tenant("pipecat-live")
    Agent.objects.create(organisation=tenant.organisation, public_id=AGENT, name="Pipecat bot")
    shift = _shift_to_now()
    turns = [s for s in RECORDED if s["name"] != "conversation"]  # the turns end before the call does
    call = [s for s in RECORDED if s["name"] == "conversation"]

    async def scenario():
        from channels.testing import WebsocketCommunicator

        communicator = WebsocketCommunicator(
            application,
            f"/api/voice/metrics/{AGENT}/ws",
            headers=[(b"host", b"testserver"), (b"authorization", f"Bearer {tenant.keys['read']}".encode())],
        )
        connected, _ = await communicator.connect()
        assert connected
        frames = [json.loads(await communicator.receive_from(timeout=2))]
        for batch in (turns, call):
            await database_sync_to_async(_post)(tenant, _otlp(batch, shift))
            frames.append(json.loads(await communicator.receive_from(timeout=2)))
        await communicator.disconnect()
        return frames

    snapshot, during, after = async_to_sync(scenario)()
    assert (snapshot["active_calls"], during["active_calls"], after["active_calls"]) == (0, 1, 0)
    assert during["type"] == after["type"] == "update"
    recorded_turns = [s for s in RECORDED if s["name"] == "turn"]
    mean = sum(s["attributes"]["turn.user_bot_latency_seconds"] * 1000 for s in recorded_turns) / 3
    assert during["avg_latency_ms"] == pytest.approx(mean, abs=1)  # latencies are kept in whole ms
    assert during["interruption_rate"] == pytest.approx(1 / 3)
    assert after["calls_today"] == 1 and after["avg_call_duration_s"] > 0


@pytest.mark.django_db(transaction=True)
def test_a_pipecat_call_replayed_in_any_order_and_twice_is_one_call(tenant, members):
    shift = _shift_to_now()
    for batch in (RECORDED[::-1][:3], RECORDED, RECORDED[3:], RECORDED):
        _post(tenant, _otlp(batch, shift))
    call = VoiceCall.objects.get()
    assert (call.public_id, call.status, call.agent.public_id) == ("call-pipecat-1", "completed", AGENT)
    (conversation,) = [s for s in RECORDED if s["name"] == "conversation"]
    assert float(call.duration_s) == pytest.approx(
        (conversation["end_ns"] - conversation["start_ns"]) / 1e9, abs=1e-3
    )
    assert VoiceTurn.objects.count() == 3 and VoiceTurn.objects.filter(interrupted=True).count() == 1
    assert call.session.channel == "voice" and call.session.trace_count == 1
    page = members["viewer"].get(f"/agents/{AGENT}/voice/", {"period": "24h"}).content.decode()
    assert "1 started, 1 ended" in page and "(1 of 3 turns)" in page  # the agent's Voice tab


# --- LiveKit Agents -------------------------------------------------------------------------

LIVEKIT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def _livekit_spans(start_ns: int) -> list[dict]:
    """A session of two exchanges in LiveKit Agents 1.8's span names and
    attributes (``livekit.agents.telemetry.trace_types``): ``user_turn`` with
    ``lk.transcript_confidence``, ``agent_turn`` (an ``invoke_agent``) with
    ``lk.e2e_latency`` and ``lk.interrupted``, ``llm_node`` and the LLM request."""

    def span(span_id, name, start_ms, end_ms, parent="", **attributes):
        return json_span(
            LIVEKIT_TRACE,
            span_id,
            name,
            start_ns + start_ms * MS,
            start_ns + end_ms * MS,
            parent,
            attributes=attributes,
        )

    session = "00000000000000f0"
    return [
        span(session, "agent_session", 0, 20_000),
        span(
            "00000000000000f1",
            "user_turn",
            1_000,
            3_000,
            session,
            **{"lk.pii.user_transcript": "Hi there", "lk.transcript_confidence": 0.92},
        ),
        span(
            "00000000000000f2",
            "agent_turn",
            3_100,
            6_000,
            session,
            **{"gen_ai.operation.name": "invoke_agent", "lk.e2e_latency": 0.85, "lk.interrupted": False},
        ),
        span("00000000000000f3", "llm_node", 3_150, 3_900, "00000000000000f2"),
        span(
            "00000000000000f4",
            "user_turn",
            7_000,
            9_000,
            session,
            **{"lk.pii.user_transcript": "Stop", "lk.transcript_confidence": 0.8},
        ),
        span(
            "00000000000000f5",
            "agent_turn",
            9_100,
            9_800,
            session,
            **{"gen_ai.operation.name": "invoke_agent", "lk.e2e_latency": 0.65, "lk.interrupted": True},
        ),
    ]


@pytest.mark.django_db
def test_a_livekit_session_is_a_call_with_its_frameworks_latency_and_confidence(tenant, reader):
    start = timezone.now() - timedelta(minutes=5)
    document = json_export(_livekit_spans(_ns(start)), service="agent_livekit")
    document["resourceSpans"][0]["resource"]["attributes"].append(attribute("service.version", "v1"))
    _post(tenant, json.dumps(document).encode())
    window = {
        "from": (start - timedelta(hours=1)).isoformat(),
        "to": (start + timedelta(hours=1)).isoformat(),
    }
    metrics = reader.get("/api/agents/agent_livekit/voice", window).json()
    assert (metrics["calls_ended"], metrics["total_call_duration_s"], metrics["turns"]) == (1, 20, 2)
    assert metrics["avg_voice_latency_ms"] == 750 and metrics["interrupted_turns"] == 1
    assert metrics["transcription_accuracy"] == pytest.approx(0.86)
    trace = Trace.objects.get()  # the session, not its first agent turn, stands for the trace
    assert (trace.channel, trace.latency_ms, trace.session.public_id) == (
        "voice",
        20_000,
        f"otel-{LIVEKIT_TRACE}",
    )


@pytest.mark.django_db
def test_the_same_call_sent_as_events_gives_the_same_metrics(tenant, outsider):
    start = timezone.now() - timedelta(minutes=5)
    _post(tenant, json.dumps(json_export(_livekit_spans(_ns(start)), service="agent_livekit")).encode())
    at = lambda ms: (start + timedelta(milliseconds=ms)).isoformat()  # noqa: E731
    call = f"otel-{LIVEKIT_TRACE}"
    events = [
        voice.started(call_id=call, agent_id="agent_livekit", at=at(0)),
        voice.turn(call_id=call, at=at(6_000), voice_latency_ms=850, transcription_confidence=0.92),
        voice.turn(
            call_id=call, at=at(9_800), voice_latency_ms=650, interrupted=True, transcription_confidence=0.8
        ),
        voice.ended(call_id=call, at=at(20_000), duration_s=20.0),
    ]
    from voice.services import voice_events_ingest

    assert not voice_events_ingest(
        organisation=outsider.organisation, items=events, actor=Actor.system("test")
    ).rejected
    window = {
        "from": (start - timedelta(hours=1)).isoformat(),
        "to": (start + timedelta(hours=1)).isoformat(),
    }
    by_spans = tenant.api("read").get("/api/agents/agent_livekit/voice", window).json()
    by_events = outsider.api("read").get("/api/agents/agent_livekit/voice", window).json()
    assert by_spans == by_events
