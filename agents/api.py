"""JSON endpoints for ingestion and reading traces."""

import json
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from ninja import Field, Query, Router, Schema, Status
from pydantic import AfterValidator
from pydantic import Field as PydanticField

from accounts.auth import ingest_key, read_key
from audit.services import Actor
from thinnest_analytics.db import in_worker_thread
from thinnest_analytics.errors import ApiError

from . import selectors
from .schemas import TraceIn, no_nul
from .services import score_add, trace_ingest

router = Router(tags=["traces"])


# --- ingestion --------------------------------------------------------------


class IngestBatch(Schema):
    traces: list[TraceIn] = Field(..., max_length=1000)


class RejectedItem(Schema):
    index: int
    id: str | None
    reason: str


class IngestOut(Schema):
    accepted: list[str]
    duplicates: list[str]
    rejected: list[RejectedItem]


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def parse_json_body(request: HttpRequest) -> Any:
    """The request body as JSON, or a 400 that says what is wrong with it."""
    try:
        return json.loads(request.body.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise ApiError(400, "malformed_json", "the body is not UTF-8 encoded JSON") from None
    except json.JSONDecodeError as exc:
        raise ApiError(
            400,
            "malformed_json",
            f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
        ) from None
    except RecursionError:
        raise ApiError(400, "malformed_json", "the body is nested too deeply") from None
    except ValueError as exc:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None


def batch_items(body: Any, key: str, what: str) -> tuple[list, bool]:
    """The items of ``{key: [...]}``, a bare list, or one object; and whether it was a batch."""
    if isinstance(body, dict) and key in body:
        extra = sorted(set(body) - {key})
        if extra:
            raise ApiError(400, "invalid_request", f"a batch object holds only '{key}'; unexpected {extra}")
        items = body[key]
        if not isinstance(items, list):
            raise ApiError(400, "invalid_request", f"'{key}' must be a list of {what} objects")
    elif isinstance(body, list):
        items = body
    elif isinstance(body, dict):
        return [body], False
    else:
        raise ApiError(400, "invalid_request", f'the body must be a {what} object or {{"{key}": [...]}}')
    if not items:
        raise ApiError(400, "invalid_request", f"'{key}' is empty")
    if len(items) > settings.INGEST_MAX_BATCH:
        raise ApiError(
            413,
            "batch_too_large",
            f"a batch holds at most {settings.INGEST_MAX_BATCH} {what}s; got {len(items)}",
        )
    return items, True


def ingest_response(result, is_batch: bool) -> JsonResponse:
    """200 when all items were accepted, 207 when some were, 400 when none were."""
    body = {"accepted": result.accepted, "duplicates": result.duplicates, "rejected": result.rejected}
    if not result.rejected:
        return JsonResponse(body, status=200)
    if not result.accepted:
        reason = result.rejected[0]["reason"] if not is_batch else "every item was rejected"
        return JsonResponse(
            {"error": {"code": "invalid_request", "message": reason, "details": body}}, status=400
        )
    return JsonResponse(body, status=207)


@router.post(
    "/traces",
    auth=ingest_key,
    summary="Ingest one trace or a batch of up to 1000",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            {"$ref": "#/components/schemas/TraceIn"},
                            {"$ref": "#/components/schemas/IngestBatch"},
                        ]
                    }
                }
            },
        }
    },
    response={200: IngestOut, 207: IngestOut},
)
async def ingest_traces(request: HttpRequest):
    """Store traces. Valid items are stored even when others are rejected; a
    re-sent trace id is accepted but never counted twice. Unknown agents are
    registered on first sight. ``cost_usd`` defaults to the price table's cost."""
    return await in_worker_thread(_ingest_traces, request=request)


def _ingest_traces(request: HttpRequest) -> JsonResponse:
    items, is_batch = batch_items(parse_json_body(request), "traces", "trace")
    result = trace_ingest(
        organisation=request.organisation,
        items=items,
        actor=Actor.for_api_key(request.auth, request),
        # JSON can only carry a NUL character escaped, so one search of the raw body decides.
        check_nul=b"\\u0000" in request.body,
    )
    return ingest_response(result, is_batch)


# --- reading ----------------------------------------------------------------


class ToolCallOut(Schema):
    name: str
    arguments: Any = None
    result: Any = None
    latency_ms: float | None = None
    error: str = ""


class TraceOut(Schema):
    id: str
    session_id: str
    input: str
    output: str
    tool_calls: list[dict[str, Any]]
    input_tokens: int
    output_tokens: int
    latency_ms: int | None
    cost_usd: float | None
    status: str
    created_at: datetime
    channel: str
    model: str
    deployment_version: str
    error: str


class TracePage(Schema):
    traces: list[TraceOut]
    next_cursor: str | None


class StepOut(Schema):
    position: int
    kind: str
    name: str
    span_id: str
    parent_span_id: str
    started_at: datetime | None
    latency_ms: int | None
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    input: Any = None
    output: Any = None
    error: str
    attributes: dict[str, Any]


class ScoreOut(Schema):
    name: str
    value: float
    comment: str
    created_at: datetime


class TraceDetail(TraceOut):
    agent_id: str
    reasoning: str
    cost_source: str
    metadata: dict[str, Any]
    steps: list[StepOut]
    scores: list[ScoreOut]


class TraceFilters(Schema):
    limit: int = Field(20, ge=1, le=100)
    cursor: str | None = None
    status: Literal["success", "error"] | None = None
    session_id: str | None = Field(None, max_length=200)
    from_: datetime | None = Field(None, alias="from")
    to: datetime | None = None


@router.get(
    "/agents/{agent_id}/traces", auth=read_key, response=TracePage, summary="An agent's traces, newest first"
)
def agent_traces(request: HttpRequest, agent_id: str, filters: Query[TraceFilters]):
    """Cursor-paginated: pass ``next_cursor`` back as ``cursor`` for the next page.
    ``from``/``to`` bound ``created_at`` as ``[from, to)``."""
    agent = selectors.agent_get(organisation=request.organisation, public_id=agent_id)
    return selectors.trace_page(
        agent=agent,
        limit=filters.limit,
        cursor=filters.cursor,
        status=filters.status,
        session_id=filters.session_id,
        created_from=filters.from_,
        created_to=filters.to,
    )


@router.get(
    "/traces/{trace_id}",
    auth=read_key,
    response=TraceDetail,
    summary="One trace with reasoning, tool calls and steps",
)
def trace_detail(request: HttpRequest, trace_id: str):
    return selectors.trace_detail(organisation=request.organisation, public_id=trace_id)


class AgentOut(Schema):
    id: str
    name: str
    created_at: datetime
    archived: bool


class AgentList(Schema):
    agents: list[AgentOut]


@router.get(
    "/agents", auth=read_key, response=AgentList, tags=["agents"], summary="The organisation's agents"
)
def agent_list(request: HttpRequest):
    return {"agents": selectors.agent_list(organisation=request.organisation)}


class ScoreIn(Schema):
    name: Annotated[str, PydanticField(min_length=1, max_length=100), AfterValidator(no_nul)] = "evaluation"
    value: Annotated[
        Decimal, PydanticField(ge=-1_000_000, le=1_000_000, allow_inf_nan=False, decimal_places=6)
    ]
    comment: Annotated[str, PydanticField(max_length=10_000), AfterValidator(no_nul)] = ""


@router.post(
    "/traces/{trace_id}/scores",
    auth=ingest_key,
    response={201: ScoreOut},
    summary="Attach an evaluation score to a trace",
)
def trace_score(request: HttpRequest, trace_id: str, body: ScoreIn):
    """Scores may arrive long after their trace; ``avg_evaluation_score`` of the
    trace's window includes them at once."""
    trace = selectors.trace_get(organisation=request.organisation, public_id=trace_id)
    return Status(201, score_add(trace=trace, name=body.name, value=body.value, comment=body.comment))
