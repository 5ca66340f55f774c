"""Thin Celery wrappers around the alert services."""

from celery import shared_task

from .services import alerts_evaluate, notification_send

RETRY_DELAYS = [10, 30, 90, 270, 810]  # seconds; exponential backoff


@shared_task(name="alerts.evaluate")
def evaluate_alerts() -> int:
    return len(alerts_evaluate())


@shared_task(bind=True, name="alerts.deliver", max_retries=len(RETRY_DELAYS), acks_late=True)
def deliver_notification(self, notification_id: int) -> bool:
    if notification_send(notification_id=notification_id):
        return True
    if self.request.retries < len(RETRY_DELAYS):
        raise self.retry(countdown=RETRY_DELAYS[self.request.retries])
    return False
