"""The fast decoder (msgspec) never accepts what the documented schema (pydantic)
refuses, and what both accept becomes the same stored record."""

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from pydantic import ValidationError

from agents.ingest_schemas import batch_raw_items, trace_decode
from agents.schemas import TraceIn
from agents.services import trace_record_of

from .conftest import trace
from .test_ingest_fuzz import FUZZ, mutated_traces

NOW = datetime(2026, 3, 6, 15, tzinfo=UTC)


def _same_record(body: dict) -> None:
    raw = json.dumps(body).encode()
    fast = trace_decode(raw)
    try:
        slow = TraceIn.model_validate(json.loads(raw))
    except ValidationError:
        slow = None
    if fast is None:
        return  # pydantic decides, as before
    assert slow is not None, f"msgspec accepted what pydantic refuses: {body!r}"
    a, b = trace_record_of(fast, NOW), trace_record_of(slow, NOW)
    if body.get("id") is None:
        a.public_id = b.public_id
    for name in a.__struct_fields__:
        if name == "steps":
            continue
        assert getattr(a, name) == getattr(b, name), name
    assert [s.model_dump() for s in b.steps] == [
        {f: getattr(s, f) for f in s.__struct_fields__} for s in a.steps
    ]


EDGES = [
    trace(),
    trace(id="abc\n"),
    trace(agent_id="a" * 65),
    trace(input_tokens=True),
    trace(input_tokens=1.0),
    trace(latency_ms=12.5, cost_usd="0.25", evaluation_score=-3),
    trace(cost_usd="NaN"),
    trace(cost_usd="Infinity"),
    trace(evaluation_score=1_000_001),
    trace(created_at="2026-03-06T14:30:00"),
    trace(created_at="2026-03-06T16:30:00+02:00"),
    trace(created_at="2026-03-06"),
    trace(created_at=1772800000),
    trace(created_at="1999-12-31T23:59:59Z"),
    trace(status=None, error="boom"),
    trace(steps=[{"kind": "llm", "error": "x", "cost_usd": 0.5, "started_at": "2026-03-06T14:00:00Z"}]),
    trace(steps=[{"kind": "llm", "started_at": "1990-01-01T00:00:00Z"}]),
    trace(tool_calls=[{"name": "t", "arguments": {"a": None}, "latency_ms": 3}]),
    trace(tool_calls=[{"name": ""}]),
    trace(metadata={"k": [1, 2.5, None, {"x": "y"}]}),
    trace(colour="blue"),
]


@pytest.mark.parametrize("body", EDGES)
def test_edge_cases_decode_alike(body):
    _same_record(body)


@FUZZ
@given(mutated_traces())
def test_mutated_traces_decode_alike(body):
    _same_record(body)


def test_only_well_formed_batches_take_the_fast_path():
    assert len(batch_raw_items(b'{"traces": [{"agent_id": "a"}, 2]}', "traces")) == 2
    assert len(batch_raw_items(b'[{"agent_id": "a"}]', "traces")) == 1
    for body in (b'{"agent_id": "a"}', b'{"traces": []}', b'{"traces": [], "x": 1}', b"[NaN]", b"{"):
        assert batch_raw_items(body, "traces") is None
