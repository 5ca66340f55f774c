"""Conversations as ingestion keeps them: locking them and keeping their totals."""

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db.models import Count, Max, Min, OuterRef, Q, Subquery, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from thinnest_analytics.db import insert_ignore_conflicts, update_by_pk

from .models import Session, Trace


@dataclass
class LockedSession:
    """The columns of a locked conversation that ingestion reads and updates."""

    pk: int
    public_id: str
    agent_id: int
    channel: str
    deployment_version: str
    started_at: datetime | None
    first_trace_at: datetime | None
    last_activity_at: datetime | None
    trace_count: int
    error_count: int
    input_tokens: int
    output_tokens: int
    latency_count: int
    latency_sum_ms: int
    llm_cost_usd: Decimal
    unpriced_traces: int


LOCKED_SESSION_FIELDS = [f.name for f in fields(LockedSession)]


def sessions_lock(*, organisation, wanted: dict[str, tuple[int, str]]) -> dict[str, LockedSession]:
    """Lock the conversations ``wanted`` (public id → (agent pk, channel)),
    creating missing ones empty. Locks are taken in id order so concurrent
    batches never deadlock."""
    now = timezone.now()
    insert_ignore_conflicts(
        Session,
        (
            "organisation",
            "agent",
            "public_id",
            "channel",
            "deployment_version",
            "trace_count",
            "error_count",
            "created_at",
        ),
        [
            (organisation.pk, agent_pk, sid, channel, "", 0, 0, now)
            for sid, (agent_pk, channel) in sorted(wanted.items())
        ],
        conflict_fields=("organisation", "public_id"),
        returning=("id",),
    )
    locked = (
        Session.objects.select_for_update()
        .filter(organisation=organisation, public_id__in=list(wanted))
        .order_by("id")
        .values_list(*LOCKED_SESSION_FIELDS)
    )
    return {row[1]: LockedSession(*row) for row in locked}


# The conversation columns that ingestion keeps current.
SESSION_FACTS = (
    "first_trace_at",
    "started_at",
    "deployment_version",
    "last_activity_at",
    "trace_count",
    "error_count",
    "input_tokens",
    "output_tokens",
    "latency_count",
    "latency_sum_ms",
    "llm_cost_usd",
    "unpriced_traces",
)


def sessions_fold(sessions: dict[str, LockedSession], new_rows: Sequence[Any]) -> list[LockedSession]:
    """Fold newly stored traces (rows with session, created_at, status, token,
    latency and cost attributes) into their locked conversations, in memory;
    returns the changed conversations."""
    by_session: dict[int, list[Any]] = defaultdict(list)
    for row in new_rows:
        by_session[row.session].append(row)
    changed = []
    by_pk = {s.pk: s for s in sessions.values()}
    for session_pk, rows in by_session.items():
        session = by_pk[session_pk]
        earliest = min(rows, key=lambda r: r.created_at)
        if session.first_trace_at is None or earliest.created_at < session.first_trace_at:
            session.first_trace_at = earliest.created_at
            if session.started_at is None or earliest.created_at < session.started_at:
                session.started_at = earliest.created_at
                session.deployment_version = earliest.deployment_version
        latest = max(r.created_at for r in rows)
        if session.last_activity_at is None or latest > session.last_activity_at:
            session.last_activity_at = latest
        session.trace_count += len(rows)
        session.error_count += sum(1 for r in rows if r.status == "error")
        session.input_tokens += sum(r.input_tokens for r in rows)
        session.output_tokens += sum(r.output_tokens for r in rows)
        latencies = [r.latency_ms for r in rows if r.latency_ms is not None]
        session.latency_count += len(latencies)
        session.latency_sum_ms += sum(latencies)
        session.llm_cost_usd += sum((r.cost_usd for r in rows if r.cost_usd is not None), Decimal(0))
        session.unpriced_traces += sum(1 for r in rows if r.cost_usd is None)
        changed.append(session)
    return changed


# Sums of a conversation's traces, named as on Session.
TRACE_SUMS = (
    "input_tokens",
    "output_tokens",
    "latency_count",
    "latency_sum_ms",
    "llm_cost_usd",
    "unpriced_traces",
)
EMPTY_FACTS = {"traces": 0, "errors": 0, "first": None, "last": None} | dict.fromkeys(TRACE_SUMS, 0)


def sessions_refresh(*, sessions: Sequence[LockedSession]) -> None:
    """Recount locked conversations from their stored traces, after traces moved
    into or out of them or changed (a trace derived again from more of its spans):
    first and last trace, trace and error counts, token, latency and cost sums,
    and the version of the earliest trace. A conversation that a call started before its first trace keeps that
    start."""
    pks = [s.pk for s in sessions]
    facts = {
        row["session_id"]: row
        for row in Trace.objects.filter(session_id__in=pks)
        .values("session_id")
        .annotate(
            traces=Count("id"),
            errors=Count("id", filter=Q(status="error")),
            first=Min("created_at"),
            last=Max("created_at"),
            input_tokens=Coalesce(Sum("input_tokens"), 0),
            output_tokens=Coalesce(Sum("output_tokens"), 0),
            latency_count=Count("latency_ms"),
            latency_sum_ms=Coalesce(Sum("latency_ms"), 0),
            llm_cost_usd=Coalesce(Sum("cost_usd"), Decimal(0)),
            unpriced_traces=Count("id", filter=Q(cost_usd__isnull=True)),
        )
        .order_by()
    }
    earliest = Trace.objects.filter(session=OuterRef("pk")).order_by("created_at", "id")
    versions = dict(
        Session.objects.filter(pk__in=pks)
        .annotate(version=Subquery(earliest.values("deployment_version")[:1]))
        .values_list("pk", "version")
    )
    for session in sessions:
        row = facts.get(session.pk, EMPTY_FACTS)
        call_start = session.started_at
        if session.started_at is not None and session.first_trace_at is not None:
            call_start = session.started_at if session.started_at < session.first_trace_at else None
        session.first_trace_at, session.last_activity_at = row["first"], row["last"]
        session.trace_count, session.error_count = row["traces"], row["errors"]
        for name in TRACE_SUMS:
            setattr(session, name, row[name])
        if row["first"] is not None and (call_start is None or row["first"] < call_start):
            session.started_at, session.deployment_version = row["first"], versions.get(session.pk) or ""
        else:
            session.started_at = call_start
    update_by_pk(Session, SESSION_FACTS, [(s.pk, *(getattr(s, f) for f in SESSION_FACTS)) for s in sessions])


def sessions_costs_shift(*, changes: dict[int, tuple[Decimal, int]]) -> None:
    """Add LLM cost (USD) and unpriced-trace deltas to conversations, by primary
    key, after their traces were priced again. Rows are locked in id order, as
    ingestion locks them."""
    changes = {pk: change for pk, change in changes.items() if any(change)}
    if not changes:
        return
    current = (
        Session.objects.select_for_update()
        .filter(pk__in=list(changes))
        .order_by("id")
        .values_list("pk", "llm_cost_usd", "unpriced_traces")
    )
    update_by_pk(
        Session,
        ["llm_cost_usd", "unpriced_traces"],
        [(pk, cost + changes[pk][0], unpriced + changes[pk][1]) for pk, cost, unpriced in current],
    )
