"""Validation of ingested traces. Each item is checked on its own so that one bad
trace never costs the rest of its batch."""

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
    field_validator,
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


def no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("contains a NUL character, which cannot be stored")
    return value


def _text_limit(value: str) -> str:
    limit = settings.INGEST_MAX_TEXT_CHARS
    if len(value) > limit:
        raise ValueError(f"is {len(value):,} characters long; the limit is {limit:,}")
    return no_nul(value)


Text = Annotated[str, AfterValidator(_text_limit)]
ShortText = Annotated[str, Field(max_length=200), AfterValidator(no_nul)]


def _utc(value: datetime) -> datetime:
    """Naive timestamps are UTC; anything outside 2000..now+1d is a client bug."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    if value < EARLIEST:
        raise ValueError("is before 2000-01-01")
    if value > datetime.now(UTC) + timedelta(days=1):
        raise ValueError("is more than a day in the future")
    return value


Timestamp = Annotated[datetime, AfterValidator(_utc)]


def _json_without_nul(value: Any) -> Any:
    """Reject NUL characters anywhere inside a JSON value (PostgreSQL refuses them)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            no_nul(item)
        elif isinstance(item, dict):
            for k, v in item.items():
                no_nul(k)
                stack.append(v)
        elif isinstance(item, list):
            stack.extend(item)
    return value


JsonValue = Annotated[Any, AfterValidator(_json_without_nul)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class ToolCallIn(_Strict):
    name: ShortText = Field(min_length=1)
    arguments: JsonValue = None
    result: JsonValue = None
    latency_ms: LatencyMs | None = None
    error: Text = ""
    id: Annotated[str, Field(max_length=200)] | None = None


class StepIn(_Strict):
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


class TraceIn(_Strict):
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

    @field_validator("deployment_version")
    @classmethod
    def _version_printable(cls, value: str | None) -> str | None:
        return no_nul(value) if value is not None else None

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
