"""Periodic work for voice calls, as thin Celery wrappers around services."""

from celery import shared_task

from .services import voice_calls_close_stale


@shared_task(name="voice.calls_close_stale")
def voice_calls_close_stale_task() -> int:
    """Close calls nobody has heard from for VOICE_STALE_CALL_MINUTES (scheduled every minute)."""
    return voice_calls_close_stale()
