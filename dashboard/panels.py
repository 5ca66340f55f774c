"""Turning metrics into what the pages show: formatted cards with their change
against the previous window, and chart figures. No queries here. Every number
is written by ``thinnest_analytics.formatting``."""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from thinnest_analytics import charts
from thinnest_analytics import formatting as f

from . import drill

# A previous window with fewer conversations than this gives no change: a rate
# or a percentage over a handful of conversations means nothing (the same
# bound as the version comparison's significance test).
MIN_PREVIOUS_CONVERSATIONS = 30


@dataclass(frozen=True)
class Kind:
    """How a metric is written, how its change is expressed (relative, or in
    percentage points for rates), and whether a rise is good (True), bad
    (False) or neither (None)."""

    format: Callable[[object], str]
    better_up: bool | None
    points: bool = False


KINDS = {
    "count": Kind(f.format_count, None),
    "money": Kind(f.format_usd, False),
    "unit_money": Kind(partial(f.format_usd, places=f.UNIT_USD_PLACES), False),
    "ms": Kind(f.format_ms, False),
    "rate": Kind(f.format_percent, True, points=True),
    "bad_rate": Kind(f.format_percent, False, points=True),
    "neutral_rate": Kind(f.format_percent, None, points=True),
    "score": Kind(f.format_score, True),
    "number": Kind(f.format_number, None),
    "minutes": Kind(f.format_minutes, None),
}


@dataclass(frozen=True)
class Card:
    key: str
    label: str
    value: str
    change: str
    trend: str  # "good", "bad" or "neutral": colours the change
    hint: str = ""  # why a change is not shown, or what it compares
    href: str = ""  # the list behind the number (dashboard.drill)


@dataclass(frozen=True)
class Change:
    text: str
    trend: str  # "good", "bad" or "neutral"
    hint: str = ""


def fmt(value, kind: str) -> str:
    return KINDS[kind].format(value)


def change(before, after, kind: str) -> Change:
    """The change from ``before`` to ``after``: relative for amounts, in
    percentage points for rates, coloured by whether it is better or worse for
    this kind of metric (lower latency and cost are better)."""
    if before is None or after is None:
        if before is None and after is not None:
            return Change("n/a", "neutral", "nothing to compare with")
        return Change(f.MISSING, "neutral")
    before, after = float(before), float(after)
    spec = KINDS[kind]
    if spec.points:
        delta = after - before
        text = f.format_point_change(delta)
        small = abs(delta) < 0.0005
    elif before == 0:
        return Change("no change", "neutral") if after == 0 else Change("new", "neutral", "nothing before")
    else:
        delta = (after - before) / abs(before)
        text = f.format_relative_change(delta)
        small = abs(delta) < 0.0005
    if small:
        return Change("no change", "neutral")
    if spec.better_up is None:
        return Change(text, "neutral")
    return Change(text, "good" if (delta > 0) == spec.better_up else "bad")


def previous_unavailable(
    *, previous_start: datetime, data_since: datetime | None, previous_conversations: int
) -> str | None:
    """Why the previous window cannot be compared with, or None when it can.

    Not covered: the first hour holding any of the scope's data ends after the
    previous window starts, so that window is partly from before the data
    began. Too little traffic: fewer than MIN_PREVIOUS_CONVERSATIONS
    conversations started in it. (docs/metrics.md, "Changes")"""
    if data_since is None:
        return None  # no data at all: every value and change is empty anyway
    if data_since + timedelta(hours=1) > previous_start:
        return (
            f"The data starts {data_since:%Y-%m-%d %H:00} UTC, after the previous window began "
            f"({previous_start:%Y-%m-%d %H:%M} UTC): there is no full window to compare with."
        )
    if previous_conversations < MIN_PREVIOUS_CONVERSATIONS:
        return (
            f"Only {previous_conversations} conversation{'s' if previous_conversations != 1 else ''} "
            f"in the previous window: at least {MIN_PREVIOUS_CONVERSATIONS} are needed for a change to mean anything."
        )
    return None


def cards(
    current: dict,
    previous: dict,
    spec: list[tuple[str, str, str]],
    unavailable: str | None = None,
    link: Callable[[str], str] | None = None,
) -> list[Card]:
    """One card per (metric key, label, kind) in ``spec``; with ``unavailable``
    (why the previous window cannot be compared) every change reads "n/a";
    ``link`` gives the address each card opens."""
    out = []
    for key, label, kind in spec:
        if unavailable:
            moved = Change("n/a", "neutral", unavailable)
        else:
            moved = change(previous.get(key), current.get(key), kind)
        hint = moved.hint or "Change against the previous window of the same length"
        href = link(key) if link else ""
        out.append(Card(key, label, fmt(current.get(key), kind), moved.text, moved.trend, hint, href))
    return out


OVERVIEW_CARDS = [
    ("total_conversations", "Total Conversations", "count"),
    ("total_messages", "Total Messages", "count"),
    ("total_cost_usd", "Total Cost", "money"),
    ("avg_response_time_ms", "Average Response Time", "ms"),
    ("success_rate", "Success Rate", "rate"),
    ("active_agents", "Active Agents", "count"),
]

PERFORMANCE_GROUPS = [
    (
        "Response",
        [
            ("avg_response_time_ms", "Avg Response Time", "ms"),
            ("p50_latency_ms", "p50 Latency", "ms"),
            ("p95_latency_ms", "p95 Latency", "ms"),
            ("tokens_per_response", "Tokens per Response", "number"),
        ],
    ),
    (
        "Cost",
        [
            ("total_cost_usd", "Total Cost", "money"),
            ("cost_per_conversation", "Cost per Conversation", "unit_money"),
            ("total_input_tokens", "Input Tokens", "count"),
            ("total_output_tokens", "Output Tokens", "count"),
            ("voice_minutes", "Voice Minutes", "minutes"),
        ],
    ),
    (
        "Quality",
        [
            ("success_rate", "Success Rate", "rate"),
            ("error_rate", "Error Rate", "bad_rate"),
            ("tool_call_rate", "Tool Call Rate", "neutral_rate"),
            ("avg_evaluation_score", "Evaluation Score", "score"),
        ],
    ),
]


def _percent(values):
    return [None if v is None else round(v * 100, 2) for v in values]


def _costs(points) -> dict[str, list[float]]:
    return {
        "LLM tokens": [float(p["llm_cost_usd"]) for p in points],
        "Voice minutes": [float(p["voice_cost_usd"]) for p in points],
        "Other usage": [float(p["other_cost_usd"]) for p in points],
    }


def overview_charts(series: dict, channels: dict) -> list[dict]:
    """The Overview's figures; each point, bar and slice opens the list behind it."""
    points = series["points"]
    x = [p["bucket_start"] for p in points]
    per = "hour" if series["bucket"] == "hour" else "day"

    def to(metric: str, **filters) -> list[str]:
        return drill.bucket_urls(series, metric, **filters)

    return [
        charts.bars(
            "chart-volume",
            f"Conversations and messages per {per}",
            x,
            {
                "Conversations": [p["total_sessions"] for p in points],
                "Messages": [p["total_messages"] for p in points],
            },
            y_title=f"Count per {per}",
            y_format=f.COUNT_FORMAT,
            stacked=False,
            links={"Conversations": to("total_sessions"), "Messages": to("total_messages")},
        ),
        charts.usd_bars(
            "chart-cost",
            f"Cost per {per} by category (USD)",
            x,
            _costs(points),
            links={
                "LLM tokens": to("llm_cost_usd"),
                "Voice minutes": to("voice_cost_usd"),
                "Other usage": to("other_cost_usd"),
            },
        ),
        charts.lines(
            "chart-latency",
            "Response time p50 / p95 (ms)",
            x,
            {"p50": [p["p50_latency_ms"] for p in points], "p95": [p["p95_latency_ms"] for p in points]},
            y_title="ms",
            y_format=f.MS_FORMAT,
            links={"p50": to("p50_latency_ms"), "p95": to("p95_latency_ms")},
        ),
        charts.lines(
            "chart-success",
            "Success rate (%)",
            x,
            {"Success rate": _percent(p["success_rate"] for p in points)},
            y_title="%",
            y_format=f.PERCENT_FORMAT,
            y_hover=f.PERCENT_HOVER_FORMAT,
            links={"Success rate": to("success_rate")},
        ),
        charts.donut(
            "chart-channels",
            "Conversations by channel",
            [name.title() for name in channels],
            [c["total_sessions"] for c in channels.values()],
            links=[
                drill.metric_url("total_sessions", series["from"], series["to"], channel=name)
                for name in channels
            ],
        ),
    ]


def performance_charts(series: dict, agent: str | None = None) -> list[dict]:
    """An agent's figures; each point and bar opens the agent's list behind it."""
    points = series["points"]
    x = [p["bucket_start"] for p in points]

    def to(metric: str) -> list[str]:
        return drill.bucket_urls(series, metric, agent=agent)

    return [
        charts.lines(
            "chart-latency",
            "Response time (ms)",
            x,
            {
                "Average": [p["avg_response_time_ms"] for p in points],
                "p50": [p["p50_latency_ms"] for p in points],
                "p95": [p["p95_latency_ms"] for p in points],
            },
            y_title="ms",
            y_format=f.MS_FORMAT,
            links={name: to("avg_response_time_ms") for name in ("Average", "p50", "p95")},
        ),
        charts.usd_bars(
            "chart-cost",
            "Cost (USD)",
            x,
            _costs(points),
            links={
                "LLM tokens": to("llm_cost_usd"),
                "Voice minutes": to("voice_cost_usd"),
                "Other usage": to("other_cost_usd"),
            },
        ),
        charts.lines(
            "chart-quality",
            "Success, error and tool call rates (%)",
            x,
            {
                "Success": _percent(p["success_rate"] for p in points),
                "Error": _percent(p["error_rate"] for p in points),
                "Tool calls": _percent(p["tool_call_rate"] for p in points),
            },
            y_title="%",
            y_format=f.PERCENT_FORMAT,
            y_hover=f.PERCENT_HOVER_FORMAT,
            links={
                "Success": to("success_rate"),
                "Error": to("error_rate"),
                "Tool calls": to("tool_call_rate"),
            },
        ),
        charts.lines(
            "chart-tokens",
            "Tokens per response",
            x,
            {"Tokens per response": [p["tokens_per_response"] for p in points]},
            y_title="tokens",
            y_format=f.NUMBER_FORMAT,
            links={"Tokens per response": to("tokens_per_response")},
        ),
    ]


COMPARE_ROWS = [
    ("total_sessions", "Conversations", "count"),
    ("success_rate", "Success rate", "rate"),
    ("error_rate", "Error rate", "bad_rate"),
    ("avg_response_time_ms", "Avg response time", "ms"),
    ("p50_latency_ms", "p50 latency", "ms"),
    ("p95_latency_ms", "p95 latency", "ms"),
    ("tool_call_rate", "Tool call rate", "neutral_rate"),
    ("tokens_per_response", "Tokens per response", "number"),
    ("total_cost_usd", "Total cost", "money"),
    ("cost_per_conversation", "Cost per conversation", "unit_money"),
    ("avg_evaluation_score", "Evaluation score", "score"),
]
