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
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from . import fake_openai
from .clients import scenario
from .clients.venvs import HERE, client_python
from .conftest import _tenant

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.clients]

# gpt-4o-mini in the built-in price table: USD per million input and output tokens.
PRICE_IN, PRICE_OUT = Decimal("0.15"), Decimal("0.60")


@pytest.fixture(autouse=True)
def _builtin_prices():
    """The built-in prices come from a migration; an earlier test's flush may have emptied them."""
    from django.apps import apps

    importlib.import_module("billing.migrations.0002_builtin_prices").add_prices(apps, None)


def run_client(venv: str, script: str, *args: str, server_url: str, key: str, service: str, **env) -> None:
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


def assert_plain_traces(traces: list[dict], agent_id: str) -> None:
    for trace, prompt in zip(traces, scenario.PLAIN_PROMPTS, strict=True):
        assert (trace["agent_id"], trace["status"], trace["error"]) == (agent_id, "success", "")
        assert (trace["input"], trace["output"]) == (prompt, fake_openai.plain_answer(prompt))
        assert trace["model"].startswith(fake_openai.MODEL)
        assert (trace["input_tokens"], trace["output_tokens"]) == fake_openai.PLAIN_USAGE
        assert trace["cost_usd"] == pytest.approx(cost(*fake_openai.PLAIN_USAGE))
        assert trace["cost_source"] == "price_table"
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
