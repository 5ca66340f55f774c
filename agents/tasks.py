"""Periodic work for agents, as thin Celery wrappers around services."""

from celery import shared_task

from .retention import retention_apply

# A pass stops after this long and the next one goes on: an hourly run never
# overlaps the next, even with a large backlog after retention is first enabled.
RETENTION_PASS_SECONDS = 50 * 60


@shared_task(name="agents.apply_retention")
def apply_retention() -> int:
    return retention_apply(max_seconds=RETENTION_PASS_SECONDS).traces
