"""OpenTelemetry traffic for the upgrade check (tests/test_partition_upgrade.py):
a few hundred GenAI traces over several days, as the OTLP JSON requests an
instrumented agent would send, and the late spans that reopen some of them
once they are compacted. The same ``start`` gives the same requests."""

import json
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .otlp import any_value, attribute, json_export, json_span, ns

MS = 1_000_000
TRACES_PATH = "/api/otel/v1/traces"
LOGS_PATH = "/api/otel/v1/logs"
TRACES_PER_REQUEST = 25
# OTLP span flags: the SDK says whether the parent lives in another process.
PARENT_IS_LOCAL = 0x100
PARENT_IS_REMOTE = 0x300
AGENTS = (("agent_otel_concierge", "Concierge"), ("agent_otel_triage", "Triage Desk"))
QUESTIONS = (
    ("Where is my parcel? Order #4711 was due on Monday.", "It left the warehouse this morning; Thursday."),
    ("Können Sie meine Rechnung für März noch einmal schicken?", "Die Rechnung für März ist unterwegs."),
    ("I'd like to move my booking from the 12th to the 14th, please.", "Done: you are booked for the 14th."),
    ("¿Cuál es el horario de atención los sábados?", "Los sábados abrimos de 9 a 13 h."),
    ("The app logs me out every few minutes since the update.", "Please update to 4.2.1, which fixes it."),
)
TOOLS = ("lookup_order", "send_invoice", "move_booking", "opening_hours")


@dataclass
class Traffic:
    """The requests, in order: ``first`` before compaction, ``late`` after it
    (each ``{"path", "body"}``), and the traces the late ones reopen."""

    first: list[dict] = field(default_factory=list)
    late: list[dict] = field(default_factory=list)
    reopened: list[str] = field(default_factory=list)


def _hex(rng: random.Random, digits: int) -> str:
    return f"{rng.getrandbits(digits * 4):0{digits}x}"


def _messages(role: str, text: str, **extra) -> str:
    return json.dumps([{"role": role, "parts": [{"type": "text", "content": text}], **extra}])


def _record(trace_id: str, span_id: str, event: str, body: dict, at_ns: int) -> dict:
    return {
        "timeUnixNano": str(at_ns),
        "traceId": trace_id,
        "spanId": span_id,
        "eventName": event,
        "attributes": [attribute("gen_ai.system", "openai")],
        "body": any_value(body),
    }


def _spans_request(spans: list[tuple[str, dict]]) -> dict:
    """One export of ``(service, span)`` pairs, the spans of each service under its resource."""
    services = sorted({service for service, _ in spans})
    resources = [
        json_export([s for of, s in spans if of == service], service)["resourceSpans"] for service in services
    ]
    return {"path": TRACES_PATH, "body": {"resourceSpans": [r for rs in resources for r in rs]}}


def _logs_request(records: list[tuple[str, dict]]) -> dict:
    """One export of ``(service, log record)`` pairs, grouped by service like the spans."""
    services = sorted({service for service, _ in records})
    return {
        "path": LOGS_PATH,
        "body": {
            "resourceLogs": [
                {
                    "resource": {"attributes": [attribute("service.name", service)]},
                    "scopeLogs": [
                        {
                            "scope": {"name": "opentelemetry.instrumentation.openai_v2"},
                            "logRecords": [r for of, r in records if of == service],
                        }
                    ],
                }
                for service in services
            ]
        },
    }


@dataclass
class Turn:
    """One agent reply's spans (and GenAI log records), by kind of instrumentation."""

    trace_id: str
    root: dict
    children: list[dict]
    records: list[dict]
    service: str
    # The root comes in a later request than its children, or never.
    root_late: bool = False
    root_missing: bool = False


def _turn(i: int, at: datetime, version: str) -> Turn:
    rng = random.Random(f"otel-upgrade:{i}")
    trace_id = _hex(rng, 32)
    agent_id, agent_name = AGENTS[i % 2]
    question, answer = QUESTIONS[rng.randrange(len(QUESTIONS))]
    t = ns(at)
    length = rng.randrange(800, 4000)
    root_id = _hex(rng, 16)
    kind = i % 10
    root = json_span(
        trace_id,
        root_id,
        f"invoke_agent {agent_name}",
        t,
        t + length * MS,
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.id": agent_id,
            "gen_ai.agent.name": agent_name,
            "gen_ai.agent.version": version,
            # Three replies of one agent a conversation, minutes apart.
            "gen_ai.conversation.id": f"otel-conversation-{i % 2}-{i // 6}",
            "user.id": f"user-{rng.randrange(40)}",
        },
    )
    chat = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": rng.randrange(40, 900),
        "gen_ai.usage.output_tokens": rng.randrange(5, 200),
        "gen_ai.response.finish_reasons": ["stop"],
        "llm.temperature": 0.2,
        "llm.streaming": bool(i % 3),
    }
    chat_id = _hex(rng, 16)
    records = []
    if kind == 7:
        # openai-v2 in its event mode: the messages come as log records, not on the span.
        records = [
            _record(trace_id, chat_id, "gen_ai.user.message", {"content": question}, t + 50 * MS),
            _record(
                trace_id,
                chat_id,
                "gen_ai.choice",
                {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": answer}},
                t + (length - 100) * MS,
            ),
        ]
    elif kind == 6:
        chat |= {"gen_ai.prompt": question, "gen_ai.completion": answer}
    else:
        chat |= {
            "gen_ai.input.messages": _messages("user", question),
            "gen_ai.output.messages": _messages("assistant", answer, finish_reason="stop"),
        }
    children = [
        json_span(
            trace_id,
            chat_id,
            "chat gpt-4o-mini",
            t + 50 * MS,
            t + (length - 100) * MS,
            root_id,
            attributes=chat,
        )
    ]
    if rng.random() < 0.5:
        tool = TOOLS[rng.randrange(len(TOOLS))]
        call_id = f"call_{_hex(rng, 8)}"
        attributes = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": tool,
            "gen_ai.tool.call.id": call_id,
            "gen_ai.tool.call.arguments": json.dumps({"query": question[:20], "limit": rng.randrange(1, 9)}),
        }
        fields = {}
        if rng.random() < 0.3:
            attributes["error.type"] = "TimeoutError"
            fields["status"] = {"code": 2, "message": f"{tool} did not answer in time"}
            fields["events"] = [
                {
                    "timeUnixNano": str(t + 30 * MS),
                    "name": "exception",
                    "attributes": [
                        attribute("exception.type", "TimeoutError"),
                        attribute("exception.message", f"{tool} timed out after 5 s"),
                    ],
                }
            ]
        else:
            attributes["gen_ai.tool.call.result"] = json.dumps(
                {"ok": True, "answer": answer}, ensure_ascii=False
            )
        children.append(
            json_span(
                trace_id,
                _hex(rng, 16),
                f"execute_tool {tool}",
                t + 10 * MS,
                t + 40 * MS,
                chat_id,
                attributes=attributes,
                **fields,
            )
        )
    if kind == 9:
        # The agent was called by another service: its root's parent is remote.
        root["parentSpanId"] = _hex(rng, 16)
        root["flags"] = PARENT_IS_REMOTE
    for child in children:
        child["flags"] = PARENT_IS_LOCAL
    return Turn(
        trace_id,
        root,
        children,
        records,
        service=f"{agent_id.removeprefix('agent_')}-service",
        root_late=kind in (4, 9),
        root_missing=kind == 8,
    )


def traffic(*, start: datetime, days: int, traces: int) -> Traffic:
    """``traces`` replies spread over ``days`` from ``start`` (by version v2,
    then v3), in requests of ``TRACES_PER_REQUEST`` traces; a late root comes
    one request after its children; one reply in ten never gets its root (its
    trace is never derived)."""
    turns = []
    for i in range(traces):
        day = (i // 6) % days
        at = start + timedelta(days=day, hours=(5 * (i // 6)) % 24, minutes=2 * (i % 6), seconds=i % 7)
        # As in the demo: v3 replaces v2 a few days in (the version comparisons read both).
        turns.append(_turn(i, at, "v2" if day < days // 2 else "v3"))
    out = Traffic()
    late_roots: list[tuple[str, dict]] = []
    for first in range(0, traces, TRACES_PER_REQUEST):
        group = turns[first : first + TRACES_PER_REQUEST]
        spans = [*late_roots]
        late_roots = []
        for turn in group:
            spans += [(turn.service, span) for span in turn.children]
            if turn.root_late:
                late_roots.append((turn.service, turn.root))
            elif not turn.root_missing:
                spans.append((turn.service, turn.root))
        out.first.append(_spans_request(spans))
        records = [(turn.service, r) for turn in group for r in turn.records]
        if records:
            out.first.append(_logs_request(records))
    if late_roots:
        out.first.append(_spans_request(late_roots))
    # After compaction: a late tool span for a few derived traces, the root of a
    # trace that had none, and one more log record.
    for turn in turns[3::37][:6]:
        root = turn.root
        span = json_span(
            turn.trace_id,
            "00000000000000fe",
            "execute_tool audit_log",
            int(root["startTimeUnixNano"]) + 5 * MS,
            int(root["startTimeUnixNano"]) + 9 * MS,
            root["spanId"],
            attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "audit_log"},
            flags=PARENT_IS_LOCAL,
        )
        out.late.append(_spans_request([(turn.service, span)]))
        out.reopened.append(turn.trace_id)
    rootless = next(turn for turn in turns if turn.root_missing)
    out.late.append(_spans_request([(rootless.service, rootless.root)]))
    out.reopened.append(rootless.trace_id)
    logged = next(turn for turn in turns if turn.records and turn.trace_id not in out.reopened)
    chat_id = logged.children[0]["spanId"]
    record = _record(
        logged.trace_id,
        chat_id,
        "gen_ai.system.message",
        {"content": "You are helpful."},
        int(logged.children[0]["startTimeUnixNano"]),
    )
    out.late.append(_logs_request([(logged.service, record)]))
    out.reopened.append(logged.trace_id)
    return out
