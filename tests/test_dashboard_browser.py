"""The dashboard as an operator meets it in Chromium: Back and Forward, the
version comparison, changes against the previous window, numbers, charts, the
trace waterfall, the alert form, and a phone-sized screen. Every test watches
the page for Content Security Policy violations and console errors."""

import json
import re
import urllib.request
from datetime import datetime, timedelta

import pytest

from accounts.services import api_key_create
from alerts.models import AlertRule
from audit.services import Actor

from .browser import (
    DESKTOP,
    PHONE,
    ago,
    chromium,
    complaints,
    conversations,
    ingest,
    needs_chromium,
    operator_organisation,
    sign_in,
    watched_page,
)

pytestmark = [pytest.mark.browser, needs_chromium, pytest.mark.django_db(transaction=True)]
CHARTS_DRAWN = "n => [...document.querySelectorAll('[data-chart]')].filter(e => e._fullLayout).length >= n"


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


@pytest.fixture
def organisation():
    return operator_organisation()


@pytest.fixture
def tenant_key(organisation):
    created = api_key_create(
        organisation=organisation, name="reader", scopes=["read"], actor=Actor.system("test")
    )
    return created.raw_key


def _open(browser, live_server, path: str = "/", viewport=DESKTOP):
    page = watched_page(browser, viewport)
    sign_in(page, live_server.url)
    if path != "/":
        page.goto(f"{live_server.url}{path}")
    return page


def _caption(page) -> str:
    return page.inner_text("#panels .window-caption")


def _window_length(caption: str) -> timedelta:
    """The length of the window a caption ("2026-11-30 16:03 – 2026-12-01 16:03 UTC …") shows."""
    start, end = re.findall(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}", caption)[:2]
    return datetime.fromisoformat(end) - datetime.fromisoformat(start)


def _plots_drawn_here(page) -> list[bool]:
    """Whether each chart was drawn by Plotly in this document (a copy of
    Plotly's markup put back from elsewhere has no ``_fullLayout``)."""
    return page.evaluate("[...document.querySelectorAll('[data-chart]')].map(e => !!e._fullLayout)")


# --- 1. Back and Forward ------------------------------------------------------------


def test_back_and_forward_show_drawn_charts_and_the_filter_of_the_address(browser, live_server, organisation):
    ingest(
        organisation,
        conversations(agent_id="agent_a", first=ago(days=6), last=ago(minutes=5), count=40, prefix="c"),
    )
    page = _open(browser, live_server)
    page.wait_for_function(CHARTS_DRAWN, arg=5)
    day_caption = _caption(page)
    page.select_option("#period", "7d")
    page.wait_for_url("**/?period=7d*")
    page.wait_for_function(
        "c => document.querySelector('#panels .window-caption').innerText !== c", arg=day_caption
    )
    week_caption = _caption(page)

    page.go_back()
    page.wait_for_url(f"{live_server.url}/")
    page.wait_for_function(
        "c => document.querySelector('#panels .window-caption').innerText !== c", arg=week_caption
    )
    page.wait_for_function(CHARTS_DRAWN, arg=5)
    assert page.input_value("#period") == "24h"
    assert _window_length(_caption(page)) == timedelta(hours=24)
    assert all(_plots_drawn_here(page))

    back_caption = _caption(page)
    page.go_forward()
    page.wait_for_url("**/?period=7d*")
    # The panels are fetched again: their caption names the 7 days up to now, which
    # is a later minute than week_caption's on a slow machine.
    page.wait_for_function(
        "c => document.querySelector('#panels .window-caption').innerText !== c", arg=back_caption
    )
    page.wait_for_function(CHARTS_DRAWN, arg=5)
    assert page.input_value("#period") == "7d"
    assert _window_length(_caption(page)) == timedelta(days=7)
    assert all(_plots_drawn_here(page))
    assert complaints(page) == []


def test_a_filter_leaves_no_empty_parameters_in_the_address(browser, live_server, organisation):
    ingest(
        organisation,
        conversations(agent_id="agent_a", first=ago(days=3), last=ago(minutes=5), count=10, prefix="c"),
    )
    page = _open(browser, live_server, "/traces/")
    page.select_option("#period", "7d")
    page.wait_for_url("**/traces/?period=7d**")
    assert "from=" not in page.url and "to=" not in page.url and "agent=" not in page.url
    assert complaints(page) == []


# --- 2. Version comparison ----------------------------------------------------------


def _two_versions(organisation) -> None:
    """v2 ran from 16 to 5 days ago, v3 since: faster, but failing more."""
    ingest(
        organisation,
        conversations(
            agent_id="agent_sales",
            first=ago(days=16),
            last=ago(days=5, hours=1),
            count=80,
            prefix="v2",
            version="v2",
            latency_ms=lambda n: 1500 + n % 10 * 150,
            failed=lambda n: n % 20 == 0,
        )
        + conversations(
            agent_id="agent_sales",
            first=ago(days=5),
            last=ago(minutes=30),
            count=50,
            prefix="v3",
            version="v3",
            latency_ms=lambda n: 900 + n % 10 * 100,
            failed=lambda n: n % 5 == 0,
        ),
    )


# The comparison's rows: their labels and the API's names.
COMPARED = {
    "Conversations": "total_sessions",
    "Success rate": "success_rate",
    "Error rate": "error_rate",
    "Avg response time": "avg_response_time_ms",
    "p50 latency": "p50_latency_ms",
    "p95 latency": "p95_latency_ms",
    "Tool call rate": "tool_call_rate",
    "Tokens per response": "tokens_per_response",
    "Total cost": "total_cost_usd",
    "Cost per conversation": "cost_per_conversation",
    "Evaluation score": "avg_evaluation_score",
}


def _sign(text: str) -> int:
    if text.startswith("+"):
        return 1
    if text.startswith(("\u2212", "-")):
        return -1
    return 0


def test_the_compare_page_shows_every_change_from_a_to_b_with_the_apis_sign(
    browser, live_server, organisation, tenant_key
):
    _two_versions(organisation)
    query = "a=v2&b=v3&period=30d"
    request = urllib.request.Request(
        f"{live_server.url}/api/agents/agent_sales/versions/compare?{query}",
        headers={"Authorization": f"Bearer {tenant_key}"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        api = json.load(answer)
    page = _open(browser, live_server, f"/agents/agent_sales/compare/?{query}")
    rows = page.locator("#comparison tbody tr")
    assert rows.count() == len(COMPARED)
    for n in range(rows.count()):
        row = rows.nth(n)
        metric = COMPARED[row.locator("th").inner_text()]
        absolute = api["changes"][metric]["absolute"]
        expected = 0 if not absolute else (1 if absolute > 0 else -1)
        change = row.locator("td").nth(2).inner_text()
        assert _sign(change) == expected, (metric, change, api["changes"][metric])
    assert "good" in page.locator("[data-metric=p95_latency_ms] td.change").get_attribute("class")
    assert "bad" in page.locator("[data-metric=success_rate] td.change").get_attribute("class")
    assert "bad" in page.locator("[data-metric=error_rate] td.change").get_attribute("class")
    assert complaints(page) == []


def test_the_compare_page_defaults_to_days_in_which_both_versions_ran(browser, live_server, organisation):
    _two_versions(organisation)
    page = _open(browser, live_server, "/agents/agent_sales/compare/")
    conversations_row = page.locator("[data-metric=total_sessions] td.num")
    assert conversations_row.nth(0).inner_text() == "80"  # every v2 conversation
    assert conversations_row.nth(1).inner_text() == "50"
    assert page.input_value("#period") == "custom"
    assert page.input_value("#range-from") == ago(days=16).date().isoformat()
    assert complaints(page) == []


# --- 3. Changes against the previous window ------------------------------------------


def test_a_30_day_window_whose_previous_window_has_no_data_shows_n_a_with_the_reason(
    browser, live_server, organisation
):
    # The data starts 40 days ago: the previous 30-day window (60 to 30 days ago) is mostly empty.
    ingest(
        organisation,
        conversations(agent_id="agent_a", first=ago(days=40), last=ago(hours=1), count=200, prefix="c"),
    )
    page = _open(browser, live_server, "/?period=30d")
    changes = page.locator(".metric-card .metric-change")
    assert changes.count() == 6
    for n in range(6):
        assert changes.nth(n).inner_text() == "n/a"
        assert "The data starts" in changes.nth(n).get_attribute("title")
    assert complaints(page) == []


# --- 5. Smaller defects -----------------------------------------------------------------


def test_a_cost_axis_of_small_amounts_has_distinct_ticks(browser, live_server, organisation):
    ingest(
        organisation,
        conversations(
            agent_id="agent_a",
            first=ago(hours=20),
            last=ago(minutes=5),
            count=60,
            prefix="c",
            cost_usd=lambda n: "0.00011",
        ),
    )
    page = _open(browser, live_server)
    page.wait_for_function(CHARTS_DRAWN, arg=5)
    ticks = page.locator("[data-chart=chart-cost] .ytick text").all_text_contents()
    assert len(ticks) >= 3
    assert len(set(ticks)) == len(ticks), ticks
    assert page.locator("[data-chart=chart-cost] .g-ytitle").text_content() == "USD"
    assert complaints(page) == []


def test_the_channel_donut_labels_no_empty_slice(browser, live_server, organisation):
    ingest(
        organisation,
        conversations(agent_id="agent_a", first=ago(hours=20), last=ago(minutes=5), count=30, prefix="c"),
    )
    page = _open(browser, live_server)
    page.wait_for_function(CHARTS_DRAWN, arg=5)
    donut = page.locator("[data-chart=chart-channels]")
    assert donut.locator("g.slice").count() == 1  # chat only: no slices for voice and widget
    assert set(donut.locator(".slicetext").all_text_contents()) == {"100.0%"}  # no "0%" labels
    assert complaints(page) == []


def test_a_failed_trace_marks_its_failed_step_and_explains_its_output_and_span(
    browser, live_server, organisation
):
    at = ago(hours=1)
    ingest(
        organisation,
        [
            {
                "id": "failed-trace",
                "agent_id": "agent_a",
                "session_id": "s-failed",
                "input": "Where is my order?",
                "output": "",
                "status": "error",
                "error": "Tool call failed: upstream timed out",
                "input_tokens": 879,
                "output_tokens": 348,
                "latency_ms": 258,
                "created_at": at.isoformat(),
                "steps": [
                    {"kind": "llm", "name": "plan", "started_at": at.isoformat(), "latency_ms": 120},
                    {
                        "kind": "tool",
                        "name": "lookup_order",
                        "latency_ms": 210,
                        "error": "upstream timed out",
                    },
                ],
            }
        ],
    )
    page = _open(browser, live_server, "/traces/failed-trace/")
    failed_row = page.locator(".waterfall tbody tr", has_text="lookup_order")
    assert "row-error" in failed_row.get_attribute("class")
    assert failed_row.locator(".badge.error").inner_text() == "failed"
    assert "No output: this trace failed" in page.locator("section", has_text="Output").inner_text()
    note = page.inner_text(".waterfall-note")
    assert "330 ms" in note and "258 ms" in note and "one after another" in note
    assert "879 in · 348 out" in page.inner_text(".facts")
    assert complaints(page) == []


# --- 9. One number style ----------------------------------------------------------------


def test_tables_cards_and_charts_share_one_number_style(browser, live_server, organisation):
    ingest(
        organisation,
        conversations(
            agent_id="agent_busy",
            first=ago(hours=20),
            last=ago(minutes=5),
            count=600,
            prefix="b",
            cost_usd=lambda n: "0.0714" if n == 0 else "0.01",
        )
        + conversations(
            agent_id="agent_cheap",
            first=ago(hours=20),
            last=ago(minutes=5),
            count=3,
            prefix="q",
            cost_usd=lambda n: "0.001",
        ),
    )
    page = _open(browser, live_server)
    page.wait_for_function(CHARTS_DRAWN, arg=5)
    busy = page.locator("#agents-table tbody tr", has_text="agent_busy")
    cells = busy.locator("td").all_inner_texts()
    assert cells[1:4] == [
        "600",
        "1,200",
        "$6.06",
    ]  # conversations, messages (thousands separator), cost in cents
    cheap = page.locator("#agents-table tbody tr", has_text="agent_cheap").locator("td").all_inner_texts()
    assert cheap[3] == "< $0.01"
    assert page.inner_text("[data-metric=total_messages] .metric-value") == "1,206"
    titles = {
        chart: page.locator(f"[data-chart={chart}] .g-ytitle").text_content()
        for chart in ("chart-volume", "chart-cost", "chart-latency", "chart-success")
    }
    assert titles == {
        "chart-volume": "Count per hour",
        "chart-cost": "USD",
        "chart-latency": "ms",
        "chart-success": "%",
    }
    assert all(t == "Time (UTC)" for t in page.locator("[data-chart] .g-xtitle").all_text_contents())
    assert complaints(page) == []


# --- 10. Alerts page ---------------------------------------------------------------------


def _visible_fields(page) -> set[str]:
    return set(
        page.evaluate(
            "[...document.querySelectorAll('[data-alert-form] .field')].filter(f => !f.hidden).map(f => f.dataset.field)"
        )
    )


def test_the_alert_form_shows_only_the_fields_of_the_chosen_kind(browser, live_server, organisation):
    page = _open(browser, live_server, "/alerts/")
    page.select_option("#id_kind", "error_rate")
    error_rate = _visible_fields(page)
    assert {"agent", "channel", "baseline_factor", "window_minutes", "min_conversations"} <= error_rate
    assert "statistic" not in error_rate
    page.select_option("#id_kind", "low_balance")
    low_balance = _visible_fields(page)
    assert not low_balance & {
        "agent",
        "channel",
        "statistic",
        "baseline_factor",
        "window_minutes",
        "min_conversations",
    }
    assert {"name", "kind", "threshold", "cooldown_minutes", "email_to"} <= low_balance
    page.select_option("#id_kind", "latency")
    assert "statistic" in _visible_fields(page) and "baseline_factor" not in _visible_fields(page)
    assert complaints(page) == []


def test_an_error_rate_threshold_is_typed_and_shown_as_a_percentage(browser, live_server, organisation):
    page = _open(browser, live_server, "/alerts/")
    page.select_option("#id_kind", "error_rate")
    assert "%" in page.inner_text("[data-field=threshold] label")
    page.fill("#id_name", "Errors")
    page.fill("#id_threshold", "13")
    page.click("[data-alert-form] button[type=submit]")
    page.wait_for_selector(".messages .success")
    rule = AlertRule.objects.get(name="Errors")
    assert str(rule.threshold.normalize()) == "0.13"
    row = page.locator("table tbody tr", has_text="Errors")
    assert "13.0%" in row.inner_text()
    assert complaints(page) == []


# --- 11. A phone-sized screen -----------------------------------------------------------------


@pytest.fixture
def phone(browser, live_server, organisation):
    ingest(
        organisation,
        conversations(
            agent_id="agent_a",
            first=ago(days=6),
            last=ago(minutes=5),
            count=60,
            prefix="c",
            cost_usd=lambda n: "0.02",
        )
        + conversations(
            agent_id="agent_b", first=ago(days=6), last=ago(minutes=5), count=20, prefix="w", channel="widget"
        ),
    )
    page = _open(browser, live_server, "/?period=7d", viewport=PHONE)
    page.wait_for_function(CHARTS_DRAWN, arg=5)
    return page


def _overlap(a: dict | None, b: dict | None) -> bool:
    if not a or not b:
        return False
    return (
        a["x"] < b["x"] + b["width"]
        and b["x"] < a["x"] + a["width"]
        and a["y"] < b["y"] + b["height"]
        and b["y"] < a["y"] + a["height"]
    )


def test_on_a_phone_the_top_bar_never_breaks_a_word(phone):
    # Each piece of text in the top bar sits on one line: a wrapped word or name
    # would have line boxes at two heights.
    lines = phone.evaluate(
        """(() => {
             const walker = document.createTreeWalker(document.querySelector('.topbar'), NodeFilter.SHOW_TEXT);
             const out = [];
             for (let node = walker.nextNode(); node; node = walker.nextNode()) {
               if (!node.textContent.trim()) continue;
               const range = document.createRange(); range.selectNodeContents(node);
               const tops = new Set([...range.getClientRects()].filter(r => r.width > 0).map(r => Math.round(r.top)));
               out.push([node.textContent.trim(), tops.size]);
             }
             return out;
           })()"""
    )
    assert [text for text, count in lines if count != 1] == []
    assert complaints(phone) == []


def test_on_a_phone_the_plotly_mode_bar_never_covers_a_chart_title(phone):
    for chart in phone.locator("figure.chart").all():
        chart.scroll_into_view_if_needed()
        chart.locator(".plot").hover()
        title = None
        for selector in (".chart-title", ".gtitle"):
            candidate = chart.locator(selector)
            if candidate.count() and candidate.first.is_visible():
                title = candidate.first.bounding_box()
                break
        assert title, "every chart has a visible title"
        modebar = chart.locator(".modebar")
        box = modebar.bounding_box() if modebar.count() and modebar.first.is_visible() else None
        assert not _overlap(title, box), (title, box)
    assert complaints(phone) == []


def test_on_a_phone_date_ticks_stay_clear_of_legends(phone):
    for chart in phone.locator("figure.chart").all():
        legend = chart.locator(".legend")
        if not legend.count():
            continue
        legend_box = legend.first.bounding_box()
        for tick in chart.locator(".xtick text").all():
            assert not _overlap(tick.bounding_box(), legend_box), chart.get_attribute("aria-labelledby")
    assert complaints(phone) == []


def test_on_a_phone_no_page_scrolls_sideways(browser, live_server, organisation):
    from alerts.services import rule_create, rule_test

    ingest(
        organisation,
        conversations(
            agent_id="agent_a", first=ago(days=6), last=ago(minutes=5), count=30, prefix="c", version="v1"
        )
        + conversations(
            agent_id="agent_a", first=ago(days=2), last=ago(minutes=5), count=30, prefix="d", version="v2"
        ),
    )
    rule = rule_create(
        organisation=organisation,
        data={"name": "Error rate of the booking assistant", "kind": "error_rate", "threshold": "0.2"},
        actor=Actor.system("test"),
    )
    rule_test(rule=rule, actor=Actor.system("test"))
    page = _open(browser, live_server, viewport=PHONE)
    for path in [
        "/",
        "/agents/",
        "/agents/agent_a/performance/",
        "/agents/agent_a/compare/",
        "/agents/agent_a/deployments/",
        "/conversations/",
        "/conversations/c-s1/",
        "/traces/",
        "/traces/c-1/",
        "/billing/",
        "/alerts/",
        "/settings/team/",
        "/settings/api-keys/",
    ]:
        page.goto(f"{live_server.url}{path}")
        page.wait_for_load_state("networkidle")
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], path
    assert complaints(page) == []
