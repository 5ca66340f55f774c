"""POST /api/otel/v1/traces: OTLP/HTTP in protobuf and JSON, gzip, partial
success, malformed bodies, limits, and the mapping of spans to traces."""

import json
import zlib
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from agents.models import Agent, Session, Trace, TraceStep
from otel.api import slots
from otel.models import ReceivedSpan

from .otlp import T0, agent_turn, attribute, gzipped, json_export, json_span, ns, protobuf_of, sdk_tracer

URL = "/api/otel/v1/traces"
PROTOBUF = "application/x-protobuf"
TRACE_ID = "5b8efff798038103d269b633813fc60c"


def export(key: str | None, body: bytes, content_type: str = PROTOBUF, **headers):
    if key:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    return Client().post(URL, body, content_type=content_type, **headers)


def export_json(key: str, document: dict, **headers):
    return export(key, json.dumps(document).encode(), "application/json", **headers)


def sdk_spans(**kwargs):
    tracer, exporter = sdk_tracer()
    trace_id = agent_turn(tracer, **kwargs)
    return f"otel-{trace_id:032x}", exporter.get_finished_spans()


def test_it_turns_an_agent_span_with_children_into_one_trace(tenant):
    public_id, spans = sdk_spans()
    r = export(tenant.keys["ingest"], protobuf_of(spans))
    assert r.status_code == 200, r.content
    assert r["Content-Type"] == PROTOBUF
    assert ExportTraceServiceResponse.FromString(r.content) == ExportTraceServiceResponse()

    t = Trace.objects.get(public_id=public_id)
    assert t.agent.public_id == "agent_support" and t.agent.name == "Support Agent"
    assert t.session.public_id == "conv-1"
    assert (t.channel, t.status, t.latency_ms) == ("chat", "error", 1500)
    assert t.created_at == T0
    assert (t.model, t.input_tokens, t.output_tokens) == ("gpt-4o-mini-2024-07-18", 145, 28)
    assert (t.input, t.output) == ("What are your hours?", "We are open 9 to 5.")
    assert t.cost_usd == Decimal("0.0000385500")  # 145 × 0.15 + 28 × 0.60 per million
    assert t.error == "execute_tool opening_hours: the calendar did not answer"
    assert t.metadata["user_id"] == "user-42"
    assert t.tool_calls == [
        {
            "name": "opening_hours",
            "arguments": {"day": "monday"},
            "result": None,
            "latency_ms": 250.0,
            "error": "the calendar did not answer",
            "id": "call_1",
        }
    ]
    steps = list(TraceStep.objects.filter(trace=t).values_list("kind", "latency_ms", "input_tokens", "error"))
    assert steps == [("llm", 800, 145, ""), ("tool", 250, 0, "the calendar did not answer")]
    assert Session.objects.get(public_id="conv-1").status == "failed"


def test_it_reads_a_hand_written_otlp_json_document(tenant):
    start = ns(T0)
    document = json_export(
        [
            json_span(
                TRACE_ID,
                "eee19b7ec3c1b174",
                "invoke_agent",
                start,
                start + 2000 * 1_000_000,
                attributes={
                    "gen_ai.operation.name": "invoke_agent",
                    "session.id": "s-7",
                    "thinnest.channel": "widget",
                },
                status={"code": 1},
                unknownField={"ignored": True},
            ),
            json_span(
                TRACE_ID.upper(),  # hex is case-insensitive
                "0000000000000a01",
                "llm",
                str(start + 10 * 1_000_000),
                start + 1900 * 1_000_000,
                parent="eee19b7ec3c1b174",
                kind="3",
                attributes={
                    "openinference.span.kind": "LLM",
                    "llm.model_name": "gpt-4o-mini",
                    "llm.token_count.prompt": 1000,
                    "llm.token_count.completion": 200,
                    "llm.cost.total": 0.5,
                    "llm.input_messages.0.message.role": "user",
                    "llm.input_messages.0.message.content": "Hello",
                    "output.value": "Hi there",
                },
            ),
        ],
        service="widget-bot",
    )
    r = export_json(tenant.keys["ingest"], document)
    assert r.status_code == 200, r.content
    assert r["Content-Type"] == "application/json"
    assert r.json() == {}
    t = Trace.objects.get(public_id=f"otel-{TRACE_ID}")
    assert (t.agent.public_id, t.session.public_id, t.channel) == ("widget-bot", "s-7", "widget")
    assert (t.input, t.output, t.status, t.latency_ms) == ("Hello", "Hi there", "success", 2000)
    assert (t.input_tokens, t.output_tokens, t.cost_usd, t.cost_source) == (
        1000,
        200,
        Decimal("0.5"),
        "reported",
    )


def test_it_accepts_gzip_and_deflate(tenant):
    public_id, spans = sdk_spans()
    r = export(tenant.keys["ingest"], gzipped(protobuf_of(spans)), HTTP_CONTENT_ENCODING="gzip")
    assert r.status_code == 200, r.content
    assert Trace.objects.filter(public_id=public_id).exists()
    public_id, spans = sdk_spans(conversation="conv-2")
    r = export(tenant.keys["ingest"], zlib.compress(protobuf_of(spans)), HTTP_CONTENT_ENCODING="deflate")
    assert r.status_code == 200, r.content
    assert Trace.objects.get(public_id=public_id).session.public_id == "conv-2"


def test_it_answers_partial_success_for_unusable_spans(tenant):
    _, spans = sdk_spans()
    request = ExportTraceServiceRequest.FromString(protobuf_of(spans))
    scope = request.resource_spans[0].scope_spans[0]
    bad = scope.spans.add()
    bad.CopyFrom(scope.spans[0])
    bad.name, bad.span_id = "short id", b"\x01\x02"
    late = scope.spans.add()
    late.CopyFrom(scope.spans[0])
    late.name, late.span_id, late.end_time_unix_nano = (
        "ends first",
        b"\x09" * 8,
        late.start_time_unix_nano - 1,
    )
    r = export(tenant.keys["ingest"], request.SerializeToString())
    assert r.status_code == 200
    answer = ExportTraceServiceResponse.FromString(r.content)
    assert answer.partial_success.rejected_spans == 2
    assert "span_id must be 8 bytes" in answer.partial_success.error_message
    assert "start_time_unix_nano" in answer.partial_success.error_message
    assert ReceivedSpan.objects.count() == 3
    assert Trace.objects.count() == 1

    # In JSON, int64 counts are strings.
    document = json_format.MessageToDict(request)
    r = export(tenant.keys["ingest"], json.dumps(_hex_ids(document)).encode(), "application/json")
    assert r.json()["partialSuccess"]["rejectedSpans"] == "2"


def _hex_ids(document: dict) -> dict:
    """protobuf's JSON mapping writes ids in base64; OTLP JSON wants hex."""
    import base64

    for rs in document["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for span in ss["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    return document


def _gzip_bomb(size: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = b"\x00" * 1_000_000
    out = [compressor.compress(chunk) for _ in range(size // len(chunk))]
    return b"".join(out) + compressor.flush()


@pytest.mark.parametrize(
    ("body", "content_type", "encoding", "status", "code"),
    [
        (b"\xff\xff\xff\xff\xff", PROTOBUF, None, 400, "malformed_body"),
        ("truncated", PROTOBUF, None, 400, "malformed_body"),
        (b"{not json", "application/json", None, 400, "malformed_body"),
        (b"[1, 2]", "application/json", None, 400, "malformed_body"),
        (b'{"resourceSpans": "nope"}', "application/json", None, 400, "malformed_body"),
        ("bad hex", "application/json", None, 400, "malformed_body"),
        (b"\xc3\x28", "application/json", None, 400, "malformed_body"),
        (b"<xml/>", "text/xml", None, 400, "unsupported_content_type"),
        (b"", "", None, 400, "unsupported_content_type"),
        (b"not gzip at all", PROTOBUF, "gzip", 400, "malformed_body"),
        ("truncated gzip", PROTOBUF, "gzip", 400, "malformed_body"),
        (b"abc", PROTOBUF, "br", 400, "unsupported_encoding"),
        ("bomb", PROTOBUF, "gzip", 413, "request_too_large"),
    ],
)
def test_it_answers_malformed_bodies_without_a_server_error(
    tenant, settings, body, content_type, encoding, status, code
):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4_000_000
    valid = protobuf_of(sdk_spans()[1])
    body = {
        "truncated": valid[: len(valid) // 2],
        "bad hex": json.dumps(json_export([json_span("zz" * 16, "ab" * 8, "x", ns(T0), ns(T0, 1))])).encode(),
        "truncated gzip": gzipped(valid)[:-12],
        "bomb": _gzip_bomb(8_000_000),
    }.get(body, body)
    headers = {"HTTP_CONTENT_ENCODING": encoding} if encoding else {}
    r = export(tenant.keys["ingest"], body, content_type, **headers)
    assert r.status_code == status, r.content
    assert r.json()["error"]["code"] == code
    assert Trace.objects.count() == 0 and ReceivedSpan.objects.count() == 0


def test_it_answers_413_over_the_size_limit(tenant, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    r = export(tenant.keys["ingest"], protobuf_of(sdk_spans()[1]))
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "request_too_large"


@pytest.mark.parametrize(("scopes", "status"), [(None, 401), ("read", 403), ("admin", 403), ("ingest", 200)])
def test_it_needs_an_ingest_key(tenant, scopes, status):
    r = export(tenant.keys[scopes] if scopes else None, protobuf_of(sdk_spans()[1]))
    assert r.status_code == status
    if status != 200:
        assert r.json()["error"]["code"] in ("unauthenticated", "insufficient_scope")
        assert r["Content-Type"] == "application/json"


def test_a_wrong_key_is_401(db):
    r = export("ta_nope_nope", protobuf_of(sdk_spans()[1]))
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"


def test_it_answers_503_with_retry_after_when_busy(tenant, settings):
    settings.OTEL_MAX_CONCURRENT_REQUESTS = 1
    assert slots.take()
    try:
        r = export(tenant.keys["ingest"], protobuf_of(sdk_spans()[1]))
    finally:
        slots.give_back()
    assert r.status_code == 503
    assert r["Retry-After"] == "2"
    assert r.json()["error"]["code"] == "overloaded"
    assert export(tenant.keys["ingest"], protobuf_of(sdk_spans()[1])).status_code == 200


def test_spans_of_another_organisation_stay_apart(tenant, outsider):
    _, spans = sdk_spans()
    body = protobuf_of(spans)
    assert export(tenant.keys["ingest"], body).status_code == 200
    assert export(outsider.keys["ingest"], body).status_code == 200
    assert Trace.objects.filter(organisation=outsider.organisation).count() == 1
    assert Trace.objects.filter(organisation=tenant.organisation).count() == 1


def test_an_empty_export_is_accepted(tenant):
    r = export(tenant.keys["ingest"], b"", CONTENT_TYPE=PROTOBUF)  # the test client drops it for no body
    assert r.status_code == 200 and r.content == b""
    r = export_json(tenant.keys["ingest"], {"resourceSpans": []})
    assert r.status_code == 200 and r.json() == {}


def test_the_trace_is_readable_through_the_api(tenant):
    public_id, spans = sdk_spans()
    export(tenant.keys["ingest"], protobuf_of(spans))
    reader = Client(HTTP_AUTHORIZATION=f"Bearer {tenant.keys['read']}")
    detail = reader.get(f"/api/traces/{public_id}").json()
    assert detail["agent_id"] == "agent_support" and detail["status"] == "error"
    assert [s["kind"] for s in detail["steps"]] == ["llm", "tool"]
    page = reader.get("/api/agents/agent_support/traces").json()
    assert [t["id"] for t in page["traces"]] == [public_id]
    window = {"from": (T0 - timedelta(hours=1)).isoformat(), "to": (T0 + timedelta(hours=1)).isoformat()}
    summary = reader.get("/api/agents/agent_support/summary", window).json()
    assert summary["total_sessions"] == 1 and summary["success_rate"] == 0.0
    assert summary["total_input_tokens"] == 145 and summary["tool_call_rate"] == 1.0


def test_an_agent_without_agent_attributes_is_its_service(tenant):
    start = ns(T0)
    document = json_export(
        [json_span(TRACE_ID, "00000000000000b1", "chat gpt-4o-mini", start, start + 5 * 1_000_000)],
        service="billing bot",
    )
    document["resourceSpans"][0]["resource"]["attributes"].append(attribute("service.version", "2.1.0"))
    assert export_json(tenant.keys["ingest"], document).status_code == 200
    t = Trace.objects.get()
    assert (t.agent.public_id, t.agent.name, t.deployment_version) == ("billing_bot", "billing bot", "2.1.0")
    assert t.session.public_id == t.public_id  # no conversation id: a conversation of its own
    assert Agent.objects.filter(organisation=tenant.organisation).count() == 1


def _kvlist(**values) -> dict:
    return {"kvlistValue": {"values": [{"key": k, "value": v} for k, v in values.items()]}}


def _text(value: str) -> dict:
    return {"stringValue": value}


def test_it_reads_older_names_and_structured_messages(tenant):
    """A web request's root span with an LLM call in older names, and a second
    call whose messages are structured attributes (not JSON strings)."""
    start, ms = ns(T0), 1_000_000
    message = _kvlist(
        role=_text("assistant"),
        parts={
            "arrayValue": {
                "values": [
                    _kvlist(type=_text("reasoning"), content=_text("They asked about refunds.")),
                    _kvlist(type=_text("text"), content=_text("Refunds take 5 days.")),
                ]
            }
        },
    )
    structured = json_span(
        TRACE_ID,
        "00000000000000c3",
        "generate_content gemini",
        start + 500 * ms,
        start + 700 * ms,
        parent="00000000000000c1",
        attributes={"gen_ai.request.model": "gemini-2.5-flash"},
    )
    structured["attributes"].append(
        {"key": "gen_ai.output.messages", "value": {"arrayValue": {"values": [message]}}}
    )
    document = json_export(
        [
            json_span(TRACE_ID, "00000000000000c1", "POST /chat", start, start + 900 * ms),
            json_span(
                TRACE_ID,
                "00000000000000c2",
                "openai.chat",
                start + 100 * ms,
                start + 400 * ms,
                parent="00000000000000c1",
                attributes={
                    "llm.request.type": "chat",
                    "gen_ai.request.model": "in-house-model",
                    "gen_ai.usage.prompt_tokens": "120",
                    "gen_ai.usage.completion_tokens": 30,
                    "gen_ai.prompt.0.role": "user",
                    "gen_ai.prompt.0.content": "How long do refunds take?",
                    "gen_ai.completion.0.content": "Let me check.",
                },
            ),
            structured,
        ],
        service="refunds",
    )
    document["resourceSpans"][0]["resource"]["attributes"].append(attribute("thinnest.channel", "voice"))
    assert export_json(tenant.keys["ingest"], document).status_code == 200
    t = Trace.objects.get()
    assert (t.channel, t.latency_ms, t.model) == ("voice", 900, "in-house-model")
    assert (t.input, t.output, t.reasoning) == (
        "How long do refunds take?",
        "Refunds take 5 days.",
        "They asked about refunds.",
    )
    assert (t.input_tokens, t.output_tokens, t.cost_usd, t.cost_source) == (120, 30, None, "unpriced")
    assert [(s.kind, s.model) for s in t.steps.all()] == [
        ("llm", "in-house-model"),
        ("llm", "gemini-2.5-flash"),
    ]


def test_the_endpoint_is_described_in_openapi(db):
    spec = Client().get("/api/openapi.json").json()
    operation = spec["paths"]["/api/otel/v1/traces"]["post"]
    assert set(operation["requestBody"]["content"]) == {PROTOBUF, "application/json"}
    assert set(operation["responses"]) >= {"200", "400", "413", "503"}


def test_it_rejects_spans_whose_trace_cannot_be_stored(tenant, ingest):
    """A conversation of another agent, or an id taken by a trace sent to
    /api/traces: the trace's spans are rejected, the rest of the export stored."""
    ingest.post("/api/traces", {"id": "trace_1", "agent_id": "agent_other", "session_id": "conv-1"})
    public_id, spans = sdk_spans(conversation="conv-1")
    taken_id, others = sdk_spans(conversation="conv-2")
    ingest.post("/api/traces", {"id": taken_id, "agent_id": "agent_other"})
    _, fine = sdk_spans(conversation="conv-3")
    r = export(tenant.keys["ingest"], protobuf_of([*spans, *others, *fine]))
    answer = ExportTraceServiceResponse.FromString(r.content)
    assert r.status_code == 200 and answer.partial_success.rejected_spans == 6
    assert "conversation 'conv-1' belongs to another agent or channel" in answer.partial_success.error_message
    assert f"the id {taken_id} is used by another trace" in answer.partial_success.error_message
    assert not Trace.objects.filter(public_id=public_id).exists()
    assert Trace.objects.get(public_id=taken_id).agent.public_id == "agent_other"
    assert ReceivedSpan.objects.count() == 3
    assert Trace.objects.get(session__public_id="conv-3").status == "error"
