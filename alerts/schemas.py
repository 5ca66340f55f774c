"""What an alert rule may say. Used by the API and the Alerts page alike."""

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, HttpUrl, field_validator, model_validator

from thinnest_analytics import outbound

Name = Annotated[str, Field(min_length=1, max_length=200)]


class WebhookTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["webhook"]
    url: HttpUrl
    secret: Annotated[str, Field(max_length=200)] | None = None
    format: Literal["json", "slack"] = "json"

    @field_validator("url")
    @classmethod
    def _public_destination(cls, url: HttpUrl) -> HttpUrl:
        """Refused when it points at this machine, a private network or a metadata
        service (checked again, on the address connected to, when sending)."""
        outbound.url_check(str(url))
        return url


class EmailTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["email"]
    to: EmailStr


Target = Annotated[WebhookTarget | EmailTarget, Field(discriminator="type")]


class AlertRuleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name
    kind: Literal["error_rate", "latency", "budget", "low_balance"]
    agent_id: Annotated[str, Field(max_length=64)] | None = None
    channel: Literal["chat", "voice", "widget"] | None = None
    threshold: Annotated[Decimal, Field(ge=0, le=10**9, allow_inf_nan=False)]
    statistic: Literal["p95", "avg"] = "p95"
    baseline_factor: Annotated[Decimal, Field(gt=0, le=1000, allow_inf_nan=False)] | None = None
    baseline_period: Literal["day", "week"] = "day"
    window_minutes: Annotated[int, Field(ge=1, le=60 * 24 * 31)] = 15
    min_conversations: Annotated[int, Field(ge=0, le=10**7)] = 10
    cooldown_minutes: Annotated[int, Field(ge=0, le=60 * 24 * 31)] = 30
    notify: Annotated[list[Target], Field(max_length=20)] = []

    @model_validator(mode="after")
    def _threshold_fits_kind(self) -> "AlertRuleIn":
        if self.kind == "error_rate" and self.threshold > 1:
            raise ValueError("an error_rate threshold is a rate between 0 and 1")
        if self.kind in ("budget", "low_balance") and self.channel:
            raise ValueError(f"a {self.kind} rule applies to spend, not to a channel")
        if self.kind == "low_balance" and self.agent_id:
            raise ValueError("the balance belongs to the organisation, not to an agent")
        return self


class AlertRulePatch(BaseModel):
    """Any subset of a rule's fields (the result is validated as a whole)."""

    model_config = ConfigDict(extra="forbid")
    name: Name | None = None
    kind: Literal["error_rate", "latency", "budget", "low_balance"] | None = None
    agent_id: Annotated[str, Field(max_length=64)] | None = None
    channel: Literal["chat", "voice", "widget"] | None = None
    threshold: Annotated[Decimal, Field(ge=0, le=10**9, allow_inf_nan=False)] | None = None
    statistic: Literal["p95", "avg"] | None = None
    baseline_factor: Annotated[Decimal, Field(gt=0, le=1000, allow_inf_nan=False)] | None = None
    baseline_period: Literal["day", "week"] | None = None
    window_minutes: Annotated[int, Field(ge=1, le=60 * 24 * 31)] | None = None
    min_conversations: Annotated[int, Field(ge=0, le=10**7)] | None = None
    cooldown_minutes: Annotated[int, Field(ge=0, le=60 * 24 * 31)] | None = None
    notify: Annotated[list[Target], Field(max_length=20)] | None = None
