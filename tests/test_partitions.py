"""Traces, steps and scores over several days: on PostgreSQL each day is a
partition of its own (agents.partitions). Lists page through the days, a
public id stays unique whatever day it is re-sent for, a trace is found by id
on any day, a trace whose start moves to another day takes its steps, scores
and key along, and a day without a partition gets one when a trace arrives.
The tests that need no partition run on SQLite too."""

import json
import re
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest
from django.db import connection
from django.db.models import Sum
from django.test import Client

from agents import partitions
from agents.models import Score, Session, Trace, TraceKey, TraceStep
from metrics.models import HourlyRollup
from metrics.rebuild import rollups_rebuild

from .conftest import _tenant, post_json, postgres_only, race, rollup_snapshot, trace
from .otlp import json_export, json_span, ns

MIDNIGHT = datetime(2026, 3, 7, tzinfo=UTC)  # the edge between two days' partitions
JUST_BEFORE = MIDNIGHT - timedelta(microseconds=1)


def _at(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _spread() -> list[dict]:
    """30 traces of one agent over four days (2026-03-05 to 03-08), four of
    them at midnight and three a microsecond before it; sent in an order
    unrelated to their times."""
    times = [MIDNIGHT] * 4 + [JUST_BEFORE] * 3
    times += [MIDNIGHT + timedelta(hours=4 * h - 46, minutes=h) for h in range(23)]
    items = [
        trace(
            id=f"tr{n:02d}",
            session_id=f"s{n % 5}",
            created_at=_at(at),
            steps=[{"kind": "llm", "name": "chat"}],
        )
        for n, at in enumerate(times)
    ]
    return items[1::2] + items[::2]


def _newest_first(organisation) -> list[str]:
    return list(
        Trace.objects.filter(organisation=organisation)
        .order_by("-created_at", "-pk")
        .values_list("public_id", flat=True)
    )


@pytest.fixture
def spread(tenant, ingest):
    items = _spread()
    for half in (items[:15], items[15:]):
        answer = ingest.post("/api/traces", {"traces": half})
        assert answer.status_code == 200 and len(answer.json()["accepted"]) == 15
    return items


def _api_pages(reader, params: dict) -> list[str]:
    ids, cursor = [], None
    while True:
        answer = reader.get(
            "/api/agents/agent_abc123/traces", {**params, **({"cursor": cursor} if cursor else {})}
        )
        assert answer.status_code == 200, answer.content
        ids += [t["id"] for t in answer.json()["traces"]]
        cursor = answer.json()["next_cursor"]
        if cursor is None:
            return ids


@pytest.mark.parametrize(
    "window",
    [{}, {"from": "2026-03-05T00:00:00Z", "to": "2026-03-09T00:00:00Z"}],
    ids=["no-window", "window-of-four-days"],
)
def test_the_traces_api_pages_through_the_days_giving_each_trace_once_in_order(
    tenant, reader, spread, window
):
    ids = _api_pages(reader, {"limit": 4, **window})
    assert ids == _newest_first(tenant.organisation)
    assert len(ids) == len(spread)


def test_the_traces_api_window_ends_exactly_at_midnight(tenant, reader, spread):
    ids = _api_pages(reader, {"limit": 2, "from": "2026-03-06T00:00:00Z", "to": "2026-03-07T00:00:00Z"})
    day = Trace.objects.filter(created_at__gte=MIDNIGHT - timedelta(days=1), created_at__lt=MIDNIGHT)
    assert ids == [
        i for i in _newest_first(tenant.organisation) if i in set(day.values_list("public_id", flat=True))
    ]
    assert {"tr04", "tr05", "tr06"} <= set(ids) and not {"tr00", "tr01", "tr02", "tr03"} & set(ids)


def _page_ids(client, path: str) -> list[str]:
    """The trace ids the Traces page lists, following its Older links."""
    ids = []
    body = client.get(path).content.decode()
    while True:
        ids += re.findall(r'href="/traces/([^/"]+)/"', body)
        older = re.search(r'rel="next" href="\?([^"]+)"', body)
        if not older:
            return ids
        body = client.get("/traces/?" + older.group(1).replace("&amp;", "&")).content.decode()


def test_the_traces_page_pages_through_the_days_giving_each_trace_once_in_order(tenant, ingest, members):
    # 60 traces (the page shows 25): ten on each side of midnight at the very same instant.
    times = [MIDNIGHT] * 10 + [JUST_BEFORE] * 10
    times += [MIDNIGHT + timedelta(hours=n * 3 - 60, minutes=n) for n in range(40)]
    items = [trace(id=f"pg{n:02d}", session_id=f"p{n % 4}", created_at=_at(at)) for n, at in enumerate(times)]
    assert ingest.post("/api/traces", {"traces": items[::-1]}).status_code == 200
    ids = _page_ids(
        members["viewer"], "/traces/?period=range&start=2026-03-04T00:00:00Z&end=2026-03-10T00:00:00Z"
    )
    assert ids == _newest_first(tenant.organisation)
    assert len(ids) == 60


def _stored_once(organisation, public_id: str) -> Trace:
    assert Trace.objects.filter(organisation=organisation, public_id=public_id).count() == 1
    assert TraceKey.objects.filter(organisation=organisation, public_id=public_id).count() == 1
    return Trace.objects.get(organisation=organisation, public_id=public_id)


def test_a_trace_id_resent_for_another_day_is_a_duplicate_and_counted_once(tenant, ingest):
    first = ingest.post(
        "/api/traces", trace(id="t-day", created_at="2026-03-06T10:00:00Z", evaluation_score=4)
    )
    assert first.json()["duplicates"] == []
    again = ingest.post(
        "/api/traces", trace(id="t-day", created_at="2026-03-08T10:00:00Z", evaluation_score=2)
    )
    assert again.status_code == 200 and again.json()["duplicates"] == ["t-day"]
    stored = _stored_once(tenant.organisation, "t-day")
    assert stored.created_at == datetime(2026, 3, 6, 10, tzinfo=UTC)
    assert TraceKey.objects.get(public_id="t-day").created_at == stored.created_at
    assert Score.objects.filter(trace=stored).count() == 1
    assert Session.objects.get(public_id="sess_123").trace_count == 1
    totals = HourlyRollup.objects.filter(organisation=tenant.organisation).aggregate(
        traces=Sum("traces"), scores=Sum("score_count")
    )
    assert totals == {"traces": 1, "scores": 1}


@postgres_only()
@pytest.mark.django_db(transaction=True)
def test_a_trace_id_sent_for_two_days_at_once_is_stored_and_counted_once(live_server):
    tenant = _tenant("race-days")
    url, key = f"{live_server.url}/api/traces", tenant.keys["ingest"]
    # Two clients send the same 100 ids, one for 2026-03-06 and one for the next day.
    bodies = [
        {
            "traces": [
                trace(id=f"r{n}", session_id=f"r{n % 10}", created_at=f"2026-03-0{day}T23:{n % 60:02d}:00Z")
                for n in range(100)
            ]
        }
        for day in (6, 7)
    ]
    results = race([partial(post_json, url, key, body) for body in bodies])
    assert [status for status, _ in results] == [200, 200]
    stored = [tid for _, body in results for tid in body["accepted"] if tid not in body["duplicates"]]
    assert sorted(stored) == sorted(f"r{n}" for n in range(100))
    org = tenant.organisation
    assert Trace.objects.filter(organisation=org).count() == 100
    assert TraceKey.objects.filter(organisation=org).count() == 100
    # Each key names the day its trace was stored on.
    keys = dict(TraceKey.objects.filter(organisation=org).values_list("public_id", "created_at"))
    assert keys == dict(Trace.objects.filter(organisation=org).values_list("public_id", "created_at"))
    assert HourlyRollup.objects.filter(organisation=org).aggregate(n=Sum("traces"))["n"] == 100
    assert sum(Session.objects.filter(organisation=org).values_list("trace_count", flat=True)) == 100
    before = rollup_snapshot(org)
    rollups_rebuild(
        start=datetime(2026, 3, 6, tzinfo=UTC), end=datetime(2026, 3, 9, tzinfo=UTC), organisation_id=org.pk
    )
    assert rollup_snapshot(org) == before


def test_a_trace_is_found_by_its_id_on_any_day(tenant, ingest, reader):
    days = ["2025-01-31T23:59:59Z", "2026-03-06T00:00:00Z", "2026-03-07T12:30:00Z", "2026-05-01T08:00:00Z"]
    items = [
        trace(id=f"any{n}", session_id=f"any{n}", created_at=at, steps=[{"kind": "tool", "name": f"step{n}"}])
        for n, at in enumerate(days)
    ]
    assert ingest.post("/api/traces", {"traces": items}).status_code == 200
    for n, at in enumerate(days):
        answer = reader.get(f"/api/traces/any{n}")
        assert answer.status_code == 200
        body = answer.json()
        assert (body["id"], body["created_at"].replace("+00:00", "Z")) == (f"any{n}", at)
        assert [s["name"] for s in body["steps"]] == [f"step{n}"]


def test_an_unknown_trace_id_is_not_found(tenant, reader, spread):
    assert reader.get("/api/traces/tr99").status_code == 404


# --- a trace whose start moves to another day -------------------------------------

TRACE = "0af7651916cd43dd8448eb211c80319c"
AGENT_START = MIDNIGHT - timedelta(seconds=2)  # the agent span starts before midnight…
CHAT_START = MIDNIGHT + timedelta(milliseconds=100)  # …its chat child after it


def _otlp(key: str, spans: list[dict]) -> None:
    r = Client().post(
        "/api/otel/v1/traces",
        json.dumps(json_export(spans)).encode(),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    assert r.status_code == 200 and b"rejected" not in r.content, r.content


def _chat_span() -> dict:
    attributes = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini"}
    return json_span(
        TRACE,
        "00000000000000a2",
        "chat",
        ns(CHAT_START),
        ns(CHAT_START, 300),
        parent="00000000000000a1",
        attributes=attributes | {"gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 10},
    )


def _agent_span() -> dict:
    attributes = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.id": "agent_support",
        "gen_ai.conversation.id": "conv-midnight",
    }
    return json_span(
        TRACE, "00000000000000a1", "invoke_agent", ns(AGENT_START), ns(CHAT_START, 500), attributes=attributes
    )


@pytest.fixture
def moved(tenant):
    """The chat span first (the trace starts after midnight, on 2026-03-07),
    a score, then the agent span: the trace now starts on 2026-03-06."""
    key = tenant.keys["admin,ingest,read"]
    _otlp(key, [_chat_span()])
    assert Trace.objects.get(public_id=f"otel-{TRACE}").created_at == CHAT_START
    r = Client().post(
        f"/api/traces/otel-{TRACE}/scores",
        json.dumps({"value": 4}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    assert r.status_code == 201
    _otlp(key, [_agent_span()])
    return tenant


def test_a_late_span_moves_the_trace_its_steps_scores_and_key_to_the_earlier_day(moved):
    org = moved.organisation
    stored = _stored_once(org, f"otel-{TRACE}")
    assert stored.created_at == AGENT_START
    assert TraceKey.objects.get(organisation=org, public_id=stored.public_id).created_at == AGENT_START
    assert set(TraceStep.objects.filter(trace=stored).values_list("trace_created_at", flat=True)) == {
        AGENT_START
    }
    assert list(Score.objects.filter(trace=stored).values_list("trace_created_at", flat=True)) == [
        AGENT_START
    ]


def test_a_trace_moved_to_another_day_is_found_by_id_and_counted_once(moved, tenant):
    answer = Client().get(f"/api/traces/otel-{TRACE}", HTTP_AUTHORIZATION=f"Bearer {tenant.keys['read']}")
    assert answer.status_code == 200
    body = answer.json()
    # Every step is read back (they are read from the trace's day).
    assert 0 < len(body["steps"]) == TraceStep.objects.filter(trace__public_id=f"otel-{TRACE}").count()
    assert [s["value"] for s in body["scores"]] == [4]
    org = tenant.organisation
    rows = HourlyRollup.objects.filter(organisation=org)
    assert rows.aggregate(traces=Sum("traces"), scores=Sum("score_count")) == {"traces": 1, "scores": 1}
    assert set(rows.filter(traces__gt=0).values_list("bucket_start", flat=True)) == {
        MIDNIGHT - timedelta(hours=1)
    }
    before = rollup_snapshot(org)
    rollups_rebuild(
        start=MIDNIGHT - timedelta(days=1), end=MIDNIGHT + timedelta(days=1), organisation_id=org.pk
    )
    assert rollup_snapshot(org) == before


def _partition_of(table: str, row_filter: str, params: list) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT DISTINCT tableoid::regclass::text FROM {table} WHERE {row_filter}", params)
        return [name for (name,) in cursor.fetchall()]


@postgres_only()
def test_a_trace_moved_to_another_day_lives_with_its_steps_and_scores_in_that_day_s_partitions(moved):
    stored = Trace.objects.get(public_id=f"otel-{TRACE}")
    assert _partition_of("agents_trace", "id = %s", [stored.pk]) == ["agents_trace_p20260306"]
    assert _partition_of("agents_tracestep", "trace_id = %s", [stored.pk]) == ["agents_tracestep_p20260306"]
    assert _partition_of("agents_score", "trace_id = %s", [stored.pk]) == ["agents_score_p20260306"]


# --- a day without a partition ------------------------------------------------------


def test_a_trace_for_a_day_far_from_the_others_is_stored_and_read(tenant, ingest, reader):
    answer = ingest.post(
        "/api/traces", trace(id="far", created_at="2023-07-19T05:00:00Z", evaluation_score=3)
    )
    assert answer.status_code == 200 and answer.json()["accepted"] == ["far"]
    body = reader.get("/api/traces/far").json()
    assert (body["created_at"], [s["value"] for s in body["scores"]]) == ("2023-07-19T05:00:00Z", [3])


@postgres_only()
def test_ingesting_a_trace_for_a_day_without_a_partition_creates_the_day_s_partitions(tenant, ingest):
    day = datetime(2023, 11, 23, tzinfo=UTC).date()
    assert day not in partitions.partition_days()
    answer = ingest.post(
        "/api/traces", trace(id="new-day", created_at="2023-11-23T17:45:00Z", evaluation_score=5)
    )
    assert answer.status_code == 200 and answer.json()["accepted"] == ["new-day"]
    assert day in partitions.partition_days()
    stored = Trace.objects.get(public_id="new-day")
    assert _partition_of("agents_trace", "id = %s", [stored.pk]) == ["agents_trace_p20231123"]
    assert _partition_of("agents_score", "trace_id = %s", [stored.pk]) == ["agents_score_p20231123"]


# --- reads that name the days they need give the answers they gave before ----------


@pytest.fixture
def night(tenant, ingest):
    """A conversation of four turns over three days, its first turn without an
    input; its last turn arrives first. And a conversation of the evening before."""
    late = [
        trace(id="m3", session_id="night", input="Bye", created_at=_at(MIDNIGHT + timedelta(days=1, hours=3)))
    ]
    turns = [
        trace(id="m0", session_id="night", input="", created_at=_at(MIDNIGHT - timedelta(minutes=2))),
        trace(id="m1", session_id="night", input="Still there?", created_at=_at(JUST_BEFORE)),
        trace(id="m2", session_id="night", input="Hello again", created_at=_at(MIDNIGHT)),
        trace(id="e0", session_id="evening", input="Hi", created_at=_at(MIDNIGHT - timedelta(hours=5))),
    ]
    for batch in (late, turns):
        assert ingest.post("/api/traces", {"traces": batch}).status_code == 200
    return tenant


def test_the_traces_api_lists_a_conversation_s_traces_across_days(night, reader):
    assert _api_pages(reader, {"session_id": "night", "limit": 3}) == ["m3", "m2", "m1", "m0"]
    assert _api_pages(reader, {"session_id": "nobody", "limit": 3}) == []


def test_the_conversation_page_shows_every_turn_across_days(night, members):
    body = members["viewer"].get("/conversations/night/").content.decode()
    assert re.findall(r'href="/traces/([^/"]+)/"', body) == ["m0", "m1", "m2", "m3"]
    assert re.search(r'data-total="turns">4<', body)


def test_the_conversations_list_shows_a_conversation_s_first_input_from_another_day(night):
    from dashboard.lists import ListFilters, conversation_list
    from metrics.windows import Window

    page = conversation_list(
        organisation=night.organisation,
        window=Window(MIDNIGHT - timedelta(days=1), MIDNIGHT + timedelta(days=2)),
        filters=ListFilters(kind="conversations"),
    )
    assert {c.public_id: c.first_input for c in page.rows} == {"night": "Still there?", "evening": "Hi"}


def test_scores_in_a_window_s_partial_hours_count_under_their_trace_s_channel(tenant, ingest):
    from metrics.selectors import collect
    from metrics.windows import Window

    items = [
        trace(id=f"c{n}", session_id=f"c{n}", channel=channel, evaluation_score=score, created_at=_at(at))
        for n, (channel, score, at) in enumerate(
            [
                ("voice", 5, MIDNIGHT - timedelta(minutes=10)),
                ("chat", 3, MIDNIGHT - timedelta(minutes=5)),
                ("chat", 4, MIDNIGHT + timedelta(minutes=5)),
                ("widget", 2, MIDNIGHT + timedelta(minutes=50)),  # after the window
            ]
        )
    ]
    assert ingest.post("/api/traces", {"traces": items}).status_code == 200
    # Both edges are partial hours: every score is read from the raw rows.
    window = Window(MIDNIGHT - timedelta(minutes=30), MIDNIGHT + timedelta(minutes=30))
    totals = collect(organisation=tenant.organisation, window=window, group="channel", facts=("scores",))
    scores = {channel: (t.score_count, t.score_sum) for channel, t in totals.items() if t.score_count}
    assert scores == {"voice": (1, 5), "chat": (2, 7)}


def test_a_batch_over_several_days_counts_into_the_rollups_as_a_rebuild_does(tenant, spread):
    org = tenant.organisation
    counted = rollup_snapshot(org)
    rollups_rebuild(
        start=MIDNIGHT - timedelta(days=3), end=MIDNIGHT + timedelta(days=3), organisation_id=org.pk
    )
    assert rollup_snapshot(org) == counted
    assert HourlyRollup.objects.filter(organisation=org).aggregate(n=Sum("traces"))["n"] == len(spread)
