from django.db import models
from django.utils import timezone

from audit.models import AppendOnlyError

# Credits and charges are whole cents; usage costs keep 10 decimal places.
CENTS = {"max_digits": 14, "decimal_places": 2}
USAGE_MONEY = {"max_digits": 20, "decimal_places": 10}


class LedgerKind(models.TextChoices):
    TOPUP = "topup", "Top-up"
    REFUND = "refund", "Refund"
    SUBSCRIPTION = "subscription", "Subscription charge"
    ADJUSTMENT = "adjustment", "Adjustment"


class LedgerQuerySet(models.QuerySet):
    """Entries are added and read, never rewritten or removed (a PostgreSQL
    trigger refuses as well, migration 0003)."""

    def update(self, **kwargs):
        raise AppendOnlyError("ledger entries cannot be changed")

    def bulk_update(self, objs, fields, batch_size=None):
        raise AppendOnlyError("ledger entries cannot be changed")

    def delete(self):
        raise AppendOnlyError("ledger entries cannot be deleted")

    delete.queryset_only = True


class LedgerEntry(models.Model):
    """Money in and out of an organisation's account other than usage: top-ups,
    refunds, subscription charges, manual adjustments. Credits are positive,
    refunds and charges negative. Usage is not written here: it is read from the
    rollups (see docs/billing.md), so balance = sum of entries − usage to date."""

    organisation = models.ForeignKey(
        "accounts.Organisation", on_delete=models.PROTECT, related_name="ledger_entries", db_index=False
    )
    kind = models.CharField(max_length=16, choices=LedgerKind.choices)
    amount_usd = models.DecimalField(**CENTS)
    reference = models.CharField(max_length=200, blank=True)  # the payment's or refund's reference
    reason = models.TextField(blank=True)  # why an adjustment was made
    plan = models.CharField(max_length=64, blank=True)  # the plan a subscription charge is for
    # A client's Idempotency-Key: a re-sent top-up with the same key is stored once.
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)
    created_by = models.CharField(max_length=200)  # as the audit log names the actor
    created_at = models.DateTimeField(default=timezone.now)

    objects = LedgerQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "ledger entries"
        indexes = [models.Index(fields=["organisation", "created_at"], name="ledger_org_time")]
        constraints = [
            models.UniqueConstraint(
                fields=["organisation", "idempotency_key"], name="ledger_idempotency_key"
            ),
            models.CheckConstraint(
                condition=(
                    models.Q(kind="topup", amount_usd__gt=0)
                    | models.Q(kind__in=["refund", "subscription"], amount_usd__lt=0)
                    | (models.Q(kind="adjustment") & ~models.Q(amount_usd=0))
                ),
                name="ledger_amount_sign",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount_usd} USD"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnlyError("ledger entries cannot be changed")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("ledger entries cannot be deleted")


class Subscription(models.Model):
    """The organisation's current plan; its history is in the audit log and its
    charges in the ledger."""

    organisation = models.OneToOneField(
        "accounts.Organisation", on_delete=models.CASCADE, related_name="subscription"
    )
    plan = models.CharField(max_length=64)
    changed_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.plan


class Budget(models.Model):
    """A monthly spending limit in USD for the organisation (no agent) or one agent.
    "Monthly" is the calendar month in the organisation's time zone."""

    organisation = models.ForeignKey(
        "accounts.Organisation", on_delete=models.CASCADE, related_name="budgets"
    )
    agent = models.ForeignKey(
        "agents.Agent", null=True, blank=True, on_delete=models.CASCADE, related_name="budgets"
    )
    monthly_usd = models.DecimalField(**CENTS)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organisation"], condition=models.Q(agent__isnull=True), name="budget_one_per_org"
            ),
            models.UniqueConstraint(
                fields=["organisation", "agent"],
                condition=models.Q(agent__isnull=False),
                name="budget_one_per_agent",
            ),
            models.CheckConstraint(condition=models.Q(monthly_usd__gt=0), name="budget_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.monthly_usd} USD/month"


class UsageEvent(models.Model):
    """Spend other than LLM tokens and voice minutes (scraping, …) reported by
    the agent platform. Counted in the rollups' ``other_cost_usd`` where it
    happened (``at``) and per category in ``UsageRollup``."""

    organisation = models.ForeignKey("accounts.Organisation", on_delete=models.CASCADE, db_index=False)
    agent = models.ForeignKey("agents.Agent", on_delete=models.CASCADE, related_name="+", db_index=False)
    # The caller's id for the event: re-sending it never counts it twice.
    public_id = models.CharField(max_length=200)
    category = models.CharField(max_length=64)
    quantity = models.DecimalField(max_digits=24, decimal_places=6)
    unit = models.CharField(max_length=32)
    cost_usd = models.DecimalField(**USAGE_MONEY)
    # The agent's active deployment when the event arrived, as for traces.
    deployment_version = models.CharField(max_length=64, blank=True)
    at = models.DateTimeField()
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organisation", "public_id"], name="usage_event_public_id")
        ]
        indexes = [
            models.Index(fields=["organisation", "at"], name="usage_event_org_time"),
            models.Index(fields=["agent", "at"], name="usage_event_agent_time"),
        ]

    def __str__(self) -> str:
        return self.public_id


class UsageRollup(models.Model):
    """Usage events per (organisation, category, UTC hour): the per-category
    breakdown of a month reads a few hundred rows, however many events there are."""

    organisation = models.ForeignKey(
        "accounts.Organisation", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    category = models.CharField(max_length=64)
    bucket_start = models.DateTimeField()
    events = models.BigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=24, decimal_places=10, default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organisation", "bucket_start", "category"], name="usage_rollup_key"
            )
        ]
