"""Who may see and change billing: scopes on the API, roles on the pages, and
organisations never seeing each other's money."""

import pytest
from django.test import Client

from billing.models import LedgerEntry, UsageEvent

from .conftest import trace, usage_event

# (method, path, body, the scope it needs)
ENDPOINTS = [
    ("post", "/api/usage/events", usage_event(), "ingest"),
    ("get", "/api/metrics/usage", None, "read"),
    ("post", "/api/billing/topups", {"amount_usd": "10.00"}, "admin"),
    ("post", "/api/billing/refunds", {"amount_usd": "1.00"}, "admin"),
    ("post", "/api/billing/adjustments", {"amount_usd": "1.00", "reason": "x"}, "admin"),
    ("post", "/api/billing/subscription", {"plan": "free"}, "admin"),
]


@pytest.mark.parametrize("method,path,body,scope", ENDPOINTS, ids=[e[1] for e in ENDPOINTS])
def test_a_key_without_the_scope_gets_403_and_changes_nothing(tenant, method, path, body, scope):
    for other in {"read", "ingest", "admin"} - {scope}:
        api = tenant.api(other)
        r = api.get(path) if method == "get" else api.post(path, body)
        assert r.status_code == 403, (other, r.content)
        assert r.json()["error"]["code"] == "insufficient_scope"
        assert r.json()["error"]["details"]["required_scope"] == scope
    assert not LedgerEntry.objects.exists() and not UsageEvent.objects.exists()


@pytest.mark.parametrize("method,path,body,scope", ENDPOINTS, ids=[e[1] for e in ENDPOINTS])
def test_no_key_or_an_unknown_key_is_401(tenant, method, path, body, scope):
    for headers in ({}, {"HTTP_AUTHORIZATION": "Bearer ta_nope_nope"}):
        c = Client()
        r = (
            c.get(path, **headers)
            if method == "get"
            else c.post(path, body, content_type="application/json", **headers)
        )
        assert r.status_code == 401


def test_another_organisation_sees_none_of_our_money(tenant, outsider, members):
    tenant.api("admin").post("/api/billing/topups", {"amount_usd": "500.00", "reference": "ours-secret-ref"})
    tenant.api("ingest").post(
        "/api/traces", trace(agent_id="agent_ours", agent_name="Our Agent", cost_usd="7.00", created_at=None)
    )
    tenant.api("ingest").post("/api/usage/events", usage_event(agent_id="agent_ours", at=None))
    theirs = outsider.api("read").get("/api/metrics/usage").json()
    assert theirs["balance_usd"] == 0 and theirs["usage_this_month_usd"] == 0
    assert theirs["top_agents_by_cost"] == []
    page = members["outsider"].get("/billing/").content.decode()
    assert "ours-secret-ref" not in page and "Our Agent" not in page and "$500.00" not in page
    csv = members["outsider"].get("/billing/ledger.csv").content.decode()
    assert "ours-secret-ref" not in csv and len(csv.strip().splitlines()) == 1
    # A refund against our credits is refused in their organisation.
    assert outsider.api("admin").post("/api/billing/refunds", {"amount_usd": "1.00"}).status_code == 409


def test_signed_out_people_are_sent_to_log_in(tenant):
    for path in ("/billing/", "/billing/ledger.csv", "/billing/prices/"):
        r = Client().get(path)
        assert r.status_code == 302 and r["Location"].startswith("/login/")


@pytest.mark.parametrize("role", ["viewer", "member"])
def test_viewers_and_members_cannot_top_up(tenant, members, role):
    r = members[role].post("/billing/topup/", {"amount_usd": "5.00", "reference": "x"})
    assert r.status_code == 403
    assert not LedgerEntry.objects.exists()


@pytest.mark.parametrize("role", ["admin", "owner"])
def test_admins_and_owners_can_top_up(tenant, members, role):
    assert members[role].post("/billing/topup/", {"amount_usd": "5.00"}).status_code == 302
    assert LedgerEntry.objects.get().created_by == f"{role}-user"


def test_topping_up_needs_a_post(members):
    assert members["admin"].get("/billing/topup/").status_code == 405
