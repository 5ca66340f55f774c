"""Dashboard pages. Each parses its filters, calls the metrics selectors (the same
ones the JSON API calls) and renders the whole page, or only its panels when
HTMX asks (``"page.html#panels"``)."""

import hashlib
import json

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.cache import patch_vary_headers

from accounts.access import member_required
from accounts.models import Role
from agents import selectors as agent_selectors
from agents.models import Agent, Channel
from audit import selectors as audit_selectors
from otel import selectors as otel_selectors
from thinnest_analytics.errors import ApiError
from thinnest_analytics.pages import or_404
from thinnest_analytics.replica import replica_reads
from voice.selectors import voice_metrics

from . import drill, lists, panels, selectors
from .filters import WindowFilter, days_filter, has_window, window_filter

# Sortable columns of the overview's agents table: key, label, metric.
AGENT_COLUMNS = [
    ("name", "Agent", "name"),
    ("sessions", "Conversations", "total_sessions"),
    ("messages", "Messages", "total_messages"),
    ("cost", "Cost", "total_cost_usd"),
    ("latency", "Avg response", "avg_response_time_ms"),
    ("p95", "p95", "p95_latency_ms"),
    ("success", "Success", "success_rate"),
]
AGENT_SORTS = {key: metric for key, _, metric in AGENT_COLUMNS}
# The numbers of an agents-table row and of a channel row that open their lists.
AGENT_LINKS = [metric for _, _, metric in AGENT_COLUMNS[1:]]
CHANNEL_LINKS = ["total_sessions", "total_messages", "success_rate", "avg_response_time_ms", "total_cost_usd"]


def _agent(request: HttpRequest, agent_id: str) -> Agent:
    return or_404(agent_selectors.agent_get, organisation=request.organisation, public_id=agent_id)


def _page(
    request: HttpRequest, template: str, context: dict, panel: str = "panels", status: int = 200
) -> HttpResponse:
    """The full page, or for HTMX only the panel. A poll whose panel data did not
    change answers 204, so HTMX leaves the panel (and its charts) alone."""
    if request.htmx:
        etag = context.get("etag")
        if etag and request.GET.get("etag") == etag:
            response = HttpResponse(status=204)
        else:
            response = render(request, f"{template}#{panel}", context, status=status)
    else:
        response = render(request, template, context, status=status)
    # One URL answers a page or its panel: caches (and Back in the browser) keep them apart.
    patch_vary_headers(response, ["HX-Request"])
    return response


def _etag(*parts) -> str:
    """A fingerprint of a panel's data. The window's moving bounds are left out:
    a live panel changes when its numbers do, not every time the clock ticks."""

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in ("from", "to")}
        if isinstance(value, (list, tuple)):
            return [strip(v) for v in value]
        return value

    return hashlib.sha1(json.dumps(strip(parts), default=str, sort_keys=True).encode()).hexdigest()[:16]


def _sorted_agents(rows: list[dict], sort: str) -> tuple[list[dict], str]:
    key = sort.lstrip("-")
    if key not in AGENT_SORTS:
        sort, key = "-sessions", "sessions"
    field = AGENT_SORTS[key]
    present = [r for r in rows if r[field] is not None]
    missing = [r for r in rows if r[field] is None]
    present.sort(
        key=lambda r: r[field].lower() if isinstance(r[field], str) else r[field],
        reverse=sort.startswith("-"),
    )
    return present + missing, sort


@member_required()
@replica_reads
def overview(request: HttpRequest) -> HttpResponse:
    """Six cards with their change against the previous window, charts over time,
    and the agents table."""
    filters = window_filter(request.GET, keep=("sort",))
    organisation, window = request.organisation, filters.window
    found = selectors.overview_panels(organisation=organisation, window=window)
    current, previous, series, channels = (found[k] for k in ("current", "previous", "series", "channels"))
    agents, sort = _sorted_agents(found["agents"], request.GET.get("sort", "-sessions"))
    columns = [
        {
            "label": label,
            "numeric": key != "name",
            # A click sorts descending first, then toggles.
            "query": filters.query(sort=key if sort == f"-{key}" else f"-{key}"),
            "aria": "descending" if sort == f"-{key}" else "ascending" if sort == key else "",
        }
        for key, label, _ in AGENT_COLUMNS
    ]
    unavailable = panels.previous_unavailable(
        previous_start=window.previous().start,
        data_since=found["data_since"],
        previous_conversations=previous["total_conversations"],
    )
    context = {
        "nav": "overview",
        "polls": True,
        "columns": columns,
        "filters": filters,
        "cards": panels.cards(
            current, previous, panels.OVERVIEW_CARDS, unavailable, drill.card_links(window)
        ),
        "charts": panels.overview_charts(series, channels),
        "agents": [
            {**row, "links": drill.row_links(window, AGENT_LINKS, agent=row["agent_id"])} for row in agents
        ],
        "sort": sort,
        "has_agents": agent_selectors.agents_exist(organisation=organisation),
        "voice_agents": selectors.voice_agents(organisation=organisation),
        "etag": _etag(current, previous, series, channels, agents),
    }
    panel = "agents_table" if request.GET.get("panel") == "agents" else "panels"
    return _page(request, "dashboard/overview.html", context, panel)


@member_required()
@replica_reads
def agent_performance(request: HttpRequest, agent_id: str) -> HttpResponse:
    """The agent's Performance tab: response, cost and quality metrics, charts,
    and the channel breakdown."""
    agent = _agent(request, agent_id)
    filters = window_filter(request.GET)
    organisation, window = request.organisation, filters.window
    found = selectors.agent_panels(organisation=organisation, agent=agent, window=window)
    current, previous, series, channels = (found[k] for k in ("current", "previous", "series", "channels"))
    unavailable = panels.previous_unavailable(
        previous_start=window.previous().start,
        data_since=found["data_since"],
        previous_conversations=previous["total_sessions"],
    )
    context = {
        "nav": "agents",
        "tab": "performance",
        "polls": True,
        "agent": agent,
        "filters": filters,
        "groups": [
            (
                title,
                panels.cards(
                    current, previous, spec, unavailable, drill.card_links(window, agent=agent.public_id)
                ),
            )
            for title, spec in panels.PERFORMANCE_GROUPS
        ],
        "summary": current,
        "charts": panels.performance_charts(series, agent=agent.public_id),
        "channels": [
            {
                "name": name,
                **row,
                "links": drill.row_links(window, CHANNEL_LINKS, agent=agent.public_id, channel=name),
            }
            for name, row in channels.items()
        ],
        "etag": _etag(current, previous, series, channels),
    }
    return _page(request, "dashboard/agent_performance.html", context)


@member_required()
@replica_reads
def agent_voice(request: HttpRequest, agent_id: str) -> HttpResponse:
    """The agent's Voice tab: calls live over WebSocket (the panel on top), and
    the voice metrics of a window, which refresh every 30 s while it ends now."""
    agent = _agent(request, agent_id)
    filters = window_filter(request.GET)
    metrics = voice_metrics(
        organisation=request.organisation, agent=agent, window=filters.window, now=timezone.now()
    )
    context = {
        "nav": "agents",
        "tab": "voice",
        "polls": True,
        "agent": agent,
        "filters": filters,
        "metrics": metrics,
        "etag": _etag(metrics),
    }
    status = 400 if filters.error and not request.htmx else 200  # HTMX swaps only 2xx
    return _page(request, "dashboard/agent_voice.html", context, "panels", status=status)


def _list_page(
    request: HttpRequest, kind: lists.Kind
) -> tuple[WindowFilter, lists.ListFilters, lists.ListPage]:
    """The window, the list's filters and its page. A page link this list did
    not make (or of another sort order) shows the first page with a message."""
    filters = window_filter(request.GET)
    found = lists.list_filters(request.GET, organisation=request.organisation, kind=kind)
    read = lists.trace_list if kind == "traces" else lists.conversation_list
    try:
        page = read(organisation=request.organisation, window=filters.window, filters=found)
    except ApiError:
        found.errors.append("that page link does not belong to this list; showing its first page")
        found.after = found.before = None
        page = read(organisation=request.organisation, window=filters.window, filters=found)
    filters.extra = found.params()
    return filters, found, page


def _sort_columns(filters: WindowFilter, found: lists.ListFilters) -> dict[str, dict]:
    """Per sortable column: the link that sorts by it (descending first, then
    toggling) and its aria-sort state."""
    columns = {}
    for key in lists.ORDERS[found.kind]:
        current = found.sort_key == key
        sort = key if current and found.descending else f"-{key}"
        columns[key] = {
            "query": filters.query(sort=None if sort == lists.DEFAULT_SORT else sort),
            "aria": ("descending" if found.descending else "ascending") if current else "",
        }
    return columns


def _list_context(request: HttpRequest, kind: lists.Kind) -> dict:
    filters, found, page = _list_page(request, kind)
    return {
        "nav": kind,
        "filters": filters,
        "found": found,
        "page": page,
        "sorts": _sort_columns(filters, found),
        "agents": agent_selectors.agent_list_for_filter(organisation=request.organisation),
        "channels": Channel.values,
    }


@member_required()
@replica_reads
def conversations(request: HttpRequest) -> HttpResponse:
    """Conversations that started in the window: filters, sorting by time, latency
    or cost, newer and older pages, and how many match."""
    return _page(request, "dashboard/conversations.html", _list_context(request, "conversations"), "results")


@member_required()
@replica_reads
def conversation_detail(request: HttpRequest, session_id: str) -> HttpResponse:
    conversation = or_404(
        agent_selectors.conversation_get, organisation=request.organisation, public_id=session_id
    )
    return render(request, "dashboard/conversation.html", {"nav": "conversations", **conversation})


@member_required()
@replica_reads
def traces(request: HttpRequest) -> HttpResponse:
    """Traces in the window: filters, sorting by time, latency or cost, newer and
    older pages, and how many match."""
    return _page(request, "dashboard/traces.html", _list_context(request, "traces"), "results")


@member_required()
@replica_reads
def trace_detail(request: HttpRequest, trace_id: str) -> HttpResponse:
    found = or_404(agent_selectors.trace_with_steps, organisation=request.organisation, public_id=trace_id)
    context = {
        "nav": "traces",
        **found,
        "raw": otel_selectors.raw_spans(
            organisation=request.organisation, public_id=found["trace"].public_id
        ),
    }
    return render(request, "dashboard/trace.html", context)


@member_required()
def settings_page(request: HttpRequest) -> HttpResponse:
    """Where the organisation's configuration pages are."""
    return render(request, "dashboard/settings.html", {"nav": "settings"})


@member_required(Role.ADMIN)
@replica_reads
def audit_log(request: HttpRequest) -> HttpResponse:
    """The organisation's audit log, newest first, filterable; the Django admin
    offers the same entries to auditors with CSV export."""
    filters = window_filter(request.GET, keep=("action", "resource_type", "user_id"))
    try:
        page = audit_selectors.audit_log_page(
            organisation=request.organisation,
            limit=50,
            cursor=request.GET.get("cursor") or None,
            action=request.GET.get("action") or None,
            resource_type=request.GET.get("resource_type") or None,
            user_id=request.GET.get("user_id") or None,
            created_from=filters.window.start,
            created_to=filters.window.end,
        )
    except ApiError as exc:
        filters.error = exc.message
        page = {"logs": [], "next_cursor": None}
    return _page(
        request, "dashboard/audit.html", {"nav": "audit", "filters": filters, "page": page}, "results"
    )


@member_required()
@replica_reads
def agent_compare(request: HttpRequest, agent_id: str) -> HttpResponse:
    """Two versions of the agent side by side (the Deployments tab links here):
    each change reads from A to B. Without a chosen window, the page picks
    whole days in which both versions have traffic."""
    agent = _agent(request, agent_id)
    versions = selectors.known_versions(agent=agent)
    a = request.GET.get("a") or (versions[1] if len(versions) > 1 else None)
    b = request.GET.get("b") or (versions[0] if versions else None)
    filters = window_filter(request.GET, keep=("a", "b"))
    both = a in versions and b in versions
    window_note = ""
    if both and not has_window(request.GET):
        days = selectors.comparison_days(agent=agent, a=a, b=b)
        if days is not None:
            filters = days_filter(*days, extra={"a": a, "b": b})
            window_note = (
                f"Whole days chosen to hold the traffic of both {a} and {b}; pick another range above."
            )
    comparison = None
    if both:
        comparison = selectors.version_comparison(
            organisation=request.organisation, agent=agent, a=a, b=b, window=filters.window
        )
    rows = []
    if comparison:
        for key, label, kind in panels.COMPARE_ROWS:
            change = comparison["changes"][key]
            moved = panels.change(change["a"], change["b"], kind)
            rows.append(
                {
                    "key": key,
                    "label": label,
                    "a": panels.fmt(change["a"], kind),
                    "b": panels.fmt(change["b"], kind),
                    "change": moved.text,
                    "trend": moved.trend,
                    "significance": comparison["significance"].get(key),
                }
            )
    context = {
        "nav": "agents",
        "tab": "deployments",
        "agent": agent,
        "filters": filters,
        "versions": versions,
        "a": a,
        "b": b,
        "comparison": comparison,
        "rows": rows,
        "window_note": window_note,
    }
    return _page(request, "dashboard/agent_compare.html", context, "comparison")
