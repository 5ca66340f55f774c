"""The metrics engine: every number the dashboard and the analytics API show.

A window ``[start, end)`` is read in pieces: whole UTC days from daily rollups,
whole hours from hourly rollups, and only the partial hours at its edges from raw
rows. Counts and sums are therefore exact, and query cost follows the window's
length, not the number of traces. Definitions follow docs/metrics.md.
"""

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Literal

from django.db.models import CharField, Count, F, Max, Min, Q, Sum, Value
from django.db.models.functions import Coalesce, TruncDay, TruncHour
from django.utils import timezone

from agents.models import Agent, Deployment, Score, Session, Trace
from agents.retention import retention_horizon
from billing.models import UsageEvent
from voice.models import VoiceCall

from . import stats
from .models import COUNTERS, DailyRollup, HourlyRollup
from .readcache import rollup_reads
from .rollups import LatencyBucket, day_of, hour_of
from .sketch import Sketch, merge_into, quantile
from .windows import MAX_DAYS, Window

Dimension = Literal["channel", "agent", "version", "hour", "day"]
# One dimension (keys are its values), several (keys are tuples), or none (one key, None).
Group = Dimension | tuple[Dimension, ...] | None
CHANNELS = ("voice", "chat", "widget")


@dataclass
class Totals:
    """Additive facts for a window (or one group within it)."""

    traces: int = 0
    messages: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    latency_count: int = 0
    latency_sum_ms: int = 0
    tool_call_traces: int = 0
    error_traces: int = 0
    llm_cost_usd: Decimal = Decimal(0)
    unpriced_traces: int = 0
    score_count: int = 0
    score_sum: Decimal = Decimal(0)
    conversations: int = 0
    failed_conversations: int = 0
    voice_calls_ended: int = 0
    voice_seconds: Decimal = Decimal(0)
    voice_cost_usd: Decimal = Decimal(0)
    other_cost_usd: Decimal = Decimal(0)
    latency_sketch: Sketch = field(default_factory=dict)
    agents: set[int] = field(default_factory=set)

    # Both run once per rollup row or group; they work on __dict__ for speed.
    def add(self, values: dict) -> None:
        mine = self.__dict__
        for name in COUNTERS:
            value = values.get(name)
            if value:
                mine[name] += value

    def merge(self, other: "Totals", *, with_sketch: bool = True) -> None:
        """Add another group's totals to these (counters, agents, and the sketch if asked)."""
        mine, theirs = self.__dict__, other.__dict__
        for name in COUNTERS:
            mine[name] += theirs[name]
        self.agents |= other.agents
        if with_sketch:
            merge_into(self.latency_sketch, other.latency_sketch)

    @property
    def total_cost_usd(self) -> Decimal:
        return self.llm_cost_usd + self.voice_cost_usd + self.other_cost_usd


# --- window plan --------------------------------------------------------------


def _ceil(at: datetime, floor: Callable[[datetime], datetime], step: timedelta) -> datetime:
    floored = floor(at)
    return floored if floored == at else floored + step


@dataclass(frozen=True)
class _Plan:
    raw: list[tuple[datetime, datetime]]
    hourly: list[tuple[datetime, datetime]]
    daily: list[tuple[datetime, datetime]]


def _plan(window: Window, use_daily: bool = True) -> _Plan:
    """Split a window into raw edges, whole hours and whole days."""
    start, end = window.start.astimezone(UTC), window.end.astimezone(UTC)
    h0, h1 = _ceil(start, hour_of, timedelta(hours=1)), hour_of(end)
    if h0 >= h1:
        return _Plan(raw=[(start, end)], hourly=[], daily=[])
    raw = [r for r in ((start, h0), (h1, end)) if r[0] < r[1]]
    d0, d1 = _ceil(h0, day_of, timedelta(days=1)), day_of(h1)
    if not use_daily or d0 >= d1:
        return _Plan(raw=raw, hourly=[(h0, h1)], daily=[])
    hourly = [r for r in ((h0, d0), (d1, h1)) if r[0] < r[1]]
    return _Plan(raw=raw, hourly=hourly, daily=[(d0, d1)])


def _whole_hours_before(window: Window, horizon: datetime | None) -> Window:
    """Raw rows older than the retention horizon may be gone (the rollups keep
    their facts): an end of the window in an hour that began before the horizon
    is widened to that whole hour, so it is read from the hourly rollups."""
    if horizon is None:
        return window
    start, end = window.start.astimezone(UTC), window.end.astimezone(UTC)
    if hour_of(start) < horizon:
        start = hour_of(start)
    if hour_of(end) < horizon:
        end = _ceil(end, hour_of, timedelta(hours=1))
    return Window(start, end, window.period)


def _ranges(column: str, ranges: list[tuple[datetime, datetime]]) -> Q:
    q = Q()
    for a, b in ranges:
        q |= Q(**{f"{column}__gte": a, f"{column}__lt": b})
    return q


# --- grouping -----------------------------------------------------------------

# For each group: the column on rollups, traces, conversations and scores.
_GROUP_COLUMNS = {
    "channel": ("channel", "channel", "channel", "trace__channel"),
    "agent": ("agent_id", "agent_id", "agent_id", "trace__agent_id"),
    "version": (
        "deployment_version",
        "deployment_version",
        "deployment_version",
        "trace__deployment_version",
    ),
}


def _group_expr(dimension: Dimension, kind: int, time_column: str):
    """The expression to group by in one source (0 rollups, 1 traces, 2 conversations, 3 scores)."""
    if dimension in _GROUP_COLUMNS:
        return F(_GROUP_COLUMNS[dimension][kind])
    if dimension == "hour":
        return TruncHour(time_column, tzinfo=UTC) if kind else F("bucket_start")
    return TruncDay(time_column, tzinfo=UTC) if kind else F("bucket_start")


def _dimensions(group: Group) -> tuple[Dimension, ...]:
    if group is None:
        return ()
    return group if isinstance(group, tuple) else (group,)


def _normalise_key(dimension: Dimension, key):
    if dimension == "day" and isinstance(key, datetime):
        return day_of(key.astimezone(UTC))
    if dimension == "hour" and isinstance(key, datetime):
        return key.astimezone(UTC)
    return key


def _count_if(condition: Q) -> Count:
    return Count("id", filter=condition)


FACTS = ("traces", "conversations", "scores", "usage", "voice")


def collect(
    *,
    organisation,
    window: Window,
    agent: Agent | None = None,
    group: Group = None,
    with_sketch: bool = False,
    facts: tuple[str, ...] = FACTS,
) -> dict[object, Totals]:
    """Totals for ``window`` per ``group`` key: one key, None, when ungrouped; a
    dimension's values; tuples of values when grouped by several dimensions (see
    ``regroup``). Edges older than the retention horizon are read in whole hours.
    ``facts`` limits the raw rows read at the edges to those kinds (of FACTS);
    the others' counters are then incomplete."""
    dimensions = _dimensions(group)
    # Ungrouped, every row is in one group: a constant column "g".
    names = [f"g{i}" for i in range(len(dimensions))] or ["g"]
    plan = _plan(_whole_hours_before(window, retention_horizon()), use_daily="hour" not in dimensions)
    out: dict[object, Totals] = defaultdict(Totals)
    scope = (
        {"organisation": organisation} if agent is None else {"organisation": organisation, "agent": agent}
    )

    def grouped(qs, kind: int, time_column: str, fixed: dict | None = None):
        """``qs`` annotated with the group columns (``fixed`` overrides some)."""
        if not dimensions:
            return qs.annotate(g=Value(None, output_field=CharField()))
        fixed = fixed or {}
        return qs.annotate(
            **{
                n: fixed[d] if d in fixed else _group_expr(d, kind, time_column)
                for n, d in zip(names, dimensions, strict=True)
            }
        )

    def key_of(row):
        if not dimensions:
            return None
        key = tuple(_normalise_key(d, row[n]) for n, d in zip(names, dimensions, strict=True))
        return key if isinstance(group, tuple) else key[0]

    def totals(row) -> Totals:
        return out[key_of(row)]

    # Whole days and hours from rollups.
    for model, ranges in ((DailyRollup, plan.daily), (HourlyRollup, plan.hourly)):
        if not ranges:
            continue

        def read(model=model, ranges=ranges) -> dict[object, Totals]:
            part: dict[object, Totals] = defaultdict(Totals)
            rows = grouped(model.objects.filter(_ranges("bucket_start", ranges), **scope), 0, "")
            if with_sketch:
                # Every row's sketch is read anyway, so its counters come along and are summed here.
                rows = rows.values(*names, "agent_id", *COUNTERS, "latency_sketch")
            else:
                rows = rows.values(*names, "agent_id").annotate(**{n: Sum(n) for n in COUNTERS})
            for row in rows.order_by():
                t = part[key_of(row)]
                t.add(row)
                if row["traces"]:
                    t.agents.add(row["agent_id"])
                if with_sketch:
                    merge_into(t.latency_sketch, row["latency_sketch"])
            return part

        rows_read = model.objects.filter(_ranges("bucket_start", ranges), **scope)
        cache_key = (
            model.__name__,
            organisation.pk,
            agent.pk if agent else None,
            dimensions,
            with_sketch,
            tuple(ranges),
        )
        for key, part in rollup_reads.get(cache_key, rows_read, read).items():
            out[key].merge(part, with_sketch=with_sketch)

    if not plan.raw:
        return out

    # Partial hours at the edges from raw rows.
    traces = Trace.objects.filter(_ranges("created_at", plan.raw), **scope)
    aggregates = (
        Trace.objects.none()
        if "traces" not in facts
        else (
            grouped(traces, 1, "created_at")
            .values(*names, "agent_id")
            .annotate(
                traces=Count("id"),
                messages=_count_if(~Q(input="")) + _count_if(~Q(output="")),
                input_tokens=Sum("input_tokens"),
                output_tokens=Sum("output_tokens"),
                latency_count=Count("latency_ms"),
                latency_sum_ms=Coalesce(Sum("latency_ms"), 0),
                tool_call_traces=_count_if(Q(tool_call_count__gt=0)),
                error_traces=_count_if(Q(status="error")),
                llm_cost_usd=Sum("cost_usd"),
                unpriced_traces=_count_if(Q(cost_usd__isnull=True)),
            )
            .order_by()
        )
    )
    for row in aggregates:
        t = totals(row)
        t.add(row)
        t.agents.add(row["agent_id"])

    conversations = (
        Session.objects.none()
        if "conversations" not in facts
        else (
            grouped(Session.objects.filter(_ranges("started_at", plan.raw), **scope), 2, "started_at")
            .values(*names)
            .annotate(conversations=Count("id"), failed_conversations=_count_if(Q(error_count__gt=0)))
            .order_by()
        )
    )
    for row in conversations:
        totals(row).add(row)

    scores = (
        Score.objects.none()
        if "scores" not in facts
        else (
            grouped(
                Score.objects.filter(_ranges("trace_created_at", plan.raw), **scope), 3, "trace_created_at"
            )
            .values(*names)
            .annotate(score_count=Count("id"), score_sum=Sum("value"))
            .order_by()
        )
    )
    for row in scores:
        totals(row).add(row)

    # Usage events (billing: scraping and other categories) in the partial hours.
    # Their rollup rows have no channel (""), so neither do they here.
    usage = (
        UsageEvent.objects.none()
        if "usage" not in facts
        else (
            grouped(
                UsageEvent.objects.filter(_ranges("at", plan.raw), **scope),
                1,
                "at",
                {"channel": Value("", output_field=CharField())},
            )
            .values(*names)
            .annotate(other_cost_usd=Sum("cost_usd"))
            .order_by()
        )
    )
    for row in usage:
        totals(row).add(row)

    # Voice calls ended in the partial hours: minutes and cost count where a call ended.
    calls = (
        VoiceCall.objects.none()
        if "voice" not in facts
        else (
            grouped(
                VoiceCall.objects.filter(_ranges("ended_at", plan.raw), **scope),
                2,
                "ended_at",
                {"channel": Value("voice", output_field=CharField())},
            )
            .values(*names)
            .annotate(
                voice_calls_ended=Count("id"), voice_seconds=Sum("duration_s"), voice_cost_usd=Sum("cost_usd")
            )
            .order_by()
        )
    )
    for row in calls:
        totals(row).add(row)

    if with_sketch and "traces" in facts:
        buckets = (
            grouped(traces.filter(latency_ms__isnull=False), 1, "created_at")
            .annotate(b=LatencyBucket("latency_ms"))
            .values(*names, "b")
            .annotate(n=Count("id"))
            .order_by()
        )
        for row in buckets:
            merge_into(totals(row).latency_sketch, {row["b"]: row["n"]})
    return out


def regroup(
    by_key: dict[object, Totals], position: int | None, *, with_sketch: bool = False
) -> dict[object, Totals]:
    """Totals collected by several dimensions, summed up to the one at ``position``
    of their keys (or, for any grouping, to one key, None, when ``position`` is None)."""
    out: dict[object, Totals] = defaultdict(Totals)
    for key, totals in by_key.items():
        out[None if position is None else key[position]].merge(totals, with_sketch=with_sketch)
    return out


# --- metrics ------------------------------------------------------------------


def _ratio(numerator, denominator) -> float | None:
    return None if not denominator else numerator / denominator


def metrics(t: Totals) -> dict:
    """The metric definitions, applied to totals. The one place they are computed.
    Times in ms, money in USD, rates in 0..1; rates of an empty window are None."""
    success_rate = _ratio(t.conversations - t.failed_conversations, t.conversations)
    p50 = quantile(t.latency_sketch, 0.5)
    p95 = quantile(t.latency_sketch, 0.95)
    total_cost = t.total_cost_usd
    return {
        "total_sessions": t.conversations,
        "total_messages": t.messages,
        "total_traces": t.traces,
        "total_cost_usd": total_cost,
        "llm_cost_usd": t.llm_cost_usd,
        "voice_cost_usd": t.voice_cost_usd,
        "other_cost_usd": t.other_cost_usd,
        "unpriced_traces": t.unpriced_traces,
        "avg_response_time_ms": _ratio(t.latency_sum_ms, t.latency_count),
        "p50_latency_ms": round(p50, 3) if p50 is not None else None,
        "p95_latency_ms": round(p95, 3) if p95 is not None else None,
        "success_rate": success_rate,
        "error_rate": None if success_rate is None else _ratio(t.failed_conversations, t.conversations),
        "tool_call_rate": _ratio(t.tool_call_traces, t.traces),
        "tokens_per_response": _ratio(t.input_tokens + t.output_tokens, t.traces),
        "cost_per_conversation": total_cost / t.conversations if t.conversations else None,
        "total_input_tokens": t.input_tokens,
        "total_output_tokens": t.output_tokens,
        "voice_minutes": float(t.voice_seconds / 60) if t.voice_seconds else 0.0,
        "voice_calls": t.voice_calls_ended,
        "avg_evaluation_score": float(t.score_sum / t.score_count) if t.score_count else None,
        "evaluation_count": t.score_count,
        "error_traces": t.error_traces,
    }


def _window_fields(window: Window) -> dict:
    return {"period": window.label, "from": window.start, "to": window.end}


def _summary_of(agent: Agent, window: Window, totals: Totals) -> dict:
    return {**_window_fields(window), "agent_id": agent.public_id, **metrics(totals)}


def agent_summary(*, organisation, agent: Agent, window: Window) -> dict:
    """An agent's metrics for the window (the summary endpoint and Performance tab)."""
    totals = collect(organisation=organisation, window=window, agent=agent, with_sketch=True)
    return _summary_of(agent, window, totals.get(None, Totals()))


def _overview_of(t: Totals, window: Window) -> dict:
    m = metrics(t)
    return {
        **_window_fields(window),
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
        **_window_fields(window),
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


def bucket_size(window: Window) -> Literal["hour", "day"]:
    """Hourly points up to three days, daily points beyond."""
    return "hour" if window.length <= timedelta(days=3) else "day"


def _series_of(window: Window, size: Literal["hour", "day"], by_time: dict[object, Totals]) -> dict:
    floor = hour_of if size == "hour" else day_of
    step = timedelta(hours=1) if size == "hour" else timedelta(days=1)
    points = []
    at = floor(window.start.astimezone(UTC))
    while at < window.end:
        m = metrics(by_time.get(at, Totals()))
        points.append({"bucket_start": at, **m})
        at += step
    return {**_window_fields(window), "bucket": size, "points": points}


def timeseries(
    *, organisation, window: Window, agent: Agent | None = None, with_percentiles: bool = True
) -> dict:
    """Metrics per hour or day across the window, for charts. Every bucket in the
    window is present (empty ones with zero counts and null rates). Without
    percentiles, p50 and p95 are null and no latency sketch is read."""
    size = bucket_size(window)
    by_time = collect(
        organisation=organisation, window=window, agent=agent, group=size, with_sketch=with_percentiles
    )
    return _series_of(window, size, by_time)


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
        "series": _series_of(window, size, by_time),
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
        "series": _series_of(window, size, by_time),
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
        **_window_fields(window),
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
