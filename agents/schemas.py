"""Validation of ingested traces. Each item is checked on its own so that one bad
trace never costs the rest of its batch."""

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

from django.conf import settings
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    model_validator,
)

# Ids travel in URLs: letters, digits and a few separators, no slashes or spaces.
ID_PATTERN = r"^[A-Za-z0-9_.:@+=\-]+$"
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
MAX_TOKENS = 10**12
MAX_LATENCY_MS = 7 * 24 * 3600 * 1000

PublicId = Annotated[str, Field(min_length=1, max_length=200, pattern=ID_PATTERN)]
AgentId = Annotated[str, Field(min_length=1, max_length=64, pattern=ID_PATTERN)]
Tokens = Annotated[StrictInt, Field(ge=0, le=MAX_TOKENS)]
LatencyMs = Annotated[float, Field(ge=0, le=MAX_LATENCY_MS, allow_inf_nan=False)]
Money = Annotated[Decimal, Field(ge=0, le=1_000_000, allow_inf_nan=False)]


NUL_MESSAGE = "contains a NUL character, which cannot be stored"


def no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError(NUL_MESSAGE)
    return value


def nul_paths(value: Any, path: str = "") -> list[str]:
    """Where NUL characters hide in a JSON value (PostgreSQL refuses them).
    Ingestion calls this only when the raw body contains an escaped NUL."""
    found = []
    if isinstance(value, str):
        if "\x00" in value:
            found.append(path or "body")
    elif isinstance(value, dict):
        for k, v in value.items():
            key = f"{path}.{k}" if path else str(k)
            if "\x00" in str(k):
                found.append(key)
            found.extend(nul_paths(v, key))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found.extend(nul_paths(v, f"{path}.{i}" if path else str(i)))
    return found


# Length limits are checked by pydantic's core; NUL characters by nul_paths.
Text = Annotated[str, Field(max_length=settings.INGEST_MAX_TEXT_CHARS)]
ShortText = Annotated[str, Field(max_length=200)]


_latest = [0.0, EARLIEST]  # (monotonic second, now + 1 day), refreshed once a second


def _latest_allowed() -> datetime:
    tick = time.monotonic()
    if tick - _latest[0] > 1:
        _latest[:] = [tick, datetime.now(UTC) + timedelta(days=1)]
    return _latest[1]


def _utc(value: datetime) -> datetime:
    """Naive timestamps are UTC; anything outside 2000..now+1d is a client bug."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    elif value.utcoffset():
        value = value.astimezone(UTC)
    if value < EARLIEST:
        raise ValueError("is before 2000-01-01")
    if value > _latest_allowed():
        raise ValueError("is more than a day in the future")
    return value


Timestamp = Annotated[datetime, AfterValidator(_utc)]
JsonValue = Any


class StrictSchema(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class ToolCallIn(StrictSchema):
    name: ShortText = Field(min_length=1)
    arguments: JsonValue = None
    result: JsonValue = None
    latency_ms: LatencyMs | None = None
    error: Text = ""
    id: Annotated[str, Field(max_length=200)] | None = None


class StepIn(StrictSchema):
    kind: Literal["llm", "tool", "reasoning", "retrieval", "other"] = "other"
    name: ShortText = ""
    span_id: Annotated[str, Field(max_length=64)] = ""
    parent_span_id: Annotated[str, Field(max_length=64)] = ""
    started_at: Timestamp | None = None
    latency_ms: LatencyMs | None = None
    model: ShortText = ""
    input_tokens: Tokens = 0
    output_tokens: Tokens = 0
    cost_usd: Money | None = None
    input: JsonValue = None
    output: JsonValue = None
    error: Text = ""
    attributes: dict[str, JsonValue] = Field(default_factory=dict)


class TraceIn(StrictSchema):
    id: PublicId | None = None
    agent_id: AgentId
    # Name given to the agent when this trace registers it.
    agent_name: ShortText | None = None
    session_id: PublicId | None = None
    channel: Literal["chat", "voice", "widget"] | None = None
    deployment_version: Annotated[str, Field(max_length=64)] | None = None
    input: Text = ""
    reasoning: Text = ""
    output: Text = ""
    tool_calls: list[ToolCallIn] = Field(default_factory=list, max_length=1000)
    steps: list[StepIn] = Field(default_factory=list, max_length=10_000)
    model: ShortText = ""
    input_tokens: Tokens | None = None
    output_tokens: Tokens | None = None
    latency_ms: LatencyMs | None = None
    cost_usd: Money | None = None
    status: Literal["success", "error"] | None = None
    error: Text = ""
    evaluation_score: Annotated[Decimal, Field(ge=-1_000_000, le=1_000_000, allow_inf_nan=False)] | None = (
        None
    )
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    created_at: Timestamp | None = None

    @model_validator(mode="after")
    def _status_matches_error(self) -> "TraceIn":
        if self.status is None:
            failed = bool(self.error) or any(s.error for s in self.steps)
            self.status = "error" if failed else "success"
        return self


def validation_reason(exc: ValidationError) -> str:
    """One readable line per problem: ``input_tokens: must be >= 0``."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "is not a known field"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)
