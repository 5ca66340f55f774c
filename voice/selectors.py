"""Voice metrics: a window's calls and turns, and the live frame of an agent.

Call facts (calls ended, their duration and cost) come from ``collect()``, the
same rollups and raw edges as the summary's ``voice_minutes``. Turn facts
(voice latency, interruptions, transcription confidence) are aggregated from
the window's turns in the database: one pass over the ``(agent, at)`` index,
the latency percentiles from a sketch of the turns (within 1 %).
"""

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.db.models import Avg, Count, Q, Sum
from django.db.models.functions import TruncMinute

from agents.models import Agent
from metrics.rollups import LatencyBucket
from metrics.selectors import Totals, collect, metrics
from metrics.sketch import quantile
from metrics.windows import Window

from .models import CallStatus, VoiceCall, VoiceTurn

LIVE_TURNS = timedelta(minutes=5)
LIVE_HISTORY_MINUTES = 10


def _ratio(numerator, denominator) -> float | None:
    return None if not denominator else numerator / denominator


def _turn_facts(turns) -> dict:
    """Counts and sums of some turns (empty turns give counts of 0 and None averages)."""
    return turns.aggregate(
        turns=Count("id"),
        latency_sum_ms=Sum("voice_latency_ms"),
        interrupted=Count("id", filter=Q(interrupted=True)),
        confidence=Avg("transcription_confidence"),
    )


def voice_metrics(*, organisation, window: Window, agent: Agent | None = None, now: datetime) -> dict:
    """Voice metrics of an agent (or the organisation) for ``window`` ``[from, to)``.

    Active Calls: calls not ended at ``now``. Call Duration: calls ended in the
    window, average and total, in seconds (``voice_minutes`` is the total in
    minutes, as in the summary). Voice Latency (ms, speech end to response
    start): mean, p50, p95 of turns in the window. Transcription Accuracy: mean
    confidence (0..1) of those turns. Interruption Rate: share of them the
    caller interrupted. Averages and rates of an empty window are None."""
    scope = (
        {"organisation": organisation} if agent is None else {"organisation": organisation, "agent": agent}
    )
    totals = collect(organisation=organisation, window=window, agent=agent).get(None, Totals())
    summary = metrics(totals)
    calls = VoiceCall.objects.filter(**scope)
    ended = calls.filter(ended_at__gte=window.start, ended_at__lt=window.end)
    by_status = dict(ended.values_list("status").annotate(n=Count("id")).order_by())
    turns = VoiceTurn.objects.filter(**scope, at__gte=window.start, at__lt=window.end)
    facts = _turn_facts(turns)
    sketch = {
        row["b"]: row["n"]
        for row in turns.annotate(b=LatencyBucket("voice_latency_ms"))
        .values("b")
        .annotate(n=Count("id"))
        .order_by()
    }
    p50, p95 = quantile(sketch, 0.5), quantile(sketch, 0.95)
    return {
        "period": window.label,
        "from": window.start,
        "to": window.end,
        "agent_id": agent.public_id if agent else None,
        "active_calls": calls.filter(ended_at__isnull=True).count(),
        "calls_started": calls.filter(started_at__gte=window.start, started_at__lt=window.end).count(),
        "calls_ended": summary["voice_calls"],
        "calls_by_status": {s: by_status.get(s, 0) for s in CallStatus.values if s != CallStatus.ACTIVE},
        "total_call_duration_s": totals.voice_seconds,
        "avg_call_duration_s": _ratio(totals.voice_seconds, totals.voice_calls_ended),
        "voice_minutes": summary["voice_minutes"],
        "voice_cost_usd": summary["voice_cost_usd"],
        "turns": facts["turns"],
        "avg_voice_latency_ms": _ratio(facts["latency_sum_ms"] or 0, facts["turns"]),
        "p50_voice_latency_ms": round(p50, 3) if p50 is not None else None,
        "p95_voice_latency_ms": round(p95, 3) if p95 is not None else None,
        "transcription_accuracy": facts["confidence"],
        "interruption_rate": _ratio(facts["interrupted"], facts["turns"]),
        "interrupted_turns": facts["interrupted"],
    }


def _local_midnight(now: datetime, zone: str) -> datetime:
    try:
        tz = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        tz = UTC
    return datetime.combine(now.astimezone(tz).date(), time.min, tzinfo=tz).astimezone(UTC)


def voice_live(*, agent: Agent, now: datetime) -> dict:
    """The live frame of an agent's voice traffic at ``now``.

    ``active_calls``: calls not ended. Over turns of the last 5 minutes:
    ``avg_latency_ms``, ``interruption_rate``, ``transcription_accuracy`` (None
    without turns). Since midnight in the organisation's time zone:
    ``calls_today`` (calls started) and ``avg_call_duration_s`` (calls ended;
    None without). ``latency_history``: mean latency and turns per minute over
    the last 10 minutes, oldest first, the current minute last."""
    midnight = _local_midnight(now, agent.organisation.timezone)
    calls = VoiceCall.objects.filter(agent=agent).filter(
        Q(ended_at__isnull=True) | Q(started_at__gte=midnight) | Q(ended_at__gte=midnight)
    )
    ended_today = Q(ended_at__gte=midnight)
    call_facts = calls.aggregate(
        active=Count("id", filter=Q(ended_at__isnull=True)),
        today=Count("id", filter=Q(started_at__gte=midnight)),
        ended=Count("id", filter=ended_today),
        seconds=Sum("duration_s", filter=ended_today),
    )
    recent = _turn_facts(VoiceTurn.objects.filter(agent=agent, at__gte=now - LIVE_TURNS))
    first_minute = now.replace(second=0, microsecond=0) - timedelta(minutes=LIVE_HISTORY_MINUTES - 1)
    per_minute = {
        row["minute"].astimezone(UTC): row
        for row in VoiceTurn.objects.filter(agent=agent, at__gte=first_minute)
        .annotate(minute=TruncMinute("at", tzinfo=UTC))
        .values("minute")
        .annotate(turns=Count("id"), latency=Avg("voice_latency_ms"))
        .order_by()
    }
    history = []
    for n in range(LIVE_HISTORY_MINUTES):
        minute = first_minute + timedelta(minutes=n)
        row = per_minute.get(minute)
        history.append(
            {
                "minute": minute,
                "turns": row["turns"] if row else 0,
                "avg_latency_ms": row["latency"] if row else None,
            }
        )
    return {
        "agent_id": agent.public_id,
        "active_calls": call_facts["active"],
        "avg_latency_ms": _ratio(recent["latency_sum_ms"] or 0, recent["turns"]),
        "avg_call_duration_s": _ratio(float(call_facts["seconds"] or 0), call_facts["ended"]),
        "interruption_rate": _ratio(recent["interrupted"], recent["turns"]),
        "transcription_accuracy": recent["confidence"],
        "calls_today": call_facts["today"],
        "latency_history": history,
        "at": now,
    }
