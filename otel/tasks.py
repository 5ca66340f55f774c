"""Periodic work for received OpenTelemetry spans, as thin Celery wrappers around services."""

from datetime import timedelta

from celery import shared_task
from django.conf import settings

from .compaction import spans_compact

# A pass stops after this long and the next one goes on, so passes never overlap.
COMPACTION_PASS_SECONDS = 4 * 60


@shared_task(name="otel.compact_spans")
def compact_spans() -> int:
    """Compact the received spans of traces settled for OTEL_SPAN_SETTLE_SECONDS."""
    return spans_compact(
        older_than=timedelta(seconds=settings.OTEL_SPAN_SETTLE_SECONDS), max_seconds=COMPACTION_PASS_SECONDS
    ).traces
