"""Secrets never reach the audit log: not the stored row, not the API answers,
not the admin's list, detail page or CSV export. Redacted by field name at any
depth and by value patterns anywhere."""

import json

import pytest

from audit.models import AuditLog

PRIVATE_KEY = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7Vx1sPrivate\n-----END RSA PRIVATE KEY-----"

# (where it sits in the details, the secret itself)
SECRETS_BY_NAME = [
    ({"api_key": "plain-words-key"}, "plain-words-key"),
    ({"password": "hunter2"}, "hunter2"),
    ({"headers": {"Authorization": "Token opensesame"}}, "opensesame"),
    ({"headers": {"X-Api-Key": "abc123xyz"}}, "abc123xyz"),
    ({"oauth": {"clientSecret": "client-shh"}}, "client-shh"),
    ({"credentials": {"user": "svc", "pass": "nested-pass"}}, "nested-pass"),
    ({"servers": [{"host": "a", "auth_token": "in-a-list"}]}, "in-a-list"),
    ({"webhook_url": "https://hooks.example.com/T0/B0/zzz"}, "hooks.example.com/T0/B0/zzz"),
    ({"pin": 4711}, "4711"),
    ({"accessKeyId": "plainaccess"}, "plainaccess"),
]
SECRETS_BY_VALUE = [
    "sk-proj-Ab3dEf6hIj9kLmN0pQrStUvWx",
    "sk-ant-api03-abcdefghij0123456789",
    "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    "github_pat_11ABCDEFG0123456789_abcdefghijkl",
    "xoxb-123456789012-abcdefghijklmnop",
    "AKIAIOSFODNN7EXAMPLE",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "AIzaSyA1234567890abcdefghijklmnopqrstuv",
    "sk_live_51HabcdefGHIJKL0123",
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MEFCQ0RFRkdISUpLTE1Ob3Bx",
]
IN_TEXT = [
    ("Use header 'Bearer abc.def-1234567' for calls", "abc.def-1234567"),
    ("connect to postgres://app:s3cr3t-pw@db.internal:5432/app", "s3cr3t-pw"),
    ("GET https://api.example.com/v1/items?api_key=qwerty987&page=2", "qwerty987"),
    ("login with password=correcthorse then retry", "correcthorse"),
    (PRIVATE_KEY, "MIIEowIBAAKCAQEA7Vx1sPrivate"),
]
NOT_SECRET = {
    "max_tokens": 500,
    "model": "gpt-4o-mini",
    "changed_fields": ["instructions", "temperature"],
    "uuid": "550e8400-e29b-41d4-a716-446655440000",
    "trace": "trace_0123456789abcdef01234567",
    "text": "Answer within 5 minutes; never share a password.",
    "enabled": True,
    "api_key": None,
}


@pytest.fixture
def admin(tenant):
    return tenant.api("admin", "ingest", "read")


def _details() -> tuple[dict, list[str]]:
    """Details holding every kind of secret, nested in dicts and lists, and the secrets."""
    details = {"by_name": [place for place, _ in SECRETS_BY_NAME]}
    details["by_value"] = {f"field{n}": value for n, value in enumerate(SECRETS_BY_VALUE)}
    details["deep"] = {"list": ["fine", ["deeper", {"note": SECRETS_BY_VALUE[0]}]]}
    details["text"] = [text for text, _ in IN_TEXT]
    details[SECRETS_BY_VALUE[4]] = "a secret used as a key"
    details["plain"] = NOT_SECRET
    secrets = [s for _, s in SECRETS_BY_NAME] + SECRETS_BY_VALUE + [s for _, s in IN_TEXT]
    return details, secrets


def _everywhere(entry: AuditLog, admin, superuser) -> dict[str, str]:
    """Every place an auditor or API caller can read the entry."""
    return {
        "row": json.dumps(entry.details) + entry.resource_id + entry.user_id,
        "api": admin.get("/api/admin/audit/logs", {"limit": 200}).content.decode(),
        "admin list": superuser.get("/admin/audit/auditlog/").content.decode(),
        "admin search": superuser.get("/admin/audit/auditlog/", {"q": entry.action}).content.decode(),
        "admin detail": superuser.get(f"/admin/audit/auditlog/{entry.pk}/change/").content.decode(),
        "csv": superuser.get("/admin/audit/auditlog/export.csv").content.decode(),
    }


def _assert_absent(places: dict[str, str], secrets: list[str]) -> None:
    for where, text in places.items():
        for secret in secrets:
            assert secret not in text, f"{secret!r} leaked in the {where}"
            assert json.dumps(secret)[1:-1] not in text, f"{secret!r} leaked (escaped) in the {where}"


def test_a_platform_event_full_of_secrets_leaks_none_of_them(admin, superuser, tenant):
    details, secrets = _details()
    own_key = tenant.keys["read"]
    r = admin.post(
        "/api/admin/audit/events",
        {
            "action": "tool.config_update",
            "resource_type": "tool",
            "resource_id": "agent_support/gmail",
            "details": {**details, "our_key_in_text": f"curl -H 'x: {own_key}'"},
        },
    )
    assert r.status_code == 201, r.content
    answer = r.content.decode()
    entry = AuditLog.objects.get(pk=r.json()["id"])
    places = {"answer": answer, **_everywhere(entry, admin, superuser)}
    _assert_absent(places, [*secrets, own_key])
    # What is not a secret survives as sent, and redactions are visible as such.
    assert entry.details["plain"] == NOT_SECRET
    assert entry.details["by_name"][0]["api_key"].startswith("[redacted:")
    assert "Use header 'Bearer [redacted:" in entry.details["text"][0]


def test_markers_show_whether_a_secret_changed_without_showing_it(admin):
    def record(value):
        body = {"action": "tool.config_update", "resource_type": "tool", "details": {"api_key": value}}
        return admin.post("/api/admin/audit/events", body).json()["details"]["api_key"]

    first, again, other = record("first-secret"), record("first-secret"), record("second-secret")
    assert first == again != other
    assert first.startswith("[redacted:") and other.startswith("[redacted:")


def test_tool_configuration_changes_log_old_and_new_config_redacted(admin, superuser):
    old_token, new_token = "xoxb-111111111111-oldoldoldold", "xoxb-222222222222-newnewnewnew"
    tools = [
        {"name": "slack", "config": {"bot": {"token": old_token}, "channels": ["#a", {"hook": old_token}]}}
    ]
    r = admin.post("/api/agents", {"id": "agent_support", "name": "Support", "config": {"tools": tools}})
    assert r.status_code == 201
    tools[0]["config"] = {"bot": {"token": new_token}, "channels": ["#a", {"hook": new_token}]}
    r = admin.client.patch(
        "/api/agents/agent_support",
        {"config": {"tools": tools}},
        content_type="application/json",
        **admin._headers(),
    )
    assert r.status_code == 200
    update = AuditLog.objects.get(action="agent.update")
    assert update.details["changed_fields"] == ["tools"]
    old, new = update.details["old"]["tools"][0]["config"], update.details["new"]["tools"][0]["config"]
    assert old["bot"]["token"] != new["bot"]["token"]
    assert old["channels"][0] == "#a"
    created = AuditLog.objects.get(action="agent.create")
    _assert_absent(_everywhere(update, admin, superuser), [old_token, new_token])
    _assert_absent({"create": json.dumps(created.details)}, [old_token])
    # The agent's own API answer and page mask them too.
    _assert_absent({"agent": admin.get("/api/agents/agent_support").content.decode()}, [new_token])


def test_the_tool_settings_form_logs_changed_keys_not_values(members):
    member = members["member"]
    member.post("/agents/", {"id": "agent_mail", "name": "Mail"})
    member.post(
        "/agents/agent_mail/tools/", {"name": "smtp", "config": '{"password": "first-pw", "host": "a"}'}
    )
    member.post("/agents/agent_mail/tools/smtp/", {"config": '{"password": "second-pw", "host": "a"}'})
    entry = AuditLog.objects.get(action="tool.config_update")
    assert entry.details["changed_fields"] == ["password"]
    text = json.dumps(entry.details)
    assert "first-pw" not in text and "second-pw" not in text
    added = AuditLog.objects.get(action="tool.add")
    assert "first-pw" not in json.dumps(added.details)
