"""Validation of usage events and billing requests. Usage events are checked
one by one, like traces, so one bad event never costs the rest of its batch."""

from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, ConfigDict, Field
from pydantic import BaseModel as PydanticModel

from agents.schemas import AgentId, PublicId, Timestamp, no_nul

# The largest single top-up, refund or adjustment.
MAX_AMOUNT_USD = Decimal(1_000_000)
# Categories that are not reported as usage events: they come from traces and voice calls.
RECORDED_ELSEWHERE = {
    "llm_tokens": "is recorded from traces' token costs (POST /api/traces)",
    "voice_minutes": "is recorded from voice calls when they end",
}
CATEGORY_PATTERN = r"^[a-z][a-z0-9_-]*$"


def _category_allowed(value: str) -> str:
    if value in RECORDED_ELSEWHERE:
        raise ValueError(f"'{value}' {RECORDED_ELSEWHERE[value]}, not as a usage event")
    return value


Category = Annotated[
    str, Field(min_length=1, max_length=64, pattern=CATEGORY_PATTERN), AfterValidator(_category_allowed)
]


class UsageEventIn(PydanticModel):
    model_config = ConfigDict(extra="forbid")

    id: PublicId = Field(description="idempotency key: an id already stored is never counted twice")
    agent_id: AgentId
    category: Category = Field(description="a slug such as scraping: lowercase letters, digits, _ and -")
    quantity: Annotated[Decimal, Field(ge=0, le=10**15, decimal_places=6, allow_inf_nan=False)]
    unit: Annotated[str, Field(min_length=1, max_length=32), AfterValidator(no_nul)]
    cost_usd: Annotated[Decimal, Field(ge=0, le=1_000_000, decimal_places=10, allow_inf_nan=False)]
    at: Timestamp | None = Field(None, description="when the usage happened; default now")


# Amounts of money a person or the billing platform enters: whole cents.
Amount = Annotated[Decimal, Field(gt=0, le=MAX_AMOUNT_USD, decimal_places=2, allow_inf_nan=False)]
SignedAmount = Annotated[
    Decimal, Field(ge=-MAX_AMOUNT_USD, le=MAX_AMOUNT_USD, decimal_places=2, allow_inf_nan=False)
]
Reference = Annotated[str, Field(max_length=200), AfterValidator(no_nul)]
Reason = Annotated[str, Field(min_length=1, max_length=2000), AfterValidator(no_nul)]
