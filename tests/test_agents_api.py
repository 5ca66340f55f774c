"""Managing agents through the API: create, change, archive; validation and audit."""

import pytest

from agents.models import Agent
from audit.models import AuditLog

from .conftest import trace

SECRET = "sk-live0123456789abcdefGHIJKL"

SUPPORT = {
    "id": "agent_support",
    "name": "Support Agent",
    "config": {
        "instructions": "Answer politely.",
        "model": "gpt-4o-mini",
        "temperature": 0.3,
        "tools": [{"name": "gmail", "config": {"api_key": SECRET, "from": "help@example.com"}}],
    },
}


@pytest.fixture
def admin(tenant):
    return tenant.api("admin")


@pytest.fixture
def support(admin):
    r = admin.post("/api/agents", SUPPORT)
    assert r.status_code == 201, r.content
    return r.json()


def _patch(client, path, body):
    return client.client.patch(path, body, content_type="application/json", **client._headers())


def _delete(client, path):
    return client.client.delete(path, **client._headers())


def test_it_creates_an_agent_and_masks_its_tool_secrets(support):
    assert support["id"] == "agent_support"
    assert support["config"]["temperature"] == 0.3
    gmail = support["config"]["tools"][0]
    assert gmail["config"]["from"] == "help@example.com"
    assert gmail["config"]["api_key"].startswith("[redacted:")
    assert Agent.objects.get(public_id="agent_support").config["tools"][0]["config"]["api_key"] == SECRET


CRM_SETTINGS = {"note": "my password is hunter2-horse", "endpoint": "https://crm.example.com"}


def _crm_tool(admin, **public) -> None:
    tools = [{"name": "crm", "config": CRM_SETTINGS, **public}]
    r = admin.post("/api/agents", {"id": "agent_crm", "name": "CRM", "config": {"tools": tools}})
    assert r.status_code == 201, r.content


def test_a_key_without_the_admin_scope_reads_every_tool_setting_masked(tenant, admin):
    _crm_tool(admin)
    for scopes in (["read"], ["ingest", "read"]):
        crm = tenant.api(*scopes).get("/api/agents/agent_crm").json()["config"]["tools"][0]
        assert crm["config"] == {"note": "[redacted]", "endpoint": "[redacted]"}, scopes


def test_a_key_without_the_admin_scope_reads_the_settings_a_tool_makes_public(tenant, admin):
    _crm_tool(admin, public_settings=["endpoint"])
    crm = tenant.api("read").get("/api/agents/agent_crm").json()["config"]["tools"][0]
    assert crm == {
        "name": "crm",
        "config": {"note": "[redacted]", "endpoint": "https://crm.example.com"},
        "public_settings": ["endpoint"],
    }


def test_a_key_with_the_admin_scope_reads_every_tool_setting_but_known_secrets(tenant, admin):
    _crm_tool(admin)
    crm = tenant.api("admin", "read").get("/api/agents/agent_crm").json()["config"]["tools"][0]
    assert crm["config"] == CRM_SETTINGS


def test_it_generates_an_id_when_none_is_sent(admin):
    r = admin.post("/api/agents", {"name": "Nameless"})
    assert r.status_code == 201
    assert r.json()["id"].startswith("agent_")
    assert r.json()["config"] == {"instructions": "", "model": "", "temperature": None, "tools": []}


def test_creating_an_existing_id_is_a_conflict(admin, support):
    r = admin.post("/api/agents", SUPPORT)
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "agent_exists"


def test_an_agent_registered_by_ingestion_also_conflicts(admin, ingest):
    ingest.post("/api/traces", trace(agent_id="agent_seen"))
    r = admin.post("/api/agents", {"id": "agent_seen", "name": "Seen"})
    assert r.status_code == 409


@pytest.mark.parametrize(
    "body, field",
    [
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "A", "config": {"temperature": 2.5}}, "config.temperature"),
        ({"name": "A", "config": {"temperature": -0.1}}, "config.temperature"),
        ({"name": "A", "config": {"temperature": True}}, "config.temperature"),
        ({"name": "A", "config": {"temperature": "hot"}}, "config.temperature"),
        ({"name": "A", "config": {"tools": [{"name": "has space"}]}}, "config.tools.0.name"),
        ({"name": "A", "config": {"tools": [{"name": "t"}, {"name": "t"}]}}, "config.tools"),
        ({"name": "A", "config": {"tools": [{"name": "t", "config": "x"}]}}, "config.tools.0.config"),
        ({"name": "A", "config": {"colour": "red"}}, "config.colour"),
        ({"name": "A", "id": "has/slash"}, "id"),
        ({"name": "A", "surprise": 1}, "surprise"),
        ({"name": "A", "config": {"instructions": "nul\x00"}}, "config.instructions"),
    ],
)
def test_it_refuses_invalid_agents_naming_the_field(admin, body, field):
    r = admin.post("/api/agents", body)
    assert r.status_code == 400, r.content
    error = r.json()["error"]
    assert error["code"] == "invalid_request"
    assert field in error["message"]
    assert not AuditLog.objects.filter(action="agent.create").exists()


def test_it_refuses_malformed_json(admin):
    r = admin.post("/api/agents", raw="{not json")
    assert r.status_code == 400
    assert "error" in r.json()


def test_patch_changes_only_what_is_sent_and_audits_the_fields(admin, support):
    r = _patch(
        admin, "/api/agents/agent_support", {"config": {"instructions": "Be brief.", "temperature": 0.7}}
    )
    assert r.status_code == 200, r.content
    config = r.json()["config"]
    assert (config["instructions"], config["temperature"], config["model"]) == (
        "Be brief.",
        0.7,
        "gpt-4o-mini",
    )
    entry = AuditLog.objects.get(action="agent.update")
    assert entry.resource_id == "agent_support"
    assert entry.details["changed_fields"] == ["instructions", "temperature"]
    assert entry.details["old"] == {"instructions": "Answer politely.", "temperature": 0.3}
    assert entry.details["new"] == {"instructions": "Be brief.", "temperature": 0.7}


def test_patch_renames(admin, support):
    r = _patch(admin, "/api/agents/agent_support", {"name": "Helpdesk"})
    assert r.json()["name"] == "Helpdesk"
    assert AuditLog.objects.get(action="agent.update").details["changed_fields"] == ["name"]


def test_patch_that_changes_nothing_records_nothing(admin, support):
    r = _patch(admin, "/api/agents/agent_support", {"config": {"model": "gpt-4o-mini"}})
    assert r.status_code == 200
    assert not AuditLog.objects.filter(action="agent.update").exists()


def test_patch_with_an_empty_body_is_refused(admin, support):
    assert _patch(admin, "/api/agents/agent_support", {}).status_code == 400


def test_sending_masked_tools_back_keeps_the_secret(admin, support):
    tools = support["config"]["tools"]
    tools[0]["config"]["from"] = "support@example.com"
    r = _patch(admin, "/api/agents/agent_support", {"config": {"tools": tools}})
    assert r.status_code == 200, r.content
    stored = Agent.objects.get(public_id="agent_support").config["tools"][0]["config"]
    assert stored == {"api_key": SECRET, "from": "support@example.com"}


def test_a_new_tool_secret_is_stored_and_the_log_shows_only_that_it_changed(admin, support):
    tools = [
        {"name": "gmail", "config": {"api_key": "sk-new9876543210zyxwvuTSRQ", "from": "help@example.com"}}
    ]
    r = _patch(admin, "/api/agents/agent_support", {"config": {"tools": tools}})
    assert r.status_code == 200
    entry = AuditLog.objects.get(action="agent.update")
    assert entry.details["changed_fields"] == ["tools"]
    old_key = entry.details["old"]["tools"][0]["config"]["api_key"]
    new_key = entry.details["new"]["tools"][0]["config"]["api_key"]
    assert old_key.startswith("[redacted:") and new_key.startswith("[redacted:") and old_key != new_key
    assert "sk-new" not in str(entry.details) and SECRET not in str(entry.details)


def test_a_mask_that_matches_nothing_stored_is_refused(admin, support):
    tools = [{"name": "slack", "config": {"token": "[redacted:0123abcd]"}}]
    r = _patch(admin, "/api/agents/agent_support", {"config": {"tools": tools}})
    assert r.status_code == 400
    assert "masked value" in r.json()["error"]["message"]


def test_temperature_can_be_reset_to_the_model_default(admin, support):
    r = _patch(admin, "/api/agents/agent_support", {"config": {"temperature": None}})
    assert r.json()["config"]["temperature"] is None


def test_patch_refuses_an_id_change(admin, support):
    assert _patch(admin, "/api/agents/agent_support", {"id": "agent_other"}).status_code == 400


def test_delete_archives_and_keeps_the_agent(admin, support, tenant):
    r = _delete(admin, "/api/agents/agent_support")
    assert r.status_code == 204
    agent = Agent.objects.get(public_id="agent_support")
    assert agent.archived_at is not None
    assert tenant.api("read").get("/api/agents/agent_support").json()["archived"] is True
    entry = AuditLog.objects.get(action="agent.delete")
    assert (entry.resource_type, entry.resource_id) == ("agent", "agent_support")
    # Archiving again changes nothing and records nothing.
    assert _delete(admin, "/api/agents/agent_support").status_code == 204
    assert AuditLog.objects.filter(action="agent.delete").count() == 1


def test_an_archived_agent_cannot_be_changed(admin, support):
    _delete(admin, "/api/agents/agent_support")
    r = _patch(admin, "/api/agents/agent_support", {"name": "Back"})
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "agent_archived"


@pytest.mark.parametrize("method", ["get", "patch", "delete"])
def test_unknown_and_other_organisations_agents_are_not_found(tenant, support, outsider, method):
    ours, theirs = tenant.api("admin", "ingest", "read"), outsider.api("admin", "ingest", "read")
    for client, path in ((ours, "/api/agents/agent_nope"), (theirs, "/api/agents/agent_support")):
        if method == "get":
            r = client.get(path)
        elif method == "patch":
            r = _patch(client, path, {"name": "X"})
        else:
            r = _delete(client, path)
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "not_found"
    assert Agent.objects.get(public_id="agent_support").name == "Support Agent"


def test_managing_agents_needs_the_admin_scope(tenant, support):
    r = tenant.api("ingest", "read").post("/api/agents", {"name": "X"})
    assert r.status_code == 403
    assert "'admin' scope" in r.json()["error"]["message"]
    assert _patch(tenant.api("read"), "/api/agents/agent_support", {"name": "X"}).status_code == 403
    assert _delete(tenant.api("read"), "/api/agents/agent_support").status_code == 403
    assert tenant.api("read").get("/api/agents/agent_support").status_code == 200
