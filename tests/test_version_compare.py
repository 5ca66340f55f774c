"""Comparing two deployment versions: numbers equal the oracle, noise is told
apart from real differences, errors answer clearly."""

import random
from datetime import UTC, datetime, timedelta

import pytest

from . import oracle
from .conftest import trace

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
WINDOW = {"from": T0.isoformat(), "to": (T0 + timedelta(days=2)).isoformat()}


def _traffic(
    version: str, conversations: int, failure_rate: float, latency: int, seed: int, offset: int = 0
) -> list[dict]:
    rng = random.Random(seed)
    items = []
    for n in range(conversations):
        at = T0 + timedelta(minutes=offset + n * 7)
        failed = rng.random() < failure_rate
        for turn in range(2):
            items.append(
                trace(
                    id=f"{version}-{n}-{turn}",
                    session_id=f"{version}-{n}",
                    deployment_version=version,
                    created_at=(at + timedelta(seconds=turn * 30)).isoformat(),
                    latency_ms=round(rng.lognormvariate(0, 0.2) * latency),
                    status="error" if failed and turn == 1 else "success",
                    evaluation_score=rng.choice([3, 4, 5]),
                )
            )
    return items


@pytest.fixture
def versions(ingest, tenant):
    world = oracle.World()
    for version, conversations, failure, latency, seed, offset in [
        ("v1", 120, 0.04, 900, 1, 0),
        ("v2", 120, 0.30, 2600, 2, 3),
        ("v3", 120, 0.04, 900, 1, 5),  # v1 again under another label
    ]:
        batch = _traffic(version, conversations, failure, latency, seed, offset)
        for start in range(0, len(batch), 500):
            assert ingest.post("/api/traces", {"traces": batch[start : start + 500]}).status_code == 200
        world.send(batch)
        for item in batch:
            item["_at"] = datetime.fromisoformat(item["created_at"])
    return world


def test_each_side_equals_the_oracle(versions, reader):
    body = reader.get("/api/agents/agent_abc123/versions/compare", {"a": "v1", "b": "v2", **WINDOW}).json()
    start, end = T0, T0 + timedelta(days=2)
    for side in ("a", "b"):
        want = oracle.summary(versions, start, end, agent_id="agent_abc123", version=body[side]["version"])
        for key in [
            "total_sessions",
            "total_messages",
            "success_rate",
            "error_rate",
            "avg_response_time_ms",
            "tool_call_rate",
            "tokens_per_response",
            "avg_evaluation_score",
        ]:
            assert body[side][key] == pytest.approx(want[key]), (side, key)
        assert abs(body[side]["p95_latency_ms"] - want["p95_latency_ms"]) <= 0.01 * want["p95_latency_ms"]
    change = body["changes"]["success_rate"]
    assert change["absolute"] == pytest.approx(body["b"]["success_rate"] - body["a"]["success_rate"])
    assert change["relative"] == pytest.approx(change["absolute"] / body["a"]["success_rate"])


def test_a_real_regression_is_beyond_noise(versions, reader):
    body = reader.get("/api/agents/agent_abc123/versions/compare", {"a": "v1", "b": "v2", **WINDOW}).json()
    assert body["significance"]["success_rate"]["significant"] is True
    assert body["significance"]["success_rate"]["p_value"] < 0.001
    assert body["significance"]["p95_latency_ms"]["significant"] is True


def test_similar_versions_are_within_noise(versions, reader):
    body = reader.get("/api/agents/agent_abc123/versions/compare", {"a": "v1", "b": "v3", **WINDOW}).json()
    assert body["significance"]["success_rate"]["significant"] is False
    assert body["significance"]["p95_latency_ms"]["significant"] is False


@pytest.mark.parametrize(
    "params,status,word",
    [
        ({"a": "v1"}, 400, "b"),
        ({"b": "v1"}, 400, "a"),
        ({"a": "v1", "b": "v9"}, 404, "v9"),
        ({"a": "v1", "b": "v2", "period": "x"}, 400, "period"),
    ],
)
def test_bad_requests(versions, reader, params, status, word):
    r = reader.get("/api/agents/agent_abc123/versions/compare", params)
    assert r.status_code == status
    assert word in r.json()["error"]["message"]


def test_another_organisation_cannot_compare(versions, outsider):
    r = outsider.api("read").get("/api/agents/agent_abc123/versions/compare", {"a": "v1", "b": "v2"})
    assert r.status_code == 404


def test_the_compare_page(versions, members):
    query = f"?a=v1&b=v2&period=custom&from={T0.date()}&to={(T0 + timedelta(days=1)).date()}"
    body = members["viewer"].get(f"/agents/agent_abc123/compare/{query}").content.decode()
    assert "Success rate" in body and "Beyond noise?" in body
    assert 'class="badge error">yes' in body
    assert members["outsider"].get(f"/agents/agent_abc123/compare/{query}").status_code == 404
