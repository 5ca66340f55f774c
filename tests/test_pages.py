"""HTML pages: login, overview, trace view, API keys, organisation switcher."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from accounts.models import ApiKey, Role
from accounts.services import user_create_or_update
from audit.models import AuditLog

from .conftest import trace


def test_login_page_and_login(tenant):
    user_create_or_update(
        organisation=tenant.organisation, username="pat", password="pw-123456", role=Role.VIEWER
    )
    c = Client()
    assert c.get("/").status_code == 302
    page = c.get("/login/")
    assert page.status_code == 200 and b"Log in" in page.content
    r = c.post("/login/", {"username": "pat", "password": "pw-123456"})
    assert r.status_code == 302 and r["Location"] == "/"
    assert c.get("/").status_code == 200


def test_wrong_password_is_refused(members):
    r = Client().post("/login/", {"username": "viewer-user", "password": "wrong"})
    assert r.status_code == 200
    assert b"correct username and password" in r.content


@pytest.fixture
def stored(ingest):
    ingest.post(
        "/api/traces",
        trace(
            id="trace_evil",
            input='<script>alert(1)</script><img src=x onerror="alert(2)">',
            tool_calls=[{"name": "t", "arguments": {"html": "<b>bold</b>"}}],
        ),
    )


def test_trace_content_is_rendered_inert(members, stored):
    r = members["viewer"].get("/traces/trace_evil/")
    assert r.status_code == 200
    body = r.content.decode()
    assert "<script>alert(1)</script>" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "<b>bold</b>" not in body


def test_an_outsider_gets_404_for_a_trace(members, stored):
    assert members["outsider"].get("/traces/trace_evil/").status_code == 404


def test_a_user_without_organisation_gets_404(db):
    lonely = get_user_model().objects.create_user("lonely", password="pw-123456")
    c = Client()
    c.force_login(lonely)
    assert c.get("/").status_code == 404


def test_api_keys_page_is_for_admins(members):
    assert members["viewer"].get("/settings/api-keys/").status_code == 403
    assert members["member"].get("/settings/api-keys/").status_code == 403
    assert members["admin"].get("/settings/api-keys/").status_code == 200


def test_an_admin_creates_a_key_shown_once_and_revokes_it(members):
    admin = members["admin"]
    r = admin.post("/settings/api-keys/", {"name": "ci", "scopes": ["read", "ingest"]})
    body = r.content.decode()
    key = ApiKey.objects.get(name="ci")
    assert key.scopes == ["ingest", "read"]
    raw = body.split('id="new-key">')[1].split("<")[0]
    assert raw.startswith(f"ta_{key.prefix}_")
    assert raw not in admin.get("/settings/api-keys/").content.decode()
    assert Client().get("/api/agents", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200
    admin.post(f"/settings/api-keys/{key.prefix}/revoke/")
    assert Client().get("/api/agents", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 401
    actions = list(AuditLog.objects.filter(resource_id=key.prefix).values_list("action", "user_id"))
    assert sorted(actions) == [("apikey.create", "admin-user"), ("apikey.revoke", "admin-user")]


def test_a_key_from_another_organisation_cannot_be_revoked(members, outsider):
    theirs = ApiKey.objects.filter(organisation=outsider.organisation).first()
    assert members["owner"].post(f"/settings/api-keys/{theirs.prefix}/revoke/").status_code == 404
    theirs.refresh_from_db()
    assert theirs.revoked_at is None


def test_a_member_of_two_organisations_switches_between_them(members, outsider, tenant):
    user_create_or_update(
        organisation=outsider.organisation, username="owner-user", password=None, role=Role.VIEWER
    )
    c = members["owner"]
    assert b"org-select" in c.get("/").content
    c.post("/organisation/switch/", {"organisation": outsider.organisation.pk, "next": "/"})
    assert outsider.organisation.name.encode() in c.get("/").content
    assert c.get("/settings/api-keys/").status_code == 403  # a viewer there


def test_switching_to_an_organisation_one_is_not_in_is_404(members, outsider):
    r = members["viewer"].post("/organisation/switch/", {"organisation": outsider.organisation.pk})
    assert r.status_code == 404
