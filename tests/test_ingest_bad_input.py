"""Every malformed ingestion request gets a 4xx that names the problem, and
nothing is stored."""

import json

import pytest

from agents.models import Agent, Session, Trace

from .conftest import trace

TEN_MB = "x" * (10 * 1024 * 1024)

# (case, raw body, status, words the message must contain)
CASES = [
    ("malformed JSON", '{"agent_id": ', 400, ["not valid JSON"]),
    ("not UTF-8", b"\xff\xfe{}", 400, ["UTF-8"]),
    ("a number instead of an object", "42", 400, ["trace object"]),
    ("empty batch", {"traces": []}, 400, ["empty"]),
    ("traces not a list", {"traces": {"a": 1}}, 400, ["must be a list"]),
    ("extra key next to traces", {"traces": [trace()], "foo": 1}, 400, ["foo"]),
    ("1001 items", {"traces": [trace(id=f"t{i}") for i in range(1001)]}, 413, ["at most 1000", "1001"]),
    ("missing agent_id", trace(agent_id=None), 400, ["agent_id", "required"]),
    ("tokens as a string", trace(input_tokens="145"), 400, ["input_tokens", "integer"]),
    ("tokens as a float", trace(output_tokens=1.5), 400, ["output_tokens"]),
    ("negative tokens", trace(input_tokens=-1), 400, ["input_tokens", "greater than or equal to 0"]),
    ("negative latency", trace(latency_ms=-3), 400, ["latency_ms"]),
    ("negative cost", trace(cost_usd=-0.01), 400, ["cost_usd"]),
    ("unknown channel", trace(channel="fax"), 400, ["channel", "chat", "voice", "widget"]),
    ("unknown status", trace(status="maybe"), 400, ["status"]),
    ("unknown field", trace(colour="blue"), 400, ["colour", "not a known field"]),
    ("id with a slash", trace(id="a/b"), 400, ["id", "pattern"]),
    ("10 MB input", trace(input=TEN_MB), 400, ["input", "at most 1000000 characters"]),
    ("NUL byte in output", trace(output="a\x00b"), 400, ["output", "NUL"]),
    (
        "NUL byte inside tool arguments",
        trace(tool_calls=[{"name": "t", "arguments": {"q": "\x00"}}]),
        400,
        ["NUL"],
    ),
    ("year 1", trace(created_at="0001-01-01T00:00:00Z"), 400, ["created_at", "2000"]),
    ("year 9999", trace(created_at="9999-12-31T23:59:59Z"), 400, ["created_at", "future"]),
    ("unparseable date", trace(created_at="yesterday"), 400, ["created_at"]),
    ("tool call without a name", trace(tool_calls=[{"arguments": {}}]), 400, ["tool_calls.0.name"]),
    ("step of unknown kind", trace(steps=[{"kind": "dance"}]), 400, ["steps.0.kind"]),
    ("NaN score", '{"agent_id": "a", "evaluation_score": NaN}', 400, ["NaN is not a JSON number"]),
]


@pytest.mark.parametrize("case,body,status,words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_with_a_clear_message(ingest, case, body, status, words):
    raw = body if isinstance(body, (str, bytes)) else json.dumps(body)
    r = ingest.post("/api/traces", raw=raw)
    assert r.status_code == status, r.content[:500]
    error = r.json()["error"]
    text = error["message"] + json.dumps(error["details"])
    for word in words:
        assert word in text, f"{word!r} not in {text[:300]!r}"
    assert Trace.objects.count() == 0
    assert Session.objects.count() == 0
    assert Agent.objects.count() == 0


def test_a_body_over_the_size_limit_is_413(ingest, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    r = ingest.post("/api/traces", trace(input="y" * 2000))
    assert r.status_code == 413
    assert "exceeds 1,024 bytes" in r.json()["error"]["message"]
    assert Trace.objects.count() == 0
