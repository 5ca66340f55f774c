"""Racing OTLP exports on PostgreSQL: the spans of the same traces split over
requests that arrive at once (children in one, their agent spans in another,
re-sends in others) end up as the same traces, conversations and rollups as
one request carrying them all."""

import io
import json
from functools import partial

import pytest

from otel.models import ReceivedSpan, ReceivedTrace

from .conftest import _tenant, postgres_only, race
from .otlp import T0, json_export, json_span, ns
from .test_otel_split import _rebuilt, _state

pytestmark = [postgres_only(), pytest.mark.django_db(transaction=True)]

TRACES = 12


def _spans() -> dict[str, list[dict]]:
    """Per kind (agent, chat, tool), one span of each of TRACES traces, in two conversations."""
    out: dict[str, list[dict]] = {"agent": [], "chat": [], "tool": []}
    m = 1_000_000
    for n in range(TRACES):
        trace_id = f"{n + 1:032x}"
        root = f"{n + 1:014x}a1"
        t = ns(T0, n * 60_000)
        out["agent"].append(
            json_span(
                trace_id,
                root,
                "invoke_agent",
                t,
                t + 1500 * m,
                attributes={
                    "gen_ai.operation.name": "invoke_agent",
                    "gen_ai.agent.id": "agent_support",
                    "gen_ai.conversation.id": f"conv-{n % 2}",
                },
            )
        )
        out["chat"].append(
            json_span(
                trace_id,
                f"{n + 1:014x}a2",
                "chat",
                t + 100 * m,
                t + 900 * m,
                parent=root,
                attributes={
                    "gen_ai.operation.name": "chat",
                    "gen_ai.request.model": "gpt-4o-mini",
                    "gen_ai.usage.input_tokens": 100 + n,
                    "gen_ai.usage.output_tokens": 10,
                },
            )
        )
        out["tool"].append(
            json_span(
                trace_id,
                f"{n + 1:014x}a3",
                "execute_tool lookup",
                t + 950 * m,
                t + 1000 * m,
                parent=root,
                attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup"}
                | ({"error.type": "KeyError"} if n % 5 == 0 else {}),
            )
        )
    return out


def _post(url: str, key: str, spans: list[dict]) -> int:
    import urllib.request

    request = urllib.request.Request(
        url,
        data=json.dumps(json_export(spans)).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        body = json.loads(response.read())
        assert "partialSuccess" not in body or not body["partialSuccess"].get("rejectedSpans"), body
        return response.status


def test_a_trace_split_over_racing_requests_is_derived_as_if_sent_at_once(live_server):
    url = f"{live_server.url}/api/otel/v1/traces"
    spans = _spans()
    everything = spans["agent"] + spans["chat"] + spans["tool"]
    at_once = _tenant("otel-at-once")
    assert _post(url, at_once.keys["ingest"], everything) == 200

    split = _tenant("otel-split")
    key = split.keys["ingest"]
    requests = [
        spans["chat"] + spans["tool"],  # the children, before or after their agent spans
        spans["agent"],
        spans["tool"][::-1] + spans["agent"][:4],  # re-sends, in another order
        spans["chat"][TRACES // 2 :],
    ]
    assert race([partial(_post, url, key, body) for body in requests]) == [200] * len(requests)

    assert _state(split.organisation) == _state(at_once.organisation)
    assert ReceivedSpan.objects.filter(organisation=split.organisation).count() == 3 * TRACES
    received = ReceivedTrace.objects.filter(organisation=split.organisation)
    assert sorted(received.values_list("span_count", "derived")) == [(3, True)] * TRACES
    assert _rebuilt(split.organisation) == _state(at_once.organisation)["rollups"]


def _compact_passes(passes: int) -> int:
    """Compaction passes of every trace, one after another, as beat and an operator might run them."""
    from django.core.management import call_command
    from django.db import connection

    try:
        for _ in range(passes):
            call_command("compact_spans", "--older-than", "0", "--batch-size", "3", stdout=io.StringIO())
    finally:
        connection.close()
    return 200


def test_spans_racing_compaction_make_the_same_traces_and_lose_no_span(live_server):
    """Late spans arrive while their traces are compacted: whichever comes
    first, each trace ends up as if its spans had come at once, with all of
    them kept, as rows (reopened) or packed."""
    url = f"{live_server.url}/api/otel/v1/traces"
    spans = _spans()
    at_once = _tenant("otel-at-once")
    assert _post(url, at_once.keys["ingest"], spans["agent"] + spans["chat"] + spans["tool"]) == 200

    late = _tenant("otel-late")
    key = late.keys["ingest"]
    assert _post(url, key, spans["agent"] + spans["chat"]) == 200

    def one_by_one(tools: list[dict]) -> int:
        return max(_post(url, key, [span]) for span in tools)

    calls = [
        partial(one_by_one, spans["tool"][0::2]),
        partial(one_by_one, spans["tool"][1::2][::-1]),
        partial(_compact_passes, 6),
    ]
    assert race(calls) == [200] * len(calls)

    assert _state(late.organisation) == _state(at_once.organisation)
    received = ReceivedTrace.objects.filter(organisation=late.organisation)
    assert sorted(received.values_list("span_count", flat=True)) == [3] * TRACES
    _compact_passes(1)
    reader = late.api("read")
    for n in range(TRACES):
        read = reader.get(f"/api/traces/otel-{n + 1:032x}/spans").json()["spans"]
        assert [s["name"] for s in read] == ["invoke_agent", "chat", "execute_tool lookup"]
