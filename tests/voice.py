"""Call event payloads for the voice tests, and a brute-force recomputation of
voice metrics from the events a client sent."""

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal

AT = "2026-03-06T14:30:00Z"


def started(call_id: str = "call_1", at: str = AT, agent_id: str = "agent_abc123", **fields) -> dict:
    return {"type": "call.started", "call_id": call_id, "agent_id": agent_id, "at": at, **fields}


def turn(
    call_id: str = "call_1",
    at: str = "2026-03-06T14:30:05Z",
    voice_latency_ms: float = 800,
    interrupted: bool = False,
    transcription_confidence: float = 0.9,
    **fields,
) -> dict:
    body = {
        "type": "call.turn",
        "call_id": call_id,
        "at": at,
        "voice_latency_ms": voice_latency_ms,
        "interrupted": interrupted,
        "transcription_confidence": transcription_confidence,
        **fields,
    }
    return {k: v for k, v in body.items() if v is not None}


def ended(
    call_id: str = "call_1", at: str = "2026-03-06T14:32:00Z", status: str = "completed", **fields
) -> dict:
    return {"type": "call.ended", "call_id": call_id, "at": at, "status": status, **fields}


def parse(at: str) -> datetime:
    return datetime.fromisoformat(at.replace("Z", "+00:00")).astimezone(UTC)


def cost(seconds: Decimal, price: Decimal) -> Decimal:
    return (seconds * price / 60).quantize(Decimal("1e-10"), rounding=ROUND_HALF_EVEN)


@dataclass
class Call:
    agent_id: str
    start: datetime
    end: datetime | None = None
    status: str = "active"
    seconds: Decimal | None = None
    turns: dict[str, dict] = field(default_factory=dict)


@dataclass
class VoiceWorld:
    """What the server should hold after the events were sent in order, each
    batch applied starts first, then turns, then ends."""

    price: Decimal
    calls: dict[str, Call] = field(default_factory=dict)

    def send(self, batch: list[dict]) -> None:
        order = {"call.started": 0, "call.turn": 1, "call.ended": 2}
        for event in sorted(batch, key=lambda e: order[e["type"]]):
            at = parse(event["at"])
            call = self.calls.get(event["call_id"])
            if event["type"] == "call.started":
                self.calls.setdefault(event["call_id"], Call(event["agent_id"], at))
            elif call is None or at < call.start:
                continue
            elif event["type"] == "call.turn":
                if call.end is not None and at > call.end:
                    continue
                key = event.get("event_id") or at.isoformat()
                call.turns.setdefault(key, {**event, "_at": at})
            elif call.end is None:
                call.end, call.status = at, event["status"]
                raw = (
                    Decimal(str(event["duration_s"])) if "duration_s" in event else _seconds(at - call.start)
                )
                call.seconds = raw.quantize(Decimal("0.001"), rounding=ROUND_HALF_EVEN)

    def metrics(self, start: datetime, end: datetime, agent_id: str) -> dict:
        calls = [c for c in self.calls.values() if c.agent_id == agent_id]
        ended = [c for c in calls if c.end is not None and start <= c.end < end]
        turns = [t for c in calls for t in c.turns.values() if start <= t["_at"] < end]
        latencies = [round(t["voice_latency_ms"]) for t in turns]
        confidences = [t["transcription_confidence"] for t in turns if "transcription_confidence" in t]
        seconds = sum((c.seconds for c in ended), Decimal(0))
        return {
            "calls_ended": len(ended),
            "calls_started": sum(start <= c.start < end for c in calls),
            "active_calls": sum(c.end is None for c in calls),
            "total_call_duration_s": seconds,
            "avg_call_duration_s": seconds / len(ended) if ended else None,
            "voice_minutes": float(seconds / 60),
            "voice_cost_usd": sum((cost(c.seconds, self.price) for c in ended), Decimal(0)),
            "turns": len(turns),
            "avg_voice_latency_ms": sum(latencies) / len(latencies) if latencies else None,
            "p50_voice_latency_ms": _quantile(latencies, 0.5),
            "p95_voice_latency_ms": _quantile(latencies, 0.95),
            "transcription_accuracy": sum(confidences) / len(confidences) if confidences else None,
            "interruption_rate": sum(t["interrupted"] for t in turns) / len(turns) if turns else None,
        }


def _seconds(delta) -> Decimal:
    return Decimal(delta.days * 86400 + delta.seconds) + Decimal(delta.microseconds) / 1_000_000


def _quantile(values: list[int], q: float) -> int | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]
