"""Periodic work for agents, as thin Celery wrappers around services."""

from celery import shared_task

from .voice_services import voice_calls_close_stale


@shared_task(name="agents.voice_calls_close_stale")
def voice_calls_close_stale_task() -> int:
    """Close calls nobody has heard from for VOICE_STALE_CALL_MINUTES (scheduled every minute)."""
    return voice_calls_close_stale()
