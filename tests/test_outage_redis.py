"""Redis stopped: ingestion (JSON and OTLP), the API and the dashboard keep
answering; live push and background work fail quietly and resume when Redis
is back — nothing that was due while it was down is lost."""

import asyncio
import json
import time
from datetime import UTC, datetime

import pytest
from channels_redis.core import RedisChannelLayer
from django.test import Client

from accounts.models import Role
from accounts.services import user_create_or_update
from alerts.models import Notification
from alerts.notify import DELIVERY_HEADER

from .conftest import LOOPBACK, _tenant, postgres_only, trace
from .otlp import json_export, json_span
from .processes import celery_worker, daphne, http, redis_server, shared_env, wait_until
from .test_alerts import Receiver, _rule

pytestmark = [postgres_only(), pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _pushed(redis_url: str, group: str, trigger) -> dict:
    """Listen on the channel layer group, call ``trigger``, return what arrives."""

    async def listen() -> dict:
        layer = RedisChannelLayer(hosts=[redis_url])
        try:
            channel = await layer.new_channel()
            await layer.group_add(group, channel)
            await asyncio.to_thread(trigger)
            return await asyncio.wait_for(layer.receive(channel), timeout=15)
        finally:
            await layer.close_pools()

    return asyncio.run(listen())


def _otlp(n: int) -> bytes:
    trace_id = f"{n:032x}"
    start = int(datetime.now(UTC).timestamp() * 1e9)
    span = json_span(
        trace_id,
        f"{n:016x}",
        "invoke_agent Support",
        start,
        start + 900_000_000,
        attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.id": "agent_otel"},
    )
    return json.dumps(json_export([span])).encode()


def test_a_redis_outage_loses_nothing(tmp_path, loopback_receivers):
    tenant = _tenant("redis-outage")
    receiver = Receiver()
    rule = _rule(tenant, notify=[{"type": "webhook", "url": receiver.url}])
    viewer, _ = user_create_or_update(
        organisation=tenant.organisation, username="redis-viewer", password=None, role=Role.VIEWER
    )
    browser = Client()
    browser.force_login(viewer)
    cookie = {"Cookie": f"sessionid={browser.cookies['sessionid'].value}"}
    ingest = {"Authorization": f"Bearer {tenant.keys['ingest']}"}
    read = {"Authorization": f"Bearer {tenant.keys['read']}"}
    admin = {"Authorization": f"Bearer {tenant.keys['admin']}"}
    group = f"alerts.{tenant.organisation.pk}"
    try:
        with redis_server(tmp_path) as redis:
            env = shared_env(
                redis.url,
                tmp_path,
                ALERTS_EVALUATION_SECONDS="3600",
                ALERT_SWEEP_SECONDS="1",
                OUTBOUND_ALLOWED_NETWORKS=LOOPBACK,
            )
            with daphne(env, tmp_path) as base, celery_worker(env, tmp_path / "worker.log", beat=True):

                def send_test():
                    status, _, body = http("POST", f"{base}/api/alerts/rules/{rule.pk}/test", headers=admin)
                    assert status == 202, body

                pushed = _pushed(redis.url, group, send_test)
                assert pushed["type"] == "alert.event" and pushed["event"]["state"] == "test"
                wait_until(lambda: len(receiver.requests) == 1, timeout=20, what="no delivery with Redis up")

                redis.stop()
                started = time.monotonic()
                batch = {
                    "traces": [trace(id=f"r{i}", session_id=f"rs{i}", created_at=None) for i in range(5)]
                }
                status, _, body = http("POST", f"{base}/api/traces", batch, ingest)
                assert status == 200, body
                status, _, body = http(
                    "POST",
                    f"{base}/api/otel/v1/traces",
                    _otlp(1),
                    {**ingest, "Content-Type": "application/json"},
                )
                assert status == 200, body
                for path in (
                    "/api/agents/agent_abc123/summary?period=24h",
                    "/api/analytics/overview?period=24h",
                ):
                    assert http("GET", base + path, headers=read)[0] == 200, path
                for path in (
                    "/",
                    "/traces/",
                    "/conversations/",
                    "/alerts/",
                    "/agents/agent_abc123/performance/",
                ):
                    assert http("GET", base + path, headers=cookie)[0] == 200, path
                send_test()  # stored; neither queued nor pushed, and no error
                answered_in = time.monotonic() - started
                assert answered_in < 15, f"requests took {answered_in:.1f} s without Redis"
                waiting = Notification.objects.filter(
                    event__organisation=tenant.organisation, status="pending"
                )
                assert waiting.count() == 1

                redis.start()
                started = time.monotonic()
                wait_until(
                    lambda: not waiting.exists() and len(receiver.requests) == 2,
                    timeout=60,
                    what="the notification due while Redis was down was not sent",
                    log=tmp_path / "worker.log",
                )
                resumed_in = time.monotonic() - started
                # Live push resumes (a listener joins its group again, as a dashboard reconnecting does).
                pushed = _pushed(redis.url, group, send_test)
                assert pushed["event"]["state"] == "test"
                wait_until(
                    lambda: len(receiver.requests) == 3, timeout=30, what="no delivery after Redis returned"
                )
        print(
            f"\nwithout Redis: answers in {answered_in:.1f} s; background work resumed {resumed_in:.1f} s after"
        )
        notifications = Notification.objects.filter(event__organisation=tenant.organisation)
        assert set(notifications.values_list("status", flat=True)) == {"sent"}
        ids = [headers[DELIVERY_HEADER] for headers, _ in receiver.requests]
        assert sorted(ids) == sorted(str(n.delivery_id) for n in notifications)
    finally:
        receiver.close()
