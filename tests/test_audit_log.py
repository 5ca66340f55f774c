"""The audit log: reading it through the API, platform events, and why entries
can never be changed or deleted (application guards and the PostgreSQL trigger)."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import DatabaseError, connection, transaction
from django.test import RequestFactory

from accounts.models import ApiKey
from audit.models import AppendOnlyError, AuditLog
from audit.services import Actor, audit_record

from .conftest import postgres_only


@pytest.fixture
def admin(tenant):
    return tenant.api("admin")


def _event(client, **fields):
    body = {"action": "agent.update", "resource_type": "agent", "resource_id": "agent_abc123", **fields}
    return client.post("/api/admin/audit/events", body, REMOTE_ADDR="198.51.100.7")


@pytest.fixture
def entries(tenant):
    """Six entries of the tenant an hour apart from 2026-03-06 12:00 UTC, oldest
    first (beside the entries the key fixtures left, which are newer)."""
    base = datetime(2026, 3, 6, 12, 0, tzinfo=UTC)
    rows = [
        ("agent.create", "agent_a"),
        ("agent.update", "agent_a"),
        ("agent.update", "agent_b"),
        ("phone_number.assign", "+14155550100"),
        ("agent.delete", "agent_a"),
        ("agent.update", "agent_a"),
    ]
    return [
        AuditLog.objects.create(
            organisation=tenant.organisation,
            user_id="ana" if n % 2 else "bo",
            ip_address="203.0.113.42",
            action=action,
            resource_type=action.split(".")[0],
            resource_id=resource,
            details={"n": n},
            created_at=base + timedelta(hours=n),
        )
        for n, (action, resource) in enumerate(rows)
    ]


def _logs(client, **params):
    r = client.get("/api/admin/audit/logs", params)
    assert r.status_code == 200, r.content
    return r.json()


def test_logs_have_the_product_shape_newest_first(admin, entries):
    body = _logs(admin, limit=50, resource_type="agent")
    assert set(body) == {"logs", "next_cursor"}
    first = body["logs"][0]
    assert set(first) == {
        "id",
        "user_id",
        "action",
        "resource_type",
        "resource_id",
        "details",
        "ip_address",
        "created_at",
    }
    assert (first["action"], first["resource_id"], first["user_id"]) == ("agent.update", "agent_a", "ana")
    assert first["ip_address"] == "203.0.113.42" and first["created_at"].endswith("Z")
    ids = [e["id"] for e in body["logs"]]
    assert ids == sorted(ids, reverse=True)
    assert body["next_cursor"] is None


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"action": "agent.update"}, [5, 2, 1]),
        ({"resource_type": "phone_number"}, [3]),
        ({"resource_id": "agent_a"}, [5, 4, 1, 0]),
        ({"user_id": "bo", "resource_type": "agent"}, [4, 2, 0]),
        ({"action": "agent.update", "resource_id": "agent_b"}, [2]),
        ({"action": "nothing.matches"}, []),
    ],
)
def test_filters(admin, entries, params, expected):
    got = [e["id"] for e in _logs(admin, **params)["logs"]]
    assert got == [entries[n].pk for n in expected]


def test_from_and_to_bound_a_window(admin, entries):
    window = {"from": "2026-03-06T13:00:00Z", "to": "2026-03-06T15:00:00Z"}
    assert [e["id"] for e in _logs(admin, **window)["logs"]] == [entries[2].pk, entries[1].pk]
    naive = {"from": "2026-03-06T13:00:00", "to": "2026-03-06T15:00:00"}
    assert [e["id"] for e in _logs(admin, **naive)["logs"]] == [entries[2].pk, entries[1].pk]
    offset = {"from": "2026-03-06T17:00:00+02:00", "to": "2026-03-06T16:00:00Z"}
    assert [e["id"] for e in _logs(admin, **offset)["logs"]] == [entries[3].pk]


def test_cursor_pagination_visits_every_entry_once(admin, entries, tenant):
    total = AuditLog.objects.filter(organisation=tenant.organisation).count()
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = _logs(admin, **params)
        seen += [e["id"] for e in page["logs"]]
        audit_record(
            organisation=tenant.organisation, actor=Actor.system("test"), action="x.y", resource_type="x"
        )
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == total


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 201},
        {"limit": "many"},
        {"cursor": "not-a-cursor"},
        {"cursor": "WyJ4Il0"},
        {"from": "yesterday"},
        {"from": "2026-03-07T00:00:00Z", "to": "2026-03-06T00:00:00Z"},
        {"action": "a" * 65},
    ],
)
def test_bad_parameters_are_a_400_in_the_error_shape(admin, entries, params):
    r = admin.get("/api/admin/audit/logs", params)
    assert r.status_code == 400, r.content
    assert set(r.json()["error"]) == {"code", "message", "details"}


def test_reading_the_log_needs_the_admin_scope_and_stays_in_the_organisation(tenant, outsider, entries):
    assert tenant.api("ingest", "read").get("/api/admin/audit/logs").status_code == 403
    theirs = _logs(outsider.api("admin"), limit=200)["logs"]
    assert all(e["resource_id"] not in ("agent_a", "agent_b") for e in theirs)


# --- platform events ---------------------------------------------------------------


def test_the_platform_records_an_event_and_gets_the_stored_entry(admin, tenant):
    r = _event(admin, details={"changed_fields": ["instructions", "temperature"]})
    assert r.status_code == 201, r.content
    body = r.json()
    stored = AuditLog.objects.get(pk=body["id"])
    assert stored.organisation == tenant.organisation
    assert body["user_id"] == stored.user_id and stored.user_id.startswith("apikey:")
    assert body["ip_address"] == "198.51.100.7"
    assert body["details"] == {"changed_fields": ["instructions", "temperature"]}
    assert _logs(admin, action="agent.update")["logs"][0] == body


def test_an_event_can_name_the_platforms_user_and_keeps_the_reporting_key(admin, tenant):
    r = _event(admin, user_id="auth0|abc123", ip_address="203.0.113.42")
    body = r.json()
    assert (body["user_id"], body["ip_address"]) == ("auth0|abc123", "203.0.113.42")
    prefix = ApiKey.objects.get(organisation=tenant.organisation, name="admin").prefix
    assert body["details"]["recorded_by"] == f"apikey:{prefix}"


@pytest.mark.parametrize(
    "fields",
    [
        {"action": "update"},
        {"action": "Agent.Update"},
        {"action": "agent.update;drop"},
        {"action": "a." + "b" * 70},
        {"resource_type": "Agent"},
        {"resource_type": ""},
        {"resource_id": "x" * 201},
        {"resource_id": "line\nbreak"},
        {"user_id": ""},
        {"ip_address": "not-an-ip"},
        {"details": ["not", "an", "object"]},
        {"details": {"text": "nul\x00"}},
        {"details": {"blob": "x" * 40_000}},
        {
            "details": {
                "a": {
                    "b": {
                        "c": {
                            "d": {
                                "e": {
                                    "f": {
                                        "g": {
                                            "h": {
                                                "i": {"j": {"k": {"l": {"m": {"n": {"o": {"p": {"q": 1}}}}}}}}
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
        {"created_at": "2020-01-01T00:00:00Z"},
    ],
)
def test_invalid_events_are_refused(admin, fields):
    before = AuditLog.objects.count()
    r = _event(admin, **fields)
    assert r.status_code == 400, r.content
    assert r.json()["error"]["code"] == "invalid_request"
    assert AuditLog.objects.count() == before


def test_recording_events_needs_the_admin_scope(tenant):
    assert _event(tenant.api("ingest", "read")).status_code == 403
    assert AuditLog.objects.filter(action="agent.update").count() == 0


# --- append-only ---------------------------------------------------------------------


def test_the_application_cannot_change_or_delete_entries(admin):
    entry = AuditLog.objects.get(pk=_event(admin).json()["id"])
    entry.action = "agent.delete"
    with pytest.raises(AppendOnlyError):
        entry.save()
    with pytest.raises(AppendOnlyError):
        entry.delete()
    with pytest.raises(AppendOnlyError):
        AuditLog.objects.filter(pk=entry.pk).update(action="agent.delete")
    with pytest.raises(AppendOnlyError):
        AuditLog.objects.filter(pk=entry.pk).delete()
    with pytest.raises(AppendOnlyError):
        AuditLog.objects.bulk_update([entry], ["action"])
    assert AuditLog.objects.get(pk=entry.pk).action == "agent.update"


@postgres_only()
@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit_auditlog SET action = 'agent.delete' WHERE id = %s",
        "UPDATE audit_auditlog SET details = '{}' WHERE id = %s",
        "DELETE FROM audit_auditlog WHERE id = %s",
        "TRUNCATE audit_auditlog CASCADE",
    ],
)
def test_the_database_refuses_changes_even_from_raw_sql(admin, sql):
    entry_id = _event(admin).json()["id"]
    with pytest.raises(DatabaseError, match="append-only"):
        with transaction.atomic(), connection.cursor() as cursor:
            # The test's own inserts leave deferred foreign-key checks pending,
            # which TRUNCATE would trip over before reaching the trigger.
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            cursor.execute(sql, [entry_id] if "%s" in sql else None)
    assert AuditLog.objects.filter(pk=entry_id, action="agent.update").exists()


def test_an_actor_for_a_request_is_its_api_key_else_the_person_signed_in(tenant, django_user_model):
    api_key = ApiKey.objects.filter(organisation=tenant.organisation).first()
    api_call = RequestFactory().post("/api/traces", REMOTE_ADDR="198.51.100.7")
    api_call.auth = api_key
    assert Actor.for_request(api_call) == Actor(user_id=api_key.actor_id, ip_address="198.51.100.7")

    ana = django_user_model.objects.create_user("ana")
    page = RequestFactory().post("/agents/", REMOTE_ADDR="203.0.113.9")
    page.user = ana
    assert Actor.for_request(page) == Actor(user_id="ana", user=ana, ip_address="203.0.113.9")
