"""JSON endpoints: ingestion, reading traces, managing agents, deployments and rollback."""

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from ninja import Field, Query, Router, Schema, Status
from pydantic import AfterValidator, BaseModel, ConfigDict, StrictInt
from pydantic import Field as PydanticField

from accounts.auth import admin_key, ingest_key, read_key
from accounts.models import Scope
from audit.services import Actor
from thinnest_analytics.db import in_worker_thread
from thinnest_analytics.errors import ApiError
from thinnest_analytics.parsing import json_body
from thinnest_analytics.replica import replica_reads
from thinnest_analytics.validation import UtcDateTime

from . import selectors
from .config import AgentConfig, AgentConfigPatch, AgentName, VersionLabel
from .deployments import deployment_create, deployment_rollback
from .ingest_schemas import batch_raw_items
from .schemas import AgentId, TraceIn, no_nul
from .scores import score_add
from .services import agent_archive, agent_create, agent_update, trace_ingest

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


def _inline(schema: dict) -> dict:
    """A pydantic JSON schema with its ``$defs`` resolved in place, so it can be
    embedded in the OpenAPI document (where ``#/$defs/…`` would not resolve)."""
    defs = schema.pop("$defs", {})

    def resolve(node):
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(dict(defs[node["$ref"].rsplit("/", 1)[-1]]))
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    return resolve(schema)


def one_or_batch(item: type[BaseModel], batch: type[BaseModel]) -> dict:
    """OpenAPI for a body that is one ``item`` object or a ``batch`` of them."""
    schemas = [_inline(model.model_json_schema()) for model in (item, batch)]
    return {
        "requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": schemas}}}}
    }


def ingest_batch(request: HttpRequest, key: str, what: str, ingest, raw_items: bool = False) -> JsonResponse:
    """Parse one item or ``{key: [...]}``, hand the items to ``ingest`` (a
    service like ``trace_ingest``) and answer 200/207/400. With ``raw_items``,
    a well-formed batch reaches ``ingest`` as raw JSON items that it decodes
    itself (one pass in C instead of building Python objects twice)."""
    items = batch_raw_items(request.body, key) if raw_items else None
    if items is not None:
        is_batch = True
    else:
        items, is_batch = batch_items(json_body(request.body), key, what)
    result = ingest(
        organisation=request.organisation,
        items=items,
        actor=Actor.for_request(request),
        # JSON can only carry a NUL character escaped, so one search of the raw body decides.
        check_nul=b"\\u0000" in request.body,
    )
    return ingest_response(result, is_batch)


@router.post(
    "/traces",
    auth=ingest_key,
    summary="Ingest one trace or a batch of up to 1000",
    openapi_extra=one_or_batch(TraceIn, IngestBatch),
    response={200: IngestOut, 207: IngestOut},
)
async def ingest_traces(request: HttpRequest):
    """Store traces. Valid items are stored even when others are rejected; a
    re-sent trace id is accepted but never counted twice. Unknown agents are
    registered on first sight. ``cost_usd`` defaults to the price table's cost."""
    return await in_worker_thread(
        ingest_batch, request=request, key="traces", what="trace", ingest=trace_ingest, raw_items=True
    )


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
    from_: UtcDateTime | None = Field(None, alias="from")
    to: UtcDateTime | None = None


@router.get(
    "/agents/{agent_id}/traces", auth=read_key, response=TracePage, summary="An agent's traces, newest first"
)
@replica_reads
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
@replica_reads
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


# --- managing agents (scope admin) ------------------------------------------


class ToolOut(Schema):
    name: str
    config: dict[str, Any] = PydanticField(
        description="known secrets masked; for keys without the admin scope every setting not in "
        "public_settings reads [redacted]"
    )
    public_settings: list[str]


class AgentConfigOut(Schema):
    instructions: str
    model: str
    temperature: float | None
    tools: list[ToolOut]


class AgentDetail(Schema):
    id: str
    name: str
    config: AgentConfigOut
    created_at: datetime
    updated_at: datetime
    archived: bool
    active_version: str | None


class AgentCreateIn(Schema):
    model_config = ConfigDict(extra="forbid")

    id: AgentId | None = Field(None, description="defaults to a new agent_… id")
    name: AgentName
    config: AgentConfig = Field(default_factory=AgentConfig)


class AgentPatchIn(Schema):
    model_config = ConfigDict(extra="forbid")

    name: AgentName | None = None
    config: AgentConfigPatch | None = Field(
        None, description="only the fields sent change; tools replace all tools"
    )


@router.get(
    "/agents/{agent_id}",
    auth=read_key,
    response=AgentDetail,
    tags=["agents"],
    summary="One agent with its configuration (tool secrets masked)",
)
def agent_get(request: HttpRequest, agent_id: str):
    """A key without the admin scope reads tool settings as a viewer does: only
    those the tool lists in ``public_settings``, the others masked."""
    agent = selectors.agent_get(organisation=request.organisation, public_id=agent_id)
    return selectors.agent_detail(agent, all_settings=Scope.ADMIN in request.auth.scopes)


@router.post(
    "/agents", auth=admin_key, response={201: AgentDetail}, tags=["agents"], summary="Create an agent"
)
def agent_create_endpoint(request: HttpRequest, body: AgentCreateIn):
    """An id already in use in the organisation is a 409. Audited as agent.create."""
    agent = agent_create(
        organisation=request.organisation,
        actor=Actor.for_request(request),
        name=body.name,
        config=body.config.model_dump(),
        public_id=body.id,
    )
    return Status(201, selectors.agent_detail(agent, all_settings=True))


@router.patch(
    "/agents/{agent_id}", auth=admin_key, response=AgentDetail, tags=["agents"], summary="Change an agent"
)
def agent_update_endpoint(request: HttpRequest, agent_id: str, body: AgentPatchIn):
    """Masked tool settings sent back unchanged keep their stored secrets.
    Audited as agent.update with the changed fields."""
    agent = selectors.agent_get(organisation=request.organisation, public_id=agent_id)
    if not body.model_fields_set:
        raise ApiError(400, "invalid_request", "send at least one of: name, config")
    agent = agent_update(
        agent=agent,
        actor=Actor.for_request(request),
        name=body.name,
        config=body.config.model_dump(exclude_unset=True) if body.config is not None else None,
    )
    return selectors.agent_detail(agent, all_settings=True)


@router.delete(
    "/agents/{agent_id}", auth=admin_key, response={204: None}, tags=["agents"], summary="Archive an agent"
)
def agent_archive_endpoint(request: HttpRequest, agent_id: str):
    """Agents are archived, never deleted: their traces and history stay.
    Audited as agent.delete."""
    agent = selectors.agent_get(organisation=request.organisation, public_id=agent_id)
    agent_archive(agent=agent, actor=Actor.for_request(request))
    return Status(204, None)


# --- deployments --------------------------------------------------------------


class DeploymentOut(Schema):
    id: int
    version: str
    status: str
    deployed_at: datetime
    deployed_by: str
    changes: str
    rollback_of: int | None


class DeploymentDetail(DeploymentOut):
    agent_id: str
    config: AgentConfigOut


class DeploymentHistory(Schema):
    deployments: list[DeploymentOut]


class DeploymentIn(Schema):
    model_config = ConfigDict(extra="forbid")

    version: VersionLabel | None = Field(None, description="defaults to the next v<n>")
    changes: str = Field(..., max_length=10_000)
    config: AgentConfig | None = Field(None, description="defaults to the agent's current configuration")


class RollbackIn(Schema):
    model_config = ConfigDict(extra="forbid")

    version_id: StrictInt = Field(..., ge=1, description="the id of the deployment to return to")


@router.post(
    "/deployments/{agent_id}",
    auth=admin_key,
    response={201: DeploymentDetail},
    tags=["deployments"],
    summary="Record a deployment",
)
def deployment_create_endpoint(request: HttpRequest, agent_id: str, body: DeploymentIn):
    """The new deployment becomes active; the previous one is superseded. A
    version label the agent already used is a 409. Audited as deployment.create."""
    agent = selectors.agent_get(organisation=request.organisation, public_id=agent_id)
    deployment = deployment_create(
        agent=agent,
        actor=Actor.for_request(request),
        version=body.version,
        changes=body.changes,
        config=body.config.model_dump() if body.config is not None else None,
    )
    return Status(201, selectors.deployment_detail(deployment))


@router.get(
    "/deployments/{agent_id}/history",
    auth=read_key,
    response=DeploymentHistory,
    tags=["deployments"],
    summary="An agent's deployments, newest first",
)
def deployment_history(request: HttpRequest, agent_id: str):
    agent = selectors.agent_get(organisation=request.organisation, public_id=agent_id)
    return {"deployments": [selectors.deployment_out(d) for d in selectors.deployment_history(agent=agent)]}


@router.post(
    "/deployments/{agent_id}/rollback",
    auth=admin_key,
    response=DeploymentDetail,
    tags=["deployments"],
    summary="Make an earlier deployment's configuration active again",
)
def deployment_rollback_endpoint(request: HttpRequest, agent_id: str, body: RollbackIn):
    """Appends a new deployment with ``rollback_of`` set; the one it replaces is
    marked rolled_back. Answers the deployment now active. Audited as
    deployment.rollback."""
    agent = selectors.agent_get(organisation=request.organisation, public_id=agent_id)
    deployment = deployment_rollback(
        agent=agent, version_id=body.version_id, actor=Actor.for_request(request)
    )
    return selectors.deployment_detail(deployment)
