"""Thin Celery wrappers around the alert services."""

from celery import shared_task

from .services import alerts_evaluate, notification_send, notifications_sweep


@shared_task(name="alerts.evaluate")
def evaluate_alerts() -> int:
    return len(alerts_evaluate())


# The retry budget is the notification's own (``attempts``), not Celery's count,
# because the sweep may queue a notification again in a fresh task.
@shared_task(bind=True, name="alerts.deliver", max_retries=None, acks_late=True)
def deliver_notification(self, notification_id: int) -> bool:
    attempt = notification_send(notification_id=notification_id)
    if attempt.retry_in is not None:
        raise self.retry(countdown=attempt.retry_in)
    return attempt.sent


@shared_task(name="alerts.sweep")
def sweep_notifications() -> int:
    return notifications_sweep()
