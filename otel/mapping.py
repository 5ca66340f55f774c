"""From the spans of one OpenTelemetry trace to one trace of the product: its
agent, conversation, channel and version, its steps (LLM calls, tool calls,
retrievals), tokens, cost, latency and errors.

The attribute names come from the OpenTelemetry GenAI semantic conventions,
their older names, and OpenInference; each tuple below lists them in the order
they are read (the first one present wins). ``docs/otel.md`` has the same table.
The result depends only on the set of spans, never on the order they arrived in.
"""

import json
import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings

from agents.models import CostSource, StepKind
from pricing.prices import PriceTable

from . import voice
from .messages import (
    DETAILS_EVENT,
    decoded,
    event_messages,
    message_of,
    tool_calls_of,
    tool_results_of,
    unflatten,
)
from .otlp import SpanIn

AGENT_ID = ("gen_ai.agent.id",)
AGENT_NAME = ("gen_ai.agent.name", "agent.name")
CONVERSATION_ID = ("gen_ai.conversation.id", "session.id", "conversation.id")
USER_ID = ("user.id", "enduser.id")
CHANNEL = ("thinnest.channel",)
AGENT_VERSION = ("gen_ai.agent.version",)
SERVICE_VERSION = ("service.version",)
MODEL = ("gen_ai.response.model", "gen_ai.request.model", "llm.model_name")
# OpenInference names the requested model only here (a JSON string), so a failed call has it nowhere else.
INVOCATION_PARAMETERS = "llm.invocation_parameters"
INPUT_TOKENS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt")
OUTPUT_TOKENS = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.token_count.completion")
COST = ("gen_ai.usage.cost", "llm.cost.total", "operation.cost")
TOOL_NAME = ("gen_ai.tool.name", "tool.name", "traceloop.entity.name")
TOOL_CALL_ID = ("gen_ai.tool.call.id", "tool_call.id")
TOOL_ARGUMENTS = ("gen_ai.tool.call.arguments", "tool_arguments", "traceloop.entity.input", "input.value")
TOOL_RESULT = ("gen_ai.tool.call.result", "tool_response", "traceloop.entity.output", "output.value")
INPUT_MESSAGES = ("gen_ai.input.messages", "llm.input_messages", "gen_ai.prompt")
OUTPUT_MESSAGES = ("gen_ai.output.messages", "llm.output_messages", "gen_ai.completion")
# Pipecat's LLM spans: the messages (JSON) and the reply's text.
PLAIN_INPUT, PLAIN_OUTPUT = "input", "output"
# A whole conversation on an agent span (pydantic-ai): the input when no chat span has one.
CONVERSATION_MESSAGES = ("pydantic_ai.all_messages", "all_messages_events")
ERROR_TYPE = "error.type"

# gen_ai.operation.name values, and what other conventions call them.
LLM_OPERATIONS = {"chat", "text_completion", "generate_content", "embeddings"}
AGENT_OPERATIONS = {"invoke_agent", "create_agent", "invoke_workflow"}
OPENINFERENCE_KINDS = {
    "LLM": "chat",
    "EMBEDDING": "embeddings",
    "TOOL": "execute_tool",
    "AGENT": "invoke_agent",
    "RETRIEVER": "retrieval",
    "CHAIN": "chain",
    "RERANKER": "rerank",
    "GUARDRAIL": "guardrail",
    "EVALUATOR": "evaluate",
}
TRACELOOP_KINDS = {
    "workflow": "invoke_workflow",
    "agent": "invoke_agent",
    "tool": "execute_tool",
    "task": "task",
}
TRACELOOP_REQUEST_TYPES = {"chat": "chat", "completion": "text_completion", "embedding": "embeddings"}
KNOWN_OPERATIONS = LLM_OPERATIONS | AGENT_OPERATIONS | {"execute_tool", "retrieval"}
CHANNELS = ("chat", "voice", "widget")
# Attributes already carried by a step's input and output are not repeated in its attributes.
CONTENT_PREFIXES = (
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
    "gen_ai.prompt",
    "gen_ai.completion",
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
    "input.value",
    "output.value",
    "llm.input_messages",
    "llm.output_messages",
    "tool_arguments",
    "tool_response",
    "traceloop.entity.input",
    "traceloop.entity.output",
    "pydantic_ai.all_messages",
    "all_messages_events",
    "input",
    "output",
)
PUBLIC_ID_CHARS = re.compile(r"[^A-Za-z0-9_.:@+=\-]+")
MONEY_PLACES = Decimal("1E-10")
MAX_TOKENS = 10**12
MAX_STEPS = 10_000


def public_id_of(trace_id: str) -> str:
    """The product's id of an OpenTelemetry trace."""
    return f"otel-{trace_id}"


@dataclass
class Draft:
    """A trace derived from its spans, before agents and conversations are resolved."""

    trace_id: str
    agent_id: str
    agent_name: str
    session_id: str | None
    channel: str
    deployment_version: str | None
    created_at: datetime
    latency_ms: int
    input: str
    output: str
    reasoning: str
    status: str
    error: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal | None
    cost_source: str
    tool_calls: list[dict] = field(default_factory=list)
    steps: list[dict] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)
    # Results of tool calls made in another trace (each request its own trace):
    # by call id; kept in ``metadata["tool_results"]`` for that trace to find.
    tool_results: dict[str, Any] = field(default_factory=dict)

    def calls_awaiting_results(self) -> set[str]:
        """Ids of the tool calls whose result is not known yet."""
        return {c["id"] for c in self.tool_calls if c.get("id") and c.get("result") is None}

    @property
    def public_id(self) -> str:
        return public_id_of(self.trace_id)


# --- reading attributes ----------------------------------------------------------


def _first(span: SpanIn, names: tuple[str, ...]) -> Any:
    """The first of ``names`` the span has, other than None, "", [] or {}."""
    attributes = span.attributes
    for name in names:
        value = attributes.get(name)
        # Attribute values are JSON values: of the empty ones, only numbers
        # (0, 0.0, False) count as present.
        if value or (value is not None and value.__class__ in _NUMBERS):
            return value
    return None


_NUMBERS = (int, float, bool)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _short(value: Any, limit: int) -> str:
    return _text(value).strip()[:limit]


def _public_id(value: Any, limit: int) -> str:
    """An id usable in URLs: characters outside letters, digits and ``_ . : @ + = -``
    become ``_``."""
    return PUBLIC_ID_CHARS.sub("_", _text(value).strip())[:limit]


def _count(value: Any) -> int | None:
    """A token count from an int, an integral float or a numeric string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        value = value.strip()
        if not value.isdecimal() or len(value) > 13:
            return None
        value = int(value)
    if isinstance(value, float):
        if not value.is_integer():
            return None
        value = int(value)
    if isinstance(value, int) and 0 <= value <= MAX_TOKENS:
        return value
    return None


def _money(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    if not amount.is_finite() or not 0 <= amount <= 1_000_000:
        return None
    return amount.quantize(MONEY_PLACES)


_json = decoded
# Where ``SpanIn.read`` keeps the span's attribute names, joined.
_NAMES = "names"


def _flattened(span: SpanIn, prefix: str) -> list | None:
    """Messages flattened into ``<prefix>.<i>.…`` attributes (OpenInference's
    ``llm.input_messages.0.message.tool_calls.0.tool_call.function.name``, the
    older ``gen_ai.prompt.0.content``), every level kept."""
    read = span.read
    names = read.get(_NAMES)
    if names is None:
        names = read[_NAMES] = "\x00" + "\x00".join(span.attributes)
    # A scan of the names in one call; ``unflatten`` checks each match.
    if f"\x00{prefix}." not in names:
        return None
    value = unflatten(span.attributes, prefix)
    if isinstance(value, list):
        return [message_of(item) for item in value]
    return None


def _messages(span: SpanIn, names: tuple[str, ...]) -> Any:
    """Messages as a JSON string or a structured value, or flattened attributes.
    Read once per span: a trace asks for a span's messages several times."""
    read = span.read
    if names in read:
        return read[names]
    found = None
    for name in names:
        value = span.attributes.get(name)
        if value not in (None, "", []):
            found = _json(value)
            break
        flattened = _flattened(span, name)
        if flattened:
            found = flattened
            break
    read[names] = found
    return found


def _parts_text(message: dict, kinds: tuple[str, ...] = ("text",)) -> list[str]:
    """The text of a message: GenAI ``parts`` of the given types, else ``content``."""
    texts = []
    parts = message.get("parts")
    if isinstance(parts, list):
        for part in parts:
            if isinstance(part, dict) and part.get("type") in kinds and isinstance(part.get("content"), str):
                texts.append(part["content"])
        return texts
    if kinds != ("text",):
        return texts
    content = message.get("content")
    if content in (None, "") and isinstance(message.get("contents"), list):  # OpenInference
        content = [c.get("message_content", c) for c in message["contents"] if isinstance(c, dict)]
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
    return texts


def _messages_text(messages: Any, role: str | None, *, last_only: bool, kinds=("text",)) -> str:
    """Text of the messages with ``role`` (any role when None): the last one, or all."""
    if isinstance(messages, str):
        return messages if kinds == ("text",) else ""
    if not isinstance(messages, list):
        return ""
    found = [
        "\n".join(_parts_text(m, kinds))
        for m in messages
        if isinstance(m, dict) and (role is None or m.get("role") in (role, None))
    ]
    found = [text for text in found if text]
    if not found:
        return ""
    return found[-1] if last_only else "\n".join(found)


def _value_text(value: Any) -> str:
    """``input.value``/``output.value``: plain text, or JSON whose message or only
    string value is the text."""
    decoded = _json(value)
    if isinstance(decoded, str):
        return decoded
    if isinstance(decoded, dict):
        if isinstance(decoded.get("messages"), list):
            text = _messages_text(decoded["messages"], None, last_only=True)
            if text:
                return text
        strings = [v for v in decoded.values() if isinstance(v, str)]
        if len(strings) == 1:
            return strings[0]
    return _text(value)


def _span_input_text(span: SpanIn) -> str:
    messages = _messages(span, INPUT_MESSAGES)
    if messages is not None:
        text = _messages_text(messages, "user", last_only=True)
        if text:
            return text
    value = span.attributes.get("input.value")
    if value not in (None, ""):
        return _value_text(value)
    messages = _plain_messages(span, "input")
    if messages is not None:
        return _messages_text(messages, "user", last_only=True)
    conversation = _messages(span, CONVERSATION_MESSAGES)
    return _messages_text(conversation, "user", last_only=True) if conversation is not None else ""


def _span_output_text(span: SpanIn) -> str:
    messages = _messages(span, OUTPUT_MESSAGES)
    if messages is not None:
        # Messages that hold only tool calls answer no text: the raw response
        # in output.value is no answer either.
        return _messages_text(messages, "assistant", last_only=False)
    value = span.attributes.get("output.value")
    if value in (None, "") and isinstance(span.attributes.get(PLAIN_OUTPUT), str):
        value = span.attributes[PLAIN_OUTPUT]
    return _value_text(value) if value not in (None, "") else ""


def _plain_messages(span: SpanIn, name: str) -> list | None:
    """Pipecat's LLM spans: the request's messages as a JSON list in ``input``."""
    value = _json(span.attributes.get(name))
    return value if isinstance(value, list) and all(isinstance(m, dict) for m in value) else None


def with_events_read(span: SpanIn) -> SpanIn:
    """The span with the messages its events (or the log records attached to
    it) carry, as attributes when the span has none of its own: the
    ``gen_ai.client.inference.operation.details`` event's messages, and the
    older one-event-per-message ``gen_ai.*.message`` / ``gen_ai.choice``."""
    if not span.events:
        return span
    attributes = dict(span.attributes)
    for event in span.events:
        if event.get("name") == DETAILS_EVENT:
            for name, value in (event.get("attributes") or {}).items():
                attributes.setdefault(name, value)
    inputs, outputs = event_messages(span.events)
    if inputs and _messages(span, INPUT_MESSAGES) is None and "gen_ai.input.messages" not in attributes:
        attributes["gen_ai.input.messages"] = inputs
    if outputs and _messages(span, OUTPUT_MESSAGES) is None and "gen_ai.output.messages" not in attributes:
        attributes["gen_ai.output.messages"] = outputs
    return replace(span, attributes=attributes)


def _span_reasoning(span: SpanIn) -> str:
    messages = _messages(span, OUTPUT_MESSAGES)
    return _messages_text(messages, None, last_only=False, kinds=("reasoning", "thinking"))


def operation_of(span: SpanIn) -> str | None:
    """The GenAI operation a span performs (``chat``, ``execute_tool``, …) or None
    for a span that is no GenAI operation (an HTTP call, a database query)."""
    operation = span.attributes.get("gen_ai.operation.name")
    if isinstance(operation, str) and operation:
        return operation
    kind = span.attributes.get("openinference.span.kind")
    if isinstance(kind, str) and kind.upper() in OPENINFERENCE_KINDS:
        return OPENINFERENCE_KINDS[kind.upper()]
    kind = span.attributes.get("traceloop.span.kind")
    if isinstance(kind, str) and kind in TRACELOOP_KINDS:
        return TRACELOOP_KINDS[kind]
    request_type = span.attributes.get("llm.request.type")
    if isinstance(request_type, str) and request_type in TRACELOOP_REQUEST_TYPES:
        return TRACELOOP_REQUEST_TYPES[request_type]
    first_word = span.name.split(" ", 1)[0]
    if first_word in KNOWN_OPERATIONS:
        return first_word
    if _first(span, MODEL) is not None or _first(span, INPUT_TOKENS) is not None:
        return "chat"
    return None


def step_kind(operation: str | None) -> str | None:
    if operation in LLM_OPERATIONS:
        return StepKind.LLM
    if operation == "execute_tool":
        return StepKind.TOOL
    if operation == "retrieval":
        return StepKind.RETRIEVAL
    if operation is not None:
        return StepKind.OTHER
    return None


def failure_of(span: SpanIn) -> str | None:
    """Why a span failed (status ERROR or ``error.type``), or None."""
    error_type = span.attributes.get(ERROR_TYPE)
    if span.status_code != 2 and error_type in (None, ""):
        return None
    message = span.status_message
    if not message:
        for event in span.events:
            if event["name"] == "exception":
                message = _text(event["attributes"].get("exception.message")) or _text(
                    event["attributes"].get("exception.type")
                )
                if message:
                    break
    return message or _text(error_type) or "error"


def _duration_ms(span: SpanIn) -> int:
    return (span.end_ns - span.start_ns + 500_000) // 1_000_000


# --- the trace ---------------------------------------------------------------------


def has_local_root(spans: list[SpanIn]) -> bool:
    """Whether the first span of the agent's process has arrived: one without a
    parent, or whose parent lives in another process. Until then the trace is
    not derived (its spans wait), so a trace whose children are exported before
    their parent never shows a partial agent or conversation. A span whose SDK
    does not say where its missing parent lives counts as a root."""
    ids = {s.span_id for s in spans}
    return any(
        not s.parent_span_id or s.parent_is_remote is not False and s.parent_span_id not in ids for s in spans
    )


def _order(span: SpanIn) -> tuple[int, str]:
    return (span.start_ns, span.span_id)


def _agent_span(ordered: list[SpanIn], operations: dict[str, str | None]) -> SpanIn:
    """The span that stands for the whole trace: a voice framework's call span
    (LiveKit's agent turns are ``invoke_agent`` spans inside it), else the
    outermost ``invoke_agent`` span, else the root (the earliest span whose
    parent did not arrive). ``ordered``: the trace's spans sorted by ``_order``,
    so the first that qualifies is the earliest."""
    call = voice.call_span(ordered)
    if call is not None:
        return call
    by_id = {s.span_id: s for s in ordered}

    def outermost_agent(span: SpanIn) -> bool:
        if operations[span.span_id] != "invoke_agent":
            return False
        parent = by_id.get(span.parent_span_id)
        seen = set()
        while parent is not None and parent.span_id not in seen:
            if operations[parent.span_id] == "invoke_agent":
                return False
            seen.add(parent.span_id)
            parent = by_id.get(parent.parent_span_id)
        return True

    for span in ordered:
        if outermost_agent(span):
            return span
    for span in ordered:
        if span.parent_span_id not in by_id:
            return span
    return ordered[0]


def _in_priority(ordered: list[SpanIn], top: SpanIn, names: tuple[str, ...]) -> Any:
    """The first of ``names`` on the agent span, then on the other spans in
    start order (``ordered``: the trace's spans sorted by ``_order``)."""
    value = _first(top, names)
    if value is not None:
        return value
    for span in ordered:
        if span is not top:
            value = _first(span, names)
            if value is not None:
                return value
    return None


def _agent(ordered: list[SpanIn], top: SpanIn) -> tuple[str, str]:
    """(agent id, agent name): ``gen_ai.agent.id``, else an id made from
    ``gen_ai.agent.name``, else from the resource's ``service.name``."""
    name = _short(_in_priority(ordered, top, AGENT_NAME), 200)
    agent_id = _public_id(_in_priority(ordered, top, AGENT_ID), 64)
    if not agent_id and name:
        agent_id = _public_id(name.lower().replace(" ", "-"), 64)
    if not agent_id:
        service = _short(top.resource.get("service.name"), 200) or "unknown_service"
        agent_id = _public_id(service, 64)
        name = name or service
    return agent_id, name or agent_id


def trace_agent(spans: list[SpanIn]) -> tuple[str, str]:
    """(agent id, agent name) of a trace's spans, as ``trace_draft`` finds them."""
    operations = {s.span_id: operation_of(s) for s in spans}
    ordered = sorted(spans, key=_order)
    return _agent(ordered, _agent_span(ordered, operations))


def _channel(ordered: list[SpanIn], top: SpanIn, is_voice: bool) -> str:
    if is_voice:
        return "voice"
    value = _in_priority(ordered, top, CHANNEL)
    if value is None:
        value = _first_resource(top, CHANNEL)
    return value if value in CHANNELS else "chat"


def _first_resource(span: SpanIn, names: tuple[str, ...]) -> Any:
    for name in names:
        value = span.resource.get(name)
        if value not in (None, ""):
            return value
    return None


def _model(span: SpanIn) -> str:
    """The span's model: its GenAI or OpenInference model attribute, else the
    ``model`` of OpenInference's ``llm.invocation_parameters``."""
    model = _first(span, MODEL)
    if model is None:
        parameters = _json(span.attributes.get(INVOCATION_PARAMETERS))
        if isinstance(parameters, dict):
            model = parameters.get("model") or parameters.get("model_name")
    return _short(model, 200)


def _tool_arguments(span: SpanIn) -> Any:
    """A tool span's arguments; OpenLLMetry's ``{"args": [...], "kwargs": {...}}``
    becomes the keyword arguments (or the positional ones when there are no others)."""
    arguments = _json(_first(span, TOOL_ARGUMENTS))
    if isinstance(arguments, dict) and set(arguments) == {"args", "kwargs"}:
        args, kwargs = arguments["args"], arguments["kwargs"]
        if not args:
            return kwargs
        if not kwargs:
            return args
    return arguments


def _step(span: SpanIn, kind: str, operation: str, prices: PriceTable) -> dict:
    model = _model(span)
    input_tokens = _count(_first(span, INPUT_TOKENS)) or 0
    output_tokens = _count(_first(span, OUTPUT_TOKENS)) or 0
    cost = _money(_first(span, COST))
    reported = cost is not None
    if cost is None and kind == StepKind.LLM and model:
        cost = prices.cost(model, input_tokens, output_tokens, span.started_at)
        cost = cost.quantize(MONEY_PLACES) if cost is not None else None
    if kind == StepKind.TOOL:
        step_input, step_output = _tool_arguments(span), _json(_first(span, TOOL_RESULT))
    else:
        step_input = (
            _messages(span, INPUT_MESSAGES)
            or _json(span.attributes.get("input.value"))
            or _plain_messages(span, PLAIN_INPUT)
        )
        step_output = _messages(span, OUTPUT_MESSAGES) or _json(span.attributes.get("output.value"))
        if step_output is None and kind == StepKind.LLM:
            step_output = span.attributes.get(PLAIN_OUTPUT)
    attributes = {"operation": operation}
    for name, value in span.attributes.items():
        if not name.startswith(CONTENT_PREFIXES) and name != "gen_ai.operation.name":
            attributes[name] = value
    return {
        "kind": kind,
        "operation": operation,
        "name": span.name[:200],
        "span_id": span.span_id,
        "parent_span_id": span.parent_span_id,
        "started_at": span.started_at,
        "latency_ms": _duration_ms(span),
        "model": model,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cost_usd": cost,
        "cost_reported": reported,
        "input": step_input,
        "output": step_output,
        "error": failure_of(span) or "",
        "attributes": attributes,
    }


def _tool_call(span: SpanIn, step: dict) -> dict:
    name = _short(_first(span, TOOL_NAME), 200)
    if not name:
        name = span.name.removeprefix("execute_tool").strip()[:200] or "tool"
    call = {
        "name": name,
        "arguments": step["input"],
        "result": step["output"],
        "latency_ms": (span.end_ns - span.start_ns) / 1_000_000,
        "error": step["error"],
    }
    call_id = _short(_first(span, TOOL_CALL_ID), 200)
    if call_id:
        call["id"] = call_id
    return call


def _listed_messages(value: Any) -> list:
    if isinstance(value, dict):
        return [value]
    return value if isinstance(value, list) else []


def _tool_calls_merged(
    span_calls: list[tuple[SpanIn, dict]], llm_spans: list[SpanIn]
) -> tuple[list[dict], dict[str, Any]]:
    """The trace's tool calls, each once, from every shape that describes them:
    tool spans, and the calls LLM responses ask for (``tool_call`` parts,
    ``tool_calls`` of a message), with their results from the tool messages of
    the next requests (``tool_call_response`` parts, ``tool`` messages),
    matched by call id. A call asked for in a response and run in a tool span
    is one call: matched by id, else by name (the first tool span of that name
    started after the request). In time order; with the results whose call is
    not in these spans (it was made in an earlier trace)."""
    timed = [(span.start_ns, call) for span, call in span_calls]
    by_id = {call["id"]: call for _, call in timed if call.get("id")}
    unmatched = [(span, call) for span, call in span_calls if not call.get("id")]
    results: dict[str, Any] = {}
    for span in llm_spans:
        for message in _listed_messages(_messages(span, INPUT_MESSAGES)):
            for call_id, result in tool_results_of(message):
                results.setdefault(call_id, result)
    for span in llm_spans:
        for message in _listed_messages(_messages(span, OUTPUT_MESSAGES)):
            for asked in tool_calls_of(message):
                call = by_id.get(asked["id"]) if asked["id"] else None
                if call is None:
                    found = next(
                        (
                            (tool_span, c)
                            for tool_span, c in unmatched
                            if c["name"] == asked["name"] and tool_span.start_ns >= span.start_ns
                        ),
                        None,
                    )
                    if found is not None:
                        unmatched.remove(found)
                        call = found[1]
                if call is None:
                    call = {
                        "name": asked["name"][:200] or "tool",
                        "arguments": asked["arguments"],
                        "result": None,
                        "latency_ms": None,
                        "error": "",
                    }
                    timed.append((span.end_ns, call))
                if call.get("arguments") is None:
                    call["arguments"] = asked["arguments"]
                if asked["id"] and not call.get("id"):
                    call["id"] = asked["id"][:200]
                if call.get("id"):
                    by_id[call["id"]] = call
    for _, call in timed:
        if call.get("result") is None and call.get("id") in results:
            call["result"] = results[call["id"]]
    elsewhere = {call_id: result for call_id, result in results.items() if call_id not in by_id}
    return [call for _, call in sorted(timed, key=lambda pair: pair[0])], elsewhere


def _cost(top: SpanIn, llm_steps: list[dict], prices: PriceTable, model: str, tokens: tuple[int, int]):
    """(cost in USD, source): the steps' reported costs, else the price table's;
    unpriced when an LLM call with tokens has neither."""
    if not llm_steps:
        reported = _money(_first(top, COST))
        if reported is not None:
            return reported, CostSource.REPORTED
        if not model:
            return (None, CostSource.UNPRICED) if any(tokens) else (Decimal(0), CostSource.PRICE_TABLE)
        cost = prices.cost(model, *tokens, top.started_at)
        if cost is None:
            return None, CostSource.UNPRICED
        return cost.quantize(MONEY_PLACES), CostSource.PRICE_TABLE
    total = Decimal(0)
    for step in llm_steps:
        if step["cost_usd"] is None:
            if step["input_tokens"] or step["output_tokens"]:
                return None, CostSource.UNPRICED
            continue
        total += step["cost_usd"]
    costed = [s for s in llm_steps if s["cost_usd"] is not None]
    all_reported = bool(costed) and all(s["cost_reported"] for s in costed)
    return total, CostSource.REPORTED if all_reported else CostSource.PRICE_TABLE


def trace_draft(spans: list[SpanIn], prices: PriceTable) -> Draft | None:
    """The trace the spans describe, or None while its local root is missing."""
    if not spans or not has_local_root(spans):
        return None
    spans = [with_events_read(s) for s in spans]
    operations = {s.span_id: operation_of(s) for s in spans}
    ordered = sorted(spans, key=_order)
    top = _agent_span(ordered, operations)
    steps, span_calls, llm_steps, llm_spans = [], [], [], []
    for span in ordered:
        kind = step_kind(operations[span.span_id])
        if kind is None or (span is top and kind == StepKind.OTHER):
            continue
        step = _step(span, kind, operations[span.span_id], prices)
        steps.append(step)
        if kind == StepKind.TOOL:
            span_calls.append((span, _tool_call(span, step)))
        elif kind == StepKind.LLM:
            llm_steps.append(step)
            llm_spans.append(span)
        if len(steps) == MAX_STEPS:
            break
    tool_calls, tool_results = _tool_calls_merged(span_calls, llm_spans)

    if llm_steps:
        model = next((s["model"] for s in llm_steps if s["model"]), "")
        tokens = (sum(s["input_tokens"] for s in llm_steps), sum(s["output_tokens"] for s in llm_steps))
    else:
        model = _model(top)
        tokens = (_count(_first(top, INPUT_TOKENS)) or 0, _count(_first(top, OUTPUT_TOKENS)) or 0)
    cost, cost_source = _cost(top, llm_steps, prices, model, tokens)

    text_limit = settings.INGEST_MAX_TEXT_CHARS
    input_text = _span_input_text(top) or next((t for t in (_span_input_text(s) for s in llm_spans) if t), "")
    output_text = _span_output_text(top) or next(
        (t for t in (_span_output_text(s) for s in reversed(llm_spans)) if t), ""
    )
    reasoning = "\n".join(r for r in (_span_reasoning(s) for s in llm_spans) if r)

    top_failure = failure_of(top)
    failed_steps = [s for s in steps if s["error"]]
    error = top_failure or (f"{failed_steps[0]['name']}: {failed_steps[0]['error']}" if failed_steps else "")

    version = _in_priority(ordered, top, AGENT_VERSION) or _first_resource(top, SERVICE_VERSION)
    session = _public_id(_in_priority(ordered, top, CONVERSATION_ID), 200)
    is_voice = voice.is_voice(spans)
    if is_voice:  # the call's conversation
        session = voice.conversation_id_of(spans, top.trace_id)
    user = _short(_in_priority(ordered, top, USER_ID) or _first_resource(top, USER_ID), 200)
    service = _short(top.resource.get("service.name"), 200)
    agent_id, agent_name = _agent(ordered, top)
    metadata = {"source": "opentelemetry", "otel_trace_id": top.trace_id}
    if service:
        metadata["service_name"] = service
    if user:
        metadata["user_id"] = user
    if tool_results:
        metadata["tool_results"] = tool_results

    return Draft(
        trace_id=top.trace_id,
        agent_id=agent_id,
        agent_name=agent_name,
        session_id=session or None,
        channel=_channel(ordered, top, is_voice),
        deployment_version=_short(version, 64) if version is not None else None,
        created_at=top.started_at,
        latency_ms=_duration_ms(top),
        input=input_text[:text_limit],
        output=output_text[:text_limit],
        reasoning=reasoning[:text_limit],
        status="error" if top_failure or failed_steps else "success",
        error=error[:text_limit],
        model=model,
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        cost_usd=cost,
        cost_source=cost_source,
        tool_calls=tool_calls,
        steps=steps,
        metadata=metadata,
        tool_results=tool_results,
    )
