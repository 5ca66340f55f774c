"""Management commands operators and scripts rely on."""

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client

from accounts.models import Membership, Organisation
from agents.models import Agent, Deployment, Session, Trace
from audit.models import AuditLog


def _run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


@pytest.mark.django_db
def test_create_api_key_creates_the_organisation_and_prints_a_working_key():
    out = _run("create_api_key", "newco", "--name", "ci", "--scopes", "read,ingest")
    key = out.strip().splitlines()[-1]
    assert key.startswith("ta_")
    assert Organisation.objects.filter(slug="newco").exists()
    r = Client().get("/api/agents", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert r.status_code == 200


@pytest.mark.django_db
def test_create_api_key_refuses_unknown_scopes():
    with pytest.raises(CommandError, match="unknown scopes"):
        _run("create_api_key", "newco", "--name", "ci", "--scopes", "read,write")


@pytest.mark.django_db
def test_create_user_creates_and_updates_membership():
    _run("create_user", "acme", "ana", "--password", "s3cret-pass", "--role", "owner")
    user = get_user_model().objects.get(username="ana")
    assert user.check_password("s3cret-pass")
    assert Membership.objects.get(user=user).role == "owner"
    _run("create_user", "acme", "ana", "--role", "viewer")
    assert Membership.objects.get(user=user).role == "viewer"
    assert get_user_model().objects.get(username="ana").check_password("s3cret-pass")
    assert Client().login(username="ana", password="s3cret-pass")


# Committed for real (no test transaction around it): the command runs in
# autocommit as it does for an operator, where a bulk insert must not lose its rows.
@pytest.mark.django_db(transaction=True)
def test_seed_demo_builds_a_believable_organisation_and_does_not_duplicate():
    _run("seed_demo", "--days", "2", "--verbosity", "0")
    org = Organisation.objects.get(slug="demo")
    counts = (Trace.objects.count(), Session.objects.count())
    assert Agent.objects.filter(organisation=org).count() >= 4
    assert set(Trace.objects.values_list("channel", flat=True)) == {"chat", "voice", "widget"}
    assert Trace.objects.filter(status="error").exists()
    assert Trace.objects.filter(tool_call_count__gt=0).exists()
    assert Trace.objects.filter(scores__isnull=False).exists()
    assert Deployment.objects.filter(agent__organisation=org, status="active").count() == 4
    # Demo changes are audited like any other.
    assert (
        AuditLog.objects.filter(organisation=org, action="agent.update", user_id="system:seed_demo").count()
        == 4
    )
    assert counts[0] > 100
    _run("seed_demo", "--days", "2", "--verbosity", "0")
    assert (Trace.objects.count(), Session.objects.count()) == counts
    assert Client().login(username="demo", password="demo")


@pytest.mark.django_db(transaction=True)
def test_seed_demo_has_an_alert_rule_that_fired_in_the_outage_and_resolved_after_it():
    from alerts.models import AlertEvent, AlertRule

    _run("seed_demo", "--days", "8", "--verbosity", "0")
    rule = AlertRule.objects.get(organisation__slug="demo")
    history = list(AlertEvent.objects.filter(rule=rule).order_by("at").values_list("state", "value"))
    states = [state for state, _ in history]
    assert "firing" in states and "resolved" in states[states.index("firing") :], history
    fired = next(value for state, value in history if state == "firing")
    assert fired > rule.threshold
    _run("seed_demo", "--days", "8", "--verbosity", "0")
    assert AlertRule.objects.filter(organisation__slug="demo").count() == 1
    assert AlertEvent.objects.filter(rule=rule).count() == len(history)  # created and replayed once


@pytest.mark.django_db
def test_rebuild_rollups_restores_deleted_rollups():
    from metrics.models import DailyRollup, HourlyRollup

    _run("seed_demo", "--days", "1", "--verbosity", "0")
    org = Organisation.objects.get(slug="demo")
    before = sorted(
        HourlyRollup.objects.values_list("agent_id", "channel", "bucket_start", "traces", "conversations")
    )
    assert before
    HourlyRollup.objects.all().delete()
    DailyRollup.objects.all().delete()
    out = _run("rebuild_rollups", "--org", "demo", "--verbosity", "0")
    assert "Rebuilt rollups for" in out
    after = sorted(
        HourlyRollup.objects.filter(organisation=org).values_list(
            "agent_id", "channel", "bucket_start", "traces", "conversations"
        )
    )
    assert after == before


@pytest.mark.django_db
def test_rebuild_rollups_refuses_bad_arguments():
    with pytest.raises(CommandError, match="ISO 8601"):
        _run("rebuild_rollups", "--from", "last week")
    with pytest.raises(CommandError, match="no organisation"):
        _run("rebuild_rollups", "--org", "nope")
