"""Periodic work for agents, as thin Celery wrappers around services."""

from celery import shared_task
from django.utils import timezone

from .partitions import partitions_ahead
from .retention import retention_apply

# A pass stops after this long and the next day's goes on, so the worker is
# never held for hours, even with a large backlog after retention is first
# enabled (on PostgreSQL most of a backlog is whole days, dropped at once).
RETENTION_PASS_SECONDS = 50 * 60


@shared_task(name="agents.apply_retention")
def apply_retention() -> int:
    return retention_apply(max_seconds=RETENTION_PASS_SECONDS).traces


@shared_task(name="agents.create_partitions_ahead")
def create_partitions_ahead() -> int:
    return partitions_ahead(now=timezone.now())
