"""Retention: raw traces older than ``RETENTION_DAYS`` are deleted, with their
steps, scores and the rows other apps keep for them (OpenTelemetry's received
spans, through ``TRACE_ROW_KEEPERS``), and the conversations they leave empty.
Rollups are never touched, so the aggregates of old windows stay (the metrics
engine reads windows older than the horizon from rollups, in whole hours).

On PostgreSQL, where the raw tables are partitioned by day
(``agents.partitions``), every day wholly before the horizon goes whole: its
partitions are dropped, then the keys of its traces, the rows keepers keep for
them and the conversations left empty are deleted in batches. Those are found
by time (anything older than the oldest day still partitioned), not by
remembering the day, so a pass stopped after a drop finishes on the next one.
Only the day the horizon falls in is deleted row by row, as everywhere on
SQLite."""

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import date, datetime
from typing import Protocol

from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q

from accounts.models import Organisation
from audit.services import Actor, audit_record
from metrics.windows import retention_horizon
from thinnest_analytics.db import delete_in

from .models import Score, Session, Trace, TraceKey, TraceStep
from .partitions import (
    DAY,
    SCORES,
    STEPS,
    TRACES,
    day_of,
    day_start,
    partition_days,
    partition_name,
    partitioned,
    partitions_drop,
)

BATCH_SIZE = 5_000


class TraceRowKeeper(Protocol):
    """Rows an app above ingestion keeps for traces (the OpenTelemetry app's
    received spans). It registers itself in ``TRACE_ROW_KEEPERS`` from its
    ``AppConfig.ready``, so retention deletes those rows without importing it.
    Counts it returns are of its rows (reported as ``spans``)."""

    def lock(self, *, organisation: Organisation, public_ids: list[str]) -> None:
        """Lock the rows of these traces before their conversations are locked
        (ingestion's lock order)."""

    def delete(self, *, organisation: Organisation, public_ids: list[str]) -> int:
        """Delete the rows of these expiring traces; returns how many."""

    def expire_unfinished(
        self, *, organisation: Organisation, horizon: datetime, batch_size: int
    ) -> tuple[int, int]:
        """Delete up to ``batch_size`` groups of rows no trace was derived from,
        last received before ``horizon``; returns the groups and the rows
        deleted (retention calls again while the groups fill a batch)."""

    def pending(self, *, horizon: datetime) -> int:
        """Rows a retention pass at ``horizon`` deletes."""


TRACE_ROW_KEEPERS: list[TraceRowKeeper] = []


ROW_COUNTS = ("traces", "steps", "scores", "spans", "conversations")


@dataclass
class Expired:
    """Rows deleted (or, for a dry run, that would be)."""

    traces: int = 0
    steps: int = 0
    scores: int = 0
    spans: int = 0
    conversations: int = 0
    # Days whose partitions were dropped, and the traces among ``traces`` that
    # went with them (the others were deleted row by row).
    days_dropped: int = 0
    traces_dropped: int = 0

    def add(self, other: "Expired") -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, int]:
        """The rows counted, as audit entries state them."""
        return {name: getattr(self, name) for name in ROW_COUNTS}


def _empty(session_ids: list[int]) -> list[int]:
    """Of these conversations, those with no traces and nothing else attached
    (a voice call or any other row that refers to a conversation)."""
    empty = Session.objects.filter(pk__in=session_ids).exclude(
        Exists(Trace.objects.filter(session_id=OuterRef("pk")))
    )
    for relation in Session._meta.related_objects:
        if relation.related_model is not Trace:
            empty = empty.exclude(
                Exists(relation.related_model._base_manager.filter(**{relation.field.name: OuterRef("pk")}))
            )
    return list(empty.values_list("pk", flat=True))


RETENTION_ACTOR = Actor.system("retention")


def _audit(organisation: Organisation, expired: Expired, *, created_before: datetime, **more) -> None:
    audit_record(
        organisation=organisation,
        actor=RETENTION_ACTOR,
        action="retention.delete",
        resource_type="trace",
        details={"created_before": created_before.isoformat(), **more, **expired.as_dict()},
    )


def _expire_batch(organisation: Organisation, horizon: datetime, batch_size: int) -> Expired:
    """Delete the organisation's oldest ``batch_size`` expired traces in one
    transaction. Locks follow ingestion's order (received traces, then
    conversations in id order), so a late span or trace never deadlocks with it."""
    with transaction.atomic():
        batch = list(
            Trace.objects.filter(organisation=organisation, created_at__lt=horizon)
            .order_by("created_at")
            .values_list("id", "public_id", "session_id")[:batch_size]
        )
        if not batch:
            return Expired()
        trace_ids = [pk for pk, _, _ in batch]
        public_ids = [p for _, p, _ in batch]
        for keeper in TRACE_ROW_KEEPERS:
            keeper.lock(organisation=organisation, public_ids=public_ids)
        session_ids = sorted({s for _, _, s in batch})
        list(Session.objects.select_for_update().filter(pk__in=session_ids).order_by("id").values_list("pk"))
        # A trace's steps and scores carry its ``created_at``: the bound lets
        # PostgreSQL look in the partitions before the horizon only.
        expired = Expired(
            steps=delete_in(TraceStep, "trace_id", trace_ids, trace_created_at__lt=horizon),
            scores=delete_in(Score, "trace_id", trace_ids, trace_created_at__lt=horizon),
            traces=delete_in(Trace, "id", trace_ids, created_at__lt=horizon),
            spans=sum(
                keeper.delete(organisation=organisation, public_ids=public_ids)
                for keeper in TRACE_ROW_KEEPERS
            ),
        )
        delete_in(TraceKey, "public_id", public_ids, organisation=organisation)
        expired.conversations = delete_in(Session, "id", _empty(session_ids))
        _audit(organisation, expired, created_before=horizon)
        return expired


# --- Whole days (partitioned PostgreSQL) ------------------------------------------


def _day_counts(day: date) -> dict[int, Expired] | None:
    """Traces, steps and scores per organisation in the day's partitions; None
    once its traces partition is gone (an earlier pass counted the day and was
    stopped while dropping it)."""
    traces, steps, scores = (partition_name(spec.table, day) for spec in (TRACES, STEPS, SCORES))
    counts: dict[int, Expired] = defaultdict(Expired)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT to_regclass(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL",
            [traces, steps, scores],
        )
        has_traces, has_steps, has_scores = cursor.fetchone()
        if not has_traces:
            return None
        queries = [("traces", f"SELECT organisation_id, count(*) FROM {traces} GROUP BY 1")]
        if has_steps:  # steps carry no organisation: their trace, in the same day, names it
            queries.append(
                (
                    "steps",
                    f"SELECT t.organisation_id, count(*) FROM {steps} s JOIN {traces} t ON t.id = s.trace_id "
                    "GROUP BY 1",
                )
            )
        if has_scores:
            queries.append(("scores", f"SELECT organisation_id, count(*) FROM {scores} GROUP BY 1"))
        for name, sql in queries:
            cursor.execute(sql)
            for organisation_id, count in cursor.fetchall():
                setattr(counts[organisation_id], name, count)
    return counts


def _day_drop(day: date) -> Expired:
    """Drop one day's partitions. What they hold is counted and recorded in
    each organisation's audit log first (after the drop it cannot be counted):
    a pass stopped between the two records the day again on the next pass,
    never drops it unrecorded. Keys, keepers' rows and conversations are left
    to ``_forget_batch`` and ``_empty_conversations_batch``."""
    counts = _day_counts(day)
    expired = Expired(days_dropped=1)
    if counts:
        with transaction.atomic():
            organisations = Organisation.objects.in_bulk(list(counts))
            for organisation_id, of_organisation in counts.items():
                expired.add(of_organisation)
                if organisation_id in organisations:
                    _audit(
                        organisations[organisation_id],
                        of_organisation,
                        created_before=day_start(day + DAY),
                        day=day.isoformat(),
                        partitions_dropped=True,
                    )
    partitions_drop(day=day)
    expired.traces_dropped = expired.traces
    return expired


def _dropped_before(horizon: datetime) -> datetime:
    """Traces created before this instant were in days already dropped: no
    partition is left for them. The start of the day the horizon falls in, or
    of an older day whose drop is still to come."""
    edge = day_start(day_of(horizon))
    days = partition_days()
    return min(edge, day_start(days[0])) if days else edge


def _forget_batch(*, before: datetime, batch_size: int) -> tuple[int, Expired]:
    """Delete up to ``batch_size`` keys of dropped traces (created before
    ``before``), oldest first, and the rows keepers keep for those traces, in
    one transaction and in ``_expire_batch``'s lock order (keepers' rows, then
    keys). Returns the keys deleted and the keepers' rows (as ``spans``)."""
    with transaction.atomic():
        keys = list(
            TraceKey.objects.filter(created_at__lt=before)
            .order_by("created_at")
            .values_list("organisation_id", "public_id")[:batch_size]
        )
        if not keys:
            return 0, Expired()
        by_organisation: dict[int, list[str]] = defaultdict(list)
        for organisation_id, public_id in keys:
            by_organisation[organisation_id].append(public_id)
        # An organisation deleted since took its keepers' rows with it.
        organisations = Organisation.objects.in_bulk(list(by_organisation))
        for organisation_id in sorted(organisations):
            for keeper in TRACE_ROW_KEEPERS:
                keeper.lock(
                    organisation=organisations[organisation_id], public_ids=by_organisation[organisation_id]
                )
        with connection.cursor() as cursor:
            cursor.execute(
                "DELETE FROM agents_tracekey k USING unnest(%s::bigint[], %s::text[]) AS g(organisation_id, public_id) "
                "WHERE k.organisation_id = g.organisation_id AND k.public_id = g.public_id AND k.created_at < %s "
                "RETURNING k.organisation_id, k.public_id",
                [[o for o, _ in keys], [p for _, p in keys], before],
            )
            gone: dict[int, list[str]] = defaultdict(list)
            for organisation_id, public_id in cursor.fetchall():
                gone[organisation_id].append(public_id)
        expired = Expired()
        for organisation_id in sorted(gone.keys() & organisations.keys()):
            organisation = organisations[organisation_id]
            spans = sum(
                keeper.delete(organisation=organisation, public_ids=gone[organisation_id])
                for keeper in TRACE_ROW_KEEPERS
            )
            expired.spans += spans
            if spans:
                _audit(organisation, Expired(spans=spans), created_before=before)
        return len(keys), expired


def _empty_conversations_batch(
    *, organisation: Organisation, before: datetime, after: tuple[datetime, int] | None, batch_size: int
) -> tuple[tuple[datetime, int] | None, int]:
    """Of the organisation's next ``batch_size`` conversations that started
    before ``before`` (after ``after``, a (start, id) of the previous batch),
    delete those left with no traces and nothing attached. Returns where the
    next batch starts (None when this one was the last) and how many went."""
    # Active at ``before`` or later: it still has a trace (or a call) then.
    candidates = Session.objects.filter(organisation=organisation, started_at__lt=before).exclude(
        last_activity_at__gte=before
    )
    if after is not None:
        candidates = candidates.filter(Q(started_at__gt=after[0]) | Q(started_at=after[0], pk__gt=after[1]))
    batch = list(candidates.order_by("started_at", "pk").values_list("started_at", "pk")[:batch_size])
    if not batch:
        return None, 0
    deleted = 0
    empty = _empty([pk for _, pk in batch])
    if empty:
        with transaction.atomic():
            # Locked as ingestion locks them (id order), and judged again under
            # the lock: a late trace may have come meanwhile.
            locked = list(
                Session.objects.select_for_update()
                .filter(pk__in=empty)
                .order_by("id")
                .values_list("pk", flat=True)
            )
            deleted = delete_in(Session, "id", _empty(locked))
            if deleted:
                _audit(organisation, Expired(conversations=deleted), created_before=before)
    return (batch[-1] if len(batch) == batch_size else None), deleted


def _out_of_time(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() > deadline


def _days_drop(
    *,
    horizon: datetime,
    batch_size: int,
    progress: Callable[[int], None] | None,
    deadline: float | None,
) -> tuple[Expired, bool]:
    """Drop every day wholly before ``horizon``, oldest first, then delete the
    keys, keepers' rows and emptied conversations of every dropped day (this
    pass's or an earlier one's). Returns what went and whether it finished
    before ``deadline``."""
    total = Expired()
    for day in partition_days():
        if day_start(day + DAY) > horizon:
            break
        if _out_of_time(deadline):
            return total, False
        dropped = _day_drop(day)
        total.add(dropped)
        if progress is not None and dropped.traces:
            progress(dropped.traces)
    before = _dropped_before(horizon)
    while True:
        if _out_of_time(deadline):
            return total, False
        keys, expired = _forget_batch(before=before, batch_size=batch_size)
        total.add(expired)
        if keys < batch_size:
            break
    for organisation in Organisation.objects.order_by("pk"):
        after = None
        while True:
            if _out_of_time(deadline):
                return total, False
            after, deleted = _empty_conversations_batch(
                organisation=organisation, before=before, after=after, batch_size=batch_size
            )
            total.conversations += deleted
            if after is None:
                break
    return total, True


def traces_delete_in_batches(
    *,
    organisation: Organisation,
    before: datetime,
    batch_size: int = BATCH_SIZE,
    progress: Callable[[int], None] | None = None,
    deadline: float | None = None,
) -> tuple[Expired, bool]:
    """Delete the organisation's traces created before ``before`` row by row,
    oldest first, ``batch_size`` per transaction (``_expire_batch``): the day
    the horizon falls in, or everything on SQLite. ``progress`` gets each
    batch's traces. Returns what went and whether it finished before
    ``deadline`` (a ``time.monotonic()`` instant)."""
    total = Expired()
    while True:
        if _out_of_time(deadline):
            return total, False
        expired = _expire_batch(organisation, before, batch_size)
        total.add(expired)
        if progress is not None and expired.traces:
            progress(expired.traces)
        if expired.traces < batch_size:
            return total, True


def retention_pending(*, horizon: datetime) -> Expired:
    """What a retention pass at ``horizon`` would delete (conversations are
    counted only as they are deleted)."""
    return Expired(
        traces=Trace.objects.filter(created_at__lt=horizon).count(),
        steps=TraceStep.objects.filter(trace__created_at__lt=horizon).count(),
        scores=Score.objects.filter(trace_created_at__lt=horizon).count(),
        spans=sum(keeper.pending(horizon=horizon) for keeper in TRACE_ROW_KEEPERS),
    )


def retention_apply(
    *,
    days: int | None = None,
    now: datetime | None = None,
    batch_size: int = BATCH_SIZE,
    progress: Callable[[int], None] | None = None,
    max_seconds: float | None = None,
) -> Expired:
    """Delete raw traces created more than ``days`` (default ``RETENTION_DAYS``)
    ago, with their steps, scores and OpenTelemetry spans, and the
    conversations left with no traces and nothing else attached. Rollups stay.
    On partitioned PostgreSQL the days wholly before the horizon are dropped
    first (``_days_drop``); what is left before it (the day the horizon falls
    in, or everything on SQLite) is deleted organisation by organisation,
    oldest first, ``batch_size`` traces per transaction. ``progress`` is
    called with the number of traces of each dropped day and each batch; after
    ``max_seconds`` the pass stops between batches (the next one goes on)."""
    horizon = retention_horizon(days=days, now=now)
    total = Expired()
    if horizon is None:
        return total
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    if partitioned():
        dropped, finished = _days_drop(
            horizon=horizon, batch_size=batch_size, progress=progress, deadline=deadline
        )
        total.add(dropped)
        if not finished:
            return total
    for organisation in Organisation.objects.order_by("pk"):
        expired, finished = traces_delete_in_batches(
            organisation=organisation,
            before=horizon,
            batch_size=batch_size,
            progress=progress,
            deadline=deadline,
        )
        total.add(expired)
        if not finished:
            return total
        for keeper in TRACE_ROW_KEEPERS:
            while True:
                groups, rows = keeper.expire_unfinished(
                    organisation=organisation, horizon=horizon, batch_size=batch_size
                )
                total.spans += rows
                if groups < batch_size:
                    break
    return total
