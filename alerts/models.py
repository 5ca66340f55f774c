import uuid

from django.db import models
from django.utils import timezone


class Kind(models.TextChoices):
    ERROR_RATE = "error_rate"  # threshold: a rate 0..1
    LATENCY = "latency"  # threshold: milliseconds
    BUDGET = "budget"  # threshold: percent of the monthly budget
    LOW_BALANCE = "low_balance"  # threshold: USD


class State(models.TextChoices):
    OK = "ok"
    FIRING = "firing"


class AlertRule(models.Model):
    organisation = models.ForeignKey(
        "accounts.Organisation", on_delete=models.CASCADE, related_name="alert_rules"
    )
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    agent = models.ForeignKey(
        "agents.Agent", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    channel = models.CharField(max_length=16, blank=True)
    threshold = models.DecimalField(max_digits=18, decimal_places=6)
    # latency: which statistic ("p95" or "avg"); error_rate: optional baseline
    statistic = models.CharField(max_length=8, default="p95")
    baseline_factor = models.DecimalField(max_digits=8, decimal_places=3, null=True, blank=True)
    baseline_period = models.CharField(max_length=8, default="day")  # "day" or "week"
    window_minutes = models.PositiveIntegerField(default=15)
    min_conversations = models.PositiveIntegerField(default=10)
    cooldown_minutes = models.PositiveIntegerField(default=30)
    muted_until = models.DateTimeField(null=True, blank=True)
    notify = models.JSONField(default=list, blank=True)  # [{"type": "webhook"|"email", ...}]
    # Evaluation state; changed only by a conditional UPDATE that names the version.
    state = models.CharField(max_length=8, choices=State.choices, default=State.OK)
    state_version = models.PositiveIntegerField(default=0)
    state_changed_at = models.DateTimeField(null=True, blank=True)
    last_fired_at = models.DateTimeField(null=True, blank=True)
    last_value = models.DecimalField(max_digits=24, decimal_places=6, null=True, blank=True)
    last_evaluated_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name", "pk"]
        indexes = [models.Index(fields=["organisation", "state"], name="alertrule_org_state")]

    def __str__(self) -> str:
        return self.name

    def is_muted(self, now) -> bool:
        return self.muted_until is not None and self.muted_until > now


class AlertEvent(models.Model):
    """A rule's transition: it started firing, or it resolved."""

    organisation = models.ForeignKey("accounts.Organisation", on_delete=models.CASCADE, related_name="+")
    rule = models.ForeignKey(AlertRule, null=True, on_delete=models.SET_NULL, related_name="events")
    rule_name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    agent_id_label = models.CharField(max_length=64, blank=True)
    state = models.CharField(max_length=8)  # "firing", "resolved" or "test"
    value = models.DecimalField(max_digits=24, decimal_places=6, null=True, blank=True)
    threshold = models.DecimalField(max_digits=18, decimal_places=6)
    window_minutes = models.PositiveIntegerField()
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-at", "-pk"]
        indexes = [models.Index(fields=["organisation", "-at"], name="alertevent_org_time")]


class Delivery(models.TextChoices):
    PENDING = "pending"
    SENDING = "sending"  # claimed by a worker until lease_until
    SENT = "sent"
    FAILED = "failed"


class Notification(models.Model):
    """One message about one event to one channel, sent by a Celery task.

    A worker claims it (status ``sending``, a lease) with a conditional UPDATE
    before sending, so two workers never send it at the same time; a worker
    that dies mid-send leaves the lease to expire, and the next attempt sends
    it again with the same ``delivery_id``, which receivers use to drop the copy."""

    event = models.ForeignKey(AlertEvent, on_delete=models.CASCADE, related_name="notifications")
    channel = models.CharField(max_length=16)  # "email" or "webhook"
    target = models.CharField(max_length=1000)
    config = models.JSONField(default=dict, blank=True)  # format, secret
    delivery_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    status = models.CharField(max_length=8, choices=Delivery.choices, default=Delivery.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    # When the next attempt is due (null once sent or given up); the sweep
    # re-enqueues notifications overdue by more than its interval.
    next_attempt_at = models.DateTimeField(null=True, blank=True, default=timezone.now)
    lease_until = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["pk"]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="notification_due")]
