"""Reviewing the audit log in the Django admin: read-only for everyone, filters,
search, a readable details view and CSV export of what the filters show."""

import csv
import io

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client

from audit.models import AuditLog
from audit.services import Actor, audit_record

LIST = "/admin/audit/auditlog/"


@pytest.fixture
def auditor(db):
    """Staff with only the permission to view the audit log."""
    user = get_user_model().objects.create_user("auditor", password="pw-123456", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_auditlog"))
    c = Client()
    c.force_login(user)
    return c


@pytest.fixture
def logged(tenant):
    def record(action, resource_id, user_id, details=None):
        return audit_record(
            organisation=tenant.organisation,
            actor=Actor(user_id=user_id, ip_address="203.0.113.42"),
            action=action,
            resource_type=action.split(".")[0],
            resource_id=resource_id,
            details=details or {},
        )

    return [
        record("agent.update", "agent_support", "ana", {"changed_fields": ["instructions", "temperature"]}),
        record("agent.delete", "agent_sales", "bo"),
        record("phone_number.assign", "+14155550100", "ana", {"agent_id": "agent_support"}),
        record("member.invite", '=HYPERLINK("http://x")', "ana"),
    ]


def _csv(response) -> list[dict]:
    assert response["Content-Type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(response.content.decode())))


@pytest.mark.parametrize("who", ["superuser", "auditor"])
def test_the_admin_lists_entries_and_shows_details_readably(request, logged, who):
    client = request.getfixturevalue(who)
    page = client.get(LIST)
    assert page.status_code == 200
    assert b"agent_support" in page.content and b"phone_number.assign" in page.content
    detail = client.get(f"{LIST}{logged[0].pk}/change/")
    assert detail.status_code == 200
    body = detail.content.decode()
    assert '<pre class="audit-details">' in body
    assert "&quot;changed_fields&quot;: [\n    &quot;instructions&quot;," in body
    assert 'name="_save"' not in body and "Delete" not in body


@pytest.mark.parametrize("who", ["superuser", "auditor"])
def test_the_admin_refuses_add_change_and_delete(request, logged, who):
    client = request.getfixturevalue(who)
    entry = logged[0]
    assert client.get(f"{LIST}add/").status_code == 403
    assert client.post(f"{LIST}add/", {"action": "x.y", "user_id": "me"}).status_code == 403
    assert client.post(f"{LIST}{entry.pk}/change/", {"action": "agent.delete"}).status_code == 403
    assert client.get(f"{LIST}{entry.pk}/delete/").status_code == 403
    assert client.post(f"{LIST}{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    r = client.post(LIST, {"action": "delete_selected", "_selected_action": [entry.pk], "post": "yes"})
    assert r.status_code in (200, 302)
    assert b"Add audit log" not in client.get(LIST).content
    assert b"delete_selected" not in client.get(LIST).content
    assert AuditLog.objects.filter(pk=entry.pk, action="agent.update").count() == 1
    assert AuditLog.objects.count() >= len(logged)


def test_filters_and_search(superuser, logged):
    changelist = superuser.get(LIST).context["cl"]
    offered = {p for spec in changelist.filter_specs for p in spec.expected_parameters()}
    assert {"action", "resource_type", "user_id", "created_at__gte"} <= offered
    by_action = superuser.get(LIST, {"action": "agent.delete"}).content.decode()
    assert "agent_sales" in by_action and "agent_support" not in by_action
    by_user = superuser.get(LIST, {"user_id": "bo"}).content.decode()
    assert "agent_sales" in by_user and "+14155550100" not in by_user
    by_type = superuser.get(LIST, {"resource_type": "phone_number"}).content.decode()
    assert "+14155550100" in by_type and "agent_sales" not in by_type
    searched = superuser.get(LIST, {"q": "agent_sales"}).content.decode()
    assert "agent_sales" in searched and "+14155550100" not in searched


def test_csv_export_follows_the_current_filters(superuser, logged):
    page = superuser.get(LIST, {"user_id": "ana", "resource_type": "agent"}).content.decode()
    assert 'href="/admin/audit/auditlog/export.csv?' in page
    rows = _csv(superuser.get(f"{LIST}export.csv", {"user_id": "ana", "resource_type": "agent"}))
    assert [r["resource_id"] for r in rows] == ["agent_support"]
    assert rows[0]["details"] == '{"changed_fields": ["instructions", "temperature"]}'
    assert rows[0]["ip_address"] == "203.0.113.42" and rows[0]["organisation"] == "acme"
    everything = _csv(superuser.get(f"{LIST}export.csv"))
    assert len(everything) == AuditLog.objects.count()
    assert superuser.get(f"{LIST}export.csv", {"nonsense__field": "1"}).status_code == 400


def test_csv_cells_never_start_a_spreadsheet_formula(superuser, logged):
    rows = _csv(superuser.get(f"{LIST}export.csv", {"action": "member.invite"}))
    assert rows[0]["resource_id"] == '\'=HYPERLINK("http://x")'


def test_the_export_action_exports_the_selected_entries(superuser, logged):
    chosen = [logged[1].pk, logged[2].pk]
    r = superuser.post(LIST, {"action": "export_csv", "_selected_action": chosen})
    assert sorted(int(row["id"]) for row in _csv(r)) == sorted(chosen)


def test_export_and_pages_need_admin_access(logged, members):
    assert Client().get(f"{LIST}export.csv").status_code == 302
    assert members["owner"].get(f"{LIST}export.csv").status_code == 302  # not staff


def test_organisation_changes_in_the_admin_are_audited_and_members_are_read_only(superuser, tenant, members):
    url = f"/admin/accounts/organisation/{tenant.organisation.pk}/change/"
    page = superuser.get(url).content.decode()
    assert "owner-user" in page and 'name="memberships-0-role"' not in page
    r = superuser.post(
        url,
        {
            "slug": "acme",
            "name": "Acme Inc",
            "timezone": "Europe/Berlin",
            "voice_price_per_minute": "0.04",
            "created_at_0": "2026-01-01",
            "created_at_1": "00:00:00",
            "memberships-TOTAL_FORMS": "0",
            "memberships-INITIAL_FORMS": "0",
        },
    )
    assert r.status_code == 302, r.content.decode()[:2000]
    entry = AuditLog.objects.get(action="organisation.update")
    assert (entry.user_id, entry.resource_id) == ("root", "acme")
    assert entry.details["changed_fields"] == ["name", "timezone", "voice_price_per_minute"]
    assert entry.details["new"]["voice_price_per_minute"] == "0.04"
