"""Webhook URLs are secrets (Slack hook paths, tokens in the query): admins see
them whole, everyone else only the scheme and host — in the API and on the
Alerts page alike."""

import json

import pytest

from .test_alerts import _rule

HOOK = "https://hooks.slack.com/services/T0AAAA/B0BBBB/xyzSECRETpath?token=q5TOKENq5"
SHOWN = "https://hooks.slack.com/…"


@pytest.fixture
def rule(tenant):
    return _rule(tenant, notify=[{"type": "webhook", "url": HOOK, "format": "slack", "secret": "s1gn"}])


def test_a_read_key_sees_only_the_scheme_and_host_of_a_webhook_url(tenant, rule):
    listed = tenant.api("read").get("/api/alerts/rules").json()
    assert listed["rules"][0]["notify"][0]["url"] == SHOWN
    text = json.dumps(listed)
    assert "SECRETpath" not in text and "TOKEN" not in text and "s1gn" not in text


def test_an_admin_key_sees_the_whole_webhook_url_but_never_the_signing_secret(tenant, rule):
    listed = tenant.api("admin", "read").get("/api/alerts/rules").json()
    [target] = listed["rules"][0]["notify"]
    assert target["url"] == HOOK and target["secret"] == "[set]"


def test_a_read_key_sees_only_the_host_of_a_notifications_target(tenant, rule):
    assert tenant.api("admin").post(f"/api/alerts/rules/{rule.pk}/test").status_code == 202
    [event] = tenant.api("read").get("/api/alerts/events").json()["events"]
    assert event["notifications"][0]["target"] == SHOWN
    [event] = tenant.api("admin", "read").get("/api/alerts/events").json()["events"]
    assert event["notifications"][0]["target"] == HOOK


@pytest.mark.parametrize("role", ["viewer", "member"])
def test_the_alerts_history_shows_readers_only_the_host(tenant, members, rule, role):
    assert tenant.api("admin").post(f"/api/alerts/rules/{rule.pk}/test").status_code == 202
    page = members[role].get("/alerts/")
    assert page.status_code == 200
    assert SHOWN.encode() in page.content
    assert b"SECRETpath" not in page.content and b"TOKEN" not in page.content


def test_the_alerts_history_shows_admins_the_whole_target(tenant, members, rule):
    assert tenant.api("admin").post(f"/api/alerts/rules/{rule.pk}/test").status_code == 202
    page = members["admin"].get("/alerts/")
    assert b"xyzSECRETpath?token=q5TOKENq5" in page.content
