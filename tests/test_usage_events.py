"""Usage events (scraping and other spend): stored once, counted in the rollups
and in every window's total cost, per category, and rebuilt from raw rows."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection

from agents.models import Agent
from audit.models import AuditLog
from billing.models import UsageEvent
from billing.selectors import category_costs
from dashboard import selectors
from metrics.rebuild import rollups_rebuild
from metrics.windows import Window

from .conftest import rollup_snapshot, trace, usage_event, usage_rollup_snapshot

T0 = datetime(2026, 3, 6, tzinfo=UTC)


def _money_equal(a, b) -> bool:
    if connection.vendor == "postgresql":
        return Decimal(str(a)) == Decimal(str(b))
    return abs(Decimal(str(a)) - Decimal(str(b))) < Decimal("1e-9")  # SQLite keeps decimals as floats


def test_one_event_is_stored_with_its_fields(tenant, ingest):
    r = ingest.post("/api/usage/events", usage_event(id="e1", quantity="3.5", cost_usd="0.0105"))
    assert r.status_code == 200, r.content
    assert r.json() == {"accepted": ["e1"], "duplicates": [], "rejected": []}
    event = UsageEvent.objects.get(public_id="e1")
    assert (event.category, event.quantity, event.unit) == ("scraping", Decimal("3.5"), "pages")
    assert event.cost_usd == Decimal("0.0105")
    assert event.at == datetime(2026, 3, 6, 14, 30, tzinfo=UTC)
    assert event.agent.public_id == "agent_abc123"


def test_a_resent_event_is_accepted_but_counted_once(tenant, ingest):
    batch = {"events": [usage_event(id=f"e{n}", cost_usd="0.25") for n in range(3)]}
    assert ingest.post("/api/usage/events", batch).status_code == 200
    again = ingest.post("/api/usage/events", {"events": [*batch["events"], usage_event(id="e3")]})
    assert again.status_code == 200
    assert again.json()["accepted"] == ["e0", "e1", "e2", "e3"]
    assert again.json()["duplicates"] == ["e0", "e1", "e2"]
    assert UsageEvent.objects.count() == 4
    window = Window(T0, T0 + timedelta(days=1))
    assert selectors.overview(organisation=tenant.organisation, window=window)["total_cost_usd"] == Decimal(
        "0.7860"
    )


def test_an_id_repeated_within_a_batch_is_stored_once(tenant, ingest):
    body = {"events": [usage_event(id="same", cost_usd="1"), usage_event(id="same", cost_usd="2")]}
    r = ingest.post("/api/usage/events", body)
    assert r.json() == {"accepted": ["same", "same"], "duplicates": ["same"], "rejected": []}
    assert UsageEvent.objects.get(public_id="same").cost_usd == 1  # the first version wins


def test_valid_events_are_stored_when_others_are_rejected(tenant, ingest):
    body = {"events": [usage_event(id="ok"), usage_event(id="bad", cost_usd="-1"), "nonsense"]}
    r = ingest.post("/api/usage/events", body)
    assert r.status_code == 207
    assert r.json()["accepted"] == ["ok"]
    assert [(x["index"], x["id"]) for x in r.json()["rejected"]] == [(1, "bad"), (2, None)]
    assert "cost_usd" in r.json()["rejected"][0]["reason"]
    assert list(UsageEvent.objects.values_list("public_id", flat=True)) == ["ok"]


def test_a_batch_with_nothing_valid_is_400_with_each_reason(tenant, ingest):
    r = ingest.post(
        "/api/usage/events", {"events": [usage_event(unit=""), usage_event(category="Web Search")]}
    )
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["message"] == "every item was rejected"
    reasons = [x["reason"] for x in error["details"]["rejected"]]
    assert "unit" in reasons[0] and "category" in reasons[1]
    assert not UsageEvent.objects.exists()


def test_token_and_voice_costs_cannot_be_sent_as_usage_events(tenant, ingest):
    for category, source in (("llm_tokens", "traces"), ("voice_minutes", "voice calls")):
        r = ingest.post("/api/usage/events", usage_event(category=category))
        assert r.status_code == 400
        assert category in r.json()["error"]["message"] and source in r.json()["error"]["message"]
    assert not UsageEvent.objects.exists()


def test_an_unknown_agent_is_registered_once_and_audited(tenant, ingest):
    r = ingest.post(
        "/api/usage/events",
        {
            "events": [
                usage_event(id="a", agent_id="agent_scraper"),
                usage_event(id="b", agent_id="agent_scraper"),
            ]
        },
    )
    assert r.status_code == 200
    agent = Agent.objects.get(organisation=tenant.organisation, public_id="agent_scraper")
    entries = AuditLog.objects.filter(action="agent.create", resource_id="agent_scraper")
    assert entries.count() == 1 and entries.get().details["registered_by"] == "ingestion"
    assert UsageEvent.objects.filter(agent=agent).count() == 2


def test_an_event_without_a_time_happens_now(tenant, ingest):
    before = datetime.now(UTC)
    assert ingest.post("/api/usage/events", usage_event(at=None)).status_code == 200
    assert before <= UsageEvent.objects.get().at <= datetime.now(UTC)


def test_events_carry_the_agents_active_deployment(tenant, ingest):
    tenant.api("admin").post("/api/agents", {"id": "agent_abc123", "name": "Support"})
    tenant.api("admin").post("/api/deployments/agent_abc123", {"changes": "first", "version": "v7"})
    ingest.post("/api/usage/events", usage_event())
    assert UsageEvent.objects.get().deployment_version == "v7"
    summary = selectors.version_breakdown(
        organisation=tenant.organisation,
        agent=Agent.objects.get(public_id="agent_abc123"),
        window=Window(T0, T0 + timedelta(days=1)),
    )
    assert summary["v7"]["other_cost_usd"] == Decimal("0.036")


# Events and traces on and around hour edges; windows that start and end mid-hour.
TIMES = [
    T0 + timedelta(hours=9),
    T0 + timedelta(hours=9, minutes=29, seconds=59),
    T0 + timedelta(hours=9, minutes=30),
    T0 + timedelta(hours=10) - timedelta(microseconds=1),
    T0 + timedelta(hours=10),
    T0 + timedelta(hours=23, minutes=45),
    T0 + timedelta(days=1, minutes=5),
    T0 + timedelta(days=2, hours=18, minutes=30),
]
WINDOWS = [
    (T0 + timedelta(hours=9, minutes=30), T0 + timedelta(hours=10)),  # inside one hour
    (T0 + timedelta(hours=9, minutes=30), T0 + timedelta(days=2, hours=18, minutes=30)),  # mid-hour ends
    (T0 - timedelta(hours=5, minutes=30), T0 + timedelta(days=1, hours=18, minutes=30)),  # UTC+5:30 days
    (T0, T0 + timedelta(days=3)),  # whole days
    (T0 + timedelta(hours=10), T0 + timedelta(hours=10, microseconds=1)),
]


@pytest.fixture
def mixed(tenant, ingest):
    """Traces with reported costs and scraping/search events at edge times."""
    traces, events = [], []
    for n, at in enumerate(TIMES):
        traces.append(
            trace(id=f"t{n}", session_id=f"s{n}", cost_usd=f"0.{n + 1}1", created_at=at.isoformat())
        )
        for k, category in enumerate(("scraping", "web_search")):
            events.append(
                usage_event(
                    id=f"e{n}-{k}",
                    agent_id=("agent_abc123", "agent_crawler")[k],
                    category=category,
                    cost_usd=f"0.00{n + 1}{k + 3}",
                    at=at.isoformat(),
                )
            )
    assert ingest.post("/api/traces", {"traces": traces}).status_code == 200
    assert ingest.post("/api/usage/events", {"events": events[::-1]}).status_code == 200
    return traces, events


def _in(items, key, start, end):
    return [i for i in items if start <= datetime.fromisoformat(i[key]) < end]


@pytest.mark.parametrize("start,end", WINDOWS)
def test_total_cost_includes_usage_events_exactly_for_any_window(tenant, reader, mixed, start, end):
    traces, events = mixed
    trace_cost = sum((Decimal(t["cost_usd"]) for t in _in(traces, "created_at", start, end)), Decimal(0))
    event_cost = sum((Decimal(e["cost_usd"]) for e in _in(events, "at", start, end)), Decimal(0))
    body = reader.get("/api/analytics/overview", {"from": start.isoformat(), "to": end.isoformat()}).json()
    assert _money_equal(body["total_cost_usd"], trace_cost + event_cost)
    summary = reader.get(
        "/api/agents/agent_crawler/summary", {"from": start.isoformat(), "to": end.isoformat()}
    ).json()
    crawler = sum(
        (Decimal(e["cost_usd"]) for e in _in(events, "at", start, end) if e["agent_id"] == "agent_crawler"),
        Decimal(0),
    )
    assert _money_equal(summary["other_cost_usd"], crawler)
    assert _money_equal(summary["total_cost_usd"], crawler)
    # Per category, also exact.
    want = {}
    for e in _in(events, "at", start, end):
        want[e["category"]] = want.get(e["category"], Decimal(0)) + Decimal(e["cost_usd"])
    got = category_costs(organisation=tenant.organisation, window=Window(start, end))
    assert set(got) == set(want)
    for category, cost in want.items():
        assert _money_equal(got[category], cost), category


def test_timeseries_points_count_usage_where_it_happened(tenant, mixed):
    traces, events = mixed
    series = selectors.timeseries(organisation=tenant.organisation, window=Window(T0, T0 + timedelta(days=1)))
    for point in series["points"]:
        end = point["bucket_start"] + timedelta(hours=1)
        want = sum(
            (Decimal(e["cost_usd"]) for e in _in(events, "at", point["bucket_start"], end)), Decimal(0)
        )
        assert _money_equal(point["other_cost_usd"], want), point["bucket_start"]


def test_events_have_no_channel_in_the_channel_breakdown(tenant, mixed):
    window = Window(T0, T0 + timedelta(days=3))
    channels = selectors.channel_breakdown(organisation=tenant.organisation, window=window)["channels"]
    assert set(channels) == {"voice", "chat", "widget"}
    traces, _ = mixed
    assert _money_equal(channels["chat"]["total_cost_usd"], sum(Decimal(t["cost_usd"]) for t in traces))


def test_rebuilt_rollups_equal_the_incremental_ones(tenant, mixed):
    rollups, per_category = rollup_snapshot(tenant.organisation), usage_rollup_snapshot(tenant.organisation)
    assert per_category
    rollups_rebuild(start=T0 - timedelta(days=1), end=T0 + timedelta(days=4))
    assert rollup_snapshot(tenant.organisation) == rollups
    assert usage_rollup_snapshot(tenant.organisation) == per_category


def test_a_rebuild_of_one_organisation_leaves_the_others_alone(tenant, outsider, mixed):
    outsider.api("ingest").post("/api/usage/events", usage_event(id="theirs", cost_usd="9"))
    theirs = usage_rollup_snapshot(outsider.organisation)
    rollups_rebuild(start=T0, end=T0 + timedelta(days=1), organisation_id=tenant.organisation.pk)
    assert usage_rollup_snapshot(outsider.organisation) == theirs
