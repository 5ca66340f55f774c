"""Turning metrics into what the pages show: formatted cards with their change
against the previous window, and chart figures. No queries here."""

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from . import charts, drill

# How a metric is shown, and whether a rise is good (True), bad (False) or neither (None).
KINDS = {
    "count": None,
    "money": False,
    "ms": False,
    "rate": True,
    "bad_rate": False,
    "score": True,
    "number": None,
    "minutes": None,
}


@dataclass(frozen=True)
class Card:
    key: str
    label: str
    value: str
    change: str
    trend: str  # "good", "bad" or "neutral": colours the change
    hint: str = ""
    href: str = ""  # the list behind the number (dashboard.drill)


def fmt(value, kind: str) -> str:
    if value is None:
        return "—"
    if kind == "money":
        value = Decimal(value)
        return f"${value:,.2f}" if abs(value) >= 1 or value == 0 else f"${value:,.4f}"
    if kind == "ms":
        return f"{value / 1000:,.2f} s" if value >= 10_000 else f"{value:,.0f} ms"
    if kind in ("rate", "bad_rate"):
        return f"{value * 100:.1f}%"
    if kind == "score":
        return f"{value:.2f}"
    if kind == "minutes":
        return f"{value:,.1f} min"
    if kind == "number":
        return f"{value:,.1f}"
    return f"{value:,}"


def change(current, previous, kind: str) -> tuple[str, str]:
    """Text and trend of the change from the previous window of equal length."""
    if current is None or previous is None:
        return ("no data before" if previous is None and current is not None else "—"), "neutral"
    current, previous = float(current), float(previous)
    if kind in ("rate", "bad_rate"):
        delta = (current - previous) * 100
        text = f"{delta:+.1f} pp"
    elif previous == 0:
        if current == 0:
            return "no change", "neutral"
        return "new", "neutral"
    else:
        delta = (current - previous) / abs(previous) * 100
        text = f"{delta:+.1f}%"
    if abs(delta) < 0.05:
        return "no change", "neutral"
    good = KINDS[kind]
    if good is None:
        return text, "neutral"
    return text, "good" if (delta > 0) == good else "bad"


def cards(
    current: dict, previous: dict, spec: list[tuple[str, str, str]], link: Callable[[str], str] | None = None
) -> list[Card]:
    """One card per (metric key, label, kind) in ``spec``; ``link`` gives the
    address each card opens."""
    out = []
    for key, label, kind in spec:
        text, trend = change(current.get(key), previous.get(key), kind)
        out.append(Card(key, label, fmt(current.get(key), kind), text, trend, href=link(key) if link else ""))
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
            ("cost_per_conversation", "Cost per Conversation", "money"),
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
            ("tool_call_rate", "Tool Call Rate", "rate"),
            ("avg_evaluation_score", "Evaluation Score", "score"),
        ],
    ),
]


def _percent(values):
    return [None if v is None else round(v * 100, 2) for v in values]


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
            stacked=False,
            links={"Conversations": to("total_sessions"), "Messages": to("total_messages")},
        ),
        charts.bars(
            "chart-cost",
            f"Cost per {per} by category (USD)",
            x,
            {
                "LLM tokens": [float(p["llm_cost_usd"]) for p in points],
                "Voice minutes": [float(p["voice_cost_usd"]) for p in points],
                "Other usage": [float(p["other_cost_usd"]) for p in points],
            },
            y_format="$.2f",
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
            links={"p50": to("p50_latency_ms"), "p95": to("p95_latency_ms")},
        ),
        charts.lines(
            "chart-success",
            "Success rate (%)",
            x,
            {"Success rate": _percent(p["success_rate"] for p in points)},
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
            links={name: to("avg_response_time_ms") for name in ("Average", "p50", "p95")},
        ),
        charts.bars(
            "chart-cost",
            "Cost (USD)",
            x,
            {
                "LLM tokens": [float(p["llm_cost_usd"]) for p in points],
                "Voice minutes": [float(p["voice_cost_usd"]) for p in points],
                "Other usage": [float(p["other_cost_usd"]) for p in points],
            },
            y_format="$.3f",
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
    ("tool_call_rate", "Tool call rate", "rate"),
    ("tokens_per_response", "Tokens per response", "number"),
    ("total_cost_usd", "Total cost", "money"),
    ("cost_per_conversation", "Cost per conversation", "money"),
    ("avg_evaluation_score", "Evaluation score", "score"),
]
