"""Drill-down in a real browser: an agents-table row, a card and a chart bar on
the Overview each open a list whose rows all match what was clicked and whose
count equals the number clicked."""

import re
from datetime import datetime, timedelta
from urllib.parse import parse_qs, urlparse

import pytest
from django.utils import timezone

from accounts.models import Role
from accounts.services import user_create_or_update
from agents.services import trace_ingest
from audit.services import Actor

from .test_browser import _violations, browser  # noqa: F401  (the Chromium fixture)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

AGENTS = ["agent_0", "agent_1", "agent_2"]
CHANNELS = ["chat", "voice", "widget"]


@pytest.fixture
def busy(tenant):
    """An owner and 40 conversations of two turns over the last day: eight of
    them in one hour five hours ago, every fourth one failed."""
    user_create_or_update(
        organisation=tenant.organisation, username="ana", password="pw-123456", role=Role.OWNER
    )
    now = timezone.now()
    busy_hour = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=5)
    items = []
    for n in range(40):
        if n < 8:
            start = busy_hour + timedelta(minutes=5 * n + 3)
        else:
            start = now - timedelta(minutes=35 * (n - 8) + 20)
            if busy_hour <= start < busy_hour + timedelta(hours=1):
                start -= timedelta(hours=1)
        for turn in range(2):
            items.append(
                {
                    "id": f"t{n}-{turn}",
                    "agent_id": AGENTS[n % 3],
                    "session_id": f"c{n}",
                    "channel": CHANNELS[n % 3],
                    "input": f"question {n}.{turn}",
                    "output": f"answer {n}.{turn}",
                    "model": "gpt-4o-mini",
                    "input_tokens": 100 + n,
                    "output_tokens": 20,
                    "latency_ms": 400 + 13 * n + turn,
                    "status": "error" if n % 4 == 3 and turn == 1 else "success",
                    "created_at": (start + timedelta(seconds=40 * turn)).isoformat(),
                }
            )
    result = trace_ingest(organisation=tenant.organisation, items=items, actor=Actor.system("test"))
    assert not result.rejected
    return busy_hour


@pytest.fixture
def page(browser, live_server, busy):  # noqa: F811
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.add_init_script(
        "window.__violations = []; document.addEventListener('securitypolicyviolation',"
        " e => window.__violations.push(e.sourceFile + ' ' + e.violatedDirective));"
    )
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", "ana")
    page.fill("#id_password", "pw-123456")
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 5")
    yield page
    context.close()


def _window(url: str) -> tuple[datetime, datetime]:
    query = parse_qs(urlparse(url).query)
    assert query["period"] == ["range"]
    return datetime.fromisoformat(query["start"][0]), datetime.fromisoformat(query["end"][0])


def _all_rows(page) -> list[dict]:
    """Every row of the list, following its Older pages."""
    rows = []
    while True:
        rows += page.eval_on_selector_all("#results tbody tr", "rows => rows.map(r => ({...r.dataset}))")
        older = page.locator("#results a[rel=next]")
        if not older.count():
            return rows
        older.click()
        page.wait_for_load_state()


def _total(page) -> int:
    return int(page.locator("#results [data-total]").get_attribute("data-total"))


def test_an_agents_row_opens_that_agents_conversations(page, live_server):
    cell = page.locator("#agents-table tbody tr", has_text="agent_1").locator("a[data-drill=conversations]")
    clicked = int(cell.inner_text())
    assert clicked > 0
    cell.click()
    page.wait_for_url("**/conversations/**")
    start, end = _window(page.url)
    assert _total(page) == clicked
    rows = _all_rows(page)
    assert len(rows) == clicked
    assert {r["agent"] for r in rows} == {"agent_1"}
    assert all(start <= datetime.fromisoformat(r["started"]) < end for r in rows)
    assert _violations(page) == []


def test_a_card_opens_the_list_of_what_it_counts(page, live_server):
    card = page.locator('[data-metric="total_conversations"]')
    clicked = int(card.locator(".metric-value").inner_text().replace(",", ""))
    assert clicked == 40
    card.click()
    page.wait_for_url("**/conversations/**")
    assert _total(page) == clicked
    rows = _all_rows(page)
    assert len(rows) == clicked and len({r["started"] for r in rows}) == clicked


def test_the_success_rate_card_opens_the_failed_conversations(page, live_server):
    page.locator('[data-metric="success_rate"]').click()
    page.wait_for_url("**/conversations/**status=failed**")
    rows = _all_rows(page)
    assert len(rows) == 10 == _total(page)  # every fourth of 40
    assert {r["status"] for r in rows} == {"failed"}


def test_a_chart_bar_opens_the_conversations_of_its_hour(page, live_server, busy):
    # The busy hour's bar of the Conversations series (the first trace of the chart).
    index = page.evaluate(
        """hour => {
            const fig = document.querySelector('[data-chart=chart-volume]');
            return fig.data[0].x.findIndex(x => new Date(x).getTime() === new Date(hour).getTime());
        }""",
        busy.isoformat(),
    )
    assert index >= 0
    clicked = page.evaluate("i => document.querySelector('[data-chart=chart-volume]').data[0].y[i]", index)
    assert clicked == 8
    bar = page.locator("[data-chart=chart-volume] g.trace.bars").nth(0).locator("g.point path").nth(index)
    bar.scroll_into_view_if_needed()
    box = bar.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_url("**/conversations/**")
    start, end = _window(page.url)
    assert (start, end) == (busy, busy + timedelta(hours=1))
    assert _total(page) == clicked
    rows = _all_rows(page)
    assert len(rows) == clicked
    assert all(start <= datetime.fromisoformat(r["started"]) < end for r in rows)


def test_a_channel_slice_opens_that_channels_conversations(page, live_server):
    labels = page.evaluate("document.querySelector('[data-chart=chart-channels]').data[0].labels")
    values = page.evaluate("document.querySelector('[data-chart=chart-channels]').data[0].values")
    index = labels.index("Voice")
    page.locator("[data-chart=chart-channels]").scroll_into_view_if_needed()
    # A point inside the ring, halfway round the slice (pxmid lies on its outer edge).
    at = page.evaluate(
        """i => {
            const gd = document.querySelector('[data-chart=chart-channels]');
            const cd = gd.calcdata[0], rect = gd.getBoundingClientRect();
            return {x: rect.left + cd[0].cx + 0.78 * cd[i].pxmid[0], y: rect.top + cd[0].cy + 0.78 * cd[i].pxmid[1]};
        }""",
        index,
    )
    page.mouse.click(at["x"], at["y"])
    page.wait_for_url("**/conversations/**channel=voice**")
    rows = _all_rows(page)
    assert len(rows) == values[index] == _total(page)
    assert {r["channel"] for r in rows} == {"voice"}
    assert re.search(r"period=range", page.url)
