"""Monthly budgets for the organisation and for agents: set on the billing page
by admins (audited), shown with this month's spend, read by ``budget_status``."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.utils import timezone

from agents.models import Agent
from audit.models import AuditLog
from billing.models import Budget
from billing.selectors import budget_status

from .conftest import trace, usage_event

NOW = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)


@pytest.fixture
def spend(tenant, ingest, monkeypatch):
    """March (in UTC): support 3.00 + 0.50 scraping, sales 1.25; February: 9.00."""
    monkeypatch.setattr(timezone, "now", lambda: NOW)
    ingest.post(
        "/api/traces",
        {
            "traces": [
                trace(
                    id="a",
                    session_id="a",
                    agent_id="agent_support",
                    cost_usd="3.00",
                    created_at="2026-03-02T10:00:00Z",
                ),
                trace(
                    id="b",
                    session_id="b",
                    agent_id="agent_sales",
                    cost_usd="1.25",
                    created_at="2026-03-19T23:59:59Z",
                ),
                trace(
                    id="c",
                    session_id="c",
                    agent_id="agent_support",
                    cost_usd="9.00",
                    created_at="2026-02-28T23:59:59Z",
                ),
            ]
        },
    )
    ingest.post(
        "/api/usage/events", usage_event(agent_id="agent_support", cost_usd="0.50", at="2026-03-01T00:00:00Z")
    )
    return {a.public_id: a for a in Agent.objects.filter(organisation=tenant.organisation)}


def test_without_a_budget_the_status_has_spend_only(tenant, spend):
    status = budget_status(organisation=tenant.organisation)
    assert status == {"budget_usd": None, "spent_usd": Decimal("4.75"), "percent": None}


def test_budgets_set_on_the_page_are_audited_and_measured(tenant, members, spend):
    r = members["admin"].post("/billing/budgets/", {"agent": "", "monthly_usd": "10.00"})
    assert r.status_code == 302
    members["admin"].post("/billing/budgets/", {"agent": "agent_support", "monthly_usd": "2.00"})
    org = budget_status(organisation=tenant.organisation)
    assert org["budget_usd"] == Decimal("10.00") and org["spent_usd"] == Decimal("4.75")
    assert org["percent"] == pytest.approx(47.5)
    support = budget_status(organisation=tenant.organisation, agent=spend["agent_support"])
    assert support["spent_usd"] == Decimal("3.50") and support["percent"] == pytest.approx(175.0)
    sales = budget_status(organisation=tenant.organisation, agent=spend["agent_sales"])
    assert sales == {"budget_usd": None, "spent_usd": Decimal("1.25"), "percent": None}
    logs = AuditLog.objects.filter(action="budget.create").order_by("id")
    assert [log.resource_id for log in logs] == ["organisation", "agent_support"]
    assert logs[1].details == {
        "agent_id": "agent_support",
        "old_monthly_usd": None,
        "new_monthly_usd": "2.00",
    }
    page = members["viewer"].get("/billing/").content.decode()
    assert "$10.00" in page and "47.5%" in page and "175.0%" in page and "over-budget" in page


def test_a_budget_follows_the_organisations_month(tenant, members, spend):
    tenant.organisation.timezone = "America/New_York"  # 1 March 00:00 UTC is still February there
    tenant.organisation.save()
    members["admin"].post("/billing/budgets/", {"agent": "", "monthly_usd": "10"})
    assert budget_status(organisation=tenant.organisation)["spent_usd"] == Decimal("4.25")


def test_changing_and_removing_a_budget(tenant, members, spend):
    members["admin"].post("/billing/budgets/", {"agent": "agent_sales", "monthly_usd": "5"})
    members["admin"].post("/billing/budgets/", {"agent": "agent_sales", "monthly_usd": "5.00"})  # unchanged
    members["admin"].post("/billing/budgets/", {"agent": "agent_sales", "monthly_usd": "8"})
    members["admin"].post("/billing/budgets/", {"agent": "agent_sales", "monthly_usd": ""})
    assert not Budget.objects.exists()
    actions = list(
        AuditLog.objects.filter(resource_type="budget").order_by("id").values_list("action", flat=True)
    )
    assert actions == ["budget.create", "budget.update", "budget.delete"]


@pytest.mark.parametrize(
    "data,words",
    [
        ({"agent": "", "monthly_usd": "-5"}, "greater than or equal to 0.01"),
        ({"agent": "", "monthly_usd": "0"}, "greater than or equal to 0.01"),
        ({"agent": "", "monthly_usd": "1.234"}, "decimal places"),
        ({"agent": "agent_nobody", "monthly_usd": "5"}, "Select a valid choice"),
    ],
)
def test_a_bad_budget_is_refused(tenant, members, spend, data, words):
    r = members["admin"].post("/billing/budgets/", data)
    assert r.status_code == 400 and words in r.content.decode()
    assert not Budget.objects.exists()


@pytest.mark.parametrize("role", ["viewer", "member"])
def test_only_admins_set_budgets(tenant, members, spend, role):
    assert members[role].post("/billing/budgets/", {"agent": "", "monthly_usd": "5"}).status_code == 403
    assert not Budget.objects.exists()
    assert b"Set a budget" not in members[role].get("/billing/").content
