"""Rebuilding rollups from raw rows, set-based: one GROUP BY per fact per day."""

from datetime import UTC, datetime, timedelta

from django.db import connection, transaction

from metrics.windows import retention_horizon

from .models import DailyRollup, HourlyRollup
from .rollups import (
    CONVERSATION_FACTS,
    SCORE_FACTS,
    TRACE_FACTS,
    VOICE_CALL_FACTS,
    Counted,
    RollupDeltas,
    day_of,
    raw_model,
)


def _rebuild_day(day: datetime, organisation_id: int | None) -> None:
    end = day + timedelta(days=1)
    scope = {} if organisation_id is None else {"organisation_id": organisation_id}
    HourlyRollup.objects.filter(bucket_start__gte=day, bucket_start__lt=end, **scope).delete()
    DailyRollup.objects.filter(bucket_start=day, **scope).delete()

    Trace, Session, Score = raw_model("agents.Trace"), raw_model("agents.Session"), raw_model("agents.Score")
    deltas = RollupDeltas()
    deltas.count(
        Counted(TRACE_FACTS, Trace.objects.filter(created_at__gte=day, created_at__lt=end, **scope)),
        Counted(CONVERSATION_FACTS, Session.objects.filter(started_at__gte=day, started_at__lt=end, **scope)),
        Counted(
            SCORE_FACTS, Score.objects.filter(trace_created_at__gte=day, trace_created_at__lt=end, **scope)
        ),
    )
    for hook in REBUILD_HOOKS:
        hook(deltas, day, end, scope)
    deltas.apply()


def _voice_calls(deltas: RollupDeltas, day: datetime, end: datetime, scope: dict) -> None:
    """Calls ended in the day: their count, seconds and cost in the hour they ended."""
    VoiceCall = raw_model("voice.VoiceCall")
    deltas.count(
        Counted(VOICE_CALL_FACTS, VoiceCall.objects.filter(ended_at__gte=day, ended_at__lt=end, **scope))
    )


def _ceil_day(at: datetime) -> datetime:
    day = day_of(at.astimezone(UTC))
    return day if day == at else day + timedelta(days=1)


# Other apps add their facts to a rebuilt day here (billing its usage events, from
# its AppConfig.ready), so metrics never imports them.
REBUILD_HOOKS: list = [_voice_calls]


def rollups_rebuild(
    *, start: datetime, end: datetime, organisation_id: int | None = None, progress=None
) -> int:
    """Recompute rollups from raw rows for the UTC days covering ``[start, end)``,
    one transaction per day. Writers wait while a day is rebuilt, so counts stay
    exact under concurrent ingestion. Days that begin before the retention
    horizon are left alone: their raw rows may be gone, their rollups are what
    remains. Returns the number of days rebuilt."""
    horizon = retention_horizon()
    if horizon is not None:
        start = max(start, _ceil_day(horizon))
    first, last = day_of(start.astimezone(UTC)), day_of(end.astimezone(UTC))
    if last < end:
        last += timedelta(days=1)
    days = []
    at = first
    while at < last:
        days.append(at)
        at += timedelta(days=1)
    for day in progress(days) if progress else days:
        with transaction.atomic():
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute(
                        f"LOCK TABLE {HourlyRollup._meta.db_table}, {DailyRollup._meta.db_table} IN SHARE ROW EXCLUSIVE MODE"
                    )
            _rebuild_day(day, organisation_id)
    return len(days)
