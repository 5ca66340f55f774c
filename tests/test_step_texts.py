"""A step's input or output that is its trace's own input or output is stored
once, on the trace, and every reader still sees it on the step."""

import json

from agents.models import TraceStep

from .conftest import trace
from .otlp import T0, json_export, json_span, ns

PROMPT = "Where is my parcel? I ordered it three weeks ago and the tracking page has not moved since."
REPLY = "It left our warehouse this morning and is due on Thursday before noon."


def _steps(reader, public_id: str) -> list[dict]:
    r = reader.get(f"/api/traces/{public_id}")
    assert r.status_code == 200, r.content
    return r.json()["steps"]


def test_a_step_with_the_traces_prompt_and_reply_keeps_them_on_the_trace_only(ingest, reader):
    step = {"kind": "llm", "name": "chat", "input": PROMPT, "output": REPLY}
    r = ingest.post("/api/traces", trace(id="t1", input=PROMPT, output=REPLY, steps=[step]))
    assert r.status_code == 200 and r.json()["accepted"] == ["t1"]
    stored = TraceStep.objects.get()
    assert (stored.input, stored.output) == (None, None)
    (read,) = _steps(reader, "t1")
    assert (read["input"], read["output"]) == (PROMPT, REPLY)


def test_a_step_with_texts_of_its_own_keeps_them(ingest, reader):
    steps = [
        {
            "kind": "llm",
            "name": "chat",
            "input": [{"role": "user", "content": PROMPT}],
            "output": "Let me look.",
        },
        {"kind": "tool", "name": "lookup", "input": {"order": 7}, "output": ""},
    ]
    assert (
        ingest.post("/api/traces", trace(id="t2", input=PROMPT, output=REPLY, steps=steps)).status_code == 200
    )
    assert list(TraceStep.objects.order_by("position").values_list("input", "output")) == [
        ([{"role": "user", "content": PROMPT}], "Let me look."),
        ({"order": 7}, ""),
    ]
    assert [(s["input"], s["output"]) for s in _steps(reader, "t2")] == [
        ([{"role": "user", "content": PROMPT}], "Let me look."),
        ({"order": 7}, ""),
    ]


def test_an_otlp_chat_step_shares_the_traces_prompt_and_reply(tenant, reader):
    trace_id = "5b8efff798038103d269b633813fc60c"
    t = ns(T0)
    spans = [
        json_span(trace_id, "00000000000000a1", "invoke_agent", t, t + 900_000_000),
        json_span(
            trace_id,
            "00000000000000a2",
            "chat gpt-4o-mini",
            t + 1_000_000,
            t + 800_000_000,
            parent="00000000000000a1",
            attributes={"gen_ai.operation.name": "chat", "gen_ai.prompt": PROMPT, "gen_ai.completion": REPLY},
        ),
    ]
    r = tenant.api("ingest").post("/api/otel/v1/traces", raw=json.dumps(json_export(spans)))
    assert r.status_code == 200
    assert TraceStep.objects.get().texts_from_trace == 3
    (step,) = _steps(reader, f"otel-{trace_id}")
    assert (step["input"], step["output"]) == (PROMPT, REPLY)
