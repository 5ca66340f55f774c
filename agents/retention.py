"""Retention: raw traces older than ``RETENTION_DAYS`` are deleted, with their
steps, scores and the rows other apps keep for them (OpenTelemetry's received
spans, through ``TRACE_ROW_KEEPERS``), and the conversations they leave empty.
Rollups are never touched, so the aggregates of old windows stay (the metrics
engine reads windows older than the horizon from rollups, in whole hours)."""

import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Protocol

from django.db import transaction
from django.db.models import Exists, OuterRef

from accounts.models import Organisation
from audit.services import Actor, audit_record
from metrics.windows import retention_horizon
from thinnest_analytics.db import delete_in

from .models import Score, Session, Trace, TraceKey, TraceStep

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


@dataclass
class Expired:
    """Rows deleted (or, for a dry run, that would be)."""

    traces: int = 0
    steps: int = 0
    scores: int = 0
    spans: int = 0
    conversations: int = 0

    def add(self, other: "Expired") -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


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
        expired = Expired(
            steps=delete_in(TraceStep, "trace_id", trace_ids),
            scores=delete_in(Score, "trace_id", trace_ids),
            traces=delete_in(Trace, "id", trace_ids),
            spans=sum(
                keeper.delete(organisation=organisation, public_ids=public_ids)
                for keeper in TRACE_ROW_KEEPERS
            ),
        )
        delete_in(TraceKey, "public_id", public_ids, organisation=organisation)
        expired.conversations = delete_in(Session, "id", _empty(session_ids))
        audit_record(
            organisation=organisation,
            actor=Actor.system("retention"),
            action="retention.delete",
            resource_type="trace",
            details={"created_before": horizon.isoformat(), **expired.as_dict()},
        )
        return expired


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
    ago, organisation by organisation, oldest first, ``batch_size`` traces per
    transaction; with them their steps, scores and OpenTelemetry spans, and the
    conversations left with no traces and nothing else attached. Rollups stay.
    ``progress`` is called with the number of traces of each batch; after
    ``max_seconds`` the pass stops between batches (the next one goes on)."""
    horizon = retention_horizon(days=days, now=now)
    total = Expired()
    if horizon is None:
        return total
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    for organisation in Organisation.objects.order_by("pk"):
        while True:
            if deadline is not None and time.monotonic() > deadline:
                return total
            expired = _expire_batch(organisation, horizon, batch_size)
            total.add(expired)
            if progress is not None and expired.traces:
                progress(expired.traces)
            if expired.traces < batch_size:
                break
        for keeper in TRACE_ROW_KEEPERS:
            while True:
                groups, rows = keeper.expire_unfinished(
                    organisation=organisation, horizon=horizon, batch_size=batch_size
                )
                total.spans += rows
                if groups < batch_size:
                    break
    return total
