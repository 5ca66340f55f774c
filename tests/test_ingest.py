"""POST /api/traces: storing traces, partial batches, idempotency, cost."""

from decimal import Decimal

from agents.models import Agent, CostSource, Score, Session, Trace, TraceStep
from audit.models import AuditLog
from pricing.models import ModelPrice

from .conftest import trace


def test_it_stores_one_trace(ingest, tenant):
    r = ingest.post("/api/traces", trace(id="trace_xyz"))
    assert r.status_code == 200, r.content
    assert r.json() == {"accepted": ["trace_xyz"], "duplicates": [], "rejected": []}
    t = Trace.objects.get(public_id="trace_xyz")
    assert t.organisation == tenant.organisation
    assert t.session.public_id == "sess_123"
    assert (t.input_tokens, t.output_tokens, t.latency_ms) == (145, 28, 890)
    assert t.status == "success"
    assert t.channel == "chat"
    assert t.created_at.isoformat() == "2026-03-06T14:30:00+00:00"


def test_it_stores_a_batch_and_counts_conversations(ingest):
    batch = [
        trace(id="t1", session_id="s1", created_at="2026-03-06T14:30:05Z"),
        trace(id="t2", session_id="s1", created_at="2026-03-06T14:30:00Z", status="error", error="boom"),
        trace(id="t3", session_id="s2", channel="widget"),
    ]
    r = ingest.post("/api/traces", {"traces": batch})
    assert r.status_code == 200
    assert r.json()["accepted"] == ["t1", "t2", "t3"]
    s1 = Session.objects.get(public_id="s1")
    assert (s1.trace_count, s1.error_count, s1.status) == (2, 1, "failed")
    assert s1.started_at.isoformat() == "2026-03-06T14:30:00+00:00"
    assert Session.objects.get(public_id="s2").channel == "widget"


def test_it_keeps_valid_items_when_others_are_invalid(ingest):
    batch = [trace(id="good1"), trace(id="bad", input_tokens=-5), trace(id="good2"), {"input": "no agent"}]
    r = ingest.post("/api/traces", {"traces": batch})
    assert r.status_code == 207
    body = r.json()
    assert body["accepted"] == ["good1", "good2"]
    assert [(x["index"], x["id"]) for x in body["rejected"]] == [(1, "bad"), (3, None)]
    assert "input_tokens" in body["rejected"][0]["reason"]
    assert "agent_id" in body["rejected"][1]["reason"]
    assert set(Trace.objects.values_list("public_id", flat=True)) == {"good1", "good2"}


def test_it_answers_400_when_every_item_is_rejected(ingest):
    r = ingest.post("/api/traces", {"traces": [trace(latency_ms="slow"), trace(channel="fax")]})
    assert r.status_code == 400
    assert r.json()["error"]["details"]["accepted"] == []
    assert len(r.json()["error"]["details"]["rejected"]) == 2
    assert Trace.objects.count() == 0


def test_resending_a_trace_never_counts_it_twice(ingest):
    batch = {"traces": [trace(id="t1"), trace(id="t2", status="error")]}
    assert ingest.post("/api/traces", batch).status_code == 200
    r = ingest.post("/api/traces", batch)
    assert r.status_code == 200
    assert r.json() == {"accepted": ["t1", "t2"], "duplicates": ["t1", "t2"], "rejected": []}
    assert Trace.objects.count() == 2
    session = Session.objects.get(public_id="sess_123")
    assert (session.trace_count, session.error_count) == (2, 1)


def test_a_trace_repeated_inside_one_batch_is_stored_once(ingest):
    r = ingest.post("/api/traces", {"traces": [trace(id="same"), trace(id="same", input="changed")]})
    assert r.json()["duplicates"] == ["same"]
    assert Trace.objects.get().input == "What are your hours?"
    assert Session.objects.get().trace_count == 1


def test_trace_ids_are_generated_when_absent(ingest):
    r = ingest.post("/api/traces", trace(session_id=None))
    trace_id = r.json()["accepted"][0]
    assert trace_id.startswith("trace_")
    # Without a session id, the trace is a conversation of its own.
    assert Trace.objects.get(public_id=trace_id).session.public_id == trace_id


def test_unknown_agents_are_registered_and_audited(ingest, tenant):
    ingest.post("/api/traces", trace(agent_id="agent_new", agent_name="New Agent"))
    ingest.post("/api/traces", trace(agent_id="agent_new", id="again"))
    agent = Agent.objects.get(public_id="agent_new")
    assert agent.name == "New Agent"
    logs = AuditLog.objects.filter(action="agent.create", resource_id="agent_new")
    assert logs.count() == 1
    assert logs.get().user_id.startswith("apikey:")


def test_cost_comes_from_the_price_table(ingest):
    ingest.post(
        "/api/traces", trace(id="t", model="gpt-4o-mini", input_tokens=1_000_000, output_tokens=500_000)
    )
    t = Trace.objects.get()
    # gpt-4o-mini: $0.15 per million input tokens, $0.60 per million output tokens
    assert t.cost_usd == Decimal("0.45")
    assert t.cost_source == CostSource.PRICE_TABLE


def test_an_organisation_price_beats_the_built_in_one(ingest, tenant):
    ModelPrice.objects.create(
        organisation=tenant.organisation,
        model_name="gpt-4o-mini negotiated",
        match_pattern=r"gpt-4o-mini",
        input_price_per_mtok=Decimal("0.10"),
        output_price_per_mtok=Decimal("0.20"),
        effective_from="2025-01-01T00:00:00Z",
    )
    ingest.post("/api/traces", trace(id="t", input_tokens=1_000_000, output_tokens=1_000_000))
    assert Trace.objects.get().cost_usd == Decimal("0.30")


def test_a_price_applies_only_from_its_effective_date(ingest, tenant):
    ModelPrice.objects.create(
        model_name="later price",
        match_pattern=r"gpt-4o-mini",
        input_price_per_mtok=Decimal("9"),
        output_price_per_mtok=Decimal("9"),
        effective_from="2026-06-01T00:00:00Z",
    )
    ingest.post(
        "/api/traces",
        {
            "traces": [
                trace(
                    id="before", created_at="2026-05-31T23:59:59Z", input_tokens=1_000_000, output_tokens=0
                ),
                trace(id="after", created_at="2026-06-01T00:00:00Z", input_tokens=1_000_000, output_tokens=0),
            ]
        },
    )
    assert Trace.objects.get(public_id="before").cost_usd == Decimal("0.15")
    assert Trace.objects.get(public_id="after").cost_usd == Decimal("9")


def test_a_reported_cost_is_kept_exactly(ingest):
    ingest.post("/api/traces", trace(cost_usd=0.0012))
    t = Trace.objects.get()
    assert t.cost_usd == Decimal("0.0012")
    assert t.cost_source == CostSource.REPORTED


def test_a_model_without_a_price_is_unpriced_not_free(ingest, reader):
    ingest.post("/api/traces", trace(id="t", model="my-finetune-7b"))
    t = Trace.objects.get()
    assert t.cost_usd is None
    assert t.cost_source == CostSource.UNPRICED
    assert reader.get("/api/traces/t").json()["cost_usd"] is None


def test_steps_tool_calls_and_scores_are_stored(ingest):
    body = trace(
        id="t",
        reasoning="Look up the order first.",
        tool_calls=[
            {
                "name": "lookup_order",
                "arguments": {"id": 42},
                "result": {"status": "shipped"},
                "latency_ms": 120,
            }
        ],
        steps=[
            {
                "kind": "llm",
                "name": "chat",
                "model": "gpt-4o-mini",
                "latency_ms": 600,
                "input_tokens": 100,
                "output_tokens": 20,
            },
            {"kind": "tool", "name": "lookup_order", "latency_ms": 120, "error": "timeout"},
        ],
        evaluation_score=4.5,
    )
    ingest.post("/api/traces", body)
    t = Trace.objects.get()
    assert t.tool_call_count == 1
    assert t.tool_calls[0]["arguments"] == {"id": 42}
    assert list(TraceStep.objects.values_list("kind", "latency_ms", "error")) == [
        ("llm", 600, ""),
        ("tool", 120, "timeout"),
    ]
    assert Score.objects.get().value == Decimal("4.5")
    # A failing step without an explicit status makes the trace failed.
    assert t.status == "error"


def test_tokens_default_to_the_sum_of_the_steps(ingest):
    body = trace(input_tokens=None, output_tokens=None, model="")
    body["steps"] = [
        {"kind": "llm", "model": "gpt-4o-mini", "input_tokens": 1_000_000, "output_tokens": 0},
        {"kind": "llm", "model": "gpt-4o", "input_tokens": 1_000_000, "output_tokens": 0},
    ]
    ingest.post("/api/traces", body)
    t = Trace.objects.get()
    assert (t.input_tokens, t.output_tokens) == (2_000_000, 0)
    assert t.cost_usd == Decimal("2.65")


def test_a_session_keeps_its_agent_and_channel(ingest):
    ingest.post("/api/traces", trace(id="a", session_id="s", channel="voice"))
    r = ingest.post(
        "/api/traces",
        {
            "traces": [
                trace(id="b", session_id="s", agent_id="agent_other"),
                trace(id="c", session_id="s", channel="chat"),
                trace(id="d", session_id="s"),
            ]
        },
    )
    assert r.status_code == 207
    reasons = [x["reason"] for x in r.json()["rejected"]]
    assert "belongs to another agent" in reasons[0]
    assert "voice conversation" in reasons[1]
    assert Trace.objects.get(public_id="d").channel == "voice"


def test_out_of_order_traces_move_the_conversation_start(ingest):
    ingest.post("/api/traces", trace(id="late", created_at="2026-03-06T15:00:00Z", deployment_version="v2"))
    ingest.post("/api/traces", trace(id="early", created_at="2026-03-06T14:00:00Z", deployment_version="v1"))
    s = Session.objects.get()
    assert s.started_at.isoformat() == "2026-03-06T14:00:00+00:00"
    assert s.deployment_version == "v1"
    assert s.last_activity_at.isoformat() == "2026-03-06T15:00:00+00:00"


def test_costs_are_rounded_once_so_rollups_equal_raw_sums(ingest, tenant):
    from metrics.rebuild import rollups_rebuild

    from .conftest import rollup_snapshot

    ModelPrice.objects.create(
        organisation=tenant.organisation,
        model_name="odd",
        match_pattern="odd-model",
        input_price_per_mtok=Decimal("0.123457"),
        output_price_per_mtok=Decimal("0.000003"),
        effective_from="2025-01-01T00:00:00Z",
    )
    batch = [trace(id=f"r{n}", model="odd-model", input_tokens=n + 1, output_tokens=7) for n in range(30)]
    batch.append(trace(id="rep", cost_usd="0.000000000012345"))
    ingest.post("/api/traces", {"traces": batch})
    assert Trace.objects.get(public_id="r0").cost_usd == Decimal("0.0000001235")  # 0.000000123478, 10 places
    assert Trace.objects.get(public_id="rep").cost_usd == Decimal("0.0000000000")
    before = rollup_snapshot(tenant.organisation)
    rollups_rebuild(
        start=Trace.objects.earliest("created_at").created_at,
        end=Trace.objects.latest("created_at").created_at,
    )
    assert rollup_snapshot(tenant.organisation) == before
