"""Retention of received spans: they go with the traces derived from them, and
spans of traces whose root never arrived go once last received before the
horizon; compacted spans (``otel.compaction``) go with their received trace
and count as the spans they hold. Registered with ingestion's retention (``agents.retention``) from
``OtelConfig.ready``."""

from datetime import datetime

from django.db import transaction
from django.db.models import Exists, OuterRef, Q, Sum, Value
from django.db.models.functions import Concat

from accounts.models import Organisation
from agents.models import TraceKey
from audit.services import Actor, audit_record
from thinnest_analytics.db import MAX_PARAMS, delete_in

from .mapping import public_id_of
from .models import CompactedSpans, ReceivedSpan, ReceivedTrace

OTEL_PREFIX = public_id_of("")


def _otel_ids(public_ids: list[str]) -> list[str]:
    return sorted(p[len(OTEL_PREFIX) :] for p in public_ids if p.startswith(OTEL_PREFIX))


def _compacted_span_count(organisation: Organisation, trace_ids: list[str]) -> int:
    """Spans held in the compacted form by these received traces."""
    count = 0
    for start in range(0, len(trace_ids), MAX_PARAMS // 2):
        count += (
            ReceivedTrace.objects.filter(
                organisation=organisation,
                trace_id__in=trace_ids[start : start + MAX_PARAMS // 2],
                compacted=True,
            ).aggregate(n=Sum("span_count"))["n"]
            or 0
        )
    return count


class ReceivedSpans:
    """``agents.retention.TraceRowKeeper`` for received OpenTelemetry spans."""

    def lock(self, *, organisation: Organisation, public_ids: list[str]) -> None:
        list(
            ReceivedTrace.objects.select_for_update()
            .filter(organisation=organisation, trace_id__in=_otel_ids(public_ids))
            .order_by("trace_id")
            .values_list("pk")
        )

    def delete(self, *, organisation: Organisation, public_ids: list[str]) -> int:
        otel_ids = _otel_ids(public_ids)
        spans = _compacted_span_count(organisation, otel_ids)
        spans += delete_in(ReceivedSpan, "trace_id", otel_ids, organisation=organisation)
        delete_in(CompactedSpans, "trace_id", otel_ids, organisation=organisation)
        delete_in(ReceivedTrace, "trace_id", otel_ids, organisation=organisation)
        return spans

    def expire_unfinished(
        self, *, organisation: Organisation, horizon: datetime, batch_size: int
    ) -> tuple[int, int]:
        """Spans of OpenTelemetry traces whose root never arrived (so no trace was
        derived from them), last received before the horizon. Returns the number
        of such traces and of their spans deleted."""
        with transaction.atomic():
            stale = list(
                ReceivedTrace.objects.select_for_update()
                .filter(organisation=organisation, derived=False, last_received_at__lt=horizon)
                .order_by("trace_id")
                .values_list("trace_id", flat=True)[:batch_size]
            )
            if not stale:
                return 0, 0
            spans = _compacted_span_count(organisation, stale)
            spans += delete_in(ReceivedSpan, "trace_id", stale, organisation=organisation)
            delete_in(CompactedSpans, "trace_id", stale, organisation=organisation)
            delete_in(ReceivedTrace, "trace_id", stale, organisation=organisation)
            audit_record(
                organisation=organisation,
                actor=Actor.system("retention"),
                action="retention.delete",
                resource_type="otel_trace",
                details={
                    "created_before": horizon.isoformat(),
                    "unfinished_traces": len(stale),
                    "spans": spans,
                },
            )
            return len(stale), spans

    def pending(self, *, horizon: datetime) -> int:
        """Spans a retention pass at ``horizon`` deletes: those of expiring traces
        and of unfinished OpenTelemetry traces last received before it. A
        trace's key carries its ``created_at`` and outlives a dropped day's
        partitions until retention deletes it, so the keys name the expiring
        traces, those of days already dropped included."""
        expiring_trace = TraceKey.objects.filter(
            organisation=OuterRef("organisation"),
            public_id=Concat(Value(OTEL_PREFIX), OuterRef("trace_id")),
            created_at__lt=horizon,
        )
        expiring = ReceivedTrace.objects.filter(
            Q(derived=False, last_received_at__lt=horizon) | Q(Exists(expiring_trace)),
            organisation=OuterRef("organisation"),
            trace_id=OuterRef("trace_id"),
        )
        compacted = ReceivedTrace.objects.filter(
            Q(derived=False, last_received_at__lt=horizon) | Q(Exists(expiring_trace)),
            compacted=True,
        ).aggregate(n=Sum("span_count"))["n"]
        return ReceivedSpan.objects.filter(Exists(expiring)).count() + (compacted or 0)


RECEIVED_SPANS = ReceivedSpans()
