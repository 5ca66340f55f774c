"""Deployments: recording them, history, rollback (API and the Deployments tab)."""

import pytest

from agents.models import Agent, Deployment
from audit.models import AuditLog

from .conftest import _tenant, postgres_only, trace
from .test_ingest_concurrency import _race

V1 = {"instructions": "Version one.", "model": "gpt-4o-mini", "temperature": 0.2, "tools": []}
V2 = {"instructions": "Version two.", "model": "gpt-4o", "temperature": 0.9, "tools": []}


@pytest.fixture
def admin(tenant):
    return tenant.api("admin", "ingest", "read")


@pytest.fixture
def agent(admin):
    assert (
        admin.post("/api/agents", {"id": "agent_abc123", "name": "Support", "config": V1}).status_code == 201
    )
    return Agent.objects.get(public_id="agent_abc123")


@pytest.fixture
def deployed(admin, agent):
    """v1 and v2 deployed; v2 active."""
    one = admin.post("/api/deployments/agent_abc123", {"changes": "Initial release"})
    two = admin.post("/api/deployments/agent_abc123", {"changes": "New prompt", "config": V2})
    assert (one.status_code, two.status_code) == (201, 201), two.content
    return one.json(), two.json()


def _history(client) -> list[dict]:
    r = client.get("/api/deployments/agent_abc123/history")
    assert r.status_code == 200
    return r.json()["deployments"]


def test_a_deployment_gets_the_next_version_and_supersedes_the_active_one(admin, deployed):
    one, two = deployed
    assert (one["version"], two["version"]) == ("v1", "v2")
    assert two["status"] == "active" and two["deployed_by"].startswith("apikey:")
    assert two["config"]["instructions"] == "Version two."
    assert Deployment.objects.get(pk=one["id"]).status == "superseded"
    assert Agent.objects.get(public_id="agent_abc123").config["instructions"] == "Version two."


def test_without_a_config_the_deployment_snapshots_the_agent(admin, deployed):
    one, _ = deployed
    assert Deployment.objects.get(pk=one["id"]).config == V1


def test_history_has_the_product_shape_newest_first(admin, deployed):
    one, two = deployed
    history = _history(admin)
    assert [d["id"] for d in history] == [two["id"], one["id"]]
    assert set(history[0]) >= {"id", "version", "status", "deployed_at", "deployed_by", "changes"}
    assert history[0]["status"] == "active" and history[1]["status"] == "superseded"
    assert history[0]["changes"] == "New prompt"
    assert history[0]["deployed_at"].endswith("Z")


def test_a_named_version_is_kept_and_a_used_label_is_a_conflict(admin, agent):
    r = admin.post("/api/deployments/agent_abc123", {"version": "2026.03-rc1", "changes": "x"})
    assert r.status_code == 201 and r.json()["version"] == "2026.03-rc1"
    r = admin.post("/api/deployments/agent_abc123", {"version": "2026.03-rc1", "changes": "again"})
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "version_exists"
    assert (
        admin.post("/api/deployments/agent_abc123", {"version": "bad label", "changes": "x"}).status_code
        == 400
    )
    assert (
        admin.post("/api/deployments/agent_abc123", {"version": "v3"}).status_code == 400
    )  # changes missing


def test_the_default_label_follows_the_highest_number(admin, agent):
    admin.post("/api/deployments/agent_abc123", {"version": "v7", "changes": "x"})
    assert admin.post("/api/deployments/agent_abc123", {"changes": "y"}).json()["version"] == "v8"


def test_traces_carry_the_version_active_when_ingested_or_the_callers(admin, deployed):
    admin.post("/api/traces", trace(id="t_before", session_id="s1"))
    admin.post("/api/deployments/agent_abc123/rollback", {"version_id": deployed[0]["id"]})
    admin.post("/api/traces", trace(id="t_after", session_id="s2"))
    admin.post("/api/traces", trace(id="t_named", session_id="s3", deployment_version="v1"))
    versions = {
        t: admin.get(f"/api/traces/{t}").json()["deployment_version"]
        for t in ("t_before", "t_after", "t_named")
    }
    assert versions == {"t_before": "v2", "t_after": "v3", "t_named": "v1"}


def test_rollback_appends_an_entry_and_restores_the_configuration(admin, deployed):
    one, two = deployed
    r = admin.post("/api/deployments/agent_abc123/rollback", {"version_id": one["id"]})
    assert r.status_code == 200, r.content
    now = r.json()
    assert now["status"] == "active" and now["rollback_of"] == one["id"]
    assert now["version"] == "v3" and now["id"] not in (one["id"], two["id"])
    assert now["config"]["instructions"] == "Version one."
    statuses = {d["id"]: d["status"] for d in _history(admin)}
    assert statuses == {now["id"]: "active", two["id"]: "rolled_back", one["id"]: "superseded"}
    assert Agent.objects.get(public_id="agent_abc123").config == V1
    entry = AuditLog.objects.get(action="deployment.rollback")
    assert entry.resource_id == str(now["id"])
    assert entry.details["rollback_of"] == one["id"] and entry.details["rolled_back"] == "v2"
    assert entry.details["changed_fields"] == ["instructions", "model", "temperature"]


def test_rolling_back_to_what_is_active_is_a_conflict(admin, deployed):
    one, two = deployed
    assert admin.post("/api/deployments/agent_abc123/rollback", {"version_id": two["id"]}).status_code == 409
    admin.post("/api/deployments/agent_abc123/rollback", {"version_id": one["id"]})
    # A second click on the same rollback changes nothing.
    r = admin.post("/api/deployments/agent_abc123/rollback", {"version_id": one["id"]})
    assert r.status_code == 409 and r.json()["error"]["code"] == "already_active"
    assert AuditLog.objects.filter(action="deployment.rollback").count() == 1


def test_one_can_roll_forward_again(admin, deployed):
    one, two = deployed
    admin.post("/api/deployments/agent_abc123/rollback", {"version_id": one["id"]})
    r = admin.post("/api/deployments/agent_abc123/rollback", {"version_id": two["id"]})
    assert r.status_code == 200 and r.json()["version"] == "v4"
    assert Agent.objects.get(public_id="agent_abc123").config["instructions"] == "Version two."
    assert Deployment.objects.filter(agent__public_id="agent_abc123", status="active").count() == 1


@pytest.mark.parametrize(
    "body",
    [None, {}, {"version_id": "4"}, {"version_id": 0}, {"version_id": True}, {"version_id": 4, "x": 1}],
)
def test_a_missing_or_invalid_body_is_a_400(admin, deployed, body):
    r = admin.post("/api/deployments/agent_abc123/rollback", raw="" if body is None else None, body=body)
    assert r.status_code == 400, r.content
    assert r.json()["error"]["code"] in ("invalid_request", "error")


def test_an_unknown_or_another_agents_deployment_is_not_found(admin, deployed):
    assert admin.post("/api/agents", {"id": "agent_other", "name": "Other"}).status_code == 201
    theirs = admin.post("/api/deployments/agent_other", {"changes": "x"}).json()
    for version_id in (999_999, theirs["id"]):
        r = admin.post("/api/deployments/agent_abc123/rollback", {"version_id": version_id})
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "not_found"
    assert not AuditLog.objects.filter(action="deployment.rollback").exists()


def test_another_organisation_sees_nothing(admin, deployed, outsider):
    theirs = outsider.api("admin", "ingest", "read")
    assert theirs.get("/api/deployments/agent_abc123/history").status_code == 404
    r = theirs.post("/api/deployments/agent_abc123/rollback", {"version_id": deployed[0]["id"]})
    assert r.status_code == 404
    assert theirs.post("/api/deployments/agent_abc123", {"changes": "x"}).status_code == 404


def test_scopes(tenant, deployed):
    read_only = tenant.api("ingest", "read")
    assert read_only.get("/api/deployments/agent_abc123/history").status_code == 200
    r = read_only.post("/api/deployments/agent_abc123/rollback", {"version_id": deployed[0]["id"]})
    assert r.status_code == 403
    assert read_only.post("/api/deployments/agent_abc123", {"changes": "x"}).status_code == 403
    assert tenant.api("admin").get("/api/deployments/agent_abc123/history").status_code == 403


def test_an_archived_agent_is_neither_deployed_nor_rolled_back(admin, deployed):
    admin.client.delete("/api/agents/agent_abc123", **admin._headers())
    assert admin.post("/api/deployments/agent_abc123", {"changes": "x"}).status_code == 409
    r = admin.post("/api/deployments/agent_abc123/rollback", {"version_id": deployed[0]["id"]})
    assert r.status_code == 409
    assert len(_history(admin)) == 2


# --- the Deployments tab ---------------------------------------------------------


def test_the_tab_lists_history_and_offers_rollback_to_admins_only(members, deployed):
    one, _ = deployed
    rollback_url = f"/agents/agent_abc123/deployments/{one['id']}/rollback/"
    page = members["admin"].get("/agents/agent_abc123/deployments/").content.decode()
    assert "Initial release" in page and "New prompt" in page and rollback_url in page
    page = members["member"].get("/agents/agent_abc123/deployments/").content.decode()
    assert "Initial release" in page and rollback_url not in page


def test_rollback_from_the_page_asks_for_confirmation_first(members, deployed):
    one, _ = deployed
    url = f"/agents/agent_abc123/deployments/{one['id']}/rollback/"
    confirm = members["admin"].get(url)
    assert confirm.status_code == 200
    body = confirm.content.decode()
    assert "Roll back to v1?" in body and "instructions" in body
    assert not AuditLog.objects.filter(action="deployment.rollback").exists()
    r = members["admin"].post(url)
    assert r.status_code == 302
    entry = AuditLog.objects.get(action="deployment.rollback")
    assert entry.user_id == "admin-user"
    assert (
        Deployment.objects.get(agent__public_id="agent_abc123", status="active").rollback_of_id == one["id"]
    )


def test_a_viewer_or_member_cannot_roll_back_and_an_outsider_gets_404(members, deployed):
    url = f"/agents/agent_abc123/deployments/{deployed[0]['id']}/rollback/"
    for role in ("viewer", "member"):
        assert members[role].get(url).status_code == 403
        assert members[role].post(url).status_code == 403
    assert members["outsider"].post(url).status_code == 404
    assert members["admin"].post("/agents/agent_abc123/deployments/999999/rollback/").status_code == 404
    assert not AuditLog.objects.filter(action="deployment.rollback").exists()


def test_an_admin_deploys_the_current_configuration_from_the_tab(members, deployed):
    r = members["admin"].post("/agents/agent_abc123/deployments/", {"changes": "Tweak", "version": ""})
    assert r.status_code == 302
    assert Deployment.objects.get(agent__public_id="agent_abc123", status="active").version == "v3"
    assert members["member"].post("/agents/agent_abc123/deployments/", {"changes": "x"}).status_code == 403
    r = members["admin"].post("/agents/agent_abc123/deployments/", {"changes": "dup", "version": "v1"})
    assert r.status_code == 400 and b"already has a deployment v1" in r.content


@postgres_only()
@pytest.mark.django_db(transaction=True)
def test_concurrent_rollbacks_never_leave_two_active_deployments(live_server):
    tenant = _tenant("race-rollback")
    key = tenant.keys["admin,ingest,read"]
    client = tenant.api("admin", "ingest", "read")
    client.post("/api/agents", {"id": "agent_abc123", "name": "Support", "config": V1})
    ids = [client.post("/api/deployments/agent_abc123", {"changes": f"d{n}"}).json()["id"] for n in range(4)]
    url = f"{live_server.url}/api/deployments/agent_abc123/rollback"
    results = _race(url, key, [{"version_id": ids[n % 3]} for n in range(6)])
    assert {status for status, _ in results} <= {200, 409}
    succeeded = [body for status, body in results if status == 200]
    assert succeeded
    assert Deployment.objects.filter(agent__public_id="agent_abc123", status="active").count() == 1
    assert AuditLog.objects.filter(
        organisation=tenant.organisation, action="deployment.rollback"
    ).count() == len(succeeded)
    versions = list(
        Deployment.objects.filter(agent__public_id="agent_abc123").values_list("version", flat=True)
    )
    assert len(versions) == len(set(versions)) == 4 + len(succeeded)
