"""Who may call what: keys by scope, other organisations, revoked keys."""

import pytest
from django.test import Client

from accounts.models import ApiKey
from accounts.services import api_key_revoke
from audit.services import Actor

from .conftest import ApiClient, trace


@pytest.fixture
def stored(ingest):
    assert ingest.post("/api/traces", trace(id="trace_xyz")).status_code == 200


READS = ["/api/agents/agent_abc123/traces", "/api/traces/trace_xyz", "/api/agents"]


@pytest.mark.parametrize("path", READS)
def test_it_refuses_a_missing_key(stored, path):
    r = Client().get(path)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthenticated"
    assert r["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize("header", ["Bearer nonsense", "Bearer ta_deadbeef_wrong", "Basic abc", "Bearer "])
def test_it_refuses_an_unknown_key(stored, header):
    r = Client().get(READS[0], HTTP_AUTHORIZATION=header)
    assert r.status_code == 401


def test_it_refuses_a_revoked_key(stored, tenant):
    reader = tenant.api("read")
    assert reader.get(READS[0]).status_code == 200
    api_key_revoke(api_key=ApiKey.objects.get(name="read"), actor=Actor.system("test"))
    assert reader.get(READS[0]).status_code == 401


@pytest.mark.parametrize("path", READS)
def test_reading_needs_the_read_scope(stored, tenant, path):
    r = tenant.api("ingest").get(path)
    assert r.status_code == 403
    assert "'read' scope" in r.json()["error"]["message"]
    assert tenant.api("read").get(path).status_code == 200


def test_ingesting_needs_the_ingest_scope(tenant):
    r = tenant.api("read").post("/api/traces", trace())
    assert r.status_code == 403
    assert "'ingest' scope" in r.json()["error"]["message"]


@pytest.mark.parametrize("path", READS[:2])
def test_another_organisations_objects_are_not_found(stored, outsider, path):
    r = outsider.api("read").get(path)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"
    assert "What are your hours" not in r.content.decode()


def test_another_organisations_agent_list_is_empty(stored, outsider):
    assert outsider.api("read").get("/api/agents").json() == {"agents": []}


def test_the_same_ids_in_two_organisations_stay_apart(stored, outsider, tenant):
    assert (
        outsider.api("ingest").post("/api/traces", trace(id="trace_xyz", input="theirs")).status_code == 200
    )
    assert tenant.api("read").get("/api/traces/trace_xyz").json()["input"] == "What are your hours?"
    assert outsider.api("read").get("/api/traces/trace_xyz").json()["input"] == "theirs"


def test_a_key_records_when_it_was_last_used(stored, tenant):
    key = ApiKey.objects.get(name="read")
    assert key.last_used_at is None
    tenant.api("read").get(READS[0])
    key.refresh_from_db()
    assert key.last_used_at is not None


def test_keys_are_stored_hashed(tenant):
    for key in ApiKey.objects.all():
        assert key.secret_hash not in tenant.keys.values()
        assert all(key.secret_hash not in raw for raw in tenant.keys.values())


def test_a_key_with_whitespace_is_still_recognised(stored, tenant):
    client = ApiClient(Client(), None)
    r = client.client.get(READS[0], HTTP_AUTHORIZATION=f"Bearer  {tenant.keys['read']} ")
    assert r.status_code == 200
