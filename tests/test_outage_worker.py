"""A Celery worker killed (SIGKILL) in the middle of delivering a webhook: the
task goes back to the queue (acks late), a second worker sends it, and the
notification is recorded once, with one delivery id however often it arrived."""

import json
import re
import time

import pytest

from alerts.models import AlertEvent, Notification
from alerts.notify import DELIVERY_HEADER

from .conftest import LOOPBACK, _tenant, postgres_only
from .processes import celery_worker, redis_server, shared_env, stop, wait_until
from .test_alerts import Receiver, _conversations, _rule

pytestmark = [postgres_only(), pytest.mark.slow, pytest.mark.django_db(transaction=True)]

VISIBILITY_SECONDS = 2  # a task a dead worker held is queued again after this


def test_a_killed_worker_delivers_once(tmp_path, loopback_receivers):
    tenant = _tenant("worker-killed")
    receiver = Receiver(delay=1)
    _rule(tenant, notify=[{"type": "webhook", "url": receiver.url}], window_minutes=30)
    _conversations(tenant.api("ingest"), 20, failing=20)
    try:
        with redis_server(tmp_path) as redis:
            env = shared_env(
                redis.url,
                tmp_path,
                DB_POOL="false",
                ALERTS_EVALUATION_SECONDS="1",
                ALERT_SWEEP_SECONDS="3600",  # only the broker can bring the task back
                ALERT_DELIVERY_LEASE_SECONDS="2",
                ALERT_WEBHOOK_TIMEOUT="5",
                OUTBOUND_ALLOWED_NETWORKS=LOOPBACK,
                BROKER_VISIBILITY_TIMEOUT=str(VISIBILITY_SECONDS),
            )
            with celery_worker(env, tmp_path / "first.log", beat=True) as first:
                wait_until(lambda: receiver.requests, timeout=30, what="no webhook from the first worker")
                stop(first, sig=9)  # while the receiver is still answering
                killed_at = time.monotonic()
            notification = Notification.objects.get(event__organisation=tenant.organisation)
            assert notification.status == "sending" and notification.attempts == 1
            time.sleep(max(0.0, killed_at + VISIBILITY_SECONDS + 0.5 - time.monotonic()))
            with celery_worker(env, tmp_path / "second.log", beat=True):
                wait_until(
                    lambda: Notification.objects.filter(pk=notification.pk, status="sent").exists(),
                    timeout=30,
                    what="the second worker did not deliver the notification",
                    log=tmp_path / "second.log",
                )
                time.sleep(1.5)  # a few more evaluations: the rule still fires, nothing new is sent
        # The very task the first worker held, given back by the broker (acks late).
        [task] = re.findall(r"alerts\.deliver\[([0-9a-f-]+)\] received", (tmp_path / "first.log").read_text())
        assert f"alerts.deliver[{task}] succeeded" in (tmp_path / "second.log").read_text()
        assert AlertEvent.objects.filter(organisation=tenant.organisation).count() == 1
        notification.refresh_from_db()
        assert notification.status == "sent" and notification.attempts == 2
        assert Notification.objects.filter(event__organisation=tenant.organisation).count() == 1
        ids = {headers[DELIVERY_HEADER] for headers, _ in receiver.requests}
        assert ids == {str(notification.delivery_id)}, receiver.requests
        assert {json.loads(body)["delivery_id"] for _, body in receiver.requests} == ids
        assert len(receiver.requests) == 2  # the one copy a receiver drops by its delivery id
    finally:
        receiver.close()
