"""The dashboard in Chromium against Daphne, as `make run` serves it (HTTP and
WebSocket on one port), so pages with live voice panels run whole: every page
keeps a clean console, a chart bar and a card open their lists with Back and
Forward in between, and the Voice tab refreshes its window under the same
time range filter as every page, its latency bars spanning the live panel."""

import os
from datetime import timedelta

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from audit.services import Actor
from voice.services import voice_events_ingest

from . import voice
from .browser import ago, chromium, complaints, conversations, ingest, needs_chromium, operator_organisation
from .browser import watched_page as _watched_page
from .conftest import postgres_only
from .daphne import Daphne, database_url

pytestmark = [
    postgres_only(),
    needs_chromium,
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def organisation():
    return operator_organisation()


@pytest.fixture
def server(tmp_path, organisation):
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    # The server must sign sessions as this process does.
    env.update(
        DATABASE_URL=database_url(), SECRET_KEY=settings.SECRET_KEY, VAR_DIR=str(tmp_path), LOG_LEVEL="ERROR"
    )
    daphne = Daphne(env)
    try:
        daphne.wait_ready()
        yield f"http://127.0.0.1:{daphne.port}"
    finally:
        daphne.stop()


def _session_cookie(base: str) -> dict:
    from django.contrib.auth import get_user_model

    client = Client()
    client.force_login(get_user_model().objects.get(username="operator"))
    return {
        "name": settings.SESSION_COOKIE_NAME,
        "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
        "url": base,
    }


@pytest.fixture
def signed_in(server):
    """A function opening a signed-in page (extra context options, e.g. a clock)."""
    cookie = _session_cookie(server)
    with chromium() as browser:

        def open_page(**options):
            page = _watched_page(browser, **options)
            page.context.add_cookies([cookie])
            return page

        yield open_page


def _calls(organisation, events: list[dict]) -> None:
    result = voice_events_ingest(organisation=organisation, items=events, actor=Actor.system("test"))
    assert not result.rejected, result.rejected


def _iso(at) -> str:
    return at.isoformat()


def test_every_page_keeps_a_clean_console(server, signed_in, organisation):
    ingest(
        organisation,
        conversations(
            agent_id="agent_sales",
            first=ago(days=20),
            last=ago(days=8),
            count=40,
            prefix="a",
            version="v1",
            channel="voice",
        )
        + conversations(
            agent_id="agent_sales",
            first=ago(days=7),
            last=ago(minutes=5),
            count=40,
            prefix="b",
            version="v2",
            channel="voice",
        )
        + conversations(agent_id="agent_chat", first=ago(days=7), last=ago(minutes=5), count=20, prefix="c"),
    )
    _calls(organisation, [voice.started(call_id="live", agent_id="agent_sales", at=_iso(ago(minutes=2)))])
    page = signed_in()
    paths = [
        "/",
        "/?period=30d",
        "/agents/",
        "/agents/agent_sales/performance/?period=7d",
        "/agents/agent_sales/compare/",
        "/agents/agent_sales/voice/",
        "/agents/agent_sales/deployments/",
        "/conversations/",
        "/conversations/b-s1/",
        "/traces/",
        "/traces/b-1/",
        "/billing/",
        "/alerts/",
        "/audit/",
        "/settings/",
    ]
    for path in paths:
        page.goto(f"{server}{path}")
        page.wait_for_load_state("networkidle")
        if page.locator("[data-chart]").count():
            page.wait_for_function(
                "() => [...document.querySelectorAll('[data-chart]')].every(e => e._fullLayout)"
            )
        if page.locator("[data-voice-live]").count():
            page.wait_for_selector('[data-voice-live][data-state="live"]')
        assert complaints(page) == [], path


def _drawn(page) -> None:
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-chart]')].every(e => e._fullLayout && e.querySelector('.main-svg'))"
    )


def test_a_clicked_bar_opens_its_list_and_back_and_forward_keep_a_clean_console(
    server, signed_in, organisation
):
    ingest(
        organisation,
        conversations(
            agent_id="agent_sales",
            first=ago(hours=20),
            last=ago(minutes=5),
            count=30,
            prefix="a",
            channel="voice",
        )
        + conversations(
            agent_id="agent_chat", first=ago(hours=20), last=ago(minutes=5), count=20, prefix="c"
        ),
    )
    _calls(organisation, [voice.started(call_id="live", agent_id="agent_sales", at=_iso(ago(minutes=2)))])
    page = signed_in()
    page.goto(f"{server}/")
    _drawn(page)
    page.wait_for_selector('[data-voice-live][data-state="live"]')
    # The busiest hour's bar of the Conversations series (side-by-side bars).
    volume = "document.querySelector('[data-chart=chart-volume]')"
    index, clicked = page.evaluate(
        f"() => {{ const y = {volume}.data[0].y; const i = y.indexOf(Math.max(...y)); return [i, y[i]]; }}"
    )
    assert clicked > 0
    bar = page.locator("[data-chart=chart-volume] g.trace.bars").nth(0).locator("g.point path").nth(index)
    box = bar.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_url("**/conversations/?period=range&start=*")
    listed = page.url
    assert int(page.locator("#results [data-total]").get_attribute("data-total")) == clicked

    page.go_back()
    page.wait_for_url(f"{server}/")
    _drawn(page)
    page.wait_for_selector('[data-voice-live][data-state="live"]')
    page.go_forward()
    page.wait_for_url(listed)
    page.go_back()
    page.wait_for_url(f"{server}/")
    _drawn(page)
    card = page.locator('[data-metric="total_conversations"]')
    counted = int(card.locator(".metric-value").inner_text().replace(",", ""))
    assert counted == 51  # 50 conversations of traces and the live call's
    card.click()
    page.wait_for_url("**/conversations/?period=range&start=*")
    assert int(page.locator("#results [data-total]").get_attribute("data-total")) == counted
    assert complaints(page) == []


def test_the_voice_tab_refreshes_its_window_under_the_shared_range_filter(server, signed_in, organisation):
    now = timezone.now()
    _calls(
        organisation,
        [
            voice.started(call_id="c1", agent_id="agent_sales", at=_iso(now - timedelta(minutes=20))),
            voice.ended(call_id="c1", at=_iso(now - timedelta(minutes=18))),
        ],
    )
    page = signed_in()
    page.clock.install()
    page.goto(f"{server}/agents/agent_sales/voice/")
    window = page.locator("#panels")
    assert "1 started, 1 ended" in window.inner_text()
    # The range picker every page has, and no second "active calls" figure that would go stale.
    assert page.locator("#period option").all_text_contents() == [
        "Last 24 hours",
        "Last 7 days",
        "Last 30 days",
        "Custom range",
    ]
    assert "Active calls" not in window.inner_text()

    _calls(
        organisation,
        [
            voice.started(call_id="c2", agent_id="agent_sales", at=_iso(now - timedelta(minutes=3))),
            voice.ended(call_id="c2", at=_iso(now - timedelta(minutes=1))),
        ],
    )
    page.clock.fast_forward("00:31")  # the window's poll is due
    page.wait_for_function("() => document.querySelector('#panels').innerText.includes('2 started, 2 ended')")

    page.select_option("#period", "7d")
    page.wait_for_url("**/voice/?period=7d")
    page.wait_for_function(
        "() => document.querySelector('#panels .window-caption').innerText.includes('refreshes')"
    )
    assert complaints(page) == []


def test_the_voice_latency_bars_span_the_live_panel(server, signed_in, organisation):
    now = timezone.now()
    _calls(
        organisation,
        [
            voice.started(call_id="c1", agent_id="agent_sales", at=_iso(now - timedelta(minutes=12))),
            voice.turn(call_id="c1", at=_iso(now - timedelta(minutes=8, seconds=30)), voice_latency_ms=900),
            voice.turn(call_id="c1", at=_iso(now - timedelta(seconds=20)), voice_latency_ms=600),
        ],
    )
    page = signed_in()
    page.goto(f"{server}/agents/agent_sales/voice/")
    page.wait_for_selector('[data-voice-live][data-state="live"]')
    page.wait_for_function("() => document.querySelectorAll('[data-spark-bars] rect').length === 2")
    panel = page.locator("[data-voice-live]").bounding_box()
    chart = page.locator("[data-sparkline]").bounding_box()
    assert chart["width"] > 0.9 * (panel["width"] - 48)  # the panel's width, less its padding
    first, last = (page.locator("[data-spark-bars] rect").nth(n).bounding_box() for n in (0, 1))
    # Ten one-minute slots across the chart: eight and a half minutes ago in one of
    # the first two, twenty seconds ago in one of the last two.
    assert first["x"] - chart["x"] < chart["width"] * 0.2
    assert chart["x"] + chart["width"] - (last["x"] + last["width"]) < chart["width"] * 0.2
    assert last["height"] < first["height"]  # 600 ms against 900 ms
    assert complaints(page) == []
