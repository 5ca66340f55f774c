"""Voice metrics against a brute-force oracle, on generated calls with
bucket-edge timestamps, out-of-order and repeated batches, rejected events,
and the endpoint and page that show them."""

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.models import Agent
from dashboard import selectors
from metrics.windows import Window
from voice.selectors import voice_metrics

from . import voice
from .conftest import _tenant, trace

T0 = datetime(2026, 3, 2, tzinfo=UTC)
SPAN = timedelta(days=2)
PRICE = Decimal("0.05")
_orgs = itertools.count()

edge_offsets = st.builds(
    lambda hours, nudge: timedelta(hours=hours) + nudge,
    st.integers(0, 48),
    st.sampled_from(
        [timedelta(0), timedelta(microseconds=1), -timedelta(microseconds=1), timedelta(minutes=30)]
    ),
)
offsets = st.one_of(edge_offsets, st.timedeltas(min_value=timedelta(0), max_value=SPAN)).filter(
    lambda d: timedelta(0) <= d <= SPAN
)
lengths = st.one_of(
    st.sampled_from(
        [timedelta(0), timedelta(hours=1), timedelta(minutes=59, seconds=59, microseconds=999999)]
    ),
    st.timedeltas(min_value=timedelta(0), max_value=timedelta(hours=5)),
)


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


@st.composite
def calls(draw):
    events = []
    for n in range(draw(st.integers(1, 8))):
        call_id, start = f"call{n}", T0 + draw(offsets)
        events.append(voice.started(call_id=call_id, at=_iso(start), agent_id=f"agent_{n % 2}"))
        for _ in range(draw(st.integers(0, 4))):
            at = start + draw(st.one_of(lengths, st.just(-timedelta(seconds=1))))
            latency = draw(
                st.one_of(st.just(0), st.integers(1, 9000), st.floats(1, 3000).map(lambda x: round(x, 1)))
            )
            event = voice.turn(
                call_id=call_id,
                at=_iso(at),
                voice_latency_ms=latency,
                interrupted=draw(st.booleans()),
                transcription_confidence=draw(st.sampled_from([0, 0.5, 0.87, 0.99, 1])),
            )
            if draw(st.booleans()):
                event["event_id"] = f"{call_id}-t{draw(st.integers(0, 3))}"
            events.append(event)
        for _ in range(draw(st.integers(0, 2))):  # no end, an end, or a second (repeated or conflicting) one
            end = voice.ended(
                call_id=call_id,
                at=_iso(start + draw(st.one_of(lengths, st.just(-timedelta(minutes=1))))),
                status=draw(st.sampled_from(["completed", "completed", "failed", "dropped"])),
            )
            if draw(st.booleans()):
                end["duration_s"] = draw(
                    st.one_of(st.integers(0, 4000), st.floats(0, 600).map(lambda x: round(x, 4)))
                )
            events.append(end)
    order = draw(st.permutations(range(len(events))))
    shuffled = [events[i] for i in order]
    cuts = sorted(draw(st.lists(st.integers(0, len(shuffled)), max_size=3)))
    batches = [shuffled[a:b] for a, b in zip([0, *cuts], [*cuts, len(shuffled)], strict=True) if a < b]
    if draw(st.booleans()):
        batches.append(draw(st.sampled_from(batches)))  # a batch re-sent
    return batches


windows = st.tuples(offsets, offsets).map(lambda p: (T0 + min(p), T0 + max(p)))


def _close(actual, expected, tolerance: float = 1e-9) -> bool:
    if expected is None or actual is None:
        return actual is expected
    if connection.vendor == "postgresql" and isinstance(expected, Decimal):
        return Decimal(str(actual)) == expected
    return abs(float(actual) - float(expected)) <= tolerance * max(1.0, abs(float(expected)))


def _assert_matches(got: dict, want: dict) -> None:
    for key, expected in want.items():
        actual = got[key]
        if key in ("p50_voice_latency_ms", "p95_voice_latency_ms") and expected:
            assert abs(actual - expected) <= 0.01 * expected, (key, actual, expected)
        else:
            assert _close(actual, expected), (key, actual, expected)


@pytest.mark.django_db
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batches=calls(), checks=st.lists(windows, min_size=1, max_size=4))
def test_voice_metrics_and_summaries_equal_the_oracle(batches, checks):
    tenant = _tenant(f"voice-oracle-{next(_orgs)}")
    api = tenant.api("ingest")
    world = voice.VoiceWorld(price=PRICE)
    for batch in batches:
        r = api.post("/api/voice/events", {"events": batch})
        assert r.status_code in (200, 207, 400), r.content[:300]
        world.send(batch)
    org = tenant.organisation
    agents = {a.public_id: a for a in Agent.objects.filter(organisation=org)}
    for start, end in [*checks, (T0, T0 + SPAN + timedelta(hours=6))]:
        if start >= end:
            end = start + timedelta(minutes=7)
        window = Window(start, end)
        for public_id, agent in agents.items():
            want = world.metrics(start, end, public_id)
            got = voice_metrics(organisation=org, window=window, agent=agent, now=timezone.now())
            _assert_matches(got, want)
            summary = selectors.agent_summary(organisation=org, agent=agent, window=window)
            assert _close(summary["voice_minutes"], want["voice_minutes"])
            assert _close(summary["total_cost_usd"], want["voice_cost_usd"])
            assert summary["voice_calls"] == want["calls_ended"]
        overview = selectors.overview(organisation=org, window=window)
        everyone = sum((world.metrics(start, end, a)["voice_cost_usd"] for a in agents), Decimal(0))
        assert _close(overview["total_cost_usd"], everyone)
        channels = selectors.channel_breakdown(organisation=org, window=window)["channels"]
        assert _close(channels["voice"]["total_cost_usd"], everyone)


def test_voice_cost_adds_to_llm_cost_in_the_summary(tenant):
    api = tenant.api("ingest")
    api.post("/api/traces", trace(session_id="chat_1", cost_usd=0.25, created_at="2026-03-06T14:00:00Z"))
    api.post(
        "/api/voice/events",
        {"events": [voice.started(), voice.ended(at="2026-03-06T14:31:00Z"), voice.started(call_id="late")]},
    )
    api.post("/api/voice/events", voice.ended(call_id="late", at="2026-03-07T00:00:00Z"))
    agent = Agent.objects.get(public_id="agent_abc123")
    day = Window(datetime(2026, 3, 6, tzinfo=UTC), datetime(2026, 3, 7, tzinfo=UTC))
    summary = selectors.agent_summary(organisation=tenant.organisation, agent=agent, window=day)
    # The call that ended at midnight counts on the next day.
    assert summary["voice_calls"] == 1
    assert summary["voice_minutes"] == 1
    assert Decimal(str(summary["total_cost_usd"])) == Decimal("0.30")


# --- the endpoint and the page ----------------------------------------------------------


def test_the_endpoint_answers_a_windows_voice_metrics(tenant, reader):
    tenant.api("ingest").post(
        "/api/voice/events",
        {
            "events": [
                voice.started(),
                voice.turn(voice_latency_ms=700),
                voice.turn(at="2026-03-06T14:30:30Z", voice_latency_ms=900, interrupted=True),
                voice.ended(status="dropped"),
                voice.started(call_id="open"),
            ]
        },
    )
    r = reader.get("/api/agents/agent_abc123/voice", {"from": "2026-03-06", "to": "2026-03-07"})
    assert r.status_code == 200, r.content
    body = r.json()
    assert body["active_calls"] == 1
    assert (body["calls_started"], body["calls_ended"]) == (2, 1)
    assert body["calls_by_status"] == {"completed": 0, "failed": 0, "dropped": 1}
    assert (body["total_call_duration_s"], body["avg_call_duration_s"], body["voice_minutes"]) == (
        120,
        120,
        2,
    )
    assert body["voice_cost_usd"] == 0.1
    assert (body["turns"], body["avg_voice_latency_ms"], body["interruption_rate"]) == (2, 800, 0.5)
    assert body["transcription_accuracy"] == pytest.approx(0.9)
    assert body["p95_voice_latency_ms"] == pytest.approx(900, rel=0.01)


def test_a_turn_without_confidence_counts_in_latency_and_not_in_accuracy(tenant, reader):
    r = tenant.api("ingest").post(
        "/api/voice/events",
        {
            "events": [
                voice.started(),
                voice.turn(voice_latency_ms=700, transcription_confidence=0.8),
                voice.turn(at="2026-03-06T14:30:30Z", voice_latency_ms=900, transcription_confidence=None),
            ]
        },
    )
    assert r.status_code == 200, r.content
    body = reader.get("/api/agents/agent_abc123/voice", {"from": "2026-03-06", "to": "2026-03-07"}).json()
    assert (body["turns"], body["avg_voice_latency_ms"]) == (2, 800)
    assert body["transcription_accuracy"] == pytest.approx(0.8)


def test_the_endpoint_answers_null_rates_for_an_empty_window(tenant, reader):
    Agent.objects.create(organisation=tenant.organisation, public_id="agent_abc123", name="Quiet")
    body = reader.get("/api/agents/agent_abc123/voice", {"period": "24h"}).json()
    assert body["turns"] == 0 and body["calls_ended"] == 0
    assert body["avg_voice_latency_ms"] is None
    assert body["avg_call_duration_s"] is None
    assert body["interruption_rate"] is None and body["transcription_accuracy"] is None


def test_the_endpoint_hides_other_organisations_and_bad_windows(tenant, outsider, reader):
    Agent.objects.create(organisation=outsider.organisation, public_id="agent_theirs", name="Theirs")
    assert reader.get("/api/agents/agent_theirs/voice").status_code == 404
    Agent.objects.create(organisation=tenant.organisation, public_id="agent_abc123", name="Ours")
    r = reader.get("/api/agents/agent_abc123/voice", {"period": "forever"})
    assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_window")
    assert tenant.api("ingest").get("/api/agents/agent_abc123/voice").status_code == 403


def test_the_voice_tab_shows_the_window_and_the_live_panel(tenant, members):
    tenant.api("ingest").post("/api/voice/events", {"events": [voice.started(at=_iso(timezone.now()))]})
    r = members["viewer"].get("/agents/agent_abc123/voice/", {"period": "7d"})
    assert r.status_code == 200
    page = r.content.decode()
    assert "data-voice-live" in page and 'data-ws-path="/api/voice/metrics/agent_abc123/ws"' in page
    assert "Active calls" in page and "Interruption rate" in page
    assert "voice_live.js" in page
    assert "<script>" not in page and " style=" not in page  # the CSP allows neither
    assert members["outsider"].get("/agents/agent_abc123/voice/").status_code == 404
    assert members["viewer"].get("/agents/agent_abc123/voice/", {"period": "nope"}).status_code == 400


def test_time_series_put_voice_cost_in_the_hour_a_call_ended(tenant):
    tenant.api("ingest").post(
        "/api/voice/events",
        {
            "events": [
                voice.started(call_id="a", at="2026-03-06T09:50:00Z"),
                voice.ended(call_id="a", at="2026-03-06T10:10:00Z", duration_s=60),
                voice.started(call_id="b", at="2026-03-06T10:20:00Z"),
                voice.ended(call_id="b", at="2026-03-06T11:59:59.999999Z", duration_s=120),
            ]
        },
    )
    agent = Agent.objects.get(public_id="agent_abc123")
    # The window starts and ends inside hours: both calls are read from raw rows at its edges.
    window = Window(
        datetime(2026, 3, 6, 10, 5, tzinfo=UTC), datetime(2026, 3, 6, 11, 59, 59, 999999, tzinfo=UTC)
    )
    series = selectors.timeseries(organisation=tenant.organisation, window=window, agent=agent)
    costs = {p["bucket_start"].hour: Decimal(str(p["voice_cost_usd"])) for p in series["points"]}
    assert costs == {10: Decimal("0.05"), 11: Decimal("0")}  # b ended at the window's end: outside
    wider = Window(window.start, datetime(2026, 3, 6, 12, tzinfo=UTC))
    series = selectors.timeseries(organisation=tenant.organisation, window=wider, agent=agent)
    assert [Decimal(str(p["voice_cost_usd"])) for p in series["points"]] == [Decimal("0.05"), Decimal("0.1")]


def test_the_openapi_description_documents_voice(reader):
    spec = reader.get("/api/openapi.json").json()
    assert "/api/voice/events" in spec["paths"]
    assert "/api/agents/{agent_id}/voice" in spec["paths"]
    body = spec["paths"]["/api/voice/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    titles = [choice["title"] for choice in body["oneOf"]]
    assert titles == ["CallStarted", "CallTurn", "CallEnded", "VoiceEventBatch"]
    confidence = body["oneOf"][1]["properties"]["transcription_confidence"]["anyOf"]
    assert confidence == [{"type": "number", "minimum": 0, "maximum": 1}, {"type": "null"}]
    assert "VoiceMetricsOut" in spec["components"]["schemas"]


def test_the_live_frame_counts_today_in_the_organisations_time_zone(tenant):
    from voice.selectors import voice_live

    tenant.organisation.timezone = "America/New_York"
    tenant.organisation.save()
    tenant.api("ingest").post(
        "/api/voice/events",
        {
            "events": [
                # 22:00 the day before in New York: not today there.
                voice.started(call_id="late", at="2026-03-06T03:00:00Z"),
                voice.ended(call_id="late", at="2026-03-06T03:01:00Z"),
                voice.started(call_id="morning", at="2026-03-06T13:00:00Z"),
                voice.ended(call_id="morning", at="2026-03-06T13:03:00Z"),
                voice.started(call_id="now", at="2026-03-06T14:58:00Z"),
                voice.turn(call_id="now", at="2026-03-06T14:58:30Z", voice_latency_ms=500),
                voice.turn(call_id="now", at="2026-03-06T14:59:30Z", voice_latency_ms=700, interrupted=True),
            ]
        },
    )
    agent = Agent.objects.select_related("organisation").get(public_id="agent_abc123")
    frame = voice_live(agent=agent, now=datetime(2026, 3, 6, 15, 0, tzinfo=UTC))
    assert (frame["active_calls"], frame["calls_today"], frame["avg_call_duration_s"]) == (1, 2, 180)
    assert (frame["avg_latency_ms"], frame["interruption_rate"]) == (600, 0.5)
    history = frame["latency_history"]
    assert [m["minute"].minute for m in history] == [51, 52, 53, 54, 55, 56, 57, 58, 59, 0]
    assert [m["avg_latency_ms"] for m in history[-3:]] == [500, 700, None]
