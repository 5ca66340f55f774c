"""Building OTLP exports for the tests: real spans from the OpenTelemetry SDK,
and hand-written OTLP JSON documents."""

import gzip
import json
from datetime import UTC, datetime

from opentelemetry import trace as otel_trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

T0 = datetime(2026, 3, 6, 13, 59, 59, 500_000, tzinfo=UTC)
MS = 1_000_000


def ns(at: datetime, plus_ms: float = 0) -> int:
    return int(at.timestamp() * 1_000_000) * 1000 + int(plus_ms * MS)


def sdk_tracer(resource: dict | None = None):
    """A tracer whose finished spans are kept in memory (in the order they end)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(resource or {"service.name": "support-service"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("tests"), exporter


def agent_turn(tracer, *, at: datetime = T0, conversation: str = "conv-1", tool_fails: bool = True):
    """An agent reply as an instrumented agent reports it: an ``invoke_agent``
    span (1500 ms) with a ``chat`` child (gpt-4o-mini, 145 + 28 tokens) and an
    ``execute_tool`` child that fails when ``tool_fails``."""
    start = ns(at)
    agent = tracer.start_span(
        "invoke_agent Support Agent",
        start_time=start,
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.id": "agent_support",
            "gen_ai.agent.name": "Support Agent",
            "gen_ai.conversation.id": conversation,
            "user.id": "user-42",
        },
    )
    parent = otel_trace.set_span_in_context(agent)
    chat = tracer.start_span(
        "chat gpt-4o-mini",
        context=parent,
        start_time=start + 100 * MS,
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
            "gen_ai.usage.input_tokens": 145,
            "gen_ai.usage.output_tokens": 28,
            "gen_ai.input.messages": json.dumps(
                [{"role": "user", "parts": [{"type": "text", "content": "What are your hours?"}]}]
            ),
            "gen_ai.output.messages": json.dumps(
                [
                    {
                        "role": "assistant",
                        "parts": [{"type": "text", "content": "We are open 9 to 5."}],
                        "finish_reason": "stop",
                    }
                ]
            ),
        },
    )
    chat.end(end_time=start + 900 * MS)
    tool = tracer.start_span(
        "execute_tool opening_hours",
        context=parent,
        start_time=start + 950 * MS,
        attributes={
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": "opening_hours",
            "gen_ai.tool.call.id": "call_1",
            "gen_ai.tool.call.arguments": '{"day": "monday"}',
        },
    )
    if tool_fails:
        tool.set_attribute("error.type", "TimeoutError")
        tool.set_status(Status(StatusCode.ERROR, "the calendar did not answer"))
    else:
        tool.set_attribute("gen_ai.tool.call.result", '{"open": "9-17"}')
    tool.end(end_time=start + 1200 * MS)
    agent.end(end_time=start + 1500 * MS)
    return agent.get_span_context().trace_id


def protobuf_of(spans) -> bytes:
    return encode_spans(spans).SerializeToString()


def attribute(key: str, value) -> dict:
    return {"key": key, "value": any_value(value)}


def any_value(value) -> dict:
    """An OTLP JSON AnyValue, maps and lists included (a log record's body)."""
    if isinstance(value, dict):
        return {"kvlistValue": {"values": [attribute(k, v) for k, v in value.items()]}}
    if isinstance(value, list):
        return {"arrayValue": {"values": [any_value(v) for v in value]}}
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    return {"stringValue": value}


def json_span(trace_id: str, span_id: str, name: str, start_ns: int, end_ns: int, parent: str = "", **fields):
    """One span of an OTLP JSON document; ``attributes`` is a plain dict."""
    span = {
        "traceId": trace_id,
        "spanId": span_id,
        "parentSpanId": parent,
        "name": name,
        "kind": 1,
        "startTimeUnixNano": str(start_ns),
        "endTimeUnixNano": end_ns,
        "attributes": [attribute(k, v) for k, v in fields.pop("attributes", {}).items()],
    }
    span.update(fields)
    return span


def json_export(spans: list[dict], service: str = "support-service") -> dict:
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [attribute("service.name", service)]},
                "scopeSpans": [{"scope": {"name": "tests"}, "spans": spans}],
            }
        ]
    }


def gzipped(body: bytes) -> bytes:
    return gzip.compress(body)
