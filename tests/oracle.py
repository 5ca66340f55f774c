"""A brute-force recomputation of the metric definitions from the traces a
client sent, independent of the database and the rollups."""

import math
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

MILLION = Decimal(1_000_000)
# The built-in gpt-4o-mini price, USD per million tokens.
GPT_4O_MINI = (Decimal("0.15"), Decimal("0.60"))


@dataclass
class Conversation:
    agent_id: str
    channel: str
    version: str
    start: datetime
    failed: bool = False


@dataclass
class World:
    """What the server should have stored after the batches were sent in order."""

    traces: dict[str, dict] = field(default_factory=dict)
    scores: list[tuple[str, Decimal]] = field(default_factory=list)

    def send(self, batch: list[dict]) -> None:
        for item in batch:
            if item["id"] in self.traces:
                continue  # the first version of a trace wins
            self.traces[item["id"]] = item
            if "evaluation_score" in item:
                self.scores.append((item["id"], Decimal(str(item["evaluation_score"]))))

    def score(self, trace_id: str, value: float) -> None:
        self.scores.append((trace_id, Decimal(str(value))))

    def conversations(self) -> dict[str, Conversation]:
        out: dict[str, Conversation] = {}
        for t in sorted(self.traces.values(), key=lambda t: t["_at"]):
            c = out.setdefault(
                t["session_id"],
                Conversation(
                    t["agent_id"], t.get("channel", "chat"), t.get("deployment_version", ""), t["_at"]
                ),
            )
            c.failed = c.failed or t["status"] == "error"
        return out


def cost_of(t: dict) -> Decimal | None:
    if "cost_usd" in t:
        return Decimal(str(t["cost_usd"]))
    if t.get("model") == "gpt-4o-mini":
        return (t["input_tokens"] * GPT_4O_MINI[0] + t["output_tokens"] * GPT_4O_MINI[1]) / MILLION
    return None


def exact_quantile(values: list[int], q: float) -> int | None:
    """PostgreSQL's percentile_disc: the value at rank ceil(q * n)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def summary(
    world: World,
    start: datetime,
    end: datetime,
    agent_id: str | None = None,
    channel: str | None = None,
    version: str | None = None,
) -> dict:
    def wanted(agent, ch, v):
        return (
            (agent_id is None or agent == agent_id)
            and (channel is None or ch == channel)
            and (version is None or v == version)
        )

    traces = [
        t
        for t in world.traces.values()
        if start <= t["_at"] < end
        and wanted(t["agent_id"], t.get("channel", "chat"), t.get("deployment_version", ""))
    ]
    conversations = [
        c
        for c in world.conversations().values()
        if start <= c.start < end and wanted(c.agent_id, c.channel, c.version)
    ]
    in_window = {t["id"] for t in traces}
    scores = [v for tid, v in world.scores if tid in in_window]
    latencies = [t["latency_ms"] for t in traces if t.get("latency_ms") is not None]
    costs = [cost_of(t) for t in traces]
    failed = sum(c.failed for c in conversations)
    n = len(conversations)
    total_cost = sum((c for c in costs if c is not None), Decimal(0))
    return {
        "total_sessions": n,
        "total_messages": sum((t.get("input", "") != "") + (t.get("output", "") != "") for t in traces),
        "total_traces": len(traces),
        "total_cost_usd": total_cost,
        "unpriced_traces": sum(c is None for c in costs),
        "avg_response_time_ms": sum(latencies) / len(latencies) if latencies else None,
        "p50_latency_ms": exact_quantile(latencies, 0.5),
        "p95_latency_ms": exact_quantile(latencies, 0.95),
        "success_rate": (n - failed) / n if n else None,
        "error_rate": failed / n if n else None,
        "tool_call_rate": sum(bool(t.get("tool_calls")) for t in traces) / len(traces) if traces else None,
        "tokens_per_response": sum(t["input_tokens"] + t["output_tokens"] for t in traces) / len(traces)
        if traces
        else None,
        "cost_per_conversation": total_cost / n if n else None,
        "total_input_tokens": sum(t["input_tokens"] for t in traces),
        "total_output_tokens": sum(t["output_tokens"] for t in traces),
        "avg_evaluation_score": float(sum(scores) / len(scores)) if scores else None,
        "active_agents": len({t["agent_id"] for t in traces}),
        "error_traces": sum(t["status"] == "error" for t in traces),
    }
