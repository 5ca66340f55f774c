"""Where each number on the Overview and an agent's Performance tab leads: the
Conversations or Traces list filtered to the rows it counts, over the exact
window it was counted in (docs/dashboard.md, "Drill-down").

A count lands on a list of that many rows. A rate or an average lands on the
list that explains it: failed conversations for a success or error rate, the
window's traces slowest or costliest first for a latency or a cost."""

from datetime import datetime, timedelta
from functools import cache
from urllib.parse import quote

from django.urls import reverse

from metrics.windows import Window

from .filters import RANGE, instant

# metric → (list, filters)
TARGETS: dict[str, tuple[str, dict[str, str]]] = {
    "total_conversations": ("conversations", {}),
    "total_sessions": ("conversations", {}),
    "success_rate": ("conversations", {"status": "failed"}),
    "error_rate": ("conversations", {"status": "failed"}),
    "cost_per_conversation": ("conversations", {"sort": "-cost"}),
    "voice_minutes": ("conversations", {"channel": "voice", "sort": "-cost"}),
    "voice_cost_usd": ("conversations", {"channel": "voice", "sort": "-cost"}),
    "total_messages": ("traces", {}),
    "total_traces": ("traces", {}),
    "active_agents": ("traces", {}),
    "total_cost_usd": ("traces", {"sort": "-cost"}),
    "llm_cost_usd": ("traces", {"sort": "-cost"}),
    "other_cost_usd": ("traces", {"sort": "-cost"}),
    "avg_response_time_ms": ("traces", {"sort": "-latency"}),
    "p50_latency_ms": ("traces", {"sort": "-latency"}),
    "p95_latency_ms": ("traces", {"sort": "-latency"}),
    "tokens_per_response": ("traces", {}),
    "total_input_tokens": ("traces", {}),
    "total_output_tokens": ("traces", {}),
    "tool_call_rate": ("traces", {}),
    "avg_evaluation_score": ("traces", {}),
}


@cache
def _path(kind: str) -> str:
    return reverse(f"dashboard:{kind}")


def list_url(kind: str, start: datetime, end: datetime, **filters: str | None) -> str:
    """The Conversations or Traces list over ``[start, end)`` with ``filters``.
    (Hundreds of these per page: the query string is written directly; an
    instant needs no escaping.)"""
    query = f"period={RANGE}&start={instant(start)}&end={instant(end)}"
    for name, value in filters.items():
        if value:
            query += f"&{name}={quote(value, safe='')}"
    return f"{_path(kind)}?{query}"


def metric_url(
    metric: str, start: datetime, end: datetime, *, agent: str | None = None, channel: str | None = None
) -> str:
    """Where ``metric`` counted over ``[start, end)`` leads ("" for none)."""
    if metric not in TARGETS:
        return ""
    kind, filters = TARGETS[metric]
    return list_url(kind, start, end, **({"agent": agent, "channel": channel} | filters))


def card_links(window: Window, *, agent: str | None = None):
    """For cards: metric → its list over the window."""
    return lambda metric: metric_url(metric, window.start, window.end, agent=agent)


def row_links(window: Window, metrics: list[str], *, agent: str | None = None, channel: str | None = None):
    """For a table row (an agent or a channel): metric → its list."""
    return {m: metric_url(m, window.start, window.end, agent=agent, channel=channel) for m in metrics}


def bucket_urls(
    series: dict, metric: str, *, agent: str | None = None, channel: str | None = None
) -> list[str]:
    """For a chart: each point's list, over its hour or day within the window
    (the first and last buckets are cut at the window's edges, as their numbers are)."""
    step = timedelta(hours=1) if series["bucket"] == "hour" else timedelta(days=1)
    urls = []
    for point in series["points"]:
        start = max(point["bucket_start"], series["from"])
        end = min(point["bucket_start"] + step, series["to"])
        urls.append(metric_url(metric, start, end, agent=agent, channel=channel))
    return urls
