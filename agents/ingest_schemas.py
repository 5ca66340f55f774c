"""Fast decoding of ingestion bodies with msgspec.

The pydantic models in ``agents.schemas`` stay the contract: they describe the
body in the OpenAPI document and word every rejection reason. The structs here
mirror their rules (at least as strictly) and decode a whole batch in C, about
ten times faster; an item they refuse, or one whose decoded values fail a rule
msgspec cannot express, is validated again by pydantic, which accepts it or
says why not. So the fast path changes speed only, never what is accepted or
what a caller is told.
"""

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec
from django.conf import settings

from .schemas import EARLIEST, MAX_LATENCY_MS, MAX_TOKENS, _latest_allowed

# Python's ``$`` also matches before a final newline; ``\Z`` does not (as pydantic's ``$``).
ID_PATTERN = r"^[A-Za-z0-9_.:@+=\-]+\Z"

PublicId = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=ID_PATTERN)]
AgentId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=ID_PATTERN)]
Tokens = Annotated[int, msgspec.Meta(ge=0, le=MAX_TOKENS)]
LatencyMs = Annotated[float, msgspec.Meta(ge=0, le=MAX_LATENCY_MS)]
Text = Annotated[str, msgspec.Meta(max_length=settings.INGEST_MAX_TEXT_CHARS)]
ShortText = Annotated[str, msgspec.Meta(max_length=200)]
Label = Annotated[str, msgspec.Meta(max_length=64)]


class ToolCallIn(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    arguments: Any = None
    result: Any = None
    latency_ms: LatencyMs | None = None
    error: Text = ""
    id: ShortText | None = None

    def as_stored(self) -> dict:
        """The tool call as the trace row keeps it (pydantic's ``model_dump(exclude_none=True)``)."""
        out: dict[str, Any] = {"name": self.name}
        if self.arguments is not None:
            out["arguments"] = self.arguments
        if self.result is not None:
            out["result"] = self.result
        if self.latency_ms is not None:
            out["latency_ms"] = self.latency_ms
        out["error"] = self.error
        if self.id is not None:
            out["id"] = self.id
        return out


class StepIn(msgspec.Struct, forbid_unknown_fields=True):
    kind: Literal["llm", "tool", "reasoning", "retrieval", "other"] = "other"
    name: ShortText = ""
    span_id: Label = ""
    parent_span_id: Label = ""
    started_at: datetime | None = None
    latency_ms: LatencyMs | None = None
    model: ShortText = ""
    input_tokens: Tokens = 0
    output_tokens: Tokens = 0
    cost_usd: Decimal | None = None
    input: Any = None
    output: Any = None
    error: Text = ""
    attributes: dict[str, Any] = msgspec.field(default_factory=dict)


class TraceIn(msgspec.Struct, forbid_unknown_fields=True):
    agent_id: AgentId
    id: PublicId | None = None
    agent_name: ShortText | None = None
    session_id: PublicId | None = None
    channel: Literal["chat", "voice", "widget"] | None = None
    deployment_version: Label | None = None
    input: Text = ""
    reasoning: Text = ""
    output: Text = ""
    tool_calls: Annotated[list[ToolCallIn], msgspec.Meta(max_length=1000)] = msgspec.field(
        default_factory=list
    )
    steps: Annotated[list[StepIn], msgspec.Meta(max_length=10_000)] = msgspec.field(default_factory=list)
    model: ShortText = ""
    input_tokens: Tokens | None = None
    output_tokens: Tokens | None = None
    latency_ms: LatencyMs | None = None
    cost_usd: Decimal | None = None
    status: Literal["success", "error"] | None = None
    error: Text = ""
    evaluation_score: Decimal | None = None
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    created_at: datetime | None = None


_decode_item = msgspec.json.Decoder(TraceIn).decode
# A batch as raw items: each is decoded on its own, so one bad item costs only itself.
_decode_batch = msgspec.json.Decoder(dict[str, list[msgspec.Raw]] | list[msgspec.Raw]).decode


def batch_raw_items(body: bytes, key: str) -> list[msgspec.Raw] | None:
    """The raw items of ``{key: [...]}`` or of a bare list, when the body is
    well-formed and shaped so; None sends the caller to the thorough parser
    (which words every problem with the body as a whole)."""
    try:
        parsed = _decode_batch(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if isinstance(parsed, dict):
        if list(parsed) != [key]:
            return None
        parsed = parsed[key]
    if not parsed or len(parsed) > settings.INGEST_MAX_BATCH:
        return None
    return parsed


def _utc(value: datetime | None) -> datetime | None:
    """As ``schemas._utc``; None when the value breaks the rule (pydantic then says why)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    elif value.utcoffset():
        value = value.astimezone(UTC)
    if value < EARLIEST or value > _latest_allowed():
        raise ValueError
    return value


def _money_ok(value: Decimal | None, low: int) -> bool:
    return value is None or (value.is_finite() and low <= value <= 1_000_000)


def trace_decode(raw: bytes | msgspec.Raw) -> TraceIn | None:
    """One trace decoded and checked with pydantic's rules, or None when
    anything is off (then pydantic validates it and words the reason)."""
    raw = bytes(raw)
    if b"\\u0000" in raw:
        return None
    try:
        trace = _decode_item(raw)
        trace.created_at = _utc(trace.created_at)
        for step in trace.steps:
            step.started_at = _utc(step.started_at)
            if not _money_ok(step.cost_usd, 0):
                return None
    except (msgspec.ValidationError, msgspec.DecodeError, ValueError, OverflowError):
        return None
    if not _money_ok(trace.cost_usd, 0) or not _money_ok(trace.evaluation_score, -1_000_000):
        return None
    if trace.status is None:
        failed = bool(trace.error) or any(s.error for s in trace.steps)
        trace.status = "error" if failed else "success"
    return trace
