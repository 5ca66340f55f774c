"""The dashboard's selectors: the numbers each page and analytics endpoint
shows, read through the metrics engine (``metrics.selectors``) and shaped for
the page or answer. Definitions follow docs/metrics.md.
"""

from datetime import UTC, date, datetime, timedelta

from django.db.models import Max, Min, Sum
from django.utils import timezone

from agents.models import Agent, Deployment
from metrics.models import DailyRollup, HourlyRollup
from metrics.rollups import day_of
from metrics.selectors import (
    CHANNELS,
    Totals,
    bucket_size,
    collect,
    metrics,
    regroup,
    series_of,
    window_fields,
)
from metrics.selectors import timeseries as timeseries  # the charts' series: a dashboard selector too
from metrics.windows import MAX_DAYS, Window

from . import stats


def _summary_of(agent: Agent, window: Window, totals: Totals) -> dict:
    return {**window_fields(window), "agent_id": agent.public_id, **metrics(totals)}


def agent_summary(*, organisation, agent: Agent, window: Window) -> dict:
    """An agent's metrics for the window (the summary endpoint and Performance tab)."""
    totals = collect(organisation=organisation, window=window, agent=agent, with_sketch=True)
    return _summary_of(agent, window, totals.get(None, Totals()))


def _overview_of(t: Totals, window: Window) -> dict:
    m = metrics(t)
    return {
        **window_fields(window),
        "total_conversations": m["total_sessions"],
        "total_messages": m["total_messages"],
        "total_cost_usd": m["total_cost_usd"],
        "avg_response_time_ms": m["avg_response_time_ms"],
        "success_rate": m["success_rate"],
        "active_agents": len(t.agents),
        "error_rate": m["error_rate"],
        "total_traces": m["total_traces"],
        "unpriced_traces": m["unpriced_traces"],
    }


def overview(*, organisation, window: Window) -> dict:
    """Organisation-wide headline numbers."""
    return _overview_of(collect(organisation=organisation, window=window).get(None, Totals()), window)


def _channels_of(by_channel: dict[object, Totals]) -> dict:
    channels = {}
    for channel in CHANNELS:
        m = metrics(by_channel.get(channel, Totals()))
        channels[channel] = {
            "total_sessions": m["total_sessions"],
            "total_messages": m["total_messages"],
            "success_rate": m["success_rate"],
            "avg_response_time_ms": m["avg_response_time_ms"],
            "total_cost_usd": m["total_cost_usd"],
        }
    return channels


def channel_breakdown(*, organisation, window: Window, agent: Agent | None = None) -> dict:
    """Per channel: conversations, messages, success rate, average response time."""
    by_channel = collect(organisation=organisation, window=window, agent=agent, group="channel")
    return {
        **window_fields(window),
        "agent_id": agent.public_id if agent else None,
        "channels": _channels_of(by_channel),
    }


def _agents_of(organisation, by_agent: dict[object, Totals]) -> list[dict]:
    agents = {a.pk: a for a in Agent.objects.filter(organisation=organisation)}
    rows = []
    for agent_pk, totals in by_agent.items():
        agent = agents.get(agent_pk)
        if agent is not None:
            rows.append({"agent_id": agent.public_id, "name": agent.name, **metrics(totals)})
    return sorted(rows, key=lambda r: (-r["total_sessions"], r["name"]))


def agent_breakdown(*, organisation, window: Window) -> list[dict]:
    """Each agent's key metrics for the window, for the overview's agents table."""
    return _agents_of(
        organisation, collect(organisation=organisation, window=window, group="agent", with_sketch=True)
    )


def version_breakdown(*, organisation, agent: Agent, window: Window) -> dict[str, dict]:
    """Metrics per deployment version of one agent."""
    by_version = collect(
        organisation=organisation, window=window, agent=agent, group="version", with_sketch=True
    )
    return {version: metrics(t) for version, t in by_version.items()}


def agent_panels(*, organisation, agent: Agent, window: Window) -> dict:
    """Everything an agent's Performance tab shows, from one pass over the window
    grouped by time and channel: the summary (and the previous window's), the
    time series and the channel breakdown — each equal to what ``agent_summary``,
    ``timeseries`` and ``channel_breakdown`` answer."""
    size = bucket_size(window)
    fine = collect(
        organisation=organisation, window=window, agent=agent, group=(size, "channel"), with_sketch=True
    )
    by_time = regroup(fine, 0, with_sketch=True)
    return {
        "current": _summary_of(agent, window, regroup(by_time, None, with_sketch=True).get(None, Totals())),
        "previous": agent_summary(organisation=organisation, agent=agent, window=window.previous()),
        "data_since": data_since(organisation=organisation, agent=agent),
        "series": series_of(window, size, by_time),
        "channels": _channels_of(regroup(fine, 1)),
    }


def data_since(*, organisation, agent: Agent | None = None) -> datetime | None:
    """The start of the first hour holding any of the organisation's (or the
    agent's) data — traces, conversations, calls, usage — or None without data.
    One index read of the hourly rollups; pages use it to tell whether the
    previous window is covered by data at all."""
    rows = HourlyRollup.objects.filter(organisation=organisation)
    if agent is not None:
        rows = rows.filter(agent=agent)
    return rows.aggregate(first=Min("bucket_start"))["first"]


def overview_panels(*, organisation, window: Window) -> dict:
    """Everything the overview page shows, from one pass over the window grouped
    by time, channel and agent: the headline numbers (and the previous window's),
    the time series, the channel breakdown and the agents table. Each equals what
    ``overview``, ``timeseries``, ``channel_breakdown`` and ``agent_breakdown`` answer."""
    size = bucket_size(window)
    fine = collect(
        organisation=organisation, window=window, group=(size, "channel", "agent"), with_sketch=True
    )
    by_time = regroup(fine, 0, with_sketch=True)
    return {
        "current": _overview_of(regroup(by_time, None).get(None, Totals()), window),
        "previous": overview(organisation=organisation, window=window.previous()),
        "data_since": data_since(organisation=organisation),
        "series": series_of(window, size, by_time),
        "channels": _channels_of(regroup(fine, 1)),
        "agents": _agents_of(organisation, regroup(fine, 2, with_sketch=True)),
    }


COMPARED = [
    "total_sessions",
    "total_messages",
    "total_cost_usd",
    "cost_per_conversation",
    "avg_response_time_ms",
    "p50_latency_ms",
    "p95_latency_ms",
    "success_rate",
    "error_rate",
    "tool_call_rate",
    "tokens_per_response",
    "avg_evaluation_score",
]


def version_comparison(*, organisation, agent: Agent, a: str, b: str, window: Window) -> dict:
    """Two deployment versions of one agent side by side for the window: each
    version's metrics, the absolute and relative change from ``a`` to ``b``, and
    whether the success-rate and p95 differences exceed noise (dashboard.stats)."""
    by_version = collect(
        organisation=organisation, window=window, agent=agent, group="version", with_sketch=True
    )
    ta, tb = by_version.get(a, Totals()), by_version.get(b, Totals())
    ma, mb = metrics(ta), metrics(tb)
    changes = {}
    for key in COMPARED:
        va, vb = ma[key], mb[key]
        if va is None or vb is None:
            changes[key] = {"a": va, "b": vb, "absolute": None, "relative": None}
            continue
        absolute = vb - va
        changes[key] = {
            "a": va,
            "b": vb,
            "absolute": absolute,
            "relative": (float(absolute) / float(va)) if va else None,
        }
    return {
        **window_fields(window),
        "agent_id": agent.public_id,
        "a": {"version": a, **ma},
        "b": {"version": b, **mb},
        "changes": changes,
        "significance": {
            "success_rate": stats.two_proportions(
                ta.conversations - ta.failed_conversations,
                ta.conversations,
                tb.conversations - tb.failed_conversations,
                tb.conversations,
            ),
            "p95_latency_ms": stats.quantiles_differ(ta.latency_sketch, tb.latency_sketch, 0.95),
        },
    }


def version_daily_traces(*, agent: Agent, versions: list[str]) -> dict[str, dict[date, int]]:
    """Traces per UTC day of each of ``versions``, from the daily rollups."""
    rows = (
        DailyRollup.objects.filter(agent=agent, deployment_version__in=versions, traces__gt=0)
        .values("deployment_version", "bucket_start")
        .annotate(n=Sum("traces"))
        .order_by()
    )
    out: dict[str, dict[date, int]] = {version: {} for version in versions}
    for row in rows:
        day = row["bucket_start"].astimezone(UTC).date()
        days = out[row["deployment_version"]]
        days[day] = days.get(day, 0) + row["n"]
    return out


def comparison_days(*, agent: Agent, a: str, b: str) -> tuple[date, date] | None:
    """Whole UTC days in which both versions have traffic, up to the last day
    either had any. The window starts on the first day of one of the two
    versions: the one that leaves the smaller side the most traces (a version
    that replaced the other: from the earlier one's first day, so both runs are
    inside; a canary running beside the other: from its own first day, so both
    are read over the same days). None when a version has no traffic."""
    by_day = version_daily_traces(agent=agent, versions=[a, b])
    if not by_day[a] or not by_day[b]:
        return None
    last = max(max(by_day[a]), max(by_day[b]))

    def smaller_side(first: date) -> int:
        return min(sum(n for day, n in days.items() if day >= first) for days in by_day.values())

    starts = sorted({min(by_day[a]), min(by_day[b])}, reverse=True)  # the later start wins a tie
    first = max(starts, key=smaller_side)
    return max(first, last - timedelta(days=MAX_DAYS - 1)), last


def known_versions(*, agent: Agent) -> list[str]:
    """Versions the agent has deployed (newest deployment first), then those only
    traces have named (most recently seen first)."""
    deployed = list(
        Deployment.objects.filter(agent=agent)
        .order_by("-deployed_at", "-pk")
        .values_list("version", flat=True)
    )
    seen = set(deployed)
    # Versions only traces named, most recently seen first (as deployments are).
    named = (
        DailyRollup.objects.filter(agent=agent)
        .exclude(deployment_version="")
        .values("deployment_version")
        .annotate(last=Max("bucket_start"), first=Min("bucket_start"))
        .order_by("-last", "-first", "-deployment_version")
        .values_list("deployment_version", flat=True)
    )
    return list(dict.fromkeys(deployed)) + [v for v in named if v not in seen]


def voice_agents(*, organisation, days: int = 30, limit: int = 3) -> list[Agent]:
    """The agents with the most voice conversations and calls in the last ``days``
    (read from the daily rollups), for the overview's live voice panels."""
    since = day_of(timezone.now() - timedelta(days=days))
    busiest = (
        DailyRollup.objects.filter(organisation=organisation, channel="voice", bucket_start__gte=since)
        .values("agent_id")
        .annotate(volume=Sum("conversations") + Sum("voice_calls_ended"))
        .filter(volume__gt=0)
        .order_by("-volume", "agent_id")[:limit]
    )
    return list(Agent.objects.filter(pk__in=[row["agent_id"] for row in busiest]).order_by("name"))
