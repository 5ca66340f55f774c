"""POST /api/voice/events: calls as conversations, turns, ends, pricing,
partial batches, idempotency and every way an event can be wrong."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from agents.models import Agent, Session
from audit.models import AuditLog
from dashboard import selectors
from metrics.rebuild import rollups_rebuild
from metrics.windows import Window
from voice.models import CallStatus, VoiceCall, VoiceTurn

from . import voice
from .conftest import _tenant, postgres_only, rollup_snapshot, trace
from .voice import ended, started, turn

DAY = Window(datetime(2026, 3, 6, tzinfo=UTC), datetime(2026, 3, 7, tzinfo=UTC))


def _post(ingest, *events, batch=True):
    return ingest.post("/api/voice/events", {"events": list(events)} if batch else events[0])


def _reason(response) -> str:
    """The reason the one event of a refused request was rejected."""
    return response.json()["error"]["details"]["rejected"][0]["reason"]


def _summary(tenant, agent_id: str = "agent_abc123", window: Window = DAY) -> dict:
    agent = Agent.objects.get(organisation=tenant.organisation, public_id=agent_id)
    return selectors.agent_summary(organisation=tenant.organisation, agent=agent, window=window)


def test_a_whole_call_is_one_voice_conversation(ingest, tenant):
    r = _post(
        ingest,
        started(from_number="+14155550100", to_number="+14155550199"),
        turn(at="2026-03-06T14:30:05Z"),
        turn(at="2026-03-06T14:30:09Z", interrupted=True, transcription_confidence=0.75),
        ended(at="2026-03-06T14:32:00Z"),
    )
    assert r.status_code == 200, r.content
    assert r.json() == {
        "accepted": [
            "call_1:started",
            "call_1:turn@2026-03-06T14:30:05Z",
            "call_1:turn@2026-03-06T14:30:09Z",
            "call_1:ended",
        ],
        "duplicates": [],
        "rejected": [],
    }
    call = VoiceCall.objects.get(public_id="call_1")
    assert (call.status, call.from_number, call.to_number) == ("completed", "+14155550100", "+14155550199")
    assert call.duration_s == Decimal("120.000")
    assert call.turns.count() == 2
    session = call.session
    assert (session.public_id, session.channel, session.status) == ("call_1", "voice", "success")
    assert session.started_at == voice.parse("2026-03-06T14:30:00Z")
    assert session.ended_at == voice.parse("2026-03-06T14:32:00Z")
    assert Agent.objects.get(public_id="agent_abc123").organisation == tenant.organisation
    assert AuditLog.objects.filter(action="agent.create", resource_id="agent_abc123").count() == 1


def test_a_call_joins_the_conversation_its_traces_belong_to(ingest, tenant):
    ingest.post("/api/traces", trace(session_id="sess_v", channel="voice", created_at="2026-03-06T14:30:10Z"))
    assert _summary(tenant)["total_sessions"] == 1
    r = _post(ingest, started(session_id="sess_v", at="2026-03-06T13:59:50Z"))
    assert r.status_code == 200, r.content
    session = Session.objects.get(public_id="sess_v")
    # The call started earlier than the first trace: the conversation now starts with it.
    assert session.started_at == voice.parse("2026-03-06T13:59:50Z")
    assert session.first_trace_at == voice.parse("2026-03-06T14:30:10Z")
    assert _summary(tenant)["total_sessions"] == 1
    fourteen = Window(datetime(2026, 3, 6, 14, tzinfo=UTC), datetime(2026, 3, 6, 15, tzinfo=UTC))
    assert _summary(tenant, window=fourteen)["total_sessions"] == 0
    before = rollup_snapshot(tenant.organisation)
    rollups_rebuild(start=DAY.start, end=DAY.end)
    assert rollup_snapshot(tenant.organisation) == before


def test_a_failed_or_dropped_call_fails_its_conversation(ingest, tenant):
    _post(
        ingest,
        started(call_id="ok"),
        ended(call_id="ok"),
        started(call_id="bad"),
        ended(call_id="bad", status="failed"),
        started(call_id="gone"),
        ended(call_id="gone", status="dropped"),
    )
    assert Session.objects.get(public_id="bad").status == "failed"
    assert Session.objects.get(public_id="gone").status == "failed"
    summary = _summary(tenant)
    assert (summary["total_sessions"], summary["success_rate"]) == (3, pytest.approx(1 / 3))


def test_minutes_are_priced_when_the_call_ends(ingest, tenant, settings):
    settings.DEFAULT_VOICE_PRICE_PER_MINUTE = "0.07"
    _post(ingest, started(call_id="a"), ended(call_id="a", at="2026-03-06T14:30:41.123456Z"))
    call = VoiceCall.objects.get(public_id="a")
    assert call.duration_s == Decimal("41.123")  # whole milliseconds
    assert call.price_per_minute == Decimal("0.07")
    assert call.cost_usd == Decimal("0.0479768333")  # 41.123 × 0.07 / 60, to 10 places

    tenant.organisation.voice_price_per_minute = Decimal("0.12")
    tenant.organisation.save()
    _post(ingest, started(call_id="b"), ended(call_id="b", duration_s=90))
    call = VoiceCall.objects.get(public_id="b")
    assert (call.duration_s, call.cost_usd) == (Decimal("90.000"), Decimal("0.18"))

    summary = _summary(tenant)
    assert summary["voice_minutes"] == pytest.approx((41.123 + 90) / 60)
    assert Decimal(str(summary["voice_cost_usd"])) == Decimal("0.2279768333")
    assert Decimal(str(summary["total_cost_usd"])) == Decimal("0.2279768333")
    assert summary["voice_calls"] == 2


def test_a_call_still_going_costs_nothing_yet(ingest, tenant):
    _post(ingest, started(), turn())
    assert VoiceCall.objects.get().cost_usd is None
    assert _summary(tenant)["voice_minutes"] == 0


def test_events_of_one_batch_apply_starts_then_turns_then_ends(ingest):
    r = _post(ingest, ended(), turn(), started())
    assert r.status_code == 200, r.content
    assert r.json()["accepted"] == ["call_1:ended", "call_1:turn@2026-03-06T14:30:05Z", "call_1:started"]
    assert VoiceCall.objects.get().status == CallStatus.COMPLETED


def test_resending_events_never_applies_them_twice(ingest, tenant):
    events = [
        started(),
        turn(at="2026-03-06T14:30:05Z"),
        turn(at="2026-03-06T14:30:05Z", event_id="turn-7", voice_latency_ms=950),
        ended(),
    ]
    assert _post(ingest, *events).status_code == 200
    rollups = rollup_snapshot(tenant.organisation)
    r = _post(ingest, *events)
    assert r.status_code == 200
    body = r.json()
    assert (
        body["duplicates"]
        == body["accepted"]
        == [
            "call_1:started",
            "call_1:turn@2026-03-06T14:30:05Z",
            "turn-7",
            "call_1:ended",
        ]
    )
    assert VoiceTurn.objects.count() == 2
    assert rollup_snapshot(tenant.organisation) == rollups
    assert Session.objects.get().error_count == 0


def test_an_event_repeated_inside_one_batch_is_applied_once(ingest, tenant):
    r = _post(ingest, started(), started(), turn(), turn(), ended(status="failed"), ended(status="failed"))
    assert r.status_code == 200, r.content
    assert len(r.json()["duplicates"]) == 3
    assert VoiceTurn.objects.count() == 1
    assert Session.objects.get().error_count == 1
    assert _summary(tenant)["voice_calls"] == 1


def test_turn_identity_is_the_event_id_else_the_time(ingest):
    _post(
        ingest,
        started(),
        turn(at="2026-03-06T14:30:05Z", event_id="e1"),
        turn(at="2026-03-06T14:30:05Z", event_id="e2"),
        turn(at="2026-03-06T14:30:06Z"),
        turn(at="2026-03-06T14:30:06+00:00"),  # the same instant, written differently
    )
    assert sorted(VoiceTurn.objects.values_list("key", flat=True)) == [
        "2026-03-06T14:30:06+00:00",
        "e1",
        "e2",
    ]


def test_a_different_end_for_an_ended_call_is_rejected(ingest):
    _post(ingest, started(), ended())
    r = _post(ingest, ended(status="dropped"))
    assert r.status_code == 400
    assert "already ended at 2026-03-06T14:32:00+00:00 (completed)" in _reason(r)


def test_an_earlier_start_sent_later_moves_the_start_of_a_call_still_going(ingest, tenant):
    _post(ingest, started(at="2026-03-06T14:30:00Z"), turn(at="2026-03-06T14:30:05Z"))
    r = _post(ingest, started(at="2026-03-06T14:29:00Z"), turn(at="2026-03-06T14:29:30Z"), ended())
    assert r.status_code == 200 and r.json()["duplicates"] == [], r.content
    call = VoiceCall.objects.get()
    assert call.started_at == datetime(2026, 3, 6, 14, 29, tzinfo=UTC) and call.duration_s == 180
    assert call.session.started_at == call.started_at and VoiceTurn.objects.count() == 2
    assert _summary(tenant)["total_sessions"] == 1


def test_an_earlier_start_for_an_ended_call_changes_nothing(ingest):
    _post(ingest, started(), ended())
    r = _post(ingest, started(at="2026-03-06T14:00:00Z"))
    assert r.status_code == 200 and r.json()["duplicates"] == ["call_1:started"]
    assert VoiceCall.objects.get().duration_s == 120


def test_valid_events_are_kept_when_others_are_rejected(ingest):
    r = _post(ingest, started(), turn(call_id="nope"), ended())
    assert r.status_code == 207
    body = r.json()
    assert body["accepted"] == ["call_1:started", "call_1:ended"]
    assert body["rejected"] == [
        {
            "index": 1,
            "id": "nope:turn@2026-03-06T14:30:05Z",
            "reason": "unknown call 'nope': no call.started was received for it",
        }
    ]


def test_one_event_without_a_batch(ingest):
    r = _post(ingest, started(), batch=False)
    assert r.status_code == 200
    assert r.json()["accepted"] == ["call_1:started"]


def test_a_call_started_by_two_agents_belongs_to_the_first(ingest):
    _post(ingest, started())
    r = _post(ingest, started(agent_id="agent_other"))
    assert r.status_code == 400
    assert "belongs to another agent" in _reason(r)


def test_events_of_other_organisations_are_separate(ingest, outsider):
    _post(ingest, started())
    r = _post(outsider.api("ingest"), ended())
    assert r.status_code == 400
    assert "unknown call" in _reason(r)


def test_ingestion_needs_the_ingest_scope(tenant):
    assert tenant.api("read").post("/api/voice/events", started()).status_code == 403
    assert tenant.api("ingest").client.post("/api/voice/events").status_code == 401


def test_rebuilt_rollups_equal_incremental_ones_with_calls(ingest, tenant):
    base = datetime(2026, 3, 6, 22, tzinfo=UTC)
    events = []
    for n in range(12):
        at = base + timedelta(minutes=23 * n)
        events += [
            started(call_id=f"c{n}", at=at.isoformat(), agent_id=f"agent_{n % 2}"),
            turn(call_id=f"c{n}", at=(at + timedelta(seconds=5)).isoformat()),
            ended(
                call_id=f"c{n}",
                at=(at + timedelta(minutes=n * 7, seconds=n)).isoformat(),
                status=("completed", "failed", "dropped")[n % 3],
            ),
        ]
    assert _post(ingest, *events[18:]).status_code == 200
    assert _post(ingest, *events[:18]).status_code == 200
    before = rollup_snapshot(tenant.organisation)
    assert any(row["voice_calls_ended"] for row in before.values())
    rollups_rebuild(start=base - timedelta(days=1), end=base + timedelta(days=2))
    assert rollup_snapshot(tenant.organisation) == before


@postgres_only()
@pytest.mark.django_db(transaction=True)
def test_racing_copies_of_a_call_are_applied_once(live_server):
    from .test_ingest_concurrency import _race  # the same racing clients as for traces

    tenant = _tenant("race-events")
    start = timezone.now() - timedelta(minutes=10)
    events = [voice.started(call_id="raced", at=start.isoformat())]
    events += [
        voice.turn(call_id="raced", at=(start + timedelta(seconds=10 * n)).isoformat()) for n in range(1, 6)
    ]
    events.append(
        voice.ended(call_id="raced", at=(start + timedelta(minutes=2)).isoformat(), status="failed")
    )
    results = _race(f"{live_server.url}/api/voice/events", tenant.keys["ingest"], [{"events": events}] * 6)
    assert [status for status, _ in results] == [200] * 6, [
        r["error"]["details"]["rejected"][:2] for s, r in results if s != 200
    ]
    call = VoiceCall.objects.get(public_id="raced")
    assert (call.status, call.turns.count(), call.duration_s) == ("failed", 5, Decimal("120.000"))
    assert Session.objects.get(public_id="raced").error_count == 1
    rollups = rollup_snapshot(tenant.organisation)
    assert sum(row["voice_calls_ended"] for row in rollups.values()) == 2  # hourly and daily
    assert sum(row["conversations"] for row in rollups.values()) == 2
    rollups_rebuild(start=start - timedelta(days=1), end=timezone.now() + timedelta(hours=1))
    assert rollup_snapshot(tenant.organisation) == rollups


# --- every way an event can be wrong -------------------------------------------------

# (case, events sent first, the event, words the reason must contain)
CASES = [
    ("not an object", [], 42, ["JSON object"]),
    ("no type", [], {"call_id": "c"}, ["type", "call.started", "call.turn", "call.ended"]),
    ("unknown type", [], started(type="call.paused"), ["type: must be one of"]),
    ("unknown field", [], started(colour="blue"), ["colour", "not a known field"]),
    ("missing agent", [], {k: v for k, v in started().items() if k != "agent_id"}, ["agent_id", "required"]),
    ("missing time", [], {k: v for k, v in started().items() if k != "at"}, ["at", "required"]),
    ("time not a time", [], started(at="yesterday"), ["at"]),
    ("time before 2000", [], started(at="1999-12-31T23:00:00Z"), ["at", "before 2000"]),
    ("call id with a slash", [], started(call_id="a/b"), ["call_id", "pattern"]),
    ("NUL in a number", [], started(from_number="+1\x00"), ["from_number", "NUL"]),
    ("latency as a string", [started()], turn(voice_latency_ms="800"), ["voice_latency_ms", "number"]),
    ("negative latency", [started()], turn(voice_latency_ms=-1), ["voice_latency_ms", "greater than"]),
    ("interrupted as 0", [started()], turn(interrupted=0), ["interrupted", "boolean"]),
    ("confidence above 1", [started()], turn(transcription_confidence=1.2), ["transcription_confidence"]),
    ("confidence below 0", [started()], turn(transcription_confidence=-0.1), ["transcription_confidence"]),
    ("turn of an unknown call", [], turn(call_id="ghost"), ["unknown call 'ghost'"]),
    ("turn before the call", [started()], turn(at="2026-03-06T14:29:59Z"), ["before the call started"]),
    ("turn after the end", [started(), ended()], turn(at="2026-03-06T14:33:00Z"), ["after the call ended"]),
    ("end of an unknown call", [], ended(call_id="ghost"), ["unknown call 'ghost'", "call.started"]),
    (
        "end before the start",
        [started()],
        ended(at="2026-03-06T14:29:00Z"),
        ["is before the call started", "2026-03-06T14:30:00"],
    ),
    ("unknown status", [started()], ended(status="hung_up"), ["status", "completed", "failed", "dropped"]),
    ("negative duration", [started()], ended(duration_s=-5), ["duration_s"]),
    ("duration as a string", [started()], ended(duration_s="60"), ["duration_s", "number"]),
    ("duration over a week", [started()], ended(duration_s=700_000), ["duration_s"]),
    ("session of a chat", [], started(session_id="chat_1"), ["chat conversation"]),
    (
        "session with a call",
        [started()],
        started(call_id="call_2", session_id="call_1"),
        ["already has a call"],
    ),
]


@pytest.mark.parametrize("case,before,event,words", CASES, ids=[c[0] for c in CASES])
def test_a_bad_event_is_rejected_with_its_reason(ingest, case, before, event, words):
    ingest.post("/api/traces", trace(id="t1", session_id="chat_1", channel="chat"))
    if before:
        assert _post(ingest, *before).status_code == 200
    calls, turns = VoiceCall.objects.count(), VoiceTurn.objects.count()
    r = _post(ingest, event)
    assert r.status_code == 400, r.content
    error = r.json()["error"]
    assert error["code"] == "invalid_request"
    assert [x["index"] for x in error["details"]["rejected"]] == [0]
    for word in words:
        assert word in _reason(r), (word, _reason(r))
    assert (VoiceCall.objects.count(), VoiceTurn.objects.count()) == (calls, turns)


@pytest.mark.parametrize(
    "body,status,words",
    [
        ('{"events": ', 400, ["not valid JSON"]),
        ({"events": []}, 400, ["empty"]),
        ({"events": {"a": 1}}, 400, ["must be a list"]),
        ({"events": [started()], "extra": 1}, 400, ["extra"]),
        ({"events": [started(call_id=f"c{n}") for n in range(1001)]}, 413, ["at most 1000"]),
    ],
)
def test_a_malformed_request_is_refused_whole(ingest, body, status, words):
    r = (
        ingest.post("/api/voice/events", raw=body)
        if isinstance(body, str)
        else ingest.post("/api/voice/events", body)
    )
    assert r.status_code == status
    for word in words:
        assert word in r.json()["error"]["message"]
    assert VoiceCall.objects.count() == 0
