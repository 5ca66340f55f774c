"""Hypothesis against the ingestion endpoints: any JSON, any bytes, any mutation
of a valid trace — always a 2xx or 4xx, never a 5xx, and never anything stored
half: what is accepted is stored whole, what is rejected leaves no trace."""

import json

import pytest
from django.db.models import Count, Q
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.models import Session, Trace

from .conftest import trace

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)

text = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)  # includes NUL and any code point
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=20,
)
FIELDS = [
    "id",
    "agent_id",
    "session_id",
    "channel",
    "deployment_version",
    "input",
    "reasoning",
    "output",
    "tool_calls",
    "steps",
    "model",
    "input_tokens",
    "output_tokens",
    "latency_ms",
    "cost_usd",
    "status",
    "error",
    "evaluation_score",
    "metadata",
    "created_at",
    "agent_name",
]


@st.composite
def mutated_traces(draw):
    body = trace(id=f"f{draw(st.integers(0, 10_000))}", session_id=f"s{draw(st.integers(0, 5))}")
    for _ in range(draw(st.integers(1, 3))):
        body[draw(st.sampled_from(FIELDS))] = draw(json_values)
    if draw(st.booleans()):
        body.pop(draw(st.sampled_from(sorted(body))), None)
    return body


def _consistent() -> None:
    """Every conversation's counters equal a recount of its stored traces."""
    recount = {
        row["session_id"]: (row["n"], row["errors"])
        for row in Trace.objects.values("session_id").annotate(
            n=Count("id"), errors=Count("id", filter=Q(status="error"))
        )
    }
    for session in Session.objects.all():
        assert (session.trace_count, session.error_count) == recount.get(session.pk, (0, 0))


@pytest.mark.django_db
@FUZZ
@given(body=json_values)
def test_any_json_body_gets_a_4xx_or_is_stored(ingest, body):
    r = ingest.post("/api/traces", body)
    assert r.status_code in (200, 207, 400, 413), r.content[:300]
    if r.status_code >= 400:
        assert r.json()["error"]["message"]


@pytest.mark.django_db
@FUZZ
@given(batch=st.lists(mutated_traces(), min_size=1, max_size=6))
def test_mutated_traces_are_stored_whole_or_rejected_with_a_reason(ingest, batch):
    before = set(Trace.objects.values_list("public_id", flat=True))
    r = ingest.post("/api/traces", {"traces": batch})
    assert r.status_code in (200, 207, 400), r.content[:300]
    body = r.json() if r.status_code != 400 else r.json()["error"]["details"]
    if body is None:  # the whole request was refused (e.g. Infinity is not JSON): nothing stored
        assert set(Trace.objects.values_list("public_id", flat=True)) == before
        return
    for rejected in body["rejected"]:
        assert rejected["reason"]
    stored = set(Trace.objects.values_list("public_id", flat=True))
    assert stored - before <= set(body["accepted"])
    for item_id in set(body["accepted"]):
        assert item_id in stored
    _consistent()


@pytest.mark.django_db
@FUZZ
@given(
    raw=st.binary(max_size=300),
    encoding=st.sampled_from(["application/x-protobuf", "application/json"]),
    gzip=st.booleans(),
)
def test_any_bytes_sent_as_otlp_get_a_4xx_not_a_5xx(ingest, raw, encoding, gzip):
    extra = {"HTTP_CONTENT_ENCODING": "gzip"} if gzip else {}
    r = ingest.client.post(
        "/api/otel/v1/traces", raw, content_type=encoding, HTTP_AUTHORIZATION=f"Bearer {ingest.key}", **extra
    )
    assert r.status_code in (200, 400, 413, 415), (r.status_code, r.content[:200])


@pytest.mark.django_db
@FUZZ
@given(document=json_values, spans=st.lists(json_values, max_size=3))
def test_odd_otlp_json_documents_get_a_4xx_or_a_partial_success(ingest, document, spans):
    candidates = [
        document,
        {"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]},
        {"resourceSpans": [{"resource": {"attributes": document}, "scopeSpans": [{"spans": [document]}]}]},
    ]
    for body in candidates:
        r = ingest.client.post(
            "/api/otel/v1/traces",
            json.dumps(body),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {ingest.key}",
        )
        assert r.status_code in (200, 400, 413), (r.status_code, r.content[:200])
    _consistent()
