"""The billing page: the same numbers as the usage API, charts, top agents,
unpriced traces, the ledger with filters, pages and CSV export, and the
admins' top-up, adjustment and time zone forms."""

import csv
import io
import json
import re
from datetime import UTC, datetime

import pytest
from django.utils import timezone

from audit.models import AuditLog
from billing.models import LedgerEntry
from billing.templatetags.billing_tags import usd

from .conftest import trace, usage_event

NOW = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)


@pytest.fixture
def billed(tenant, ingest, monkeypatch):
    monkeypatch.setattr(timezone, "now", lambda: NOW)
    ingest.post(
        "/api/traces",
        {
            "traces": [
                trace(
                    id="a",
                    session_id="a",
                    agent_id="agent_support",
                    agent_name="Support Agent",
                    cost_usd="3.10",
                    created_at="2026-03-20T09:00:00Z",
                ),
                trace(
                    id="b",
                    session_id="b",
                    agent_id="agent_sales",
                    agent_name="Sales Caller",
                    cost_usd="1.25",
                    created_at="2026-03-02T10:00:00Z",
                ),
                trace(
                    id="u",
                    session_id="u",
                    agent_id="agent_sales",
                    model="in-house-7b",
                    created_at="2026-03-19T08:00:00Z",
                ),
            ]
        },
    )
    ingest.post(
        "/api/usage/events", usage_event(agent_id="agent_sales", cost_usd="0.40", at="2026-03-20T08:00:00Z")
    )
    admin = tenant.api("admin")
    admin.post("/api/billing/topups", {"amount_usd": "100.00", "reference": '=HYPERLINK("x")'})
    admin.post("/api/billing/refunds", {"amount_usd": "10.00", "reference": "re_1"})
    admin.post("/api/billing/adjustments", {"amount_usd": "2.50", "reason": "goodwill"})


def _text(response) -> str:
    return response.content.decode()


def test_the_page_shows_the_numbers_of_the_usage_api(tenant, members, billed):
    api = tenant.api("read").get("/api/metrics/usage").json()
    page = members["viewer"].get("/billing/")
    assert page.status_code == 200
    html = _text(page)
    assert f'id="balance">{usd(api["balance_usd"])}<' in html
    assert f'id="spend-today">{usd(api["usage_today_usd"])}<' in html
    assert f'id="spend-month">{usd(api["usage_this_month_usd"])}<' in html
    assert api["usage_today_usd"] == 3.5 and api["usage_this_month_usd"] == 4.75
    assert api["balance_usd"] == 87.75  # 100 − 10 + 2.50 credits, minus 4.75 of usage
    for agent in api["top_agents_by_cost"]:
        assert agent["name"] in html and usd(agent["cost_usd"]) in html
    assert "UTC" in html and "20 March 2026" in html


def test_the_charts_are_drawn_from_json_with_the_chart_assets(members, billed):
    html = _text(members["viewer"].get("/billing/"))
    assert "vendor/plotly/plotly.min.js" in html and "js/charts.js" in html
    assert "<script>" not in html.replace('<script id="', "")  # only json_script data, no inline code
    for chart_id in ("cost-breakdown", "cost-per-conversation"):
        data = re.search(rf'<script id="{chart_id}" type="application/json">(.*?)</script>', html, re.S)
        assert data, chart_id
        figure = json.loads(data.group(1))
        assert figure["data"], chart_id
    breakdown = json.loads(
        re.search(r'<script id="cost-breakdown" type="application/json">(.*?)</script>', html, re.S).group(1)
    )
    # No voice minutes were used: the donut draws no empty slice for them.
    assert breakdown["data"][0]["labels"] == ["LLM tokens", "Scraping"]
    assert breakdown["data"][0]["values"] == [4.35, 0.4]


def test_unpriced_traces_are_counted_and_listed(members, billed):
    html = _text(members["viewer"].get("/billing/"))
    assert "Unpriced traces this month: 1" in html
    assert "in-house-7b" in html and "/traces/u/" in html


def test_the_nav_links_to_billing(members):
    assert 'href="/billing/"' in _text(members["viewer"].get("/"))


def test_the_ledger_filters_by_kind_and_dates(members, billed, tenant):
    html = _text(members["viewer"].get("/billing/", {"kind": "refund"}))
    ledger = html[html.index('id="ledger"') :]
    assert "re_1" in ledger and "goodwill" not in ledger
    today = NOW.date().isoformat()
    assert "goodwill" in _text(members["viewer"].get("/billing/", {"start": today, "end": today}))
    assert "No entries." in _text(members["viewer"].get("/billing/", {"end": "2026-03-19"}))
    bad = members["viewer"].get("/billing/", {"start": "2026-03-20", "end": "2026-03-01"})
    assert "must not be after" in _text(bad)


def test_an_htmx_filter_answers_the_ledger_alone(members, billed):
    r = members["viewer"].get("/billing/", {"kind": "topup"}, HTTP_HX_REQUEST="true", HTTP_HX_TARGET="ledger")
    html = _text(r)
    assert html.lstrip().startswith('<section class="card" id="ledger">')
    assert "<html" not in html and "Top-up" in html and "re_1" not in html


def test_the_ledger_is_paged(tenant, members, billed):
    admin = tenant.api("admin")
    for n in range(30):
        admin.post("/api/billing/topups", {"amount_usd": "1.00", "reference": f"pay-{n:02d}"})
    first = _text(members["viewer"].get("/billing/"))
    assert "pay-29" in first and "page 1 of 2" in first and "pay-02" not in first
    second = _text(members["viewer"].get("/billing/", {"page": 2}))
    assert "pay-02" in second and "pay-29" not in second


def test_the_csv_export_follows_the_filter_and_quotes_formulas(members, billed):
    r = members["viewer"].get("/billing/ledger.csv", {"kind": "topup"})
    assert r.status_code == 200 and r["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(r.content.decode())))
    assert rows[0] == ["id", "created_at", "kind", "amount_usd", "reference", "reason", "plan", "created_by"]
    assert len(rows) == 2 and rows[1][2] == "topup" and rows[1][3] == "100.00"
    assert rows[1][4] == '\'=HYPERLINK("x")'
    everything = list(csv.reader(io.StringIO(members["viewer"].get("/billing/ledger.csv").content.decode())))
    assert [row[3] for row in everything[1:]] == ["2.50", "-10.00", "100.00"]
    assert members["viewer"].get("/billing/ledger.csv", {"start": "nonsense"}).status_code == 400


def test_an_admin_tops_up_on_the_page(tenant, members, billed):
    r = members["admin"].post("/billing/topup/", {"amount_usd": "25.00", "reference": "wire 12"})
    assert r.status_code == 302 and r["Location"] == "/billing/"
    entry = LedgerEntry.objects.filter(organisation=tenant.organisation).order_by("-id").first()
    assert (entry.kind, str(entry.amount_usd), entry.created_by) == ("topup", "25.00", "admin-user")
    log = AuditLog.objects.filter(action="billing.topup").order_by("-id").first()
    assert log.user_id == "admin-user" and log.resource_id == str(entry.pk)
    assert "Top-up recorded." in _text(members["admin"].get("/billing/"))


def test_a_bad_topup_shows_the_form_again(tenant, members, billed):
    before = LedgerEntry.objects.count()
    r = members["admin"].post("/billing/topup/", {"amount_usd": "-3", "reference": ""})
    assert r.status_code == 400 and "greater than or equal to 0.01" in _text(r)
    assert LedgerEntry.objects.count() == before


def test_an_admin_adjusts_with_a_reason(tenant, members, billed):
    r = members["admin"].post("/billing/adjustment/", {"amount_usd": "-1.00", "reason": "test call refund"})
    assert r.status_code == 302
    assert AuditLog.objects.filter(action="billing.adjustment", details__reason="test call refund").exists()
    assert members["admin"].post("/billing/adjustment/", {"amount_usd": "1", "reason": ""}).status_code == 400


def test_an_admin_sets_the_billing_time_zone(tenant, members, billed):
    r = members["admin"].post("/billing/timezone/", {"timezone": "Asia/Kolkata"})
    assert r.status_code == 302
    tenant.organisation.refresh_from_db()
    assert tenant.organisation.timezone == "Asia/Kolkata"
    log = AuditLog.objects.get(action="organisation.update")
    assert log.details["new"] == {"timezone": "Asia/Kolkata"}
    html = _text(members["viewer"].get("/billing/"))
    assert "Asia/Kolkata" in html
    assert tenant.api("read").get("/api/metrics/usage").json()["timezone"] == "Asia/Kolkata"
    bad = members["admin"].post("/billing/timezone/", {"timezone": "Asia/Atlantis"})
    assert bad.status_code == 400 and "not a time zone name" in _text(bad)
    tenant.organisation.refresh_from_db()
    assert tenant.organisation.timezone == "Asia/Kolkata"


@pytest.mark.parametrize("role", ["viewer", "member"])
def test_viewers_and_members_see_no_forms(members, billed, role):
    html = _text(members[role].get("/billing/"))
    for form in ("Record a top-up", "Adjust the balance", "Billing time zone", "Model prices"):
        assert form not in html
    for url in ("/billing/topup/", "/billing/adjustment/", "/billing/timezone/"):
        assert (
            members[role].post(url, {"amount_usd": "5", "reason": "x", "timezone": "UTC"}).status_code == 403
        )


def test_times_show_in_the_organisations_zone(tenant, members, billed):
    tenant.organisation.timezone = "Asia/Kolkata"
    tenant.organisation.save()
    html = _text(members["viewer"].get("/billing/"))
    assert "2026-03-20 17:30" in html  # 12:00 UTC
    assert "2026-03-20 12:00" not in html


def test_the_demo_organisation_has_credit_a_budget_and_scraping(db):
    from django.core.management import call_command
    from django.test import Client

    from billing.models import Budget, UsageEvent

    call_command("seed_demo", "--days", "1", "--verbosity", "0")
    call_command("seed_demo", "--days", "1", "--verbosity", "0")  # idempotent
    assert LedgerEntry.objects.filter(organisation__slug="demo").count() == 1
    assert Budget.objects.filter(organisation__slug="demo", agent__isnull=True).count() == 1
    assert UsageEvent.objects.filter(organisation__slug="demo", category="scraping").count() >= 23
    c = Client()
    c.login(username="demo", password="demo")
    html = _text(c.get("/billing/"))
    assert "Scraping" in html and "Booking Assistant" in html
