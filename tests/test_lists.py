"""The Traces and Conversations lists through HTTP: every filter, sorting by
time, latency and cost with ties, newer and older pages, the total count, text
search, bad filter values, and the conversation totals."""

import re
from datetime import timedelta
from decimal import Decimal
from html import escape
from urllib.parse import quote

import pytest
from django.db.models import Count, Q, Sum
from django.utils import timezone

from agents.models import Session, Trace
from dashboard import lists
from dashboard.filters import instant
from thinnest_analytics import formatting
from voice.models import VoiceCall

from .conftest import trace

NOW = timezone.now()
AGENTS = ("agent_a", "agent_b", "agent_c")
CHANNELS = {"agent_a": "chat", "agent_b": "voice", "agent_c": "widget"}


def _item(n: int) -> dict:
    """Trace n: three agents, two versions, latency ties and gaps, some unpriced
    (in-house model) or reported costs, errors with a message."""
    agent = AGENTS[n % 3]
    return trace(
        id=f"t{n:02d}",
        agent_id=agent,
        session_id=f"s{n // 6:02d}-{agent}",
        channel=CHANNELS[agent],
        deployment_version="v1" if n < 20 else "v2",
        input=f"Question {n} about ORDER #{1000 + n}",
        output="100% sure" if n == 7 else f"answer {n}",
        model="in-house-7b" if n % 5 == 0 else "gpt-4o-mini",
        cost_usd="0.01" if n % 6 == 1 else None,
        input_tokens=100 + 10 * (n % 4),
        output_tokens=20 + n,
        latency_ms=[500, 500, 900, None][n % 4],
        status="error" if n % 7 == 3 else "success",
        error=f"Timeout talking to the CRM (call {n})" if n % 7 == 3 else "",
        created_at=(NOW - timedelta(minutes=17 * n + 1)).isoformat(),
    )


ITEMS = [_item(n) for n in range(36)]


@pytest.fixture
def traffic(ingest):
    assert ingest.post("/api/traces", {"traces": ITEMS}).status_code == 200


@pytest.fixture
def viewer(members, traffic):
    return members["viewer"]


def _listed(client, path: str) -> tuple[int, list[str], list[str]]:
    """The total shown and the ids of every row, following the Older links;
    also the messages shown (role=alert)."""
    body = client.get(path).content.decode()
    total = int(re.search(r'data-total="(\d+)"', body).group(1))
    alerts = re.findall(r'role="alert">([^<]*)<', body)
    ids = []
    while True:
        ids += re.findall(r'href="/(?:traces|conversations)/([^/"]+)/"', body)
        older = re.search(r'rel="next" href="\?([^"]+)"', body)
        if not older:
            return total, ids, alerts
        body = client.get(path.split("?")[0] + "?" + older.group(1).replace("&amp;", "&")).content.decode()


def _key(item: dict, name: str):
    value = {"latency": item.get("latency_ms"), "cost": _cost(item)}[name]
    return -1 if value is None else value


def _cost(item: dict) -> Decimal | None:
    if item.get("cost_usd") is not None:
        return Decimal(item["cost_usd"])
    if item["model"] == "gpt-4o-mini":
        return (item["input_tokens"] * Decimal("0.15") + item["output_tokens"] * Decimal("0.60")) / 1_000_000
    return None


def _pks() -> dict[str, int]:
    return dict(Trace.objects.values_list("public_id", "pk"))


FILTERS = [
    ("agent=agent_b", lambda t: t["agent_id"] == "agent_b"),
    ("channel=widget", lambda t: t["channel"] == "widget"),
    ("status=error", lambda t: t["status"] == "error"),
    ("status=success", lambda t: t["status"] == "success"),
    ("version=v2", lambda t: t["deployment_version"] == "v2"),
    ("model=in-house-7b", lambda t: t["model"] == "in-house-7b"),
    ("latency_min=900", lambda t: (t.get("latency_ms") or -1) >= 900),
    ("cost_min=0.0001", lambda t: (_cost(t) or -1) >= Decimal("0.0001")),
    ("q=order+%231001", lambda t: "order #1001" in t["input"].lower()),
    ("q=crm", lambda t: "crm" in t["error"].lower()),
    ("q=sure", lambda t: "sure" in t["output"]),
    ("q=answer+17", lambda t: t["id"] == "t17"),  # every word, in the input or the output
    (
        "agent=agent_a&status=error&version=v1",
        lambda t: t["agent_id"] == "agent_a" and t["status"] == "error" and t["deployment_version"] == "v1",
    ),
]


@pytest.mark.parametrize("query, keep", FILTERS, ids=[q for q, _ in FILTERS])
def test_each_trace_filter_lists_exactly_the_matching_traces(viewer, query, keep):
    total, ids, alerts = _listed(viewer, f"/traces/?period=24h&{query}")
    want = {t["id"] for t in ITEMS if keep(t)}
    assert alerts == []
    assert sorted(ids) == sorted(want)
    assert total == len(want)


# A list of few rows is sorted in memory; a long one is read from the sort index.
READS = pytest.mark.parametrize("in_memory", [20_000, 0], ids=["sorted-in-memory", "sort-index"])


@READS
@pytest.mark.parametrize("sort", ["-latency", "latency", "-cost", "cost", "-time", "time"])
def test_traces_sort_with_ties_broken_by_id_across_pages(viewer, monkeypatch, sort, in_memory):
    monkeypatch.setattr(lists, "SORT_IN_MEMORY", in_memory)
    total, ids, _ = _listed(viewer, f"/traces/?period=24h&sort={sort}")
    pks = _pks()
    name, descending = sort.lstrip("-"), sort.startswith("-")
    if name == "time":
        key = lambda t: (t["created_at"], pks[t["id"]])  # noqa: E731
    else:
        key = lambda t: (_key(t, name), pks[t["id"]])  # noqa: E731
    want = [t["id"] for t in sorted(ITEMS, key=key, reverse=descending)]
    assert ids == want
    assert total == len(ITEMS)


@pytest.mark.parametrize("sort", ["-latency", "cost", "-time"])
@pytest.mark.parametrize("limit", [10_000, 5], ids=["matches-counted", "too-many-to-count"])
def test_a_search_pages_through_its_matches_in_order(viewer, monkeypatch, sort, limit):
    monkeypatch.setattr(lists, "SEARCH_LIMIT", limit)
    total, ids, _ = _listed(viewer, f"/traces/?period=24h&q=question&sort={sort}")
    pks = _pks()
    name, descending = sort.lstrip("-"), sort.startswith("-")
    key = (
        (lambda t: (t["created_at"], pks[t["id"]]))
        if name == "time"
        else (lambda t: (_key(t, name), pks[t["id"]]))
    )
    assert ids == [t["id"] for t in sorted(ITEMS, key=key, reverse=descending)]
    assert total == min(len(ITEMS), limit)


@pytest.mark.parametrize("search", ["", "&q=question"])
def test_newer_pages_lead_back_to_the_first(viewer, search):
    first = viewer.get(f"/traces/?period=24h&sort=-latency{search}").content.decode()
    older = re.search(r'rel="next" href="\?([^"]+)"', first).group(1).replace("&amp;", "&")
    second = viewer.get(f"/traces/?{older}").content.decode()
    assert "Newest" in second
    newer = re.search(r'rel="prev" href="\?([^"]+)"', second).group(1).replace("&amp;", "&")
    back = viewer.get(f"/traces/?{newer}").content.decode()
    rows = lambda body: re.findall(r'href="/traces/([^/"]+)/"', body)  # noqa: E731
    assert rows(back) == rows(first) and len(rows(first)) == lists.PAGE_SIZE
    assert 'rel="prev"' not in back


def test_the_count_of_filters_outside_the_rollups_is_capped(viewer, monkeypatch):
    monkeypatch.setattr(lists, "COUNT_LIMIT", 5)
    body = viewer.get("/traces/?period=24h&model=gpt-4o-mini").content.decode()
    assert re.search(r"More than 5</strong> traces", body)


def test_the_count_from_the_rollups_also_shows_messages_and_agents(viewer):
    body = viewer.get("/traces/?period=24h&agent=agent_a").content.decode()
    mine = [t for t in ITEMS if t["agent_id"] == "agent_a"]
    messages = sum((t["input"] != "") + (t["output"] != "") for t in mine)
    assert f">{len(mine)}</strong> traces · {messages} messages · 1 agent<" in body


def test_an_exact_range_counts_only_its_instants(viewer):
    start, end = NOW - timedelta(minutes=17 * 10 + 1), NOW - timedelta(minutes=17 * 4 + 1)
    path = f"/traces/?period=range&start={quote(instant(start))}&end={quote(instant(end))}"
    total, ids, alerts = _listed(viewer, path)
    # Traces 5 … 10 lie in [start, end): trace 10 at its start, trace 4 at its (excluded) end.
    assert alerts == [] and total == 6
    assert sorted(ids) == [f"t{n:02d}" for n in range(5, 11)]


@pytest.mark.parametrize(
    "query, message",
    [
        ("latency_min=fast", "whole number of milliseconds"),
        ("latency_min=-5", "whole number of milliseconds"),
        ("cost_min=abc", "amount in USD"),
        ("cost_min=NaN", "amount in USD"),
        ("status=broken", "unknown status"),
        ("channel=fax", "unknown channel"),
        ("agent=agent_nobody", "no agent"),
        ("sort=size", "unknown sort order"),
        ("q=%21%21%21", "type a word"),
        ("cursor=abc", "first page"),
        ("before=%25%25", "first page"),
        ("cursor=WyJ0aW1lIiwgIm5vdCBhIHRpbWUiLCAxXQ", "first page"),
        ("sort=-cost&cursor=WyJ0aW1lIiwgIjIwMjYtMDEtMDFUMDA6MDA6MDBaIiwgMV0", "first page"),
        ("sort=-cost&q=question&cursor=WyJjb3N0IiwgIk5hTiIsIDFd", "first page"),
        ("sort=cost&cursor=WyJjb3N0IiwgIkluZmluaXR5IiwgMV0", "first page"),
        ("sort=latency&q=question&before=WyJsYXRlbmN5IiwgTmFOLCAxXQ", "first page"),
        ("cursor=WyJ0aW1lIiwgIjIwMjYtMTMtNDVUMDA6MDA6MDBaIiwgMV0", "first page"),
        ("period=range&start=2026-03-05T14:00:00Z", "start and an end"),
        ("period=range&start=yesterday&end=today", "ISO 8601"),
    ],
)
@pytest.mark.parametrize("path", ["/traces/", "/conversations/"])
def test_a_bad_filter_value_shows_a_message_and_the_list(viewer, path, query, message):
    if path == "/conversations/" and query.split("=")[0] in ("latency_min", "cost_min"):
        pytest.skip("a traces filter")
    r = viewer.get(f"{path}?{query}")
    assert r.status_code == 200
    body = r.content.decode()
    assert message.lower() in body.lower() and 'role="alert"' in body
    assert re.search(r'data-total="\d+"', body)


def test_conversations_show_turns_duration_latency_and_cost(viewer):
    body = viewer.get("/conversations/?period=24h&agent=agent_a").content.decode()
    row = re.search(r'<tr data-agent="agent_a"[^>]*>(.*?)</tr>', body, re.S).group(1)
    first = Session.objects.filter(agent__public_id="agent_a").order_by("-started_at").first()
    assert f"/conversations/{first.public_id}/" in row
    cells = re.findall(r'<td class="num"[^>]*>(.*?)</td>', row, re.S)
    assert cells[0] == str(first.trace_count)
    assert cells[1].strip() == "0 s" or "min" in cells[1] or cells[1].endswith(" s")
    assert cells[2].endswith("ms")
    assert cells[3].startswith(escape(formatting.format_usd(first.cost_usd, formatting.UNIT_USD_PLACES)))


@READS
@pytest.mark.parametrize("sort", ["-cost", "cost", "-latency", "latency"])
def test_conversations_sort_by_cost_and_latency_across_pages(viewer, monkeypatch, sort, in_memory):
    monkeypatch.setattr(lists, "SORT_IN_MEMORY", in_memory)
    total, ids, _ = _listed(viewer, f"/conversations/?period=24h&sort={sort}")
    column = {"cost": "cost_usd", "latency": "latency_avg_ms"}[sort.lstrip("-")]
    rows = Session.objects.values_list("public_id", column, "pk")
    want = [
        public_id
        for public_id, *_ in sorted(
            rows, key=lambda r: (-1 if r[1] is None else r[1], r[2]), reverse=sort.startswith("-")
        )
    ]
    assert ids == want and total == len(want)


def test_conversation_search_finds_text_in_any_of_its_turns(viewer):
    total, ids, _ = _listed(viewer, "/conversations/?period=24h&q=ORDER+%231033")
    assert ids == ["s05-agent_a"] and total == 1


def test_the_conversation_page_shows_its_totals(viewer):
    mine = [t for t in ITEMS if t["session_id"] == "s00-agent_a"]
    assert len(mine) == 2
    body = viewer.get("/conversations/s00-agent_a/").content.decode()
    tokens = re.search(r'data-total="tokens">([^<]*)<', body).group(1)
    assert tokens == formatting.format_tokens(
        sum(t["input_tokens"] for t in mine), sum(t["output_tokens"] for t in mine)
    )
    assert re.search(r'data-total="turns">2<', body)
    assert re.search(r'data-total="duration">51 min 00 s<', body)  # t00 and t03, 51 minutes apart
    assert "1 unpriced turn" in body  # t00 used the in-house model


def _assert_conversations_sum_their_traces(organisation) -> None:
    """Every conversation's stored totals equal a recomputation from its traces and call."""
    raw = {
        row["session_id"]: row
        for row in Trace.objects.filter(organisation=organisation)
        .values("session_id")
        .annotate(
            input_tokens=Sum("input_tokens"),
            output_tokens=Sum("output_tokens"),
            latency_count=Count("latency_ms"),
            latency_sum_ms=Sum("latency_ms"),
            llm_cost_usd=Sum("cost_usd"),
            unpriced_traces=Count("id", filter=Q(cost_usd__isnull=True)),
        )
        .order_by()
    }
    calls = dict(VoiceCall.objects.filter(ended_at__isnull=False).values_list("session_id", "cost_usd"))
    sessions = Session.objects.filter(organisation=organisation)
    assert sessions.exists()
    for s in sessions:
        want = raw.get(s.pk, {})
        assert s.input_tokens == (want.get("input_tokens") or 0), s.public_id
        assert s.output_tokens == (want.get("output_tokens") or 0), s.public_id
        assert s.latency_count == want.get("latency_count", 0), s.public_id
        assert s.latency_sum_ms == (want.get("latency_sum_ms") or 0), s.public_id
        assert s.llm_cost_usd == (want.get("llm_cost_usd") or 0), s.public_id
        assert s.unpriced_traces == want.get("unpriced_traces", 0), s.public_id
        assert s.voice_cost_usd == (calls.get(s.pk) or 0), s.public_id
        assert s.cost_usd == s.llm_cost_usd + s.voice_cost_usd


def test_conversations_sum_their_traces_as_they_arrive(tenant, traffic, ingest):
    # A second batch adds turns to existing conversations, out of order.
    later = [
        _item(n) | {"id": f"late{n}", "created_at": (NOW - timedelta(days=2)).isoformat()} for n in range(6)
    ]
    assert ingest.post("/api/traces", {"traces": later}).status_code == 200
    _assert_conversations_sum_their_traces(tenant.organisation)


def test_a_voice_conversation_costs_its_turns_and_its_minutes(tenant, members, ingest):
    at = NOW - timedelta(hours=1)
    events = [
        {"type": "call.started", "call_id": "call_1", "agent_id": "agent_v", "at": at.isoformat()},
        {
            "type": "call.ended",
            "call_id": "call_1",
            "at": (at + timedelta(minutes=3)).isoformat(),
            "status": "completed",
        },
    ]
    assert ingest.post("/api/voice/events", {"events": events}).status_code == 200
    turn = trace(id="v1", agent_id="agent_v", session_id="call_1", channel="voice", created_at=at.isoformat())
    assert ingest.post("/api/traces", turn).status_code == 200
    _assert_conversations_sum_their_traces(tenant.organisation)
    session = Session.objects.get(public_id="call_1")
    assert session.voice_cost_usd == Decimal("0.15")  # 3 minutes at the default $0.05
    body = members["viewer"].get("/conversations/call_1/").content.decode()
    assert re.search(r'data-total="duration">3 min 00 s<', body)
    assert f"${session.cost_usd:.2f}" in body


def test_a_trace_derived_again_from_more_spans_updates_its_conversation(tenant):
    import json

    from django.test import Client

    from .otlp import T0, json_export, json_span, ns

    trace_id, m = "0af7651916cd43dd8448eb211c80319c", 1_000_000
    agent = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.id": "agent_o",
        "gen_ai.conversation.id": "c-o",
    }
    chat = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": 100,
        "gen_ai.usage.output_tokens": 10,
    }
    root = json_span(
        trace_id, "00000000000000a1", "invoke_agent", ns(T0), ns(T0) + 1500 * m, attributes=agent
    )
    child = json_span(
        trace_id,
        "00000000000000a2",
        "chat",
        ns(T0) + 100 * m,
        ns(T0) + 900 * m,
        parent="00000000000000a1",
        attributes=chat,
    )
    for spans in ([root], [child]):
        r = Client().post(
            "/api/otel/v1/traces",
            json.dumps(json_export(spans)).encode(),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {tenant.keys['ingest']}",
        )
        assert r.status_code == 200, r.content
    session = Session.objects.get(public_id="c-o")
    assert (session.input_tokens, session.output_tokens) == (100, 10)
    _assert_conversations_sum_their_traces(tenant.organisation)
