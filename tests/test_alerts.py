"""Alert rules fire and resolve once, notify by email and signed webhook, and
survive slow receivers and racing evaluations."""

import hashlib
import hmac
import json
import threading
import time
from datetime import timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core import mail
from django.utils import timezone

from alerts.models import AlertEvent, AlertRule, Notification
from alerts.notify import SIGNATURE_HEADER
from alerts.services import alerts_evaluate, notification_send
from alerts.tasks import deliver_notification
from audit.models import AuditLog
from audit.services import Actor
from billing.services import budget_set

from .conftest import at_once, postgres_only, trace


class Receiver:
    """A webhook receiver on loopback that records what it gets."""

    def __init__(self, delay: float = 0.0, fail_first: int = 0):
        self.requests: list[tuple[dict, bytes]] = []
        self.delay, self.fail_first = delay, fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body))
                time.sleep(receiver.delay)
                status = 500 if len(receiver.requests) <= receiver.fail_first else 200
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(loopback_receivers):
    r = Receiver()
    yield r
    r.close()


def _conversations(ingest, n: int, failing: int, at=None, agent="agent_abc123", latency=900, prefix="c"):
    at = at or timezone.now() - timedelta(minutes=5)
    batch = [
        trace(
            id=f"{prefix}{i}",
            session_id=f"{prefix}{i}",
            agent_id=agent,
            created_at=(at + timedelta(seconds=i)).isoformat(),
            status="error" if i < failing else "success",
            latency_ms=latency,
        )
        for i in range(n)
    ]
    assert ingest.post("/api/traces", {"traces": batch}).status_code == 200


def _rule(tenant, **fields) -> AlertRule:
    body = {
        "name": "Errors",
        "kind": "error_rate",
        "threshold": 0.2,
        "window_minutes": 15,
        "min_conversations": 10,
        "cooldown_minutes": 30,
        **fields,
    }
    r = tenant.api("admin").post("/api/alerts/rules", body)
    assert r.status_code == 201, r.content
    return AlertRule.objects.get(pk=r.json()["id"])


def _deliver_all():
    for n in Notification.objects.filter(status__in=["pending", "failed"]):
        deliver_notification.apply(args=[n.pk])


def test_an_error_spike_fires_once_and_resolves_once(tenant, ingest, receiver):
    rule = _rule(
        tenant,
        notify=[
            {"type": "webhook", "url": receiver.url, "secret": "s3cret"},
            {"type": "email", "to": "ops@example.com"},
        ],
    )
    _conversations(ingest, 20, failing=8)
    now = timezone.now()
    fired = alerts_evaluate(now=now)
    assert [e.state for e in fired] == ["firing"]
    assert alerts_evaluate(now=now + timedelta(minutes=1)) == []  # still firing: no second notification
    _deliver_all()
    assert len(receiver.requests) == 1
    headers, body = receiver.requests[0]
    expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER] == expected
    payload = json.loads(body)
    assert payload["rule_id"] == rule.pk and payload["state"] == "firing" and payload["kind"] == "error_rate"
    assert payload["value"] == 0.4 and payload["threshold"] == 0.2 and payload["agent_id"] is None
    assert payload["links"]["alerts"].endswith("/alerts/")
    assert len(mail.outbox) == 1 and "[FIRING] Errors" in mail.outbox[0].subject
    # The spike leaves the window: one "resolved".
    resolved = alerts_evaluate(now=now + timedelta(minutes=30))
    assert [e.state for e in resolved] == ["resolved"]
    _deliver_all()
    assert [json.loads(b)["state"] for _, b in receiver.requests] == ["firing", "resolved"]
    assert len(mail.outbox) == 2
    rule.refresh_from_db()
    assert rule.state == "ok"


def test_minimum_traffic_keeps_three_conversations_quiet(tenant, ingest):
    _rule(tenant, min_conversations=10)
    _conversations(ingest, 3, failing=3)
    assert alerts_evaluate() == []


def test_the_baseline_factor_ignores_normal_error_levels(tenant, ingest):
    _rule(tenant, baseline_factor=2, baseline_period="day")
    now = timezone.now()
    _conversations(
        ingest, 20, failing=6, at=now - timedelta(hours=5), prefix="base"
    )  # yesterday-ish level: 30 %
    _conversations(ingest, 20, failing=8, at=now - timedelta(minutes=5))  # now: 40 %, not twice the baseline
    assert alerts_evaluate(now=now) == []
    _conversations(
        ingest, 20, failing=20, at=now - timedelta(minutes=4), prefix="worse"
    )  # now 70 % > 2 × 30 %
    assert [e.state for e in alerts_evaluate(now=now)] == ["firing"]


def test_cooldown_holds_a_flapping_rule(tenant, ingest):
    rule = _rule(tenant, cooldown_minutes=60, window_minutes=10)
    now = timezone.now()
    _conversations(ingest, 20, failing=10, at=now - timedelta(minutes=5))
    assert len(alerts_evaluate(now=now)) == 1
    assert [e.state for e in alerts_evaluate(now=now + timedelta(minutes=20))] == ["resolved"]
    _conversations(ingest, 20, failing=10, at=now + timedelta(minutes=25), prefix="again")
    assert alerts_evaluate(now=now + timedelta(minutes=30)) == []  # within the hour's cooldown
    _conversations(ingest, 20, failing=10, at=now + timedelta(minutes=62), prefix="later")
    assert [e.state for e in alerts_evaluate(now=now + timedelta(minutes=65))] == ["firing"]
    assert AlertEvent.objects.filter(rule=rule, state="firing").count() == 2


def test_a_latency_rule_fires_and_resolves(tenant, ingest):
    now = timezone.now()
    _conversations(ingest, 20, failing=0, latency=3500, at=now - timedelta(minutes=5))
    _rule(tenant, name="Slow", kind="latency", threshold=2000, statistic="p95", agent_id="agent_abc123")
    [event] = alerts_evaluate(now=now)
    assert event.state == "firing" and 3465 <= event.value <= 3535 and event.agent_id_label == "agent_abc123"
    assert [e.state for e in alerts_evaluate(now=now + timedelta(minutes=40))] == ["resolved"]


def test_a_muted_rule_is_not_evaluated(tenant, ingest):
    rule = _rule(tenant)
    AlertRule.objects.filter(pk=rule.pk).update(muted_until=timezone.now() + timedelta(hours=1))
    _conversations(ingest, 20, failing=20)
    assert alerts_evaluate() == []


def test_a_slow_receiver_times_out_and_is_retried_without_blocking(
    tenant, ingest, settings, loopback_receivers
):
    settings.ALERT_WEBHOOK_TIMEOUT = 0.3
    slow = Receiver(delay=2)
    try:
        _rule(tenant, notify=[{"type": "webhook", "url": slow.url}])
        _conversations(ingest, 20, failing=20)
        started = time.monotonic()
        assert len(alerts_evaluate()) == 1
        assert time.monotonic() - started < 2  # evaluation only records; delivery is a task
        notification = Notification.objects.get()
        started = time.monotonic()
        assert notification_send(notification_id=notification.pk).sent is False
        assert time.monotonic() - started < 1.5
        notification.refresh_from_db()
        assert notification.status == "failed" and "unreachable" in notification.last_error
    finally:
        slow.close()


def test_a_failing_receiver_is_retried_until_it_answers(tenant, ingest, loopback_receivers):
    flaky = Receiver(fail_first=2)
    try:
        _rule(tenant, notify=[{"type": "webhook", "url": flaky.url, "format": "slack"}])
        _conversations(ingest, 20, failing=20)
        alerts_evaluate()
        notification = Notification.objects.get()
        deliver_notification.apply(args=[notification.pk])  # eager retries run inline
        notification.refresh_from_db()
        assert notification.status == "sent" and notification.attempts == 3
        assert "text" in json.loads(flaky.requests[-1][1])  # Slack-compatible
    finally:
        flaky.close()


@postgres_only()
@pytest.mark.django_db(transaction=True)
def test_two_evaluations_in_parallel_notify_once():
    from .conftest import _tenant

    tenant = _tenant("race-alerts")
    _rule(tenant, notify=[{"type": "email", "to": "ops@example.com"}])
    _conversations(tenant.api("ingest"), 20, failing=20)
    now = timezone.now()
    results = at_once(lambda: alerts_evaluate(now=now, organisation=tenant.organisation))
    assert sum(len(r) for r in results) == 1
    assert AlertEvent.objects.filter(organisation=tenant.organisation).count() == 1
    assert Notification.objects.filter(event__organisation=tenant.organisation).count() == 1


# --- the API -------------------------------------------------------------------


def test_rules_api_create_list_change_delete_and_events(tenant, ingest):
    admin, reader = tenant.api("admin"), tenant.api("read")
    rule = _rule(
        tenant, notify=[{"type": "webhook", "url": "https://hooks.example.com/x", "secret": "topsecret"}]
    )
    listed = reader.get("/api/alerts/rules").json()["rules"]
    assert listed[0]["id"] == rule.pk and listed[0]["notify"][0]["secret"] == "[set]"
    assert "topsecret" not in json.dumps(listed)
    r = admin.client.patch(
        f"/api/alerts/rules/{rule.pk}",
        json.dumps({"threshold": 0.5}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {tenant.keys['admin']}",
    )
    assert r.status_code == 200 and r.json()["threshold"] == 0.5
    _conversations(ingest, 20, failing=20)
    alerts_evaluate()
    events = reader.get("/api/alerts/events", {"state": "firing"}).json()["events"]
    assert events[0]["rule_id"] == rule.pk and events[0]["state"] == "firing"
    assert set(events[0]) >= {"id", "rule_id", "state", "value", "threshold", "at"}
    r = admin.client.delete(
        f"/api/alerts/rules/{rule.pk}", HTTP_AUTHORIZATION=f"Bearer {tenant.keys['admin']}"
    )
    assert r.status_code == 204
    actions = list(
        AuditLog.objects.filter(resource_type="alert_rule").order_by("pk").values_list("action", flat=True)
    )
    assert actions == ["alert_rule.create", "alert_rule.update", "alert_rule.delete"]
    assert "topsecret" not in json.dumps(list(AuditLog.objects.values_list("details", flat=True)))


@pytest.mark.parametrize(
    "body,word",
    [
        ({"name": "x", "kind": "error_rate", "threshold": 2}, "between 0 and 1"),
        ({"name": "x", "kind": "bogus", "threshold": 1}, "kind"),
        ({"name": "", "kind": "latency", "threshold": 1}, "name"),
        ({"name": "x", "kind": "latency", "threshold": -1}, "threshold"),
        (
            {
                "name": "x",
                "kind": "latency",
                "threshold": 1,
                "notify": [{"type": "webhook", "url": "not a url"}],
            },
            "url",
        ),
        (
            {"name": "x", "kind": "latency", "threshold": 1, "notify": [{"type": "email", "to": "nobody"}]},
            "to",
        ),
        ({"name": "x", "kind": "latency", "threshold": 1, "agent_id": "agent_nope"}, "agent_nope"),
        ({"name": "x", "kind": "latency", "threshold": 1, "window_minutes": 0}, "window_minutes"),
    ],
)
def test_bad_rules_are_refused(tenant, body, word):
    r = tenant.api("admin").post("/api/alerts/rules", body)
    assert r.status_code in (400, 404)
    assert word in r.json()["error"]["message"]
    assert AlertRule.objects.count() == 0


def test_changing_rules_needs_the_admin_scope(tenant, outsider):
    assert (
        tenant.api("read")
        .post("/api/alerts/rules", {"name": "x", "kind": "latency", "threshold": 1})
        .status_code
        == 403
    )
    rule = _rule(tenant)
    r = outsider.api("admin").client.delete(
        f"/api/alerts/rules/{rule.pk}", HTTP_AUTHORIZATION=f"Bearer {outsider.keys['admin']}"
    )
    assert r.status_code == 404
    assert outsider.api("read").get("/api/alerts/rules").json() == {"rules": []}


# --- the page --------------------------------------------------------------------


def test_the_alerts_page(members, tenant, ingest):
    viewer, admin = members["viewer"], members["admin"]
    assert viewer.get("/alerts/").status_code == 200
    form = {
        "name": "Errors",
        "kind": "error_rate",
        "threshold": "0.2",
        "window_minutes": 15,
        "min_conversations": 5,
        "cooldown_minutes": 10,
        "email_to": "ops@example.com",
        "statistic": "p95",
        "baseline_period": "day",
    }
    assert viewer.post("/alerts/", form).status_code == 403
    assert admin.post("/alerts/", form).status_code == 302
    rule = AlertRule.objects.get()
    assert rule.notify == [{"type": "email", "to": "ops@example.com"}]
    admin.post(f"/alerts/{rule.pk}/mute/", {"for": "1h"})
    rule.refresh_from_db()
    assert rule.muted_until is not None
    admin.post(f"/alerts/{rule.pk}/test/")
    assert AlertEvent.objects.filter(state="test").count() == 1
    admin.post(f"/alerts/{rule.pk}/delete/")
    assert not AlertRule.objects.exists()
    actions = sorted(AuditLog.objects.filter(resource_type="alert_rule").values_list("action", flat=True))
    assert actions == ["alert_rule.create", "alert_rule.delete", "alert_rule.mute", "alert_rule.test"]
    assert members["outsider"].post(f"/alerts/{rule.pk}/delete/").status_code in (403, 404)


def test_a_budget_rule_fires_at_its_percentage(tenant, ingest):
    budget_set(
        organisation=tenant.organisation, agent=None, monthly_usd=Decimal("1.00"), actor=Actor.system("test")
    )
    _rule(tenant, name="Budget", kind="budget", threshold=80, min_conversations=0)
    assert alerts_evaluate() == []  # nothing spent yet
    now = timezone.now()
    batch = [
        trace(
            id=f"b{i}",
            session_id=f"b{i}",
            cost_usd="0.10",
            created_at=(now - timedelta(minutes=1)).isoformat(),
        )
        for i in range(9)
    ]
    assert ingest.post("/api/traces", {"traces": batch}).status_code == 200
    [event] = alerts_evaluate()
    assert event.state == "firing" and event.value == 90


def test_a_low_balance_rule_fires_and_resolves_with_a_top_up(tenant, ingest):
    admin = tenant.api("admin")
    assert admin.post("/api/billing/topups", {"amount_usd": "10.00", "reference": "first"}).status_code in (
        200,
        201,
    )
    _rule(tenant, name="Balance", kind="low_balance", threshold=20, min_conversations=0)
    [event] = alerts_evaluate()
    assert event.state == "firing" and event.value == 10
    assert admin.post("/api/billing/topups", {"amount_usd": "50.00", "reference": "second"}).status_code in (
        200,
        201,
    )
    assert [e.state for e in alerts_evaluate()] == ["resolved"]
