"""Dashboard pages through HTTP: who sees what, filters, HTMX panels, polling."""

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from thinnest_analytics import charts

from .conftest import trace

NOW = timezone.now()


@pytest.fixture
def traffic(ingest):
    at = NOW - timedelta(hours=3)
    batch = [
        trace(
            id="t1", session_id="c1", created_at=at.isoformat(), input="Where is my order?", latency_ms=800
        ),
        trace(
            id="t2",
            session_id="c1",
            created_at=(at + timedelta(seconds=20)).isoformat(),
            output="It ships today.",
            status="success",
            tool_calls=[{"name": "lookup_order", "arguments": {"id": 7}, "result": {"status": "shipped"}}],
            steps=[
                {"kind": "llm", "name": "chat", "latency_ms": 300, "started_at": at.isoformat()},
                {"kind": "tool", "name": "lookup_order", "latency_ms": 120, "error": "slow"},
            ],
        ),
        trace(
            id="t3",
            session_id="c2",
            channel="widget",
            agent_id="agent_other",
            created_at=at.isoformat(),
            status="error",
            error="model timed out",
            input="Book a table",
        ),
        trace(
            id="old", session_id="c3", created_at=(NOW - timedelta(days=10)).isoformat(), input="last week"
        ),
    ]
    assert ingest.post("/api/traces", {"traces": batch}).status_code == 200


PAGES = [
    "/",
    "/agents/agent_abc123/performance/",
    "/conversations/",
    "/conversations/c1/",
    "/traces/",
    "/traces/t1/",
    "/settings/",
]


@pytest.mark.parametrize("path", PAGES)
def test_a_viewer_can_read_every_page(members, traffic, path):
    assert members["viewer"].get(path).status_code == 200


@pytest.mark.parametrize("path", PAGES[1:6])
def test_an_outsider_gets_404_for_this_organisations_objects(members, traffic, path):
    if path in ("/conversations/", "/traces/"):
        body = members["outsider"].get(path).content.decode()
        assert "Where is my order" not in body and "Book a table" not in body
    else:
        assert members["outsider"].get(path).status_code == 404


@pytest.mark.parametrize("path", PAGES)
def test_anonymous_is_sent_to_log_in(traffic, path):
    r = Client().get(path)
    assert r.status_code == 302 and r["Location"].startswith("/login/")


def test_audit_page_is_for_admins(members, traffic):
    assert members["viewer"].get("/audit/").status_code == 403
    body = members["admin"].get("/audit/").content.decode()
    assert "agent.create" in body


def test_overview_shows_six_cards_with_changes_and_five_charts(members, traffic):
    body = members["viewer"].get("/").content.decode()
    for label in [
        "Total Conversations",
        "Total Messages",
        "Total Cost",
        "Average Response Time",
        "Success Rate",
        "Active Agents",
    ]:
        assert label in body
    assert body.count('class="metric-card"') == 6
    assert len(re.findall(r'data-chart="chart-', body)) == 5
    # Two conversations started in the last 24 hours, one of them failed.
    assert re.search(
        r'data-metric="total_conversations">\s*<div class="metric-label">[^<]*</div>\s*<div class="metric-value">2<',
        body,
    )
    assert re.search(r'data-metric="success_rate">.*?<div class="metric-value">50.0%<', body, re.S)
    # Nothing in the previous window: each change reads "n/a" and says why.
    changes = re.findall(r'<div class="metric-change (\w+)" title="([^"]*)">([^<]*)<', body)
    assert len(changes) == 6
    assert all(
        trend == "neutral" and text == "n/a" and "previous window" in hint for trend, hint, text in changes
    )


def test_the_window_filter_changes_the_numbers(members, traffic):
    c = members["viewer"]
    day = c.get("/?period=24h").content.decode()
    month = c.get("/?period=30d").content.decode()
    value = r'data-metric="total_conversations">\s*<div class="metric-label">[^<]*</div>\s*<div class="metric-value">(\d+)<'
    assert re.search(value, day).group(1) == "2"
    assert re.search(value, month).group(1) == "3"


def test_a_custom_range_of_whole_days(members, traffic):
    start = (NOW - timedelta(days=11)).date().isoformat()
    end = (NOW - timedelta(days=9)).date().isoformat()
    body = members["viewer"].get(f"/?period=custom&from={start}&to={end}").content.decode()
    assert re.search(
        r'data-metric="total_conversations">\s*<div class="metric-label">[^<]*</div>\s*<div class="metric-value">1<',
        body,
    )
    assert 'value="custom" selected' in body


@pytest.mark.parametrize(
    "query", ["period=abc", "period=custom&from=2026-03-05&to=2026-03-01", "period=custom&from=junk"]
)
def test_a_bad_window_shows_an_error_and_the_default(members, traffic, query):
    r = members["viewer"].get(f"/?{query}")
    assert r.status_code == 200
    assert 'role="alert"' in r.content.decode()
    assert "showing the last 24 hours" in r.content.decode()


def test_htmx_gets_only_the_panels_and_an_unchanged_poll_gets_204(members, traffic, ingest):
    c = members["viewer"]
    start = (NOW - timedelta(days=1)).date().isoformat()
    url = f"/?period=custom&from={start}&to={NOW.date().isoformat()}"
    body = c.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert body.lstrip().startswith('<div id="panels"')
    assert "<html" not in body
    etag = re.search(r'"etag": "([0-9a-f]+)"', c.get("/", HTTP_HX_REQUEST="true").content.decode()).group(1)
    assert c.get(f"/?period=24h&etag={etag}", HTTP_HX_REQUEST="true").status_code == 204
    # New data changes the panel, so the next poll swaps it in.
    ingest.post(
        "/api/traces",
        trace(id="late", session_id="late", created_at=(NOW - timedelta(minutes=5)).isoformat()),
    )
    r = c.get(f"/?period=24h&etag={etag}", HTTP_HX_REQUEST="true")
    assert r.status_code == 200 and '<div id="panels"' in r.content.decode()


def test_custom_windows_do_not_poll(members, traffic):
    start = (NOW - timedelta(days=2)).date().isoformat()
    body = members["viewer"].get(f"/?period=custom&from={start}&to={start}").content.decode()
    assert 'hx-trigger="every 30s"' not in body
    assert 'hx-trigger="every 30s"' in members["viewer"].get("/").content.decode()


def test_the_agents_table_sorts(members, traffic):
    c = members["viewer"]
    by_name = c.get("/?period=30d&sort=name").content.decode()
    assert by_name.index("agent_abc123") < by_name.index("agent_other")
    reverse = c.get("/?period=30d&sort=-name").content.decode()
    assert reverse.index("agent_other") < reverse.index("agent_abc123")
    table = c.get("/?period=30d&sort=-success&panel=agents", HTTP_HX_REQUEST="true").content.decode()
    assert table.lstrip().startswith('<section class="card" id="agents-table">')
    assert 'aria-sort="descending"' in table


def test_agent_performance_has_the_three_metric_groups_and_channels(members, traffic):
    body = members["viewer"].get("/agents/agent_abc123/performance/?period=24h").content.decode()
    for label in [
        "Avg Response Time",
        "p50 Latency",
        "p95 Latency",
        "Tokens per Response",
        "Total Cost",
        "Cost per Conversation",
        "Input Tokens",
        "Output Tokens",
        "Voice Minutes",
        "Success Rate",
        "Error Rate",
        "Tool Call Rate",
        "Evaluation Score",
    ]:
        assert label in body, label
    assert "Channels" in body and "Widget" in body
    assert members["viewer"].get("/agents/nope/performance/").status_code == 404


def test_conversations_filter_by_agent_channel_status_and_text(members, traffic):
    c = members["viewer"]

    def ids(query):
        body = c.get(f"/conversations/?period=30d&{query}").content.decode()
        return set(re.findall(r'href="/conversations/([^/"]+)/"', body))

    assert ids("") == {"c1", "c2", "c3"}
    assert ids("agent=agent_other") == {"c2"}
    assert ids("channel=widget") == {"c2"}
    assert ids("status=failed") == {"c2"}
    assert ids("status=success") == {"c1", "c3"}
    assert ids("q=ORDER") == {"c1"}
    assert ids("q=ships") == {"c1"}


def test_conversations_paginate(members, ingest):
    batch = [
        trace(id=f"p{n}", session_id=f"s{n:02d}", created_at=(NOW - timedelta(minutes=n)).isoformat())
        for n in range(30)
    ]
    ingest.post("/api/traces", {"traces": batch})
    c = members["viewer"]
    first = c.get("/conversations/").content.decode()
    cursor = re.search(r"cursor=([^\"&]+)", first).group(1)
    second = c.get(f"/conversations/?period=24h&cursor={cursor}").content.decode()
    page1 = re.findall(r'href="/conversations/(s\d+)/"', first)
    page2 = re.findall(r'href="/conversations/(s\d+)/"', second)
    assert len(page1) == 25 and len(page2) == 5
    assert not set(page1) & set(page2)


def test_a_conversation_reads_like_a_transcript(members, traffic):
    body = members["viewer"].get("/conversations/c1/").content.decode()
    assert body.index("Where is my order?") < body.index("It ships today.")
    assert 'href="/traces/t1/"' in body and 'href="/traces/t2/"' in body
    assert "lookup_order" in body


def test_the_trace_view_shows_steps_as_a_waterfall_and_errors(members, traffic):
    body = members["viewer"].get("/traces/t2/").content.decode()
    assert body.count('<rect class="bar') == 2
    assert 'class="bar tool failed"' in body
    assert "&quot;status&quot;: &quot;shipped&quot;" in body  # pretty-printed result, escaped


def test_untrusted_trace_text_is_rendered_inert(members, ingest):
    evil = '<script>alert(1)</script><img src=x onerror="alert(2)">'
    ingest.post(
        "/api/traces",
        trace(
            id="evil",
            session_id="evil",
            input=evil,
            output=evil,
            reasoning=evil,
            created_at=NOW.isoformat(),
            tool_calls=[{"name": "t", "arguments": {"x": evil}, "error": evil}],
        ),
    )
    for path in ["/traces/evil/", "/conversations/evil/", "/conversations/", "/traces/"]:
        body = members["viewer"].get(path).content.decode()
        assert "<script>alert(1)" not in body
        assert "<img src=x" not in body
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body or "&lt;script&gt;alert(1)" in body


def test_the_overview_carries_a_live_voice_panel_for_voice_agents(members, ingest):
    assert "data-voice-live" not in members["viewer"].get("/").content.decode()
    ingest.post(
        "/api/traces",
        trace(
            id="v1",
            session_id="call-1",
            channel="voice",
            agent_id="agent_caller",
            created_at=(NOW - timedelta(minutes=3)).isoformat(),
        ),
    )
    body = members["viewer"].get("/").content.decode()
    assert 'data-ws-path="/api/voice/metrics/agent_caller/ws"' in body
    # The panel sits outside the polled panels, so polling never replaces its socket.
    assert body.index("data-voice-live") < body.index('<div id="panels"')


def test_the_donut_leaves_out_empty_slices_and_each_slice_keeps_its_list():
    figure = charts.donut(
        "chart-channels",
        "Conversations by channel",
        ["Voice", "Chat", "Widget"],
        [5, 0, 3],
        links=[
            "/conversations/?channel=voice",
            "/conversations/?channel=chat",
            "/conversations/?channel=widget",
        ],
    )["figure"]
    pie = figure["data"][0]
    assert pie["labels"] == ["Voice", "Widget"] and pie["values"] == [5, 3]
    assert pie["customdata"] == ["/conversations/?channel=voice", "/conversations/?channel=widget"]
