"""Writes for billing: usage events, the ledger (top-ups, refunds, subscription
charges, adjustments), budgets and model prices. Each change is audited in the
same transaction; usage events are facts like traces and are not audited."""

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Sum
from django.db.models.functions import TruncHour
from django.utils import timezone
from pydantic import ValidationError

from accounts.models import Organisation
from accounts.services import organisation_save
from agents.models import Agent, Deployment, DeploymentStatus
from agents.schemas import NUL_MESSAGE, nul_paths, validation_reason
from agents.services import IngestResult, agents_resolve
from audit.services import Actor, audit_record
from metrics.rollups import USAGE_FACTS, Counted, RollupDeltas, hour_of
from thinnest_analytics.db import insert_ignore_conflicts, upsert_add
from thinnest_analytics.errors import ApiError

from .models import Budget, LedgerEntry, LedgerKind, Subscription, UsageEvent, UsageRollup
from .schemas import MAX_AMOUNT_USD, UsageEventIn
from .selectors import balance, ledger_credits

# --- usage events -------------------------------------------------------------

EVENT_FIELDS = (
    "organisation",
    "agent",
    "public_id",
    "category",
    "quantity",
    "unit",
    "cost_usd",
    "deployment_version",
    "at",
    "received_at",
)


def usage_events_record(
    *, organisation, items: Sequence[Any], actor: Actor, check_nul: bool = True
) -> IngestResult:
    """Validate and store a batch of usage events (USD, at their time ``at``) in
    one transaction, with the same rules as trace ingestion: invalid items are
    rejected with a reason, valid ones stored; an id already stored (or repeated
    in the batch) is accepted but never counted twice, also when batches race;
    unknown agents are registered (and audited). Stored events count in the
    rollups' ``other_cost_usd`` and in the per-category usage rollup."""
    result = IngestResult()
    now = timezone.now()
    valid: dict[str, UsageEventIn] = {}  # by id: the first version of an event wins
    for index, raw in enumerate(items):
        raw_id = raw.get("id") if isinstance(raw, dict) and isinstance(raw.get("id"), str) else None
        if not isinstance(raw, dict):
            result.reject(index, None, "each usage event must be a JSON object")
        elif check_nul and (where := nul_paths(raw)):
            result.reject(index, raw_id, "; ".join(f"{path}: {NUL_MESSAGE}" for path in where))
        else:
            try:
                event = UsageEventIn.model_validate(raw)
            except ValidationError as exc:
                result.reject(index, raw_id, validation_reason(exc))
                continue
            result.accepted.append(event.id)
            if event.id in valid:
                result.duplicates.append(event.id)
            else:
                event.at = event.at or now
                valid[event.id] = event
    if valid:
        with transaction.atomic():
            stored = _events_store(organisation, list(valid.values()), actor, now)
        result.stored = [eid for eid in valid if eid in stored]
        result.duplicates.extend(eid for eid in valid if eid not in stored)
    result.rejected.sort(key=lambda r: r["index"])
    return result


def _events_store(organisation, events: list[UsageEventIn], actor: Actor, now: datetime) -> set[str]:
    agents = agents_resolve(organisation=organisation, wanted={e.agent_id: "" for e in events}, actor=actor)
    versions = dict(
        Deployment.objects.filter(
            agent__in=list(agents.values()), status=DeploymentStatus.ACTIVE
        ).values_list("agent_id", "version")
    )
    rows = [
        (
            organisation.pk,
            agents[e.agent_id].pk,
            e.id,
            e.category,
            e.quantity,
            e.unit,
            e.cost_usd,
            versions.get(agents[e.agent_id].pk, ""),
            e.at,
            now,
        )
        for e in sorted(events, key=lambda e: e.id)  # one lock order for racing batches
    ]
    inserted = {
        public_id
        for (public_id,) in insert_ignore_conflicts(
            UsageEvent,
            EVENT_FIELDS,
            rows,
            conflict_fields=("organisation", "public_id"),
            returning=("public_id",),
        )
    }
    deltas = RollupDeltas()
    deltas.count(
        Counted(
            USAGE_FACTS, UsageEvent.objects.filter(organisation=organisation, public_id__in=sorted(inserted))
        )
    )
    by_category: dict[tuple, list] = defaultdict(lambda: [0, Decimal(0)])
    for org, _, public_id, category, _, _, cost, _, at, _ in rows:
        if public_id not in inserted:
            continue
        bucket = by_category[(org, category, hour_of(at.astimezone(UTC)))]
        bucket[0] += 1
        bucket[1] += cost
    deltas.apply()
    _usage_rollups_add(by_category)
    return inserted


def _usage_rollups_add(by_category: dict[tuple, list]) -> None:
    """Additive upserts into the per-category rollup, in key order."""
    rows = [(*key, events, cost) for key, (events, cost) in sorted(by_category.items())]
    upsert_add(UsageRollup, ["organisation", "category", "bucket_start"], ["events", "cost_usd"], rows)


def usage_rebuild_day(deltas: RollupDeltas, day: datetime, end: datetime, scope: dict) -> None:
    """``metrics.rebuild`` hook: add the day's usage events to the rebuilt
    rollups and recompute the day's per-category rollup from the events."""
    events = UsageEvent.objects.filter(at__gte=day, at__lt=end, **scope).annotate(
        hour=TruncHour("at", tzinfo=UTC)
    )
    deltas.count(Counted(USAGE_FACTS, UsageEvent.objects.filter(at__gte=day, at__lt=end, **scope)))
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"LOCK TABLE {UsageRollup._meta.db_table} IN SHARE ROW EXCLUSIVE MODE")
    UsageRollup.objects.filter(bucket_start__gte=day, bucket_start__lt=end, **scope).delete()
    by_category: dict[tuple, list] = {}
    for row in (
        events.values("organisation_id", "category", "hour")
        .annotate(events=Count("id"), cost=Sum("cost_usd"))
        .order_by()
    ):
        by_category[(row["organisation_id"], row["category"], row["hour"].astimezone(UTC))] = [
            row["events"],
            row["cost"],
        ]
    _usage_rollups_add(by_category)


# --- ledger -------------------------------------------------------------------


def _account_lock(organisation) -> None:
    """Billing changes of one organisation queue behind each other, so two
    refunds can never both pass the credit check. (NO KEY UPDATE: ingestion's
    foreign-key checks on the organisation row do not wait for it.)"""
    Organisation.objects.select_for_update(no_key=True).filter(pk=organisation.pk).first()


def _money(value: Decimal) -> str:
    return f"{value:.2f}"


def _exact(value: Decimal) -> str:
    """USD as exact text with at least cents: 100 → "100.00", 3.1234500000 → "3.12345"."""
    value = value.normalize()
    return f"{value.quantize(Decimal('0.01')) if value.as_tuple().exponent > -2 else value:f}"


def _entry_record(
    *, organisation, actor: Actor, action: str, kind: str, amount: Decimal, **fields
) -> LedgerEntry:
    entry = LedgerEntry.objects.create(
        organisation=organisation,
        kind=kind,
        amount_usd=amount,
        created_by=actor.user_id,
        created_at=timezone.now(),
        **fields,
    )
    details = {"kind": kind, "amount_usd": _money(amount), **{k: v for k, v in fields.items() if v}}
    details["balance_usd"] = _exact(balance(organisation=organisation))
    audit_record(
        organisation=organisation,
        actor=actor,
        action=action,
        resource_type="ledger_entry",
        resource_id=str(entry.pk),
        details=details,
    )
    return entry


def _check_amount(amount: Decimal, *, signed: bool = False, field: str = "amount_usd") -> Decimal:
    """Whole cents, not zero, at most MAX_AMOUNT_USD either way (positive unless ``signed``)."""
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise ApiError(400, "invalid_request", f"{field}: must be a decimal number of USD")
    if amount == 0 or (amount < 0 and not signed) or abs(amount) > MAX_AMOUNT_USD:
        bound = (
            f"between -{MAX_AMOUNT_USD} and {MAX_AMOUNT_USD}, not 0"
            if signed
            else f"above 0 and at most {MAX_AMOUNT_USD}"
        )
        raise ApiError(400, "invalid_request", f"{field}: must be {bound}")
    if amount != amount.quantize(Decimal("0.01")):
        raise ApiError(400, "invalid_request", f"{field}: at most 2 decimal places (whole cents)")
    return amount.quantize(Decimal("0.01"))


@transaction.atomic
def topup_record(
    *, organisation, amount_usd: Decimal, reference: str, actor: Actor, idempotency_key: str | None = None
) -> tuple[LedgerEntry, bool]:
    """Credit ``amount_usd`` (> 0, whole cents) to the organisation. With an
    ``idempotency_key`` a re-sent top-up returns the entry stored the first time
    (and False); the same key with a different amount or reference is a 409.
    Records billing.topup."""
    amount = _check_amount(amount_usd)
    _account_lock(organisation)
    if idempotency_key is not None:
        stored = LedgerEntry.objects.filter(
            organisation=organisation, idempotency_key=idempotency_key
        ).first()
        if stored is not None:
            if (stored.kind, stored.amount_usd, stored.reference) != (LedgerKind.TOPUP, amount, reference):
                raise ApiError(
                    409,
                    "idempotency_key_reused",
                    "Idempotency-Key: this key was used for a different request "
                    f"({stored.kind} of {_money(stored.amount_usd)} USD)",
                )
            return stored, False
    entry = _entry_record(
        organisation=organisation,
        actor=actor,
        action="billing.topup",
        kind=LedgerKind.TOPUP,
        amount=amount,
        reference=reference,
        idempotency_key=idempotency_key,
    )
    return entry, True


@transaction.atomic
def refund_record(*, organisation, amount_usd: Decimal, reference: str, actor: Actor) -> LedgerEntry:
    """Refund ``amount_usd`` (> 0, whole cents): a negative ledger entry. A
    refund may not exceed the credits in the ledger (the sum of its entries);
    it may exceed what is left after usage, leaving a negative balance.
    Records billing.refund."""
    amount = _check_amount(amount_usd)
    _account_lock(organisation)
    credits = ledger_credits(organisation=organisation)
    if amount > credits:
        raise ApiError(
            409,
            "refund_exceeds_credits",
            f"amount_usd: {_money(amount)} is more than the {_money(credits)} USD of credits in the ledger",
            {"credits_usd": float(credits)},
        )
    return _entry_record(
        organisation=organisation,
        actor=actor,
        action="billing.refund",
        kind=LedgerKind.REFUND,
        amount=-amount,
        reference=reference,
    )


@transaction.atomic
def adjustment_record(*, organisation, amount_usd: Decimal, reason: str, actor: Actor) -> LedgerEntry:
    """A manual correction of the balance, positive (credit) or negative
    (charge), whole cents, with the reason. Records billing.adjustment."""
    amount = _check_amount(amount_usd, signed=True)
    reason = (reason or "").strip()
    if not reason:
        raise ApiError(400, "invalid_request", "reason: say why the balance is adjusted")
    _account_lock(organisation)
    return _entry_record(
        organisation=organisation,
        actor=actor,
        action="billing.adjustment",
        kind=LedgerKind.ADJUSTMENT,
        amount=amount,
        reason=reason,
    )


def plans() -> dict[str, Decimal | None]:
    """The plans organisations subscribe to (``BILLING_PLANS``), with their price
    in USD per change (None: no charge recorded here)."""
    out: dict[str, Decimal | None] = {}
    for item in settings.BILLING_PLANS:
        name, _, price = item.partition(":")
        out[name.strip()] = Decimal(price) if price.strip() and Decimal(price) > 0 else None
    return out


@dataclass(frozen=True)
class PlanChange:
    plan: str
    previous_plan: str | None
    charge: LedgerEntry | None  # the subscription charge, when the plan has a price

    @property
    def changed(self) -> bool:
        return self.plan != self.previous_plan


@transaction.atomic
def subscription_change(*, organisation, plan: str, actor: Actor) -> PlanChange:
    """Move the organisation to ``plan``. A plan with a price is charged as a
    ledger entry. Choosing the current plan changes and records nothing.
    Records billing.subscription_change."""
    catalogue = plans()
    if plan not in catalogue:
        raise ApiError(
            400, "invalid_request", f"plan: unknown plan '{plan}'; choose from {', '.join(catalogue)}"
        )
    _account_lock(organisation)
    subscription = Subscription.objects.filter(organisation=organisation).first()
    previous = subscription.plan if subscription else None
    if previous == plan:
        return PlanChange(plan, previous, None)
    if subscription is None:
        subscription = Subscription(organisation=organisation)
    subscription.plan, subscription.changed_at = plan, timezone.now()
    subscription.save()
    charge = None
    if catalogue[plan] is not None:
        charge = LedgerEntry.objects.create(
            organisation=organisation,
            kind=LedgerKind.SUBSCRIPTION,
            amount_usd=-catalogue[plan],
            plan=plan,
            created_by=actor.user_id,
            created_at=subscription.changed_at,
        )
    audit_record(
        organisation=organisation,
        actor=actor,
        action="billing.subscription_change",
        resource_type="subscription",
        resource_id=plan,
        details={
            "plan": plan,
            "previous_plan": previous,
            "charge_usd": _money(catalogue[plan]) if charge else None,
            "ledger_entry": charge.pk if charge else None,
            "balance_usd": _exact(balance(organisation=organisation)),
        },
    )
    return PlanChange(plan, previous, charge)


# --- budgets ------------------------------------------------------------------


@transaction.atomic
def budget_set(
    *, organisation, agent: Agent | None, monthly_usd: Decimal | None, actor: Actor
) -> Budget | None:
    """Set the monthly budget (USD, whole cents) of the organisation (``agent``
    None) or of one of its agents; None removes it. Records budget.create,
    budget.update or budget.delete; a change that changes nothing records nothing."""
    if agent is not None and agent.organisation_id != organisation.pk:
        raise ApiError(404, "not_found", f"agent '{agent.public_id}' not found")
    if monthly_usd is not None:
        monthly_usd = _check_amount(monthly_usd, field="monthly_usd")
    _account_lock(organisation)
    budget = Budget.objects.filter(organisation=organisation, agent=agent).first()
    old = budget.monthly_usd if budget else None
    if old == monthly_usd:
        return budget
    if monthly_usd is None:
        budget.delete()
        action, budget = "budget.delete", None
    elif budget is None:
        budget = Budget.objects.create(organisation=organisation, agent=agent, monthly_usd=monthly_usd)
        action = "budget.create"
    else:
        budget.monthly_usd, budget.updated_at = monthly_usd, timezone.now()
        budget.save(update_fields=["monthly_usd", "updated_at"])
        action = "budget.update"
    audit_record(
        organisation=organisation,
        actor=actor,
        action=action,
        resource_type="budget",
        resource_id=agent.public_id if agent else "organisation",
        details={
            "agent_id": agent.public_id if agent else None,
            "old_monthly_usd": _money(old) if old is not None else None,
            "new_monthly_usd": _money(monthly_usd) if monthly_usd is not None else None,
        },
    )
    return budget


def billing_timezone_set(*, organisation: Organisation, timezone_name: str, actor: Actor) -> Organisation:
    """The organisation's billing time zone (an IANA name the form has checked):
    its "today" and "this month", budgets' months and the billing page's times
    follow it. Audited as organisation.update."""
    organisation.timezone = timezone_name
    return organisation_save(organisation=organisation, actor=actor)
