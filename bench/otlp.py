"""OTLP ingestion throughput: 3-span GenAI traces (an agent span, an LLM chat
span, a tool span) sent as OTLP protobuf to ``POST /api/otel/v1/traces``, and
the same traces sent as JSON to ``POST /api/traces`` in the same run, from the
same number of clients, with the server's CPU time per trace for each."""

import json
import random
import time
from datetime import UTC, datetime, timedelta

from .posting import post_all

PROMPT = (
    "I ordered a pair of hiking boots three weeks ago (order #{n}) and the tracking page has said "
    "'label created' ever since. My trip starts on Saturday and I need to know whether they will "
    "arrive in time or whether I should buy a pair locally and return these. Can you check where "
    "the parcel is and tell me honestly?"
)
COMPLETION = (
    "I checked order #{n}: the parcel left our warehouse this morning with the express carrier and "
    "is due at your address on Thursday before noon, two days before your trip. The tracking page "
    "will update once the carrier scans it at their depot tonight. If it has not arrived by Friday "
    "evening, reply here and I will refund it at once."
)
MODEL = "gpt-4o-mini"


def _ids(rng: random.Random) -> tuple[bytes, bytes, bytes, bytes]:
    return rng.randbytes(16), rng.randbytes(8), rng.randbytes(8), rng.randbytes(8)


def trace_spec(n: int, *, rng: random.Random, now: datetime, prefix: str) -> dict:
    """Everything one trace says, from which both encodings are made."""
    trace_id, root_id, llm_id, tool_id = _ids(rng)
    start = now - timedelta(seconds=n % 3000, microseconds=rng.randint(0, 999_999))
    llm_ms = round(rng.lognormvariate(6.8, 0.4))
    tool_ms = 40 + n % 200
    return {
        "n": n,
        "trace_id": trace_id,
        "root_id": root_id,
        "llm_id": llm_id,
        "tool_id": tool_id,
        "start": start,
        "llm_ms": llm_ms,
        "tool_ms": tool_ms,
        "total_ms": llm_ms + tool_ms + 15,
        "agent": f"Support Agent {n // 4 % 10}",
        "conversation": f"{prefix}-c{n // 4}",
        "prompt": PROMPT.format(n=n),
        "completion": COMPLETION.format(n=n),
        "input_tokens": 400 + n % 300,
        "output_tokens": 40 + n % 90,
        "call_id": f"call_{n}",
        "error": n % 40 == 0,
    }


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000) * 1000


def otlp_request(specs: list[dict]) -> bytes:
    """One ExportTraceServiceRequest (protobuf bytes) carrying every span of ``specs``."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

    def attrs(**values) -> list:
        out = []
        for key, value in values.items():
            key = key.replace("__", ".")
            if isinstance(value, bool):
                out.append(KeyValue(key=key, value=AnyValue(bool_value=value)))
            elif isinstance(value, int):
                out.append(KeyValue(key=key, value=AnyValue(int_value=value)))
            else:
                out.append(KeyValue(key=key, value=AnyValue(string_value=value)))
        return out

    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend(
        attrs(service__name="support-bot", service__version="1.4.2", telemetry__sdk__language="python")
    )
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "opentelemetry.instrumentation.openai_v2"
    for s in specs:
        start = _ns(s["start"])
        llm_end = start + 5_000_000 + s["llm_ms"] * 1_000_000
        tool_end = llm_end + s["tool_ms"] * 1_000_000
        root = Span(
            trace_id=s["trace_id"],
            span_id=s["root_id"],
            name=f"invoke_agent {s['agent']}",
            kind=Span.SPAN_KIND_INTERNAL,
            start_time_unix_nano=start,
            end_time_unix_nano=start + s["total_ms"] * 1_000_000,
            attributes=attrs(
                gen_ai__operation__name="invoke_agent",
                gen_ai__agent__name=s["agent"],
                gen_ai__conversation__id=s["conversation"],
                gen_ai__system="openai",
            ),
        )
        llm = Span(
            trace_id=s["trace_id"],
            span_id=s["llm_id"],
            parent_span_id=s["root_id"],
            name=f"chat {MODEL}",
            kind=Span.SPAN_KIND_CLIENT,
            start_time_unix_nano=start + 5_000_000,
            end_time_unix_nano=llm_end,
            attributes=attrs(
                gen_ai__operation__name="chat",
                gen_ai__system="openai",
                gen_ai__request__model=MODEL,
                gen_ai__response__model=f"{MODEL}-2024-07-18",
                gen_ai__usage__input_tokens=s["input_tokens"],
                gen_ai__usage__output_tokens=s["output_tokens"],
                gen_ai__prompt=s["prompt"],
                gen_ai__completion=s["completion"],
                gen_ai__response__finish_reasons="tool_calls",
            ),
        )
        tool = Span(
            trace_id=s["trace_id"],
            span_id=s["tool_id"],
            parent_span_id=s["root_id"],
            name="execute_tool lookup_order",
            kind=Span.SPAN_KIND_INTERNAL,
            start_time_unix_nano=llm_end,
            end_time_unix_nano=tool_end,
            attributes=attrs(
                gen_ai__operation__name="execute_tool",
                gen_ai__tool__name="lookup_order",
                gen_ai__tool__call__id=s["call_id"],
                gen_ai__tool__call__arguments=json.dumps({"order_id": s["n"]}),
                gen_ai__tool__call__result=json.dumps({"status": "shipped", "eta": "Thursday"}),
            ),
        )
        if s["error"]:
            tool.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message="carrier API timed out"))
        scope_spans.spans.extend([root, llm, tool])
    return request.SerializeToString()


def json_item(s: dict, prefix: str) -> dict:
    """The same trace as an item of ``POST /api/traces``."""
    llm_start = s["start"] + timedelta(milliseconds=5)
    tool_start = llm_start + timedelta(milliseconds=s["llm_ms"])
    error = "lookup_order: carrier API timed out" if s["error"] else ""
    return {
        "id": f"{prefix}-{s['trace_id'].hex()}",
        "agent_id": f"support-agent-{s['n'] // 4 % 10}",
        "agent_name": s["agent"],
        "session_id": f"{s['conversation']}-json",
        "channel": "chat",
        "deployment_version": "1.4.2",
        "input": s["prompt"],
        "output": s["completion"],
        "model": f"{MODEL}-2024-07-18",
        "input_tokens": s["input_tokens"],
        "output_tokens": s["output_tokens"],
        "latency_ms": s["total_ms"],
        "error": error,
        "created_at": s["start"].isoformat(),
        "tool_calls": [
            {
                "id": s["call_id"],
                "name": "lookup_order",
                "arguments": {"order_id": s["n"]},
                "result": {"status": "shipped", "eta": "Thursday"},
                "latency_ms": s["tool_ms"],
                "error": "carrier API timed out" if s["error"] else "",
            }
        ],
        "steps": [
            {
                "kind": "llm",
                "name": f"chat {MODEL}",
                "span_id": s["llm_id"].hex(),
                "parent_span_id": s["root_id"].hex(),
                "started_at": llm_start.isoformat(),
                "latency_ms": s["llm_ms"],
                "model": f"{MODEL}-2024-07-18",
                "input_tokens": s["input_tokens"],
                "output_tokens": s["output_tokens"],
                "input": s["prompt"],
                "output": s["completion"],
                "attributes": {"gen_ai.system": "openai", "gen_ai.request.model": MODEL},
            },
            {
                "kind": "tool",
                "name": "execute_tool lookup_order",
                "span_id": s["tool_id"].hex(),
                "parent_span_id": s["root_id"].hex(),
                "started_at": tool_start.isoformat(),
                "latency_ms": s["tool_ms"],
                "input": {"order_id": s["n"]},
                "output": {"status": "shipped", "eta": "Thursday"},
                "error": "carrier API timed out" if s["error"] else "",
            },
        ],
    }


def bench_otlp(
    server, *, clients: int = 2, requests: int = 20, per_request: int = 100, json_batch: int = 100
) -> dict:
    """Traces/s and server CPU µs per trace, OTLP protobuf against JSON, same traces, same run."""
    from accounts.services import api_key_create, organisation_get_or_create
    from audit.services import Actor

    seed = int(time.time() * 1000) % 10**9
    org = organisation_get_or_create(slug=f"bench-otlp-{seed}")
    key = api_key_create(
        organisation=org, name="bench", scopes=["ingest"], actor=Actor.system("bench")
    ).raw_key
    rng = random.Random(seed)
    now = datetime.now(UTC)
    prefix = f"otlp-{seed}"
    total = clients * requests * per_request
    specs = [trace_spec(n, rng=rng, now=now, prefix=prefix) for n in range(total + 2 * per_request)]
    warm, specs = specs[: per_request * 2], specs[per_request * 2 :]
    per_client = [
        specs[c * requests * per_request : (c + 1) * requests * per_request] for c in range(clients)
    ]
    otlp_bodies = [
        [otlp_request(mine[i : i + per_request]) for i in range(0, len(mine), per_request)]
        for mine in per_client
    ]
    json_bodies = [
        [
            json.dumps({"traces": [json_item(s, prefix) for s in mine[i : i + json_batch]]}).encode()
            for i in range(0, len(mine), json_batch)
        ]
        for mine in per_client
    ]
    # Warm up both paths (imports, agents, price table) with traces not counted.
    post_all(
        server, key, "/api/otel/v1/traces", "application/x-protobuf", [[otlp_request(warm[:per_request])]]
    )
    post_all(
        server,
        key,
        "/api/traces",
        "application/json",
        [[json.dumps({"traces": [json_item(s, prefix) for s in warm[per_request:]]}).encode()]],
    )
    otlp_s, otlp_cpu = post_all(server, key, "/api/otel/v1/traces", "application/x-protobuf", otlp_bodies)
    json_s, json_cpu = post_all(server, key, "/api/traces", "application/json", json_bodies)
    otlp_rate, json_rate = total / otlp_s, total / json_s
    return {
        "traces": total,
        "clients": clients,
        "traces_per_request": per_request,
        "json_batch_size": json_batch,
        "otlp_traces_per_s": round(otlp_rate),
        "otlp_server_cpu_us_per_trace": round(otlp_cpu / total * 1e6),
        "json_traces_per_s": round(json_rate),
        "json_server_cpu_us_per_trace": round(json_cpu / total * 1e6),
        "otlp_to_json_ratio": round(otlp_rate / json_rate, 3),
    }


def print_otlp(r: dict) -> None:
    print(
        f"\nOTLP ingestion: {r['traces']:,} 3-span traces, {r['clients']} clients, "
        f"{r['traces_per_request']} traces per OTLP request, JSON batches of {r['json_batch_size']}"
    )
    print(f"  {'':<30}{'traces/s':>10}{'server CPU µs/trace':>22}")
    print(
        f"  {'OTLP protobuf /api/otel':<30}{r['otlp_traces_per_s']:>10,}{r['otlp_server_cpu_us_per_trace']:>22,}"
    )
    print(f"  {'JSON /api/traces':<30}{r['json_traces_per_s']:>10,}{r['json_server_cpu_us_per_trace']:>22,}")
    print(f"  ratio OTLP / JSON             {r['otlp_to_json_ratio']:>10}")
