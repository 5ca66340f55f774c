"""Summary, overview, channels and timeseries endpoints: shapes, windows, access."""

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from .conftest import trace

NOW = timezone.now()


@pytest.fixture
def traffic(ingest):
    at = NOW - timedelta(hours=2)
    batch = [
        trace(id="a", session_id="c1", channel="chat", created_at=at.isoformat(), latency_ms=1000),
        trace(
            id="b",
            session_id="c1",
            channel="chat",
            created_at=(at + timedelta(minutes=1)).isoformat(),
            latency_ms=3000,
            tool_calls=[{"name": "lookup"}],
            evaluation_score=4,
        ),
        trace(
            id="c",
            session_id="v1",
            channel="voice",
            created_at=at.isoformat(),
            latency_ms=2000,
            status="error",
            error="x",
        ),
        trace(id="old", session_id="w1", channel="widget", created_at=(NOW - timedelta(days=9)).isoformat()),
    ]
    assert ingest.post("/api/traces", {"traces": batch}).status_code == 200


def test_summary_has_every_field_of_the_product_example(traffic, reader):
    r = reader.get("/api/agents/agent_abc123/summary", {"period": "7d"})
    assert r.status_code == 200, r.content
    body = r.json()
    for key in [
        "period",
        "total_sessions",
        "total_messages",
        "total_cost_usd",
        "avg_response_time_ms",
        "p50_latency_ms",
        "p95_latency_ms",
        "success_rate",
        "total_input_tokens",
        "total_output_tokens",
        "voice_minutes",
        "avg_evaluation_score",
        "error_rate",
        "tool_call_rate",
        "tokens_per_response",
        "cost_per_conversation",
    ]:
        assert key in body, key
    assert body["period"] == "7d"
    assert body["total_sessions"] == 2
    assert body["total_messages"] == 6
    assert body["avg_response_time_ms"] == 2000
    assert body["success_rate"] == 0.5 and body["error_rate"] == 0.5
    assert body["tool_call_rate"] == pytest.approx(1 / 3)
    assert body["avg_evaluation_score"] == 4
    assert body["total_input_tokens"] == 3 * 145
    assert abs(body["p95_latency_ms"] - 3000) <= 30
    assert isinstance(body["total_cost_usd"], float)


def test_an_empty_window_has_null_rates_not_zero(traffic, reader):
    body = reader.get("/api/agents/agent_abc123/summary", {"from": "2026-01-01", "to": "2026-01-02"}).json()
    assert body["period"] == "custom"
    assert body["total_sessions"] == 0
    for key in [
        "success_rate",
        "error_rate",
        "avg_response_time_ms",
        "p50_latency_ms",
        "p95_latency_ms",
        "tool_call_rate",
        "tokens_per_response",
        "cost_per_conversation",
        "avg_evaluation_score",
    ]:
        assert body[key] is None, key


def test_overview(traffic, reader):
    body = reader.get("/api/analytics/overview", {"period": "30d"}).json()
    assert body["total_conversations"] == 3
    assert body["active_agents"] == 1
    assert body["success_rate"] == pytest.approx(2 / 3)
    assert reader.get("/api/analytics/overview", {"period": "24h"}).json()["total_conversations"] == 2


def test_channels_for_one_agent_and_for_all(traffic, reader, ingest):
    ingest.post(
        "/api/traces",
        trace(id="z", agent_id="agent_other", session_id="o1", channel="widget", created_at=NOW.isoformat()),
    )
    one = reader.get("/api/analytics/channels", {"agent_id": "agent_abc123", "period": "30d"}).json()
    assert set(one["channels"]) == {"voice", "chat", "widget"}
    assert one["channels"]["chat"] == {
        "total_sessions": 1,
        "total_messages": 4,
        "success_rate": 1.0,
        "avg_response_time_ms": 2000.0,
        "total_cost_usd": one["channels"]["chat"]["total_cost_usd"],
    }
    assert one["channels"]["voice"]["success_rate"] == 0.0
    every = reader.get("/api/analytics/channels", {"period": "30d"}).json()
    assert every["channels"]["widget"]["total_sessions"] == 2
    assert every["agent_id"] is None


def test_timeseries_has_a_point_per_bucket(traffic, reader):
    body = reader.get("/api/analytics/timeseries", {"period": "24h"}).json()
    assert body["bucket"] == "hour"
    assert len(body["points"]) in (24, 25)
    assert sum(p["total_sessions"] for p in body["points"]) == 2
    assert reader.get("/api/analytics/timeseries", {"period": "30d"}).json()["bucket"] == "day"


ENDPOINTS = [
    "/api/agents/agent_abc123/summary",
    "/api/analytics/overview",
    "/api/analytics/channels",
    "/api/analytics/timeseries",
]
BAD_WINDOWS = [
    ({"period": "abc"}, "24h, 7d or 30d"),
    ({"period": "7w"}, "24h, 7d or 30d"),
    ({"period": "0h"}, "at least 1h"),
    ({"period": "401d"}, "400"),
    ({"period": "9700h"}, "400"),
    ({"from": "2026-03-05", "to": "2026-03-01"}, "before"),
    ({"from": "2026-03-05", "to": "2026-03-05"}, "before"),
    ({"from": "2024-01-01", "to": "2026-01-01"}, "400 days"),
    ({"from": "yesterday"}, "ISO 8601"),
    ({"from": "2026-13-45"}, "ISO 8601"),
    ({"to": "2026-03-01"}, "needs 'from'"),
    ({"period": "7d", "from": "2026-03-01"}, "not both"),
]


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("params,words", BAD_WINDOWS)
def test_bad_windows_are_400_with_what_is_accepted(traffic, reader, path, params, words):
    r = reader.get(path, params)
    assert r.status_code == 400, r.content
    error = r.json()["error"]
    assert error["code"] == "invalid_window"
    assert words in error["message"]


@pytest.mark.parametrize("path", ENDPOINTS)
def test_analytics_need_the_read_scope(tenant, path):
    assert tenant.api("ingest").get(path).status_code == 403


def test_another_organisations_agent_is_not_found(traffic, outsider):
    api = outsider.api("read")
    assert api.get("/api/agents/agent_abc123/summary").status_code == 404
    assert api.get("/api/analytics/channels", {"agent_id": "agent_abc123"}).status_code == 404
    assert api.get("/api/analytics/overview").json()["total_conversations"] == 0


def test_a_late_score_moves_the_average(traffic, reader, ingest):
    assert reader.get("/api/agents/agent_abc123/summary").json()["avg_evaluation_score"] == 4
    r = ingest.post("/api/traces/a/scores", {"name": "helpfulness", "value": 2, "comment": "vague"})
    assert r.status_code == 201
    assert r.json()["name"] == "helpfulness"
    assert reader.get("/api/agents/agent_abc123/summary").json()["avg_evaluation_score"] == 3
    assert reader.get("/api/traces/a").json()["scores"][0]["comment"] == "vague"


@pytest.mark.parametrize(
    "body,word",
    [
        ({"name": "x"}, "value"),
        ({"value": "high"}, "value"),
        ({"value": 1, "name": ""}, "name"),
        ({"value": 1e9}, "value"),
    ],
)
def test_bad_scores_are_refused(traffic, ingest, body, word):
    r = ingest.post("/api/traces/a/scores", body)
    assert r.status_code == 400
    assert word in r.json()["error"]["message"]


def test_scores_for_unknown_traces_are_404(traffic, ingest, outsider):
    assert ingest.post("/api/traces/nope/scores", {"value": 1}).status_code == 404
    assert outsider.api("ingest").post("/api/traces/a/scores", {"value": 1}).status_code == 404


def test_window_edges_are_exact(ingest, reader):
    """A trace exactly at `to` is outside; one exactly at `from` is inside."""
    edge = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)
    ingest.post(
        "/api/traces",
        {
            "traces": [
                trace(id="e1", session_id="e1", created_at=edge.isoformat()),
                trace(id="e2", session_id="e2", created_at=(edge + timedelta(hours=1)).isoformat()),
            ]
        },
    )
    body = reader.get(
        "/api/agents/agent_abc123/summary",
        {"from": edge.isoformat(), "to": (edge + timedelta(hours=1)).isoformat()},
    ).json()
    assert body["total_sessions"] == 1


def test_a_malformed_score_body_is_400(traffic, ingest):
    r = ingest.post("/api/traces/a/scores", raw="{not json")
    assert r.status_code == 400
    assert r.json()["error"]["message"]
