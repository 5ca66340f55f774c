"""From voice frameworks' spans to call events: the call, its turns, its end.

Pipecat (``pipecat-ai[tracing]``) and LiveKit Agents trace a voice conversation
as one OpenTelemetry trace. The events made here are the ones a voice agent
would send to ``POST /api/voice/events`` and go through the same service
(``voice.services.voice_events_ingest``), so calls, turns, minutes and
the live metrics follow the same rules whichever way they came.

| framework | call (start, end, status) | a turn | voice latency | interrupted | confidence |
|---|---|---|---|---|---|
| Pipecat | the ``conversation`` span (``conversation.type = voice``) | a ``turn`` span | ``turn.user_bot_latency_seconds`` | ``turn.was_interrupted`` | not reported |
| LiveKit Agents | the ``agent_session`` span | an ``agent_turn`` span that answered the user (``lk.e2e_latency``) | ``lk.e2e_latency`` | ``lk.interrupted`` | ``lk.transcript_confidence`` of the ``user_turn`` before it |

Both measures are the frameworks' own "end of the user's speech to the first
audio of the reply". A turn without one (the bot's greeting, a turn cut short
before the bot spoke) is no voice turn: it has no voice latency. The result
depends only on the set of spans, so spans may arrive in any batches and
order; events are sent again with every batch and applied once.
"""

import re
from dataclasses import dataclass
from datetime import UTC, timedelta
from decimal import Decimal
from typing import Any

from .otlp import EPOCH, SpanIn

PIPECAT_CONVERSATION = "conversation"
PIPECAT_TURN = "turn"
LIVEKIT_SESSION = "agent_session"
LIVEKIT_AGENT_TURN = "agent_turn"
LIVEKIT_USER_TURN = "user_turn"
MAX_LATENCY_S = 3600
PUBLIC_ID_CHARS = re.compile(r"[^A-Za-z0-9_.:@+=\-]+")


@dataclass
class VoiceTrace:
    """The call a voice framework's trace describes."""

    call_id: str
    events: list[dict[str, Any]]


def _at(ns: int) -> str:
    return (EPOCH + timedelta(microseconds=ns // 1000)).astimezone(UTC).isoformat()


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _flag(value: Any) -> bool:
    return value is True or value == "true"


def _is_pipecat_turn(span: SpanIn) -> bool:
    return span.name == PIPECAT_TURN and "turn.number" in span.attributes


def _is_pipecat_conversation(span: SpanIn) -> bool:
    return span.name == PIPECAT_CONVERSATION and span.attributes.get("conversation.type") == "voice"


def is_voice(spans: list[SpanIn]) -> bool:
    """Whether the spans come from a voice framework's conversation."""
    return any(
        _is_pipecat_turn(s) or _is_pipecat_conversation(s) or s.name in (LIVEKIT_SESSION, LIVEKIT_USER_TURN)
        for s in spans
    )


def call_span(spans: list[SpanIn]) -> SpanIn | None:
    """The span of the whole call: Pipecat's ``conversation``, LiveKit's ``agent_session``."""
    calls = [s for s in spans if _is_pipecat_conversation(s) or s.name == LIVEKIT_SESSION]
    return min(calls, key=lambda s: (s.start_ns, s.span_id), default=None)


def conversation_id_of(spans: list[SpanIn], trace_id: str) -> str:
    """The call's id, which is also its conversation's: Pipecat's
    ``conversation.id``, else the trace's product id."""
    for span in sorted(spans, key=lambda s: (s.start_ns, s.span_id)):
        value = span.attributes.get("conversation.id")
        if isinstance(value, str) and value.strip():
            return PUBLIC_ID_CHARS.sub("_", value.strip())[:200]
    return f"otel-{trace_id}"


def _turn(call_id: str, span: SpanIn, latency_s: float, interrupted: bool, confidence) -> dict | None:
    if not 0 <= latency_s <= MAX_LATENCY_S:
        return None
    event = {
        "type": "call.turn",
        "call_id": call_id,
        "event_id": f"{call_id}:turn:{span.span_id}",
        "at": _at(span.end_ns),
        "voice_latency_ms": round(latency_s * 1000, 3),
        "interrupted": interrupted,
    }
    if confidence is not None and 0 <= confidence <= 1:
        event["transcription_confidence"] = confidence
    return event


def _pipecat_turns(call_id: str, spans: list[SpanIn]) -> list[dict]:
    turns = []
    for span in spans:
        if not _is_pipecat_turn(span):
            continue
        latency = _number(span.attributes.get("turn.user_bot_latency_seconds"))
        if latency is None:
            continue
        turn = _turn(call_id, span, latency, _flag(span.attributes.get("turn.was_interrupted")), None)
        if turn:
            turns.append(turn)
    return turns


def _livekit_turns(call_id: str, spans: list[SpanIn]) -> list[dict]:
    user_turns = sorted((s for s in spans if s.name == LIVEKIT_USER_TURN), key=lambda s: s.end_ns)
    turns = []
    for span in spans:
        if span.name != LIVEKIT_AGENT_TURN:
            continue
        latency = _number(span.attributes.get("lk.e2e_latency"))
        if latency is None:
            continue
        heard = [u for u in user_turns if u.end_ns <= span.start_ns]
        confidence = _number(heard[-1].attributes.get("lk.transcript_confidence")) if heard else None
        turn = _turn(call_id, span, latency, _flag(span.attributes.get("lk.interrupted")), confidence)
        if turn:
            turns.append(turn)
    return turns


def voice_trace(spans: list[SpanIn], *, agent_id: str, agent_name: str, trace_id: str) -> VoiceTrace | None:
    """The call events the spans of one trace stand for, or None when they are
    no voice framework's. The call starts with the conversation's (session's)
    span, else with the earliest turn known; it ends, with the span's duration,
    once that span has arrived (failed when its status is ERROR)."""
    if not is_voice(spans):
        return None
    ordered = sorted(spans, key=lambda s: (s.start_ns, s.span_id))
    call_id = conversation_id_of(ordered, trace_id)
    call = call_span(ordered)
    turns = _pipecat_turns(call_id, ordered) + _livekit_turns(call_id, ordered)
    turn_spans = [
        s for s in ordered if _is_pipecat_turn(s) or s.name in (LIVEKIT_AGENT_TURN, LIVEKIT_USER_TURN)
    ]
    if call is None and not turn_spans:
        return None
    started_ns = call.start_ns if call is not None else turn_spans[0].start_ns
    events: list[dict[str, Any]] = [
        {
            "type": "call.started",
            "call_id": call_id,
            "agent_id": agent_id,
            "agent_name": agent_name,
            "at": _at(started_ns),
        }
    ]
    events += turns
    if call is not None:
        seconds = Decimal(call.end_ns - call.start_ns) / Decimal(1_000_000_000)
        events.append(
            {
                "type": "call.ended",
                "call_id": call_id,
                "at": _at(call.end_ns),
                "duration_s": float(seconds),
                "status": "failed" if call.status_code == 2 else "completed",
            }
        )
    return VoiceTrace(call_id=call_id, events=events)
