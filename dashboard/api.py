"""Analytics endpoints. They call the same selectors as the dashboard pages."""

from datetime import datetime

from django.http import HttpRequest
from ninja import Field, Query, Router, Schema

from accounts.auth import read_key
from agents import selectors as agent_selectors
from metrics.schemas import AgentWindowParams, WindowOut, WindowParams, window_from
from thinnest_analytics.db import on_worker_thread
from thinnest_analytics.errors import ApiError
from thinnest_analytics.replica import replica_reads

from . import selectors

router = Router(tags=["analytics"])


class SummaryOut(WindowOut):
    agent_id: str
    total_sessions: int
    total_messages: int
    total_cost_usd: float
    avg_response_time_ms: float | None
    p50_latency_ms: float | None
    p95_latency_ms: float | None
    success_rate: float | None
    total_input_tokens: int
    total_output_tokens: int
    voice_minutes: float
    avg_evaluation_score: float | None
    error_rate: float | None
    tool_call_rate: float | None
    tokens_per_response: float | None
    cost_per_conversation: float | None
    total_traces: int
    llm_cost_usd: float
    voice_cost_usd: float
    other_cost_usd: float
    unpriced_traces: int
    voice_calls: int
    evaluation_count: int
    error_traces: int


class OverviewOut(WindowOut):
    total_conversations: int
    total_messages: int
    total_cost_usd: float
    avg_response_time_ms: float | None
    success_rate: float | None
    active_agents: int
    error_rate: float | None
    total_traces: int
    unpriced_traces: int


class ChannelOut(Schema):
    total_sessions: int
    total_messages: int
    success_rate: float | None
    avg_response_time_ms: float | None
    total_cost_usd: float


class ChannelsOut(WindowOut):
    agent_id: str | None
    channels: dict[str, ChannelOut]


class PointOut(Schema):
    bucket_start: datetime
    total_sessions: int
    total_messages: int
    total_traces: int
    total_cost_usd: float
    llm_cost_usd: float
    voice_cost_usd: float
    other_cost_usd: float
    avg_response_time_ms: float | None
    p50_latency_ms: float | None
    p95_latency_ms: float | None
    success_rate: float | None
    error_traces: int


class TimeseriesOut(WindowOut):
    bucket: str
    points: list[PointOut]


@router.get(
    "/agents/{agent_id}/summary",
    auth=read_key,
    response=SummaryOut,
    by_alias=True,
    summary="An agent's metrics for a window",
)
@on_worker_thread
@replica_reads
def agent_summary(request: HttpRequest, agent_id: str, params: Query[WindowParams]):
    """Every metric of the product's Performance tab. Rates are null for an empty window."""
    window = window_from(params)
    agent = agent_selectors.agent_get(organisation=request.organisation, public_id=agent_id)
    return selectors.agent_summary(organisation=request.organisation, agent=agent, window=window)


@router.get(
    "/analytics/overview",
    auth=read_key,
    response=OverviewOut,
    by_alias=True,
    summary="Organisation-wide headline metrics",
)
@on_worker_thread
@replica_reads
def overview(request: HttpRequest, params: Query[WindowParams]):
    return selectors.overview(organisation=request.organisation, window=window_from(params))


def _optional_agent(request: HttpRequest, agent_id: str | None):
    if not agent_id:
        return None
    return agent_selectors.agent_get(organisation=request.organisation, public_id=agent_id)


@router.get(
    "/analytics/channels", auth=read_key, response=ChannelsOut, by_alias=True, summary="Metrics per channel"
)
@on_worker_thread
@replica_reads
def channels(request: HttpRequest, params: Query[AgentWindowParams]):
    window = window_from(params)
    agent = _optional_agent(request, params.agent_id)
    return selectors.channel_breakdown(organisation=request.organisation, window=window, agent=agent)


@router.get(
    "/analytics/timeseries",
    auth=read_key,
    response=TimeseriesOut,
    by_alias=True,
    summary="Metrics per hour or day",
)
@on_worker_thread
@replica_reads
def timeseries(request: HttpRequest, params: Query[AgentWindowParams]):
    """Hourly points for windows up to three days, daily points beyond."""
    window = window_from(params)
    agent = _optional_agent(request, params.agent_id)
    return selectors.timeseries(organisation=request.organisation, window=window, agent=agent)


class CompareParams(WindowParams):
    a: str = Field(..., min_length=1, max_length=64, description="the version to compare from, e.g. v2")
    b: str = Field(..., min_length=1, max_length=64, description="the version to compare to, e.g. v3")


@router.get("/agents/{agent_id}/versions/compare", auth=read_key, summary="Compare two deployment versions")
@on_worker_thread
@replica_reads
def versions_compare(request: HttpRequest, agent_id: str, params: Query[CompareParams]):
    """Each version's summary metrics for the window, the absolute and relative
    change from ``a`` to ``b``, and whether the differences in success rate
    (two-proportion z-test) and p95 latency (non-overlapping 95 % intervals)
    exceed noise. A version neither deployed nor named by any trace is 404."""
    window = window_from(params)
    agent = agent_selectors.agent_get(organisation=request.organisation, public_id=agent_id)
    known = selectors.known_versions(agent=agent)
    for label in (params.a, params.b):
        if label not in known:
            raise ApiError(404, "not_found", f"version '{label}' not found for agent '{agent_id}'")
    return selectors.version_comparison(
        organisation=request.organisation, agent=agent, a=params.a, b=params.b, window=window
    )
