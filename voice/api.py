"""JSON endpoints for voice: call events in, voice metrics out. Live metrics are
pushed over WebSocket by ``voice.consumers``."""

from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from ninja import Query, Router, Schema

from accounts.auth import ingest_key, read_key
from agents import selectors
from agents.api import IngestOut, batch_items, ingest_response
from audit.services import Actor
from metrics.schemas import WindowOut, WindowParams, window_from
from thinnest_analytics.db import in_worker_thread, on_worker_thread
from thinnest_analytics.parsing import json_body
from thinnest_analytics.replica import replica_reads

from .schemas import CallEnded, CallStarted, CallTurn
from .selectors import voice_metrics
from .services import voice_events_ingest

router = Router(tags=["voice"])


# The request body as OpenAPI shows it: one event, or a batch of them (inlined:
# the events are parsed by hand, so no signature puts them among the components).
_EVENT_SCHEMAS = [model.model_json_schema() for model in (CallStarted, CallTurn, CallEnded)]
_EVENTS_BODY = {
    "oneOf": [
        *_EVENT_SCHEMAS,
        {
            "title": "VoiceEventBatch",
            "type": "object",
            "properties": {
                "events": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 1000,
                    "items": {"oneOf": _EVENT_SCHEMAS},
                }
            },
            "required": ["events"],
            "additionalProperties": False,
        },
    ]
}


@router.post(
    "/voice/events",
    auth=ingest_key,
    summary="Ingest one call event or a batch of up to 1000",
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": _EVENTS_BODY}}}
    },
    response={200: IngestOut, 207: IngestOut},
)
async def ingest_voice_events(request: HttpRequest):
    """Store call events (``call.started``, ``call.turn``, ``call.ended``). Valid
    events are stored even when others are rejected; a re-sent event is
    accepted but applied once. Live subscribers of the agent hear of the change."""
    return await in_worker_thread(_ingest_voice_events, request=request)


def _ingest_voice_events(request: HttpRequest) -> JsonResponse:
    items, is_batch = batch_items(json_body(request.body), "events", "event")
    result = voice_events_ingest(
        organisation=request.organisation, items=items, actor=Actor.for_request(request)
    )
    return ingest_response(result, is_batch)


class CallsByStatus(Schema):
    completed: int
    failed: int
    dropped: int


class VoiceMetricsOut(WindowOut):
    agent_id: str
    active_calls: int
    calls_started: int
    calls_ended: int
    calls_by_status: CallsByStatus
    total_call_duration_s: float
    avg_call_duration_s: float | None
    voice_minutes: float
    voice_cost_usd: float
    turns: int
    avg_voice_latency_ms: float | None
    p50_voice_latency_ms: float | None
    p95_voice_latency_ms: float | None
    transcription_accuracy: float | None
    interruption_rate: float | None
    interrupted_turns: int


@router.get(
    "/agents/{agent_id}/voice",
    auth=read_key,
    response=VoiceMetricsOut,
    by_alias=True,
    summary="An agent's voice metrics for a window",
)
@on_worker_thread
@replica_reads
def agent_voice(request: HttpRequest, agent_id: str, params: Query[WindowParams]):
    """Active calls now; calls ended in the window (duration in seconds, minutes,
    cost); voice latency (ms), transcription accuracy and interruption rate of
    the window's turns. Averages and rates are null for an empty window."""
    window = window_from(params)
    agent = selectors.agent_get(organisation=request.organisation, public_id=agent_id)
    return voice_metrics(organisation=request.organisation, window=window, agent=agent, now=timezone.now())
