"""Validation of voice call events. Like traces, each event is checked on its own
so that one bad event never costs the rest of its batch."""

from datetime import UTC
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StrictBool

from agents.schemas import MAX_LATENCY_MS, AgentId, PublicId, ShortText, StrictSchema, Timestamp

EVENT_TYPES = ("call.started", "call.turn", "call.ended")
MAX_CALL_SECONDS = 7 * 24 * 3600

# Numbers must be JSON numbers: "890" or true is a client bug, not a latency.
VoiceLatencyMs = Annotated[float, Field(strict=True, ge=0, le=MAX_LATENCY_MS, allow_inf_nan=False)]
Confidence = Annotated[float, Field(strict=True, ge=0, le=1, allow_inf_nan=False)]
CallSeconds = Annotated[float, Field(strict=True, ge=0, le=MAX_CALL_SECONDS, allow_inf_nan=False)]
# E.164, a SIP URI or whatever the telephony provider reports.
Number = Annotated[str, Field(max_length=64)]


class _CallEvent(StrictSchema):
    call_id: PublicId
    at: Timestamp
    # Identifies a turn within its call; optional, and echoed in the answer.
    event_id: PublicId | None = None


class CallStarted(_CallEvent):
    type: Literal["call.started"]
    agent_id: AgentId
    agent_name: ShortText | None = None
    session_id: PublicId | None = None
    from_number: Number | None = None
    to_number: Number | None = None
    deployment_version: Annotated[str, Field(max_length=64)] | None = None


class CallTurn(_CallEvent):
    type: Literal["call.turn"]
    voice_latency_ms: VoiceLatencyMs
    interrupted: StrictBool
    # Not every speech-to-text reports one; a turn without it counts in
    # latency and interruptions, not in transcription accuracy.
    transcription_confidence: Confidence | None = None

    @property
    def key(self) -> str:
        """The turn's identity within its call: its event_id, else its time."""
        return self.event_id or self.at.astimezone(UTC).isoformat()


class CallEnded(_CallEvent):
    type: Literal["call.ended"]
    duration_s: CallSeconds | None = None
    status: Literal["completed", "failed", "dropped"]


CallEvent = CallStarted | CallTurn | CallEnded
_MODELS: dict[str, type[BaseModel]] = {
    "call.started": CallStarted,
    "call.turn": CallTurn,
    "call.ended": CallEnded,
}


class UnknownEventType(ValueError):
    pass


def voice_event_parse(raw: dict[str, Any]) -> CallEvent:
    """The event ``raw`` describes; ``UnknownEventType`` or pydantic's
    ``ValidationError`` say what is wrong with it."""
    model = _MODELS.get(raw.get("type")) if isinstance(raw.get("type"), str) else None
    if model is None:
        raise UnknownEventType(f"type: must be one of {', '.join(EVENT_TYPES)}")
    return model.model_validate(raw)


def event_label(event: CallEvent) -> str:
    """How the answer names an event: its ``event_id``, else ``<call_id>:started``,
    ``<call_id>:turn@<time>`` or ``<call_id>:ended``."""
    if event.event_id:
        return event.event_id
    if isinstance(event, CallTurn):
        return f"{event.call_id}:turn@{event.at.astimezone(UTC).isoformat().replace('+00:00', 'Z')}"
    return f"{event.call_id}:{event.type.removeprefix('call.')}"


def raw_label(raw: Any) -> str | None:
    """The best name for an event that did not validate."""
    if not isinstance(raw, dict):
        return None
    for name in ("event_id", "call_id"):
        if isinstance(raw.get(name), str):
            return raw[name]
    return None
