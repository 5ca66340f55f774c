"""The official OpenTelemetry SDK and OTLP/HTTP exporter, configured only through
the standard environment variables, against a live server on loopback."""

import importlib
import json
import threading
import urllib.parse
import urllib.request
from datetime import timedelta
from types import SimpleNamespace

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from agents.models import Trace

from .conftest import _tenant, postgres_only
from .otlp import T0, agent_turn, protobuf_of, sdk_tracer
from .test_otel_split import _rebuilt, _state

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _builtin_prices():
    """The built-in prices come from a migration; an earlier test's flush may have emptied them.
    The migration names the price model by the app that held it then (billing), now pricing's."""
    from pricing.models import ModelPrice

    registry = SimpleNamespace(get_model=lambda app_label, model_name: ModelPrice)
    importlib.import_module("billing.migrations.0002_builtin_prices").add_prices(registry, None)


def _get(url: str, key: str, params: dict | None = None) -> dict:
    if params:
        url = f"{url}?{urllib.parse.urlencode(params)}"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_an_agent_configured_by_environment_variables_shows_up(live_server, monkeypatch, compression):
    tenant = _tenant("otel-live")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"{live_server.url}/api/otel")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"Authorization=Bearer {tenant.keys['ingest']}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", compression)
    provider = TracerProvider(resource=Resource.create({"service.name": "support-service"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace_id = agent_turn(provider.get_tracer("support-agent"))
    assert provider.force_flush(timeout_millis=20_000)
    provider.shutdown()

    key, api = tenant.keys["read"], f"{live_server.url}/api"
    trace = _get(f"{api}/traces/otel-{trace_id:032x}", key)
    assert (trace["agent_id"], trace["session_id"], trace["status"]) == ("agent_support", "conv-1", "error")
    assert (trace["model"], trace["input_tokens"], trace["output_tokens"]) == (
        "gpt-4o-mini-2024-07-18",
        145,
        28,
    )
    assert trace["latency_ms"] == 1500
    assert trace["cost_usd"] == pytest.approx(0.00003855)
    assert [(c["name"], c["error"]) for c in trace["tool_calls"]] == [
        ("opening_hours", "the calendar did not answer")
    ]
    assert [(s["kind"], s["name"]) for s in trace["steps"]] == [
        ("llm", "chat gpt-4o-mini"),
        ("tool", "execute_tool opening_hours"),
    ]

    window = {"from": (T0 - timedelta(hours=1)).isoformat(), "to": (T0 + timedelta(hours=1)).isoformat()}
    summary = _get(f"{api}/agents/agent_support/summary", key, window)
    assert summary["total_sessions"] == 1 and summary["total_traces"] == 1
    assert (summary["success_rate"], summary["error_rate"], summary["tool_call_rate"]) == (0.0, 1.0, 1.0)
    assert (summary["total_input_tokens"], summary["total_output_tokens"]) == (145, 28)
    assert summary["avg_response_time_ms"] == 1500
    assert summary["p95_latency_ms"] == pytest.approx(1500, rel=0.01)
    assert summary["total_cost_usd"] == pytest.approx(0.00003855)
    assert summary["total_messages"] == 2


@postgres_only()
def test_racing_exports_of_one_trace_count_it_once(live_server, settings):
    """Exporters retrying while others send the rest of the trace: the requests
    take turns on the trace, and the result equals a single send."""
    settings.OTEL_MAX_CONCURRENT_REQUESTS = 8
    single, raced = _tenant("single"), _tenant("raced")
    tracer, exporter = sdk_tracer()
    for conversation in ("c1", "c2", "c3"):
        agent_turn(tracer, conversation=conversation)
    spans = list(exporter.get_finished_spans())
    _post(f"{live_server.url}/api/otel/v1/traces", single.keys["ingest"], protobuf_of(spans))

    bodies = [protobuf_of(spans[n::3]) for n in range(3)] + [protobuf_of(spans[::-1]), protobuf_of(spans[:4])]
    barrier = threading.Barrier(len(bodies))
    statuses = []

    def send(body: bytes) -> None:
        barrier.wait()
        statuses.append(_post(f"{live_server.url}/api/otel/v1/traces", raced.keys["ingest"], body))

    threads = [threading.Thread(target=send, args=(body,)) for body in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * len(bodies)
    assert Trace.objects.filter(organisation=raced.organisation).count() == 3
    assert _state(raced.organisation) == _state(single.organisation)
    assert _rebuilt(raced.organisation) == _state(single.organisation)["rollups"]


def _post(url: str, key: str, body: bytes) -> int:
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/x-protobuf"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.status
