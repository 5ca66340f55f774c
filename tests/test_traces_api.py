"""GET /api/agents/{id}/traces and GET /api/traces/{id}."""

from datetime import UTC, datetime, timedelta

import pytest

from .conftest import trace

T0 = datetime(2026, 3, 6, 12, 0, tzinfo=UTC)


def _at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


@pytest.fixture
def thirty(ingest):
    batch = [
        trace(
            id=f"t{n:02d}",
            session_id=f"s{n % 4}",
            created_at=_at(n if n != 29 else 28),  # two traces share a timestamp
            status="error" if n % 5 == 0 else "success",
            error="boom" if n % 5 == 0 else "",
        )
        for n in range(30)
    ]
    assert ingest.post("/api/traces", {"traces": batch}).status_code == 200


def test_it_lists_traces_newest_first_in_the_documented_shape(thirty, reader):
    r = reader.get("/api/agents/agent_abc123/traces", {"limit": 20})
    assert r.status_code == 200
    body = r.json()
    assert len(body["traces"]) == 20
    first = body["traces"][0]
    for key in [
        "id",
        "session_id",
        "input",
        "output",
        "tool_calls",
        "input_tokens",
        "output_tokens",
        "latency_ms",
        "cost_usd",
        "status",
        "created_at",
    ]:
        assert key in first
    assert first["created_at"] == "2026-03-06T12:28:00Z"
    stamps = [t["created_at"] for t in body["traces"]]
    assert stamps == sorted(stamps, reverse=True)
    assert body["next_cursor"]


def test_pages_have_no_gaps_or_repeats_while_traces_arrive(thirty, reader, ingest):
    seen = []
    cursor = None
    page = 0
    while True:
        params = {"limit": 7} | ({"cursor": cursor} if cursor else {})
        body = reader.get("/api/agents/agent_abc123/traces", params).json()
        seen += [t["id"] for t in body["traces"]]
        # New traces arrive between page fetches: newer ones, and one late arrival
        # older than everything already paged through.
        late = [
            trace(id=f"new{page}", created_at=_at(100 + page)),
            trace(id=f"old{page}", created_at=_at(-100 - page)),
        ]
        ingest.post("/api/traces", {"traces": late})
        page += 1
        cursor = body["next_cursor"]
        if not cursor:
            break
    original = [f"t{n:02d}" for n in range(30)]
    assert sorted(t for t in seen if t.startswith("t")) == sorted(original)
    assert len(seen) == len(set(seen))
    # Newer arrivals are never mixed into later pages.
    assert not any(t.startswith("new") for t in seen)


def test_it_filters_by_status_session_and_time(thirty, reader):
    errors = reader.get("/api/agents/agent_abc123/traces", {"status": "error", "limit": 100}).json()["traces"]
    assert {t["id"] for t in errors} == {"t00", "t05", "t10", "t15", "t20", "t25"}
    s1 = reader.get("/api/agents/agent_abc123/traces", {"session_id": "s1", "limit": 100}).json()["traces"]
    assert {t["session_id"] for t in s1} == {"s1"} and len(s1) == 8
    window = reader.get(
        "/api/agents/agent_abc123/traces", {"from": _at(10), "to": _at(13), "limit": 100}
    ).json()["traces"]
    assert [t["id"] for t in window] == ["t12", "t11", "t10"]


@pytest.mark.parametrize(
    "params,word",
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"status": "maybe"}, "status"),
        ({"from": "yesterday"}, "from"),
        ({"cursor": "!!notacursor"}, "cursor"),
        ({"from": _at(5), "to": _at(1)}, "before"),
    ],
)
def test_it_refuses_bad_parameters(thirty, reader, params, word):
    r = reader.get("/api/agents/agent_abc123/traces", params)
    assert r.status_code == 400
    assert word in r.json()["error"]["message"]


def test_an_unknown_agent_is_not_found(reader):
    r = reader.get("/api/agents/agent_nope/traces")
    assert r.status_code == 404
    assert r.json()["error"] == {
        "code": "not_found",
        "message": "agent 'agent_nope' not found",
        "details": None,
    }


def test_one_trace_carries_reasoning_tool_calls_steps_and_scores(ingest, reader):
    ingest.post(
        "/api/traces",
        trace(
            id="trace_full",
            reasoning="Check the calendar.",
            tool_calls=[
                {"name": "calendar", "arguments": {"day": "mon"}, "result": ["9-5"], "latency_ms": 40}
            ],
            steps=[
                {
                    "kind": "llm",
                    "name": "chat",
                    "model": "gpt-4o-mini",
                    "latency_ms": 500,
                    "input_tokens": 145,
                    "output_tokens": 28,
                }
            ],
            evaluation_score=4,
        ),
    )
    body = reader.get("/api/traces/trace_full").json()
    assert body["reasoning"] == "Check the calendar."
    assert body["tool_calls"][0]["name"] == "calendar"
    assert body["steps"][0]["kind"] == "llm" and body["steps"][0]["latency_ms"] == 500
    assert body["scores"][0]["value"] == 4.0
    assert body["agent_id"] == "agent_abc123"
    assert body["cost_usd"] == pytest.approx(0.00003855)
    assert body["cost_source"] == "price_table"


def test_an_unknown_trace_is_not_found(reader):
    assert reader.get("/api/traces/trace_nope").status_code == 404
