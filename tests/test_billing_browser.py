"""The billing page in Chromium: both charts are drawn, nothing fails in the
console (the strict CSP included), and the ledger filter swaps only the ledger
and keeps the URL bookmarkable."""

import os
import shutil
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.services import user_create_or_update

from .conftest import _tenant, trace, usage_event

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Chromium (Debian's chromium package)"),
]


def test_the_billing_page_draws_its_charts_and_filters_the_ledger(live_server):
    from playwright.sync_api import sync_playwright

    tenant = _tenant("browser-billing")
    user_create_or_update(
        organisation=tenant.organisation, username="boss", password="pw-123456", role="owner"
    )
    now = timezone.now()
    traces = [
        trace(
            id=f"t{n}",
            session_id=f"s{n}",
            cost_usd="0.25",
            created_at=(now - timedelta(hours=5 * n)).isoformat(),
        )
        for n in range(12)
    ]
    tenant.api("ingest").post("/api/traces", {"traces": traces})
    tenant.api("ingest").post("/api/usage/events", usage_event(at=now.isoformat()))
    admin = tenant.api("admin")
    admin.post("/api/billing/topups", {"amount_usd": "50.00", "reference": "pay_1"})
    admin.post("/api/billing/refunds", {"amount_usd": "5.00", "reference": "re_1"})

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        try:
            page = browser.new_page()
            problems: list[str] = []
            # plotly.min.js injects map styles at load; the CSP blocks them (see docs/dashboard.md).
            page.add_init_script(
                "window.__violations = []; document.addEventListener('securitypolicyviolation',"
                " e => { if (!e.sourceFile.endsWith('plotly.min.js')) window.__violations.push(e.violatedDirective); });"
            )
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(f"{live_server.url}/login/")
            page.fill("#id_username", "boss")
            page.fill("#id_password", "pw-123456")
            page.click("button[type=submit]")
            page.goto(f"{live_server.url}/billing/")
            for chart in ("cost-breakdown", "cost-per-conversation"):
                page.wait_for_selector(f"[data-chart='{chart}'] .main-svg", timeout=10_000)
            assert (
                page.locator("#balance").inner_text() == "$41.96"
            )  # 50 − 5 credits, 12 × 0.25 + 0.036 usage
            page.select_option("#id_kind", "refund")
            page.click("#ledger button[type=submit]")
            page.wait_for_url("**kind=refund**")
            ledger = page.locator("#ledger").inner_text()
            assert "re_1" in ledger and "pay_1" not in ledger
            page.wait_for_selector("[data-chart='cost-breakdown'] .main-svg")  # the rest of the page stayed
            assert problems == []
            assert page.evaluate("window.__violations") == []
        finally:
            browser.close()
