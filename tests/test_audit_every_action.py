"""Every mutating endpoint and form leaves exactly one audit entry, with the
right action, resource, person and address. One walk through all of them."""

import itertools
import json
import re

from django.contrib.auth import get_user_model
from django.test import Client

from accounts.models import ApiKey, Invitation, Membership
from agents.models import Deployment, PhoneNumber
from audit.models import AuditLog

from .conftest import trace

_addresses = (f"192.0.2.{n}" for n in itertools.count(1))


def _one_entry(do, *, action, resource_type, resource_id, user_id) -> AuditLog:
    """Run ``do(ip)`` and return the single entry it recorded, checking its fields."""
    ip = next(_addresses)
    before = AuditLog.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    response = do(ip)
    assert response.status_code in (200, 201, 204, 302), (
        action,
        response.status_code,
        response.content[:500],
    )
    new = list(AuditLog.objects.filter(pk__gt=before))
    assert len(new) == 1, (action, [(e.action, e.resource_id) for e in new])
    entry = new[0]
    expected_id = resource_id() if callable(resource_id) else resource_id
    assert (entry.action, entry.resource_type, entry.resource_id, entry.user_id, entry.ip_address) == (
        action,
        resource_type,
        expected_id,
        user_id,
        ip,
    )
    return entry


def test_every_change_records_exactly_one_entry(tenant, members, superuser, mailoutbox):
    key = tenant.api("admin", "ingest", "read")
    http = key.client
    auth = key._headers()
    key_actor = (
        f"apikey:{ApiKey.objects.get(organisation=tenant.organisation, name='admin+ingest+read').prefix}"
    )

    def api(method, path, body=None):
        def do(ip):
            data = json.dumps(body) if body is not None else None
            call = getattr(http, method)
            if data is None:
                return call(path, REMOTE_ADDR=ip, **auth)
            return call(path, data, content_type="application/json", REMOTE_ADDR=ip, **auth)

        return do

    def form(role, path, data=None):
        return lambda ip: members[role].post(path, data or {}, REMOTE_ADDR=ip)

    def latest_deployment():
        return str(Deployment.objects.order_by("-pk").first().pk)

    # --- the JSON API, as an API key --------------------------------------------
    _one_entry(
        api("post", "/api/traces", trace(agent_id="agent_seen")),
        action="agent.create",
        resource_type="agent",
        resource_id="agent_seen",
        user_id=key_actor,
    )
    _one_entry(
        api(
            "post", "/api/agents", {"id": "agent_api", "name": "API agent", "config": {"instructions": "v1"}}
        ),
        action="agent.create",
        resource_type="agent",
        resource_id="agent_api",
        user_id=key_actor,
    )
    _one_entry(
        api("patch", "/api/agents/agent_api", {"config": {"temperature": 0.5}}),
        action="agent.update",
        resource_type="agent",
        resource_id="agent_api",
        user_id=key_actor,
    )
    first = _one_entry(
        api("post", "/api/deployments/agent_api", {"changes": "first"}),
        action="deployment.create",
        resource_type="deployment",
        resource_id=latest_deployment,
        user_id=key_actor,
    )
    _one_entry(
        api("post", "/api/deployments/agent_api", {"changes": "second", "config": {"instructions": "v2"}}),
        action="deployment.create",
        resource_type="deployment",
        resource_id=latest_deployment,
        user_id=key_actor,
    )
    _one_entry(
        api("post", "/api/deployments/agent_api/rollback", {"version_id": int(first.resource_id)}),
        action="deployment.rollback",
        resource_type="deployment",
        resource_id=latest_deployment,
        user_id=key_actor,
    )
    _one_entry(
        api("post", "/api/admin/audit/events", {"action": "billing.topup", "resource_type": "balance"}),
        action="billing.topup",
        resource_type="balance",
        resource_id="",
        user_id=key_actor,
    )
    _one_entry(
        api("delete", "/api/agents/agent_api"),
        action="agent.delete",
        resource_type="agent",
        resource_id="agent_api",
        user_id=key_actor,
    )

    # --- the pages, as people ------------------------------------------------------
    _one_entry(
        form("admin", "/settings/api-keys/", {"name": "ci", "scopes": ["read"]}),
        action="apikey.create",
        resource_type="api_key",
        resource_id=lambda: ApiKey.objects.get(name="ci").prefix,
        user_id="admin-user",
    )
    prefix = ApiKey.objects.get(name="ci").prefix
    _one_entry(
        form("admin", f"/settings/api-keys/{prefix}/revoke/"),
        action="apikey.revoke",
        resource_type="api_key",
        resource_id=prefix,
        user_id="admin-user",
    )
    _one_entry(
        form("member", "/agents/", {"id": "agent_page", "name": "Page agent"}),
        action="agent.create",
        resource_type="agent",
        resource_id="agent_page",
        user_id="member-user",
    )
    _one_entry(
        form(
            "member", "/agents/agent_page/", {"name": "Page agent", "instructions": "Hi", "temperature": "1"}
        ),
        action="agent.update",
        resource_type="agent",
        resource_id="agent_page",
        user_id="member-user",
    )
    _one_entry(
        form("member", "/agents/agent_page/tools/", {"name": "crm", "config": '{"api_key": "k-1"}'}),
        action="tool.add",
        resource_type="tool",
        resource_id="agent_page/crm",
        user_id="member-user",
    )
    _one_entry(
        form("member", "/agents/agent_page/tools/crm/", {"config": '{"api_key": "k-2"}'}),
        action="tool.config_update",
        resource_type="tool",
        resource_id="agent_page/crm",
        user_id="member-user",
    )
    _one_entry(
        form("member", "/agents/agent_page/tools/crm/remove/"),
        action="tool.remove",
        resource_type="tool",
        resource_id="agent_page/crm",
        user_id="member-user",
    )
    _one_entry(
        form("member", "/phone-numbers/", {"number": "+14155550100", "agent": "agent_page"}),
        action="phone_number.assign",
        resource_type="phone_number",
        resource_id="+14155550100",
        user_id="member-user",
    )
    phone = PhoneNumber.objects.get(number="+14155550100")
    _one_entry(
        form("member", f"/phone-numbers/{phone.pk}/release/"),
        action="phone_number.release",
        resource_type="phone_number",
        resource_id="+14155550100",
        user_id="member-user",
    )
    page_first = _one_entry(
        form("admin", "/agents/agent_page/deployments/", {"changes": "first"}),
        action="deployment.create",
        resource_type="deployment",
        resource_id=latest_deployment,
        user_id="admin-user",
    )
    _one_entry(
        form("admin", "/agents/agent_page/deployments/", {"changes": "second", "version": "v2-rc"}),
        action="deployment.create",
        resource_type="deployment",
        resource_id=latest_deployment,
        user_id="admin-user",
    )
    _one_entry(
        form("admin", f"/agents/agent_page/deployments/{page_first.resource_id}/rollback/"),
        action="deployment.rollback",
        resource_type="deployment",
        resource_id=latest_deployment,
        user_id="admin-user",
    )
    _one_entry(
        form("admin", "/settings/team/", {"email": "new@example.com", "role": "viewer"}),
        action="member.invite",
        resource_type="member",
        resource_id="new@example.com",
        user_id="admin-user",
    )
    link = re.search(r"/invitation/\S+/", mailoutbox[-1].body).group(0)
    invitee = Client()
    set_password_url = invitee.get(link, follow=True).redirect_chain[-1][0]
    _one_entry(
        lambda ip: invitee.post(
            set_password_url,
            {"new_password1": "a-long-passphrase", "new_password2": "a-long-passphrase"},
            REMOTE_ADDR=ip,
        ),
        action="member.invite_accept",
        resource_type="member",
        resource_id="new@example.com",
        user_id="new@example.com",
    )
    get_user_model().objects.filter(username="stranger").update(email="stranger@example.com")
    _one_entry(
        form("admin", "/settings/team/", {"email": "stranger@example.com", "role": "viewer"}),
        action="member.invite",
        resource_type="member",
        resource_id="stranger@example.com",
        user_id="admin-user",
    )
    _one_entry(
        lambda ip: members["outsider"].post(
            f"/invitations/{Invitation.objects.get(email='stranger@example.com').pk}/join/", REMOTE_ADDR=ip
        ),
        action="member.invite_accept",
        resource_type="member",
        resource_id="stranger",
        user_id="stranger",
    )
    members["admin"].post("/settings/team/", {"email": "later@example.com", "role": "viewer"})
    _one_entry(
        form("admin", f"/settings/team/invitations/{Invitation.objects.get().pk}/cancel/"),
        action="member.invite_cancel",
        resource_type="member",
        resource_id="later@example.com",
        user_id="admin-user",
    )
    invited = Membership.objects.get(user__username="new@example.com")
    _one_entry(
        form("admin", f"/settings/team/{invited.pk}/role/", {"role": "member"}),
        action="member.role_change",
        resource_type="member",
        resource_id="new@example.com",
        user_id="admin-user",
    )
    _one_entry(
        form("owner", f"/settings/team/{invited.pk}/remove/"),
        action="member.remove",
        resource_type="member",
        resource_id="new@example.com",
        user_id="owner-user",
    )
    _one_entry(
        lambda ip: superuser.post(
            f"/admin/accounts/organisation/{tenant.organisation.pk}/change/",
            {
                "slug": "acme",
                "name": "Acme Inc",
                "timezone": "UTC",
                "created_at_0": "2026-01-01",
                "created_at_1": "00:00:00",
                "memberships-TOTAL_FORMS": "0",
                "memberships-INITIAL_FORMS": "0",
            },
            REMOTE_ADDR=ip,
        ),
        action="organisation.update",
        resource_type="organisation",
        resource_id="acme",
        user_id="root",
    )
    _one_entry(
        form("member", "/agents/agent_page/archive/"),
        action="agent.delete",
        resource_type="agent",
        resource_id="agent_page",
        user_id="member-user",
    )


def test_a_proxy_header_counts_only_when_configured_as_trusted(tenant, settings):
    key = tenant.api("admin")

    def recorded_ip(forwarded: str) -> str:
        body = {"action": "agent.update", "resource_type": "agent"}
        r = key.post("/api/admin/audit/events", body, REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=forwarded)
        assert r.status_code == 201
        return r.json()["ip_address"]

    # The client claims 198.51.100.66; the proxy appended the address it saw.
    assert recorded_ip("198.51.100.66, 203.0.113.9") == "10.0.0.1"
    settings.TRUSTED_PROXY_HEADER = "HTTP_X_FORWARDED_FOR"
    assert recorded_ip("198.51.100.66, 203.0.113.9") == "203.0.113.9"
    assert recorded_ip("2001:db8::1") == "2001:db8::1"
    assert recorded_ip("not-an-address") == "10.0.0.1"
