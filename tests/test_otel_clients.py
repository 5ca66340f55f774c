"""Real OpenTelemetry instrumentations from PyPI, as a user turns them on, against
a live server on loopback (``/api/otel``) and a fake OpenAI-compatible model
server: each runs a few plain calls, one tool round trip and one failed call,
and what the API shows is compared with what was sent.

The clients run in virtualenvs of their own (``tests/clients/venvs.py``;
installed once, then cached), each as a subprocess with nothing but the
standard environment variables pointing it here."""

import importlib
import json
import os
import subprocess
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.utils import timezone

from . import fake_openai
from .clients import scenario
from .clients.venvs import HERE, client_python
from .conftest import _tenant, post_json

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.clients]

FIXTURES = Path(__file__).resolve().parent / "fixtures"
# gpt-4o-mini in the built-in price table: USD per million input and output tokens.
PRICE_IN, PRICE_OUT = Decimal("0.15"), Decimal("0.60")


@pytest.fixture(autouse=True)
def _builtin_prices():
    """The built-in prices come from a migration; an earlier test's flush may have emptied them.
    The migration names the price model by the app that held it then (billing), now pricing's."""
    from pricing.models import ModelPrice

    registry = SimpleNamespace(get_model=lambda app_label, model_name: ModelPrice)
    importlib.import_module("billing.migrations.0002_builtin_prices").add_prices(registry, None)


def run_client(venv: str, script: str, *args: str, server_url: str, key: str, service: str, **env) -> str:
    """Run a client script in its virtualenv, configured by environment variables only."""
    python = client_python(venv)
    with fake_openai.FakeOpenAI() as model:
        environment = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", "/tmp"),
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"{server_url}/api/otel",
            "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Bearer {key}",
            "OTEL_SERVICE_NAME": service,
            "OPENAI_BASE_URL": model.base_url,
            "OPENAI_API_KEY": "sk-test",
            **env,
        }
        done = subprocess.run(
            [str(python), str(HERE / script), *args],
            cwd=HERE,
            env=environment,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done.stdout + done.stderr


def api_get(server_url: str, key: str, path: str, **params) -> dict:
    url = f"{server_url}/api{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def traces_of(server_url: str, key: str, agent_id: str) -> list[dict]:
    """Every trace of the agent, oldest first, each with its details."""
    page = api_get(server_url, key, f"/agents/{agent_id}/traces", limit=100)
    return [api_get(server_url, key, f"/traces/{t['id']}") for t in reversed(page["traces"])]


def summary_of(server_url: str, key: str, agent_id: str) -> dict:
    now = timezone.now()
    window = {"from": (now - timedelta(hours=1)).isoformat(), "to": (now + timedelta(hours=1)).isoformat()}
    return api_get(server_url, key, f"/agents/{agent_id}/summary", **window)


def cost(input_tokens: int, output_tokens: int) -> float:
    return float((input_tokens * PRICE_IN + output_tokens * PRICE_OUT) / 1_000_000)


def assert_plain_traces(traces: list[dict], agent_id: str, cost_source: str = "price_table") -> None:
    for trace, prompt in zip(traces, scenario.PLAIN_PROMPTS, strict=True):
        assert (trace["agent_id"], trace["status"], trace["error"]) == (agent_id, "success", "")
        assert (trace["input"], trace["output"]) == (prompt, fake_openai.plain_answer(prompt))
        assert trace["model"].startswith(fake_openai.MODEL)
        assert (trace["input_tokens"], trace["output_tokens"]) == fake_openai.PLAIN_USAGE
        assert trace["cost_usd"] == pytest.approx(cost(*fake_openai.PLAIN_USAGE))
        assert trace["cost_source"] == cost_source
        assert trace["tool_calls"] == []
        llm_steps = [s for s in trace["steps"] if s["kind"] == "llm"]
        assert len(llm_steps) == 1 and 0 < llm_steps[0]["latency_ms"] <= trace["latency_ms"]


def assert_tool_call(call: dict) -> None:
    assert call["name"] == scenario.TOOL_NAME
    assert call["arguments"] == fake_openai.TOOL_ARGUMENTS
    assert call["result"] == scenario.TOOL_RESULT
    assert call["id"] == fake_openai.TOOL_CALL_ID


def assert_failed_trace(trace: dict) -> None:
    assert trace["status"] == "error" and trace["error"]
    assert trace["input"] == scenario.FAILING_PROMPT
    assert trace["output"] == "" and trace["model"] == fake_openai.MODEL
    assert (trace["input_tokens"], trace["output_tokens"], trace["cost_usd"]) == (0, 0, 0)
    assert trace["cost_source"] == "price_table"


def assert_summary(summary: dict, *, traces: int, with_tools: int, messages: int, failed: int) -> None:
    usages = [fake_openai.PLAIN_USAGE] * 3 + [fake_openai.TOOL_CALL_USAGE, fake_openai.AFTER_TOOL_USAGE]
    tokens_in, tokens_out = sum(u[0] for u in usages), sum(u[1] for u in usages)
    assert summary["total_traces"] == traces and summary["total_sessions"] == traces
    assert summary["tool_call_rate"] == pytest.approx(with_tools / traces)
    assert summary["total_messages"] == messages
    assert (summary["total_input_tokens"], summary["total_output_tokens"]) == (tokens_in, tokens_out)
    assert summary["total_cost_usd"] == pytest.approx(cost(tokens_in, tokens_out))
    assert summary["error_rate"] == pytest.approx(failed / traces)


# --- the OpenAI SDK with openai-v2 (the official GenAI instrumentation) ------------------

# openai-v2 2.4 speaks only the latest GenAI conventions (its older per-message
# log events are covered with hand-written records in test_otel_logs.py).
OPENAI_V2_MODES = {
    # gen_ai.input.messages / gen_ai.output.messages on the span.
    "span attributes": {
        "OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental",
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "SPAN_ONLY",
    },
    # The messages in one gen_ai.client.inference.operation.details log record per call.
    "log records": {
        "OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental",
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "EVENT_ONLY",
    },
}


@pytest.mark.parametrize("mode", OPENAI_V2_MODES)
def test_openai_v2_reports_every_field_of_plain_tool_and_failed_calls(live_server, mode):
    tenant, agent_id = _tenant("openai-v2"), "agent_openai_v2"
    run_client(
        "genai",
        "openai_sdk_client.py",
        "openai-v2",
        server_url=live_server.url,
        key=tenant.keys["ingest"],
        service=agent_id,
        **OPENAI_V2_MODES[mode],
    )
    key = tenant.keys["read"]
    traces = traces_of(live_server.url, key, agent_id)
    assert len(traces) == 6  # each request is a trace of its own
    assert_plain_traces(traces[:3], agent_id)

    asked, answered, failed = traces[3:]
    assert (asked["input"], asked["output"]) == (scenario.TOOL_PROMPT, "")
    assert (asked["input_tokens"], asked["output_tokens"]) == fake_openai.TOOL_CALL_USAGE
    assert len(asked["tool_calls"]) == 1
    assert_tool_call(asked["tool_calls"][0])  # its result came with the next request
    assert (answered["input"], answered["output"]) == (scenario.TOOL_PROMPT, fake_openai.AFTER_TOOL_TEXT)
    assert answered["tool_calls"] == []  # the same call, counted once
    assert_failed_trace(failed)

    summary = summary_of(live_server.url, key, agent_id)
    assert_summary(summary, traces=6, with_tools=1, messages=6 + 4, failed=1)


# --- the OpenAI SDK with OpenInference --------------------------------------------------


def test_openinference_reports_every_field_of_plain_tool_and_failed_calls(live_server):
    tenant, agent_id = _tenant("openinference"), "agent_openinference"
    run_client(
        "genai",
        "openai_sdk_client.py",
        "openinference",
        server_url=live_server.url,
        key=tenant.keys["ingest"],
        service=agent_id,
    )
    key = tenant.keys["read"]
    traces = traces_of(live_server.url, key, agent_id)
    assert len(traces) == 6
    assert_plain_traces(traces[:3], agent_id)

    asked, answered, failed = traces[3:]
    assert (asked["input"], asked["output"]) == (scenario.TOOL_PROMPT, "")
    assert (asked["input_tokens"], asked["output_tokens"]) == fake_openai.TOOL_CALL_USAGE
    assert len(asked["tool_calls"]) == 1
    assert_tool_call(asked["tool_calls"][0])
    step_output = asked["steps"][0]["output"]  # the assistant message keeps its tool calls
    assert step_output[0]["tool_calls"][0]["tool_call"]["function"]["name"] == scenario.TOOL_NAME
    assert (answered["input"], answered["output"]) == (scenario.TOOL_PROMPT, fake_openai.AFTER_TOOL_TEXT)
    assert answered["tool_calls"] == []
    assert_failed_trace(failed)  # its model is only in llm.invocation_parameters

    summary = summary_of(live_server.url, key, agent_id)
    assert_summary(summary, traces=6, with_tools=1, messages=6 + 4, failed=1)


# --- pydantic-ai's own instrumentation ---------------------------------------------------


def test_pydantic_ai_reports_every_field_of_plain_tool_and_failed_runs(live_server):
    tenant = _tenant("pydantic-ai")
    run_client(
        "genai",
        "pydantic_ai_client.py",
        server_url=live_server.url,
        key=tenant.keys["ingest"],
        service="pydantic-service",
    )
    key = tenant.keys["read"]
    chats, weather = traces_of(live_server.url, key, "support"), traces_of(live_server.url, key, "weather")
    assert len(chats) == 4 and len(weather) == 1  # an agent run is one trace
    assert_plain_traces(chats[:3], "support", cost_source="reported")  # operation.cost

    (run,) = weather
    assert (run["input"], run["output"]) == (scenario.TOOL_PROMPT, fake_openai.AFTER_TOOL_TEXT)
    usages = (fake_openai.TOOL_CALL_USAGE, fake_openai.AFTER_TOOL_USAGE)
    assert (run["input_tokens"], run["output_tokens"]) == tuple(map(sum, zip(*usages, strict=True)))
    assert len(run["tool_calls"]) == 1
    assert_tool_call(run["tool_calls"][0])
    assert [s["kind"] for s in run["steps"]] == ["llm", "tool", "llm"]
    assert_failed_trace(chats[3])  # its prompt is only in pydantic_ai.all_messages

    for agent_id, runs, with_tools, failed in (("support", 4, 0, 1), ("weather", 1, 1, 0)):
        summary = summary_of(live_server.url, key, agent_id)
        assert summary["total_sessions"] == runs and summary["error_rate"] == failed / runs
        assert summary["tool_call_rate"] == with_tools / runs
    assert sum(summary_of(live_server.url, key, a)["total_messages"] for a in ("support", "weather")) == 5 + 4


# --- OpenLLMetry (traceloop-sdk) ------------------------------------------------------------


def test_openllmetry_reports_every_field_of_plain_tool_and_failed_calls(live_server):
    tenant, agent_id = _tenant("openllmetry"), "agent_openllmetry"
    output = run_client(
        "traceloop",
        "traceloop_client.py",
        server_url=live_server.url,
        key=tenant.keys["ingest"],
        service=agent_id,
        TRACELOOP_BASE_URL=f"{live_server.url}/api/otel",
        TRACELOOP_HEADERS=f"Authorization=Bearer {tenant.keys['ingest']}",
        TRACELOOP_TRACE_CONTENT="true",
    )
    assert "Failed to export" not in output  # traces, and metrics to /v1/metrics, all accepted
    key = tenant.keys["read"]
    traces = traces_of(live_server.url, key, agent_id)
    assert len(traces) == 5  # the tool round trip runs inside one workflow
    assert_plain_traces(traces[:3], agent_id)

    workflow, failed = traces[3:]
    assert (workflow["input"], workflow["output"]) == (scenario.TOOL_PROMPT, fake_openai.AFTER_TOOL_TEXT)
    usages = (fake_openai.TOOL_CALL_USAGE, fake_openai.AFTER_TOOL_USAGE)
    assert (workflow["input_tokens"], workflow["output_tokens"]) == tuple(map(sum, zip(*usages, strict=True)))
    assert len(workflow["tool_calls"]) == 1  # the response's tool call and the tool span are one call
    call = workflow["tool_calls"][0]
    assert_tool_call(call)
    assert call["latency_ms"] is not None  # from the tool span
    assert [s["kind"] for s in workflow["steps"]] == ["llm", "tool", "llm"]
    assert_failed_trace(failed)

    summary = summary_of(live_server.url, key, agent_id)
    assert_summary(summary, traces=5, with_tools=1, messages=5 + 4, failed=1)


# --- Pipecat's tracing: a voice call --------------------------------------------------------


def _at(ns: int) -> str:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ns // 1000)).isoformat()


def voice_events_of(spans: list[dict], agent_id: str) -> list[dict]:
    """The call events a Pipecat bot would post itself, read from its spans as
    received: the conversation span is the call, each turn span with Pipecat's
    user-to-bot latency a turn."""
    (conversation,) = [s for s in spans if s["name"] == "conversation"]
    call_id = conversation["attributes"]["conversation.id"]
    events = [
        {
            "type": "call.started",
            "call_id": call_id,
            "agent_id": agent_id,
            "at": _at(conversation["start_ns"]),
        }
    ]
    for span in spans:
        if span["name"] == "turn" and "turn.user_bot_latency_seconds" in span["attributes"]:
            events.append(
                {
                    "type": "call.turn",
                    "call_id": call_id,
                    "at": _at(span["end_ns"]),
                    "voice_latency_ms": span["attributes"]["turn.user_bot_latency_seconds"] * 1000,
                    "interrupted": span["attributes"]["turn.was_interrupted"],
                }
            )
    seconds = (conversation["end_ns"] - conversation["start_ns"]) / 1e9
    events.append(
        {
            "type": "call.ended",
            "call_id": call_id,
            "at": _at(conversation["end_ns"]),
            "duration_s": seconds,
            "status": "completed",
        }
    )
    return events


def test_a_pipecat_bots_conversation_is_the_call_its_own_events_would_make(live_server):
    bot, reporter, agent_id = _tenant("pipecat"), _tenant("voice-events"), "agent_pipecat"
    run_client(
        "pipecat",
        "pipecat_client.py",
        server_url=live_server.url,
        key=bot.keys["ingest"],
        service=agent_id,
        CALL_ID="call-pipecat-1",
    )
    now = timezone.now()
    window = {"from": (now - timedelta(hours=1)).isoformat(), "to": (now + timedelta(hours=1)).isoformat()}
    metrics = api_get(live_server.url, bot.keys["read"], f"/agents/{agent_id}/voice", **window)
    assert (metrics["active_calls"], metrics["calls_ended"], metrics["turns"]) == (0, 1, 3)
    assert (metrics["interrupted_turns"], metrics["transcription_accuracy"]) == (1, None)
    assert metrics["voice_cost_usd"] > 0 and metrics["avg_voice_latency_ms"] > 0

    (trace,) = traces_of(live_server.url, bot.keys["read"], agent_id)
    assert (trace["channel"], trace["session_id"]) == ("voice", "call-pipecat-1")
    assert trace["input"] == scenario.UTTERANCES[0]
    assert trace["output"] == fake_openai.plain_answer(scenario.UTTERANCES[-1])
    assert trace["model"] == fake_openai.MODEL and trace["status"] == "success"
    assert (trace["input_tokens"], trace["output_tokens"]) == (3 * 21, 3 * 7)
    assert trace["cost_usd"] == pytest.approx(cost(3 * 21, 3 * 7))
    summary = summary_of(live_server.url, bot.keys["read"], agent_id)
    assert summary["total_cost_usd"] == pytest.approx(cost(3 * 21, 3 * 7) + metrics["voice_cost_usd"])
    assert summary["voice_minutes"] == pytest.approx(metrics["voice_minutes"])
    spans = api_get(live_server.url, bot.keys["read"], f"/traces/{trace['id']}/spans")["spans"]
    if os.environ.get("RECORD_OTEL_FIXTURES"):  # the fast voice tests replay this call
        FIXTURES.mkdir(exist_ok=True)
        (FIXTURES / "pipecat_call.json").write_text(json.dumps(spans, indent=1, sort_keys=True) + "\n")
    events = voice_events_of(spans, agent_id)
    status, answer = post_json(
        f"{live_server.url}/api/voice/events", reporter.keys["ingest"], {"events": events}
    )
    assert status == 200, answer
    assert api_get(live_server.url, reporter.keys["read"], f"/agents/{agent_id}/voice", **window) == metrics
