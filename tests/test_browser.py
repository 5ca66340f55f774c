"""The dashboard in a real browser: Playwright driving the system Chromium
against a live server. Screenshots of every page land in test-artifacts/."""

import os
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from accounts.models import Role
from accounts.services import user_create_or_update
from agents.services import trace_ingest
from audit.services import Actor

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
EVIL = '<script>window.__pwned = 1; alert(1)</script><img src=x onerror="window.__pwned = 2">'


@pytest.fixture(scope="module")
def browser():
    if not shutil.which(CHROMIUM):
        pytest.skip(f"Chromium not found at {CHROMIUM} (install Debian's chromium package)")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread; the test's own
    # database work (fixtures) is still synchronous.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()
    os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


@pytest.fixture
def demo(tenant):
    """An owner and traffic over the last 30 days, including a hostile trace."""
    user_create_or_update(
        organisation=tenant.organisation, username="ana", password="pw-123456", role=Role.OWNER
    )
    now = timezone.now()
    items = []
    for n in range(60):
        at = now - timedelta(hours=n * 11 + 1)
        items.append(
            {
                "id": f"t{n}",
                "agent_id": f"agent_{n // 2 % 3}",
                "agent_name": ["Support Agent", "Sales Caller", "Booking"][n // 2 % 3],
                "session_id": f"s{n // 2}",
                "channel": ["chat", "voice", "widget"][n // 2 % 3],
                "input": f"question {n}",
                "output": f"answer {n}",
                "model": "gpt-4o-mini",
                "input_tokens": 100 + n,
                "output_tokens": 20,
                "latency_ms": 500 + n * 17,
                "status": "error" if n % 9 == 0 else "success",
                "created_at": at.isoformat(),
            }
        )
    items.append(
        {
            "id": "evil",
            "agent_id": "agent_0",
            "session_id": "evil",
            "input": EVIL,
            "output": EVIL,
            "reasoning": EVIL,
            "tool_calls": [{"name": "lookup", "arguments": {"html": EVIL}, "result": EVIL}],
            "created_at": (now - timedelta(minutes=30)).isoformat(),
        }
    )
    result = trace_ingest(organisation=tenant.organisation, items=items, actor=Actor.system("test"))
    assert not result.rejected
    return tenant


@pytest.fixture
def page(browser, live_server, demo):
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    page.add_init_script(
        "window.__violations = []; document.addEventListener('securitypolicyviolation',"
        " e => window.__violations.push(e.sourceFile + ' ' + e.violatedDirective));"
    )
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.dialogs = dialogs
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", "ana")
    page.fill("#id_password", "pw-123456")
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")
    yield page
    context.close()


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _violations(page) -> list[str]:
    return page.evaluate("window.__violations")


def test_overview_shows_six_cards_and_drawn_charts(page, live_server):
    page.wait_for_selector(".js-plotly-plot .main-svg")
    assert page.locator(".metric-card").count() == 6
    drawn = page.locator(".js-plotly-plot")
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 4")
    assert drawn.count() >= 4
    assert page.locator("#agents-table tbody tr").count() == 2  # agent_0 and agent_1 had traffic today
    _shot(page, "overview")
    assert _violations(page) == []


def test_switching_the_period_swaps_panels_without_reloading(page, live_server):
    value = page.locator('[data-metric="total_conversations"] .metric-value')
    before = value.inner_text()
    page.evaluate("window.__still_here = true")
    page.select_option("#period", "30d")
    page.wait_for_url("**/?period=30d**")
    page.wait_for_function(
        "b => document.querySelector('[data-metric=total_conversations] .metric-value').innerText !== b",
        arg=before,
    )
    assert page.evaluate("window.__still_here") is True  # no full page load
    assert int(value.inner_text()) > int(before)
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 4")
    _shot(page, "overview-30d")


def test_a_custom_date_range(page, live_server):
    today = timezone.now().date()
    page.select_option("#period", "custom")
    page.fill("#range-from", (today - timedelta(days=20)).isoformat())
    page.fill("#range-to", (today - timedelta(days=10)).isoformat())
    page.click(".window-filter button[type=submit]")
    first_day = (today - timedelta(days=20)).isoformat()
    page.wait_for_url(f"**from={first_day}**")
    assert "to=" in page.url
    page.wait_for_function(
        "d => document.querySelector('.window-caption').innerText.includes(d)", arg=first_day
    )
    page.reload()  # the URL is a bookmark: the same view comes back
    assert page.locator("#period").input_value() == "custom"


def test_hostile_trace_text_is_shown_and_never_run(page, live_server):
    page.goto(f"{live_server.url}/traces/evil/")
    assert "window.__pwned = 1" in page.locator("body").inner_text()
    page.goto(f"{live_server.url}/conversations/evil/")
    page.locator("details summary").first.click()
    assert page.evaluate("window.__pwned") is None
    assert page.dialogs == []
    _shot(page, "trace-hostile")


def test_the_conversation_lists_turns_in_order(page, live_server):
    page.goto(f"{live_server.url}/conversations/")
    page.wait_for_selector("#results table")
    _shot(page, "conversations")
    page.goto(f"{live_server.url}/conversations/s1/")
    # t3 was sent 34 hours ago, t2 23 hours ago: the transcript runs oldest first.
    assert page.locator(".turn .bubble.user p").all_inner_texts() == ["question 3", "question 2"]
    _shot(page, "conversation")


def test_agent_performance_and_trace_pages_render(page, live_server):
    page.goto(f"{live_server.url}/agents/agent_0/performance/?period=30d")
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 4")
    assert page.locator(".metric-card").count() == 13
    _shot(page, "agent-performance")
    page.goto(f"{live_server.url}/traces/")
    page.locator("#results tbody tr a").first.click()
    page.wait_for_selector("h1")
    _shot(page, "trace")
    assert _violations(page) == []


def test_the_admin_runs_under_the_same_policy(browser, live_server, demo):
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_superuser("auditor", "auditor@example.com", "pw-123456")
    page = browser.new_page()
    page.add_init_script(
        "window.__violations = []; document.addEventListener('securitypolicyviolation',"
        " e => window.__violations.push(e.sourceFile + ' ' + e.violatedDirective));"
    )
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "auditor")
    page.fill("#id_password", "pw-123456")
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_server.url}/admin/")
    for path in ["/admin/audit/auditlog/", "/admin/pricing/modelprice/", "/admin/agents/trace/"]:
        page.goto(f"{live_server.url}{path}")
        page.wait_for_load_state("networkidle")
        assert _violations(page) == [], path
    _shot(page, "admin-audit-log")
    page.close()
