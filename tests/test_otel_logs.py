"""POST /api/otel/v1/logs (GenAI events as OTLP log records, before or after
their spans), /v1/metrics (accepted, not kept), the spans read back, and JSON
errors for every unknown API path."""

import json

import pytest
from django.test import Client
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

from agents.models import Trace
from otel.models import ReceivedSpan

from .otlp import T0, any_value, attribute, gzipped, json_export, json_span, ns

PROTOBUF = "application/x-protobuf"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
ASKS, ANSWERS = "00000000000000a1", "00000000000000a2"
MS = 1_000_000


def _post(key: str, path: str, body: bytes, content_type: str = "application/json", **headers):
    # CONTENT_TYPE too: the test client drops content_type for an empty body.
    return Client().post(
        path,
        body,
        content_type=content_type,
        CONTENT_TYPE=content_type,
        HTTP_AUTHORIZATION=f"Bearer {key}",
        **headers,
    )


def _spans_document() -> dict:
    """An agent loop's two requests to the model (openai-v2 in its event mode:
    no messages on the spans), under one agent span."""
    t = ns(T0)
    chat = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini"}
    return json_export(
        [
            json_span(TRACE_ID, "00000000000000a0", "invoke_agent weather", t, t + 2000 * MS),
            json_span(
                TRACE_ID,
                ASKS,
                "chat gpt-4o-mini",
                t + 100 * MS,
                t + 600 * MS,
                parent="00000000000000a0",
                attributes={**chat, "gen_ai.usage.input_tokens": 52, "gen_ai.usage.output_tokens": 14},
            ),
            json_span(
                TRACE_ID,
                ANSWERS,
                "chat gpt-4o-mini",
                t + 800 * MS,
                t + 1900 * MS,
                parent="00000000000000a0",
                attributes={**chat, "gen_ai.usage.input_tokens": 75, "gen_ai.usage.output_tokens": 9},
            ),
        ],
        service="agent_weather",
    )


def _record(span_id: str, event: str, body: dict, at_ms: int) -> dict:
    return {
        "timeUnixNano": str(ns(T0) + at_ms * MS),
        "traceId": TRACE_ID,
        "spanId": span_id,
        "eventName": event,
        "attributes": [attribute("gen_ai.system", "openai")],
        "body": any_value(body),
    }


CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}


def _logs_document() -> dict:
    """The records openai-v2 (before its 2.x conventions) emits for the two requests."""
    records = [
        _record(ASKS, "gen_ai.system.message", {"content": "You are helpful."}, 100),
        _record(ASKS, "gen_ai.user.message", {"content": "What is the weather in Paris?"}, 100),
        _record(
            ASKS,
            "gen_ai.choice",
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {"role": "assistant", "tool_calls": [CALL]},
            },
            600,
        ),
        _record(ANSWERS, "gen_ai.user.message", {"content": "What is the weather in Paris?"}, 800),
        _record(ANSWERS, "gen_ai.assistant.message", {"tool_calls": [CALL]}, 800),
        _record(ANSWERS, "gen_ai.tool.message", {"content": '{"sky": "sunny"}', "id": "call_1"}, 800),
        _record(
            ANSWERS,
            "gen_ai.choice",
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Sunny."}},
            1900,
        ),
    ]
    return {
        "resourceLogs": [
            {
                "resource": {"attributes": [attribute("service.name", "agent_weather")]},
                "scopeLogs": [
                    {"scope": {"name": "opentelemetry.instrumentation.openai_v2"}, "logRecords": records}
                ],
            }
        ]
    }


def _send_spans(key: str) -> None:
    r = _post(key, "/api/otel/v1/traces", json.dumps(_spans_document()).encode())
    assert r.status_code == 200 and b"rejected" not in r.content, r.content


def _send_logs(key: str, **headers) -> None:
    body = json.dumps(_logs_document()).encode()
    r = _post(key, "/api/otel/v1/logs", gzipped(body) if headers else body, **headers)
    assert r.status_code == 200 and r["Content-Type"] == "application/json", r.content
    assert json.loads(r.content) == {}


def _assert_the_conversation_is_read(trace: Trace) -> None:
    assert (trace.input, trace.output) == ("What is the weather in Paris?", "Sunny.")
    assert trace.tool_calls == [
        {
            "name": "get_weather",
            "arguments": {"city": "Paris"},
            "result": {"sky": "sunny"},
            "latency_ms": None,
            "error": "",
            "id": "call_1",
        }
    ]


def test_log_records_sent_after_their_spans_complete_the_trace(tenant):
    _send_spans(tenant.keys["ingest"])
    assert Trace.objects.get().tool_calls == []
    _send_logs(tenant.keys["ingest"])
    _assert_the_conversation_is_read(Trace.objects.get())


def test_log_records_sent_before_their_spans_wait_for_them(tenant):
    _send_logs(tenant.keys["ingest"], HTTP_CONTENT_ENCODING="gzip")
    assert not Trace.objects.exists()
    _send_spans(tenant.keys["ingest"])
    _assert_the_conversation_is_read(Trace.objects.get())


def test_a_resent_log_record_is_kept_once(tenant, reader):
    _send_spans(tenant.keys["ingest"])
    _send_logs(tenant.keys["ingest"])
    _send_logs(tenant.keys["ingest"])
    body = reader.get(f"/api/traces/otel-{TRACE_ID}/spans").json()
    assert len(body["log_records"]) == 7
    _assert_the_conversation_is_read(Trace.objects.get())


def test_log_records_in_protobuf_are_read(tenant):
    from google.protobuf import json_format

    from otel.otlp import ids_as_base64

    message = json_format.ParseDict(ids_as_base64(_logs_document()), ExportLogsServiceRequest())
    _send_spans(tenant.keys["ingest"])
    r = _post(tenant.keys["ingest"], "/api/otel/v1/logs", message.SerializeToString(), PROTOBUF)
    assert r.status_code == 200 and r["Content-Type"] == PROTOBUF
    assert ExportLogsServiceResponse.FromString(r.content) == ExportLogsServiceResponse()
    _assert_the_conversation_is_read(Trace.objects.get())


def test_log_records_that_are_no_genai_events_are_accepted_and_not_kept(tenant, reader):
    document = _logs_document()
    document["resourceLogs"][0]["scopeLogs"][0]["logRecords"] = [
        {
            "timeUnixNano": str(ns(T0)),
            "body": {"stringValue": "GET /health 200"},
            "traceId": TRACE_ID,
            "spanId": ASKS,
        }
    ]
    _send_spans(tenant.keys["ingest"])
    r = _post(tenant.keys["ingest"], "/api/otel/v1/logs", json.dumps(document).encode())
    assert r.status_code == 200
    assert reader.get(f"/api/traces/otel-{TRACE_ID}/spans").json()["log_records"] == []


def test_a_genai_event_without_its_span_is_rejected_with_a_reason(tenant):
    document = _logs_document()
    del document["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]["spanId"]
    r = _post(tenant.keys["ingest"], "/api/otel/v1/logs", json.dumps(document).encode())
    answer = json.loads(r.content)
    assert r.status_code == 200 and answer["partialSuccess"]["rejectedLogRecords"] == "1"
    assert "span_id must be 8 bytes" in answer["partialSuccess"]["errorMessage"]


def test_logs_need_an_ingest_key(tenant):
    r = _post(tenant.keys["read"], "/api/otel/v1/logs", json.dumps(_logs_document()).encode())
    assert r.status_code == 403 and r.json()["error"]["code"]


def test_a_malformed_logs_body_is_a_400(tenant):
    r = _post(tenant.keys["ingest"], "/api/otel/v1/logs", b"\x00garbage", PROTOBUF)
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_body"


@pytest.mark.parametrize("content_type", [PROTOBUF, "application/json"])
def test_metrics_are_answered_with_an_otlp_success(tenant, content_type):
    body = (
        ExportMetricsServiceRequest().SerializeToString()
        if content_type == PROTOBUF
        else b'{"resourceMetrics": []}'
    )
    r = _post(tenant.keys["ingest"], "/api/otel/v1/metrics", body, content_type)
    assert r.status_code == 200 and r["Content-Type"] == content_type
    if content_type == PROTOBUF:
        assert ExportMetricsServiceResponse.FromString(r.content) == ExportMetricsServiceResponse()
    else:
        assert json.loads(r.content) == {}


# --- spans read back ------------------------------------------------------------------------


def test_every_attribute_and_event_of_a_span_reads_back_as_received(tenant, reader):
    nested = {
        "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "get_weather",
        "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": '{"city": "Paris"}',
        "an.int": 7,
        "a.float": 0.5,
        "a.flag": True,
    }
    span = json_span(TRACE_ID, ASKS, "ChatCompletion", ns(T0), ns(T0) + 5 * MS, attributes=nested)
    span["attributes"].append({"key": "a.list", "value": any_value(["x", "y"])})
    span["attributes"].append({"key": "a.map", "value": any_value({"k": {"deep": "v"}})})
    span["events"] = [
        {
            "timeUnixNano": str(ns(T0)),
            "name": "exception",
            "attributes": [attribute("exception.message", "boom")],
        }
    ]
    span["status"] = {"code": 2, "message": "boom"}
    r = _post(tenant.keys["ingest"], "/api/otel/v1/traces", json.dumps(json_export([span])).encode())
    assert r.status_code == 200

    (read,) = reader.get(f"/api/traces/otel-{TRACE_ID}/spans").json()["spans"]
    assert read["attributes"] == {**nested, "a.list": ["x", "y"], "a.map": {"k": {"deep": "v"}}}
    assert read["events"] == [
        {"name": "exception", "time_ns": ns(T0), "attributes": {"exception.message": "boom"}}
    ]
    assert (read["status_code"], read["status_message"], read["name"]) == (2, "boom", "ChatCompletion")
    assert read["resource"] == {"service.name": "support-service"}
    assert ReceivedSpan.objects.get().attributes == read["attributes"]


def test_spans_of_another_organisation_or_a_plain_trace_are_not_found(tenant, outsider, ingest):
    _send_spans(tenant.keys["ingest"])
    ingest.post("/api/traces", {"id": "trace_plain", "agent_id": "agent_x"})
    assert outsider.api("read").get(f"/api/traces/otel-{TRACE_ID}/spans").status_code == 404
    assert tenant.api("read").get("/api/traces/trace_plain/spans").json()["error"]["code"] == "not_found"


def test_the_trace_page_shows_the_raw_spans(tenant, members):
    _send_spans(tenant.keys["ingest"])
    page = members["viewer"].get(f"/traces/otel-{TRACE_ID}/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "Raw spans" in text and "gen_ai.usage.input_tokens" in text and ANSWERS in text


# --- unknown API paths ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("post", "/api/otel/v1/nothing", 404),
        ("get", "/api/no/such/endpoint", 404),
        ("get", "/api/otel/v1/traces", 405),
    ],
)
def test_unknown_api_paths_answer_the_json_error_shape(db, method, path, status):
    r = getattr(Client(), method)(path)
    assert r.status_code == status and r["Content-Type"] == "application/json"
    assert set(r.json()["error"]) == {"code", "message", "details"}
