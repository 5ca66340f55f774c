"""Delivering a notification: claimed before it is sent, a stable delivery id,
a retry budget of its own, and a sweep that queues again what the broker lost."""

import json
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerUnavailable

from alerts import services
from alerts.models import Notification
from alerts.notify import DELIVERY_HEADER
from alerts.services import MAX_ATTEMPTS, alerts_evaluate, notification_send, notifications_sweep
from alerts.tasks import deliver_notification

from .conftest import at_once, postgres_only
from .test_alerts import Receiver, _conversations, _rule


@pytest.fixture
def receiver(loopback_receivers):
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def queued(monkeypatch) -> list[int]:
    """The notification ids handed to the broker."""
    ids: list[int] = []
    monkeypatch.setattr(deliver_notification, "delay", ids.append)
    return ids


def _fired(tenant, ingest, notify) -> Notification:
    _rule(tenant, notify=notify)
    _conversations(ingest, 20, failing=20)
    assert len(alerts_evaluate()) == 1
    return Notification.objects.get()


def test_every_attempt_carries_the_same_delivery_id(tenant, ingest, loopback_receivers):
    flaky = Receiver(fail_first=1)
    try:
        notification = _fired(tenant, ingest, [{"type": "webhook", "url": flaky.url}])
        deliver_notification.apply(args=[notification.pk])  # eager: the retry runs inline
        ids = {headers[DELIVERY_HEADER] for headers, _ in flaky.requests}
        assert ids == {str(notification.delivery_id)} and len(flaky.requests) == 2
        assert {json.loads(body)["delivery_id"] for _, body in flaky.requests} == ids
        notification.refresh_from_db()
        assert notification.status == "sent" and notification.attempts == 2
        assert notification.lease_until is None and notification.next_attempt_at is None
    finally:
        flaky.close()


def test_an_email_carries_the_delivery_id(tenant, ingest):
    notification = _fired(tenant, ingest, [{"type": "email", "to": "ops@example.com"}])
    assert notification_send(notification_id=notification.pk).sent
    [message] = mail.outbox
    assert message.extra_headers[DELIVERY_HEADER] == str(notification.delivery_id)
    assert str(notification.delivery_id) in message.body


def test_a_notification_being_sent_is_not_sent_again(tenant, ingest, receiver):
    notification = _fired(tenant, ingest, [{"type": "webhook", "url": receiver.url}])
    lease = timezone.now() + timedelta(seconds=30)
    Notification.objects.filter(pk=notification.pk).update(status="sending", lease_until=lease, attempts=1)
    attempt = notification_send(notification_id=notification.pk)
    assert attempt.sent is False and attempt.retry_in is None
    assert receiver.requests == []
    # The sender died: its lease runs out, and the next attempt sends it.
    Notification.objects.filter(pk=notification.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
    assert notification_send(notification_id=notification.pk).sent
    notification.refresh_from_db()
    assert notification.status == "sent" and notification.attempts == 2
    assert [h[DELIVERY_HEADER] for h, _ in receiver.requests] == [str(notification.delivery_id)]
    assert notification_send(notification_id=notification.pk).sent  # already sent: nothing happens
    assert len(receiver.requests) == 1


def test_the_retry_budget_is_the_notifications_own(tenant, ingest, loopback_receivers):
    dead = Receiver(fail_first=100)
    try:
        notification = _fired(tenant, ingest, [{"type": "webhook", "url": dead.url}])
        delays = []
        for _ in range(MAX_ATTEMPTS):
            delays.append(notification_send(notification_id=notification.pk).retry_in)
        assert delays == [*services.RETRY_DELAYS, None]
        notification.refresh_from_db()
        assert notification.status == "failed" and notification.attempts == MAX_ATTEMPTS
        assert notification.next_attempt_at is None and "500" in notification.last_error
        assert notification_send(notification_id=notification.pk).sent is False
        assert len(dead.requests) == MAX_ATTEMPTS
    finally:
        dead.close()


def test_the_sweep_queues_again_what_was_lost(tenant, ingest, queued, settings):
    settings.ALERT_SWEEP_SECONDS = 60
    notification = _fired(tenant, ingest, [{"type": "email", "to": "ops@example.com"}])
    now = timezone.now()
    assert notifications_sweep(now=now) == 0  # just created: its own task is on its way
    assert notifications_sweep(now=now + timedelta(seconds=61)) == 1
    assert queued == [notification.pk]
    # Queued again at most once per interval while it stays undelivered.
    assert notifications_sweep(now=now + timedelta(seconds=62)) == 0
    assert notifications_sweep(now=now + timedelta(seconds=122)) == 1
    # Claimed by a worker that died: queued once its lease has run out.
    lease = now + timedelta(seconds=200)
    Notification.objects.filter(pk=notification.pk).update(status="sending", lease_until=lease)
    assert notifications_sweep(now=now + timedelta(seconds=199)) == 0
    assert notifications_sweep(now=now + timedelta(seconds=201)) == 1
    # Sent, or out of attempts: left alone.
    Notification.objects.filter(pk=notification.pk).update(status="sent", next_attempt_at=None)
    assert notifications_sweep(now=now + timedelta(hours=1)) == 0
    Notification.objects.filter(pk=notification.pk).update(
        status="sending", lease_until=now, attempts=MAX_ATTEMPTS
    )
    assert notifications_sweep(now=now + timedelta(hours=1)) == 0
    notification.refresh_from_db()
    assert notification.status == "failed" and "interrupted" in notification.last_error
    assert queued == [notification.pk] * 3


def test_an_unreachable_broker_never_fails_the_request(
    tenant, monkeypatch, django_capture_on_commit_callbacks
):
    def refuse(pk):
        raise BrokerUnavailable("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(deliver_notification, "delay", refuse)
    rule = _rule(tenant, notify=[{"type": "email", "to": "ops@example.com"}])
    admin = tenant.api("admin")
    with django_capture_on_commit_callbacks(execute=True):
        r = admin.post(f"/api/alerts/rules/{rule.pk}/test")
    assert r.status_code == 202, r.content
    assert Notification.objects.get().status == "pending"  # the sweep sends it later


@postgres_only()
@pytest.mark.django_db(transaction=True)
def test_racing_workers_send_a_notification_once(queued, loopback_receivers):
    from .conftest import _tenant

    slow = Receiver(delay=0.5)
    try:
        tenant = _tenant("race-delivery")
        notification = _fired(tenant, tenant.api("ingest"), [{"type": "webhook", "url": slow.url}])
        at_once(lambda: notification_send(notification_id=notification.pk))
        assert len(slow.requests) == 1
        notification.refresh_from_db()
        assert notification.status == "sent" and notification.attempts == 1
    finally:
        slow.close()
