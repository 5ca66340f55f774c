"""Chat messages and the tool calls inside them, in every shape instrumentations
send them:

- GenAI conventions: ``{"role", "parts": [{"type": "text" | "tool_call" |
  "tool_call_response" | "reasoning", …}]}`` (JSON attributes, structured
  attributes, or the ``gen_ai.client.inference.operation.details`` event);
- OpenAI-style messages: ``{"role", "content", "tool_calls": [{"id",
  "function": {"name", "arguments"}}], "tool_call_id"}`` (the older
  ``gen_ai.*.message`` / ``gen_ai.choice`` events and log records);
- OpenInference's flattened ``llm.output_messages.<i>.message.tool_calls.<j>.tool_call.function.name``;
- OpenLLMetry's flattened ``gen_ai.completion.<i>.tool_calls.<j>.name``.

Flattened attributes are rebuilt into nested values with every level kept
(``unflatten``); the functions below read any of these shapes.
"""

import json
from typing import Any

import msgspec

# The older GenAI events (span events or log records), one per message.
INPUT_EVENT_ROLES = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}
CHOICE_EVENT = "gen_ai.choice"
DETAILS_EVENT = "gen_ai.client.inference.operation.details"


# What a JSON text can start with (Python's reader also takes NaN and Infinity).
JSON_FIRST = frozenset('{["-0123456789')
JSON_WORDS = ("true", "false", "null", "NaN", "Infinity")
JSON_SPACE = " \t\n\r"


def _may_be_json(text: str) -> bool:
    """False for text no JSON reader takes, such as most prompts and completions,
    which are then not parsed at all."""
    if text[0] in JSON_SPACE:
        text = text.lstrip(JSON_SPACE)
    return text[:1] in JSON_FIRST or text.startswith(JSON_WORDS)


_read_json = msgspec.json.Decoder().decode


def decoded(value: Any) -> Any:
    """A JSON string decoded (as ``json.loads`` reads it); anything else as it
    is. Text holding an escaped NUL character stays text: decoded, it could not
    be stored."""
    if not isinstance(value, str) or not value or not _may_be_json(value):
        return value
    if "\\u0000" not in value:
        # msgspec's reader, many times faster, gives what json.loads gives for
        # every text it reads; what it refuses (NaN, 1e400, lone surrogates,
        # deep nesting) goes to the standard reader.
        try:
            return _read_json(value)
        except (msgspec.MsgspecError, RecursionError):
            pass
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def unflatten(attributes: dict[str, Any], prefix: str) -> Any:
    """Attributes ``<prefix>.<a>.<b>…`` rebuilt into one nested value: dotted
    names become nested objects, objects whose keys are all numbers become
    lists in index order. None when no attribute has the prefix."""
    tree: dict = {}
    start = prefix + "."
    for name, value in attributes.items():
        if not name.startswith(start):
            continue
        *path, last = name[len(start) :].split(".")
        node = tree
        for key in path:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):  # "a.b" and "a.b.c" both sent: keep both
                child = node[key] = {"": child}
            node = child
        if isinstance(node.get(last), dict):
            node[last][""] = value
        else:
            node[last] = value
    return _listed(tree) if tree else None


def _listed(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    if node and all(key.isdecimal() for key in node):
        return [_listed(node[key]) for key in sorted(node, key=int)]
    return {key: _listed(value) for key, value in node.items()}


def message_of(item: Any) -> Any:
    """OpenInference wraps each flattened message in ``message``."""
    if isinstance(item, dict) and isinstance(item.get("message"), dict):
        return {**{k: v for k, v in item.items() if k != "message"}, **item["message"]}
    return item


def event_messages(events: list[dict]) -> tuple[list[dict], list[dict]]:
    """(input messages, output messages) from the older per-message GenAI events."""
    inputs, outputs = [], []
    for event in events:
        attributes = event.get("attributes") or {}
        role = INPUT_EVENT_ROLES.get(event.get("name"))
        if role is not None:
            message = {k: decoded(v) for k, v in attributes.items() if not k.startswith("gen_ai.")}
            message.setdefault("role", role)
            inputs.append(message)
        elif event.get("name") == CHOICE_EVENT:
            message = decoded(attributes.get("message"))
            message = dict(message) if isinstance(message, dict) else {}
            if not message.get("role"):
                message["role"] = "assistant"
            if "tool_calls" in attributes and "tool_calls" not in message:
                message["tool_calls"] = decoded(attributes["tool_calls"])
            outputs.append(message)
    return inputs, outputs


def _text_of(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def tool_calls_of(message: Any) -> list[dict]:
    """The tool calls a message asks for: ``{"id", "name", "arguments"}``
    (arguments decoded from JSON)."""
    if not isinstance(message, dict):
        return []
    calls = []
    parts = message.get("parts")
    if isinstance(parts, list):
        for part in parts:
            if isinstance(part, dict) and part.get("type") == "tool_call":
                calls.append(
                    {
                        "id": _text_of(part.get("id")),
                        "name": _text_of(part.get("name")),
                        "arguments": decoded(part.get("arguments")),
                    }
                )
    tool_calls = message.get("tool_calls")
    if isinstance(tool_calls, list):
        for call in tool_calls:
            if not isinstance(call, dict):
                continue
            call = call.get("tool_call", call) if isinstance(call.get("tool_call"), dict) else call
            function = call.get("function") if isinstance(call.get("function"), dict) else {}
            calls.append(
                {
                    "id": _text_of(call.get("id")),
                    "name": _text_of(function.get("name", call.get("name"))),
                    "arguments": decoded(function.get("arguments", call.get("arguments"))),
                }
            )
    return [c for c in calls if c["name"] or c["id"]]


def tool_results_of(message: Any) -> list[tuple[str, Any]]:
    """(call id, result) of the tool results a message carries: GenAI
    ``tool_call_response`` parts, or a message of role ``tool``."""
    if not isinstance(message, dict):
        return []
    results = []
    parts = message.get("parts")
    if isinstance(parts, list):
        for part in parts:
            if isinstance(part, dict) and part.get("type") == "tool_call_response":
                response = part.get("response", part.get("result"))
                results.append((_text_of(part.get("id")), decoded(response)))
    if message.get("role") == "tool" and not results:
        call_id = message.get("tool_call_id") or message.get("id")
        content = message.get("content")
        if isinstance(content, list):  # OpenInference: contents of a tool message
            content = "".join(
                p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
            )
        if call_id:
            results.append((_text_of(call_id), decoded(content)))
    return [(call_id, result) for call_id, result in results if call_id]
