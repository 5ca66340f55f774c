"""The metrics engine: every number the dashboard and the analytics API show.

A window ``[start, end)`` is read in pieces: whole UTC days from daily rollups,
whole hours from hourly rollups, and only the partial hours at its edges from raw
rows. Counts and sums are therefore exact, and query cost follows the window's
length, not the number of traces. Definitions follow docs/metrics.md.
"""

import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal

from django.db import connection
from django.db.models import CharField, F, Q, Sum, Value
from django.db.models.functions import TruncDay, TruncHour

from thinnest_analytics.db import Compiled, pipelined

from .models import COUNTERS, DailyRollup, HourlyRollup
from .readcache import rollup_reads
from .rollups import (
    CONVERSATION_FACTS,
    SCORE_FACTS,
    TRACE_FACTS,
    USAGE_FACTS,
    VOICE_CALL_FACTS,
    day_of,
    hour_of,
    raw_model,
)
from .sketch import Sketch, merge_into, quantile
from .windows import Window, retention_horizon

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
class WindowPlan:
    raw: list[tuple[datetime, datetime]]
    hourly: list[tuple[datetime, datetime]]
    daily: list[tuple[datetime, datetime]]


def window_plan(window: Window, use_daily: bool = True) -> WindowPlan:
    """Split a window into raw edges, whole hours and whole days."""
    start, end = window.start.astimezone(UTC), window.end.astimezone(UTC)
    h0, h1 = _ceil(start, hour_of, timedelta(hours=1)), hour_of(end)
    if h0 >= h1:
        return WindowPlan(raw=[(start, end)], hourly=[], daily=[])
    raw = [r for r in ((start, h0), (h1, end)) if r[0] < r[1]]
    d0, d1 = _ceil(h0, day_of, timedelta(days=1)), day_of(h1)
    if not use_daily or d0 >= d1:
        return WindowPlan(raw=raw, hourly=[(h0, h1)], daily=[])
    hourly = [r for r in ((h0, d0), (d1, h1)) if r[0] < r[1]]
    return WindowPlan(raw=raw, hourly=hourly, daily=[(d0, d1)])


def whole_hours_before(window: Window, horizon: datetime | None) -> Window:
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


def ranges_q(column: str, ranges: list[tuple[datetime, datetime]]) -> Q:
    """Rows whose ``column`` falls in any of the ``[start, end)`` ranges."""
    q = Q()
    for a, b in ranges:
        q |= Q(**{f"{column}__gte": a, f"{column}__lt": b})
    return q


# --- grouping -----------------------------------------------------------------

# For each group: its column, the same on rollups, traces, conversations and
# scores. A score carries its trace's agent, channel and version (they follow
# the trace), and the rollups count scores by them; joining the trace instead
# would read every partition of the traces table (partitioned by time: the join
# names no time).
_GROUP_COLUMNS = {"channel": "channel", "agent": "agent_id", "version": "deployment_version"}


def _group_expr(dimension: Dimension, kind: int, time_column: str):
    """The expression to group by in one source (0 rollups, 1 traces, 2 conversations, 3 scores)."""
    if dimension in _GROUP_COLUMNS:
        return F(_GROUP_COLUMNS[dimension])
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


FACTS = ("traces", "conversations", "scores", "usage", "voice")


def collect(
    *,
    organisation,
    window: Window,
    agent=None,
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
    plan = window_plan(whole_hours_before(window, retention_horizon()), use_daily="hour" not in dimensions)
    shape = _Shape(
        dimensions=dimensions,
        with_sketch=with_sketch,
        facts=tuple(f for f in FACTS if f in facts),
        per_agent=agent is not None,
        ranges=(len(plan.daily), len(plan.hourly), len(plan.raw)),
    )
    reads = _reads_of(shape, organisation_id=organisation.pk, agent_id=agent.pk if agent else None, plan=plan)
    names = shape.names
    out: dict[object, Totals] = defaultdict(Totals)

    def key_of(row):
        if not dimensions:
            return None
        key = tuple(_normalise_key(d, row[n]) for n, d in zip(names, dimensions, strict=True))
        return key if isinstance(group, tuple) else key[0]

    # One round trip for the rollups' stamps and the edges' raw rows, and one
    # more for the rollup rows whose stamp changed (PostgreSQL; SQLite reads
    # the rollups every time). A kept read is the grouped totals of a table's
    # rows while their stamp is unchanged (``readcache``).
    stamped = rollup_reads.enabled()
    pieces = (plan.daily, plan.hourly, plan.raw)
    rollups = [
        (
            (
                table,
                organisation.pk,
                agent.pk if agent else None,
                dimensions,
                with_sketch,
                tuple(pieces[piece]),
            ),
            stamp,
            read,
        )
        for table, piece, stamp, read in reads.rollups
    ]
    first = pipelined([*(stamp for _, stamp, _ in rollups if stamped), *(read for read, _ in reads.edges)])
    stamps = [rollup_reads.stamp_of(rows) for rows in first[: len(rollups)]] if stamped else []
    edge_rows = first[len(stamps) :]
    parts: list[dict | None] = (
        [rollup_reads.kept(key, stamp) for (key, _, _), stamp in zip(rollups, stamps, strict=True)]
        if stamped
        else [None] * len(rollups)
    )
    missing = [i for i, part in enumerate(parts) if part is None]
    for i, rows in zip(missing, pipelined([rollups[i][2] for i in missing]), strict=True):
        parts[i] = _rollup_totals(rows, key_of, with_sketch)
        if stamped:
            rollup_reads.keep(rollups[i][0], stamps[i], parts[i])
    for part in parts:
        for key, t in part.items():
            out[key].merge(t, with_sketch=with_sketch)

    # Partial hours at the edges from raw rows.
    for (_, kind), rows in zip(reads.edges, edge_rows, strict=True):
        for row in rows:
            t = out[key_of(row)]
            t.add(row)
            if kind == "traces":
                t.agents.add(row["agent_id"])
                if with_sketch:
                    merge_into(t.latency_sketch, row["latency_sketch"])
    return out


def _rollup_totals(rows: list[dict], key_of, with_sketch: bool) -> dict[object, Totals]:
    part: dict[object, Totals] = defaultdict(Totals)
    for row in rows:
        t = part[key_of(row)]
        t.add(row)
        if row["traces"]:
            t.agents.add(row["agent_id"])
        if with_sketch:
            merge_into(t.latency_sketch, row["latency_sketch"])
    return part


@dataclass(frozen=True)
class _Shape:
    """What the statements of a window read depend on, besides the organisation,
    the agent and the instants of the window's pieces."""

    dimensions: tuple[Dimension, ...]
    with_sketch: bool
    facts: tuple[str, ...]
    per_agent: bool
    ranges: tuple[int, int, int]  # how many daily, hourly and raw ranges

    @property
    def names(self) -> list[str]:
        # Ungrouped, every row is in one group: a constant column "g".
        return [f"g{i}" for i in range(len(self.dimensions))] or ["g"]


@dataclass
class _Reads:
    # (rollup table's name, which of the window's pieces it reads (0 days, 1
    # hours), the stamp of its rows, the read of their totals)
    rollups: list[tuple[str, int, object, object]]
    # (aggregate over raw rows in the partial hours, which facts it holds)
    edges: list[tuple[object, str]]


# Statements compiled once per shape (PostgreSQL): building and compiling a
# window's nine querysets costs more than PostgreSQL takes to run them.
_compiled: dict[tuple[_Shape, tuple], _Reads] = {}
_compiled_lock = threading.Lock()
_STAND_IN_ORGANISATION, _STAND_IN_AGENT = -7_000_000_001, -7_000_000_002
_STAND_IN_TIME = datetime(1901, 1, 1, tzinfo=UTC)


def _reads_of(shape: _Shape, *, organisation_id: int, agent_id: int | None, plan: WindowPlan) -> _Reads:
    """The statements a window needs: querysets on SQLite; on PostgreSQL,
    statements compiled once for the shape with stand-in values, bound to these."""
    pieces = (plan.daily, plan.hourly, plan.raw)
    if connection.vendor != "postgresql":
        return _querysets(shape, organisation_id=organisation_id, agent_id=agent_id, pieces=pieces)
    # The definitions are part of the key: statements follow them (they are
    # fixed in the product; a test may change one where it is defined).
    definitions = tuple(
        f.counters for f in (TRACE_FACTS, CONVERSATION_FACTS, SCORE_FACTS, USAGE_FACTS, VOICE_CALL_FACTS)
    )
    compiled = _compiled.get((shape, definitions))
    if compiled is None:
        stand_ins = {_STAND_IN_ORGANISATION: "organisation", _STAND_IN_AGENT: "agent"}
        stand_in_pieces = []
        for p, n in enumerate(shape.ranges):
            ranges = []
            for r in range(n):
                a, b = (_STAND_IN_TIME + timedelta(minutes=10 * (3 * p + r) + i) for i in (0, 1))
                stand_ins[a], stand_ins[b] = (p, r, 0), (p, r, 1)
                ranges.append((a, b))
            stand_in_pieces.append(ranges)
        built = _querysets(
            shape,
            organisation_id=_STAND_IN_ORGANISATION,
            agent_id=_STAND_IN_AGENT if shape.per_agent else None,
            pieces=tuple(stand_in_pieces),
        )
        compiled = _Reads(
            rollups=[
                (table, piece, Compiled(stamp, stand_ins), Compiled(read, stand_ins))
                for table, piece, stamp, read in built.rollups
            ],
            edges=[(Compiled(qs, stand_ins), kind) for qs, kind in built.edges],
        )
        with _compiled_lock:
            _compiled[(shape, definitions)] = compiled
    values: dict[object, object] = {"organisation": organisation_id, "agent": agent_id}
    for p, ranges in enumerate(pieces):
        for r, (a, b) in enumerate(ranges):
            values[(p, r, 0)], values[(p, r, 1)] = a, b
    return _Reads(
        rollups=[
            (table, piece, stamp.bound(values), read.bound(values))
            for table, piece, stamp, read in compiled.rollups
        ],
        edges=[(statement.bound(values), kind) for statement, kind in compiled.edges],
    )


def _grouped(shape: _Shape, qs, kind: int, time_column: str, fixed: dict | None = None):
    """``qs`` annotated with the group columns (``fixed`` overrides some)."""
    if not shape.dimensions:
        return qs.annotate(g=Value(None, output_field=CharField()))
    fixed = fixed or {}
    return qs.annotate(
        **{
            n: fixed[d] if d in fixed else _group_expr(d, kind, time_column)
            for n, d in zip(shape.names, shape.dimensions, strict=True)
        }
    )


def _querysets(shape: _Shape, *, organisation_id: int, agent_id: int | None, pieces) -> _Reads:
    """The querysets of a window: for each rollup table, the stamp of its rows and
    the read of their totals; the aggregates over raw rows in the partial hours."""
    Trace, Session, Score = raw_model("agents.Trace"), raw_model("agents.Session"), raw_model("agents.Score")
    VoiceCall, UsageEvent = raw_model("voice.VoiceCall"), raw_model("billing.UsageEvent")
    scope = {"organisation_id": organisation_id}
    if agent_id is not None:
        scope["agent_id"] = agent_id
    names = shape.names
    daily, hourly, raw = pieces

    rollups = []
    for piece, (model, ranges) in enumerate(((DailyRollup, daily), (HourlyRollup, hourly))):
        if not ranges:
            continue
        rows = model.objects.filter(ranges_q("bucket_start", ranges), **scope)
        read = _grouped(shape, rows, 0, "")
        if shape.with_sketch:
            # Every row's sketch is read anyway, so its counters come along and are summed here.
            read = read.values(*names, "agent_id", *COUNTERS, "latency_sketch")
        else:
            read = read.values(*names, "agent_id").annotate(**{n: Sum(n) for n in COUNTERS})
        rollups.append((model.__name__, piece, rollup_reads.stamp_query(rows), read.order_by()))

    edges: list[tuple[object, str]] = []
    if not raw:
        return _Reads(rollups=rollups, edges=edges)
    if "traces" in shape.facts:
        traces = _grouped(shape, Trace.objects.filter(ranges_q("created_at", raw), **scope), 1, "created_at")
        # The latency sketch, as ingestion and the rebuild count it, from the same scan.
        facts = TRACE_FACTS.counters() | (TRACE_FACTS.sketch() if shape.with_sketch else {})
        edges.append((traces.values(*names, "agent_id").annotate(**facts).order_by(), "traces"))
    if "conversations" in shape.facts:
        conversations = _grouped(
            shape, Session.objects.filter(ranges_q("started_at", raw), **scope), 2, "started_at"
        )
        edges.append(
            (
                conversations.values(*names).annotate(**CONVERSATION_FACTS.counters()).order_by(),
                "conversations",
            )
        )
    if "scores" in shape.facts:
        scores = _grouped(
            shape, Score.objects.filter(ranges_q("trace_created_at", raw), **scope), 3, "trace_created_at"
        )
        edges.append((scores.values(*names).annotate(**SCORE_FACTS.counters()).order_by(), "scores"))
    if "usage" in shape.facts:
        # Usage events (billing: scraping and other categories) in the partial hours.
        # Their rollup rows have no channel (""), so neither do they here.
        usage = _grouped(
            shape,
            UsageEvent.objects.filter(ranges_q("at", raw), **scope),
            1,
            "at",
            {"channel": Value("", output_field=CharField())},
        )
        edges.append((usage.values(*names).annotate(**USAGE_FACTS.counters()).order_by(), "usage"))
    if "voice" in shape.facts:
        # Voice calls ended in the partial hours: minutes and cost count where a call ended.
        calls = _grouped(
            shape,
            VoiceCall.objects.filter(ranges_q("ended_at", raw), **scope),
            2,
            "ended_at",
            {"channel": Value("voice", output_field=CharField())},
        )
        edges.append((calls.values(*names).annotate(**VOICE_CALL_FACTS.counters()).order_by(), "voice"))
    return _Reads(rollups=rollups, edges=edges)


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


def window_fields(window: Window) -> dict:
    """The window as every answer names it: its period label and its bounds."""
    return {"period": window.label, "from": window.start, "to": window.end}


def bucket_size(window: Window) -> Literal["hour", "day"]:
    """Hourly points up to three days, daily points beyond."""
    return "hour" if window.length <= timedelta(days=3) else "day"


def series_of(window: Window, size: Literal["hour", "day"], by_time: dict[object, Totals]) -> dict:
    """Totals by hour or day as a series of metrics with every bucket of the window present."""
    floor = hour_of if size == "hour" else day_of
    step = timedelta(hours=1) if size == "hour" else timedelta(days=1)
    points = []
    at = floor(window.start.astimezone(UTC))
    while at < window.end:
        m = metrics(by_time.get(at, Totals()))
        points.append({"bucket_start": at, **m})
        at += step
    return {**window_fields(window), "bucket": size, "points": points}


def timeseries(*, organisation, window: Window, agent=None, with_percentiles: bool = True) -> dict:
    """Metrics per hour or day across the window, for charts. Every bucket in the
    window is present (empty ones with zero counts and null rates). Without
    percentiles, p50 and p95 are null and no latency sketch is read."""
    size = bucket_size(window)
    by_time = collect(
        organisation=organisation, window=window, agent=agent, group=size, with_sketch=with_percentiles
    )
    return series_of(window, size, by_time)
