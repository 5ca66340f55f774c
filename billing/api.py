"""JSON endpoints for usage and billing: usage events, the usage summary, and
the billing events the agent platform records (top-ups, refunds, adjustments,
subscription changes)."""

from datetime import date, datetime

from django.http import HttpRequest
from ninja import Field, Query, Router, Schema, Status
from pydantic import ConfigDict

from accounts.auth import admin_key, ingest_key, read_key
from agents.api import IngestOut, ingest_batch, one_or_batch
from audit.services import Actor
from thinnest_analytics.db import in_worker_thread, on_worker_thread
from thinnest_analytics.errors import ApiError
from thinnest_analytics.replica import replica_reads

from . import selectors
from .models import LedgerEntry
from .schemas import Amount, Reason, Reference, SignedAmount, UsageEventIn
from .services import (
    adjustment_record,
    refund_record,
    subscription_change,
    topup_record,
    usage_events_record,
)

router = Router(tags=["usage and billing"])


# --- usage events -------------------------------------------------------------


class UsageEventBatch(Schema):
    events: list[UsageEventIn] = Field(..., max_length=1000)


@router.post(
    "/usage/events",
    auth=ingest_key,
    summary="Record usage events (scraping, …): one or a batch of up to 1000",
    openapi_extra=one_or_batch(UsageEventIn, UsageEventBatch),
    response={200: IngestOut, 207: IngestOut},
)
async def usage_events(request: HttpRequest):
    """Valid events are stored even when others are rejected; a re-sent id is
    accepted but never counted twice. Unknown agents are registered on first
    sight. ``llm_tokens`` and ``voice_minutes`` come from traces and voice calls."""
    return await in_worker_thread(
        ingest_batch, request=request, key="events", what="usage event", ingest=usage_events_record
    )


# --- usage summary --------------------------------------------------------------


class TopAgentOut(Schema):
    agent_id: str
    name: str
    cost_usd: float


class DayOut(Schema):
    date: date
    from_: datetime = Field(..., alias="from")
    to: datetime


class MonthOut(Schema):
    month: str
    from_: datetime = Field(..., alias="from")
    to: datetime


class PeriodOut(Schema):
    today: DayOut
    this_month: MonthOut


class UsageOut(Schema):
    balance_usd: float
    usage_today_usd: float
    usage_this_month_usd: float
    top_agents_by_cost: list[TopAgentOut]
    breakdown: dict[str, float]
    timezone: str
    period: PeriodOut


class UsageParams(Schema):
    limit: int = Field(5, ge=1, le=50, description="how many top agents (1-50)")


@router.get(
    "/metrics/usage",
    auth=read_key,
    response=UsageOut,
    by_alias=True,
    summary="Balance, usage today and this month, top agents by cost, cost per category",
)
@on_worker_thread
@replica_reads
def usage_summary(request: HttpRequest, params: Query[UsageParams]):
    """USD. "Today" and "this month" follow the organisation's time zone
    (``timezone``); ``period`` gives the UTC instants they span. Top agents and
    the breakdown cover this month."""
    return selectors.usage_overview(organisation=request.organisation, limit=params.limit)


# --- billing events (scope admin) -------------------------------------------


class _Strict(Schema):
    model_config = ConfigDict(extra="forbid")


class TopUpIn(_Strict):
    amount_usd: Amount = Field(..., description='USD, > 0, whole cents, e.g. "100.00"')
    reference: Reference = Field("", description="the payment's reference")


class RefundIn(_Strict):
    amount_usd: Amount = Field(..., description="USD, > 0, at most the credits in the ledger")
    reference: Reference = ""


class AdjustmentIn(_Strict):
    amount_usd: SignedAmount = Field(..., description="USD, positive credits, negative charges")
    reason: Reason


class SubscriptionIn(_Strict):
    plan: str = Field(..., min_length=1, max_length=64)


class EntryOut(Schema):
    id: int
    kind: str
    amount_usd: float
    reference: str
    reason: str
    plan: str
    created_by: str
    created_at: datetime


class BillingEventOut(Schema):
    entry: EntryOut
    balance_usd: float
    duplicate: bool = False


class SubscriptionOut(Schema):
    plan: str
    previous_plan: str | None
    changed: bool
    charge: EntryOut | None
    balance_usd: float


def _answer(request: HttpRequest, entry: LedgerEntry, status: int = 201, duplicate: bool = False):
    body = {"entry": entry, "balance_usd": selectors.balance(organisation=request.organisation)}
    return Status(status, {**body, "duplicate": duplicate})


def _idempotency_key(request: HttpRequest) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > 200 or not key.isprintable() or not key.isascii():
        raise ApiError(400, "invalid_request", "Idempotency-Key: 1 to 200 printable ASCII characters")
    return key


@router.post(
    "/billing/topups",
    auth=admin_key,
    response={200: BillingEventOut, 201: BillingEventOut},
    summary="Record a top-up",
)
def topup(request: HttpRequest, body: TopUpIn):
    """Credits the balance; answers the entry and the new balance (201). With an
    ``Idempotency-Key`` header, a re-sent top-up answers the first one (200,
    ``duplicate``) and is stored once. Audited as billing.topup."""
    entry, created = topup_record(
        organisation=request.organisation,
        amount_usd=body.amount_usd,
        reference=body.reference,
        actor=Actor.for_request(request),
        idempotency_key=_idempotency_key(request),
    )
    return _answer(request, entry, 201 if created else 200, duplicate=not created)


@router.post("/billing/refunds", auth=admin_key, response={201: BillingEventOut}, summary="Record a refund")
def refund(request: HttpRequest, body: RefundIn):
    """A refund is at most the credits in the ledger (409 otherwise). Audited as billing.refund."""
    entry = refund_record(
        organisation=request.organisation,
        amount_usd=body.amount_usd,
        reference=body.reference,
        actor=Actor.for_request(request),
    )
    return _answer(request, entry)


@router.post(
    "/billing/adjustments",
    auth=admin_key,
    response={201: BillingEventOut},
    summary="Adjust the balance by hand, with a reason",
)
def adjustment(request: HttpRequest, body: AdjustmentIn):
    """Audited as billing.adjustment."""
    entry = adjustment_record(
        organisation=request.organisation,
        amount_usd=body.amount_usd,
        reason=body.reason,
        actor=Actor.for_request(request),
    )
    return _answer(request, entry)


@router.post(
    "/billing/subscription", auth=admin_key, response=SubscriptionOut, summary="Change the subscription plan"
)
def subscription(request: HttpRequest, body: SubscriptionIn):
    """A plan with a price is charged as a ledger entry. Choosing the current
    plan changes nothing (``changed`` false). Audited as billing.subscription_change."""
    change = subscription_change(
        organisation=request.organisation, plan=body.plan, actor=Actor.for_request(request)
    )
    return {
        "plan": change.plan,
        "previous_plan": change.previous_plan,
        "changed": change.changed,
        "charge": change.charge,
        "balance_usd": selectors.balance(organisation=request.organisation),
    }
