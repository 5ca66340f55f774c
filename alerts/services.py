"""Alert rules and their evaluation.

Each rule moves ok → firing → ok ("resolved"). A transition is claimed with a
conditional UPDATE on the rule's state version; only the evaluation that wins
the claim records the event and its notifications (in the same transaction), so
two workers or an overlapping beat never notify twice. Notifications are sent by
a Celery task after commit, with retries; a failing receiver never blocks
evaluation and its failures stay visible on the notification. A worker claims a
notification before sending it (a conditional UPDATE with a lease), and a
periodic sweep re-enqueues notifications whose task was lost (broker down,
worker killed), so every notification is sent — at most once at a time."""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from pydantic import ValidationError

from agents.models import Agent
from agents.schemas import validation_reason
from audit.services import Actor, audit_record
from thinnest_analytics.errors import ApiError, not_found

from . import notify
from .models import AlertEvent, AlertRule, Delivery, Notification, State
from .schemas import AlertRuleIn
from .selectors import reading

logger = logging.getLogger(__name__)

RULE_FIELDS = [
    "name",
    "kind",
    "channel",
    "threshold",
    "statistic",
    "baseline_factor",
    "baseline_period",
    "window_minutes",
    "min_conversations",
    "cooldown_minutes",
    "notify",
]


def _validated(data: dict) -> AlertRuleIn:
    try:
        return AlertRuleIn.model_validate(data)
    except ValidationError as exc:
        raise ApiError(400, "invalid_request", validation_reason(exc)) from None


def rule_as_input(rule: AlertRule) -> dict:
    """The rule in the shape AlertRuleIn accepts (secrets included: internal use)."""
    return {
        "name": rule.name,
        "kind": rule.kind,
        "agent_id": rule.agent.public_id if rule.agent_id else None,
        "channel": rule.channel or None,
        "threshold": rule.threshold,
        "statistic": rule.statistic,
        "baseline_factor": rule.baseline_factor,
        "baseline_period": rule.baseline_period,
        "window_minutes": rule.window_minutes,
        "min_conversations": rule.min_conversations,
        "cooldown_minutes": rule.cooldown_minutes,
        "notify": rule.notify,
    }


def _apply(rule: AlertRule, data: AlertRuleIn) -> None:
    rule.agent = None
    if data.agent_id:
        rule.agent = Agent.objects.filter(organisation=rule.organisation, public_id=data.agent_id).first()
        if rule.agent is None:
            raise not_found(f"agent '{data.agent_id}'")
    values = data.model_dump(mode="json", exclude={"agent_id"})
    values["channel"] = values["channel"] or ""
    values["threshold"] = data.threshold
    values["baseline_factor"] = data.baseline_factor
    for name in RULE_FIELDS:
        setattr(rule, name, values[name])


def _audit_view(rule: AlertRule) -> dict:
    view = rule_as_input(rule)
    view["threshold"] = str(rule.threshold)
    view["baseline_factor"] = str(rule.baseline_factor) if rule.baseline_factor is not None else None
    return view


@transaction.atomic
def rule_create(*, organisation, data: dict, actor: Actor) -> AlertRule:
    rule = AlertRule(organisation=organisation)
    _apply(rule, _validated(data))
    rule.save()
    audit_record(
        organisation=organisation,
        actor=actor,
        action="alert_rule.create",
        resource_type="alert_rule",
        resource_id=str(rule.pk),
        details={"new": _audit_view(rule)},
    )
    return rule


@transaction.atomic
def rule_update(*, rule: AlertRule, changes: dict, actor: Actor) -> AlertRule:
    rule = (
        AlertRule.objects.select_for_update(of=("self",))
        .select_related("agent", "organisation")
        .get(pk=rule.pk)
    )
    before = _audit_view(rule)
    _apply(rule, _validated({**rule_as_input(rule), **changes}))
    rule.updated_at = timezone.now()
    rule.save()
    after = _audit_view(rule)
    changed = sorted(k for k in after if after[k] != before[k])
    if changed:
        audit_record(
            organisation=rule.organisation,
            actor=actor,
            action="alert_rule.update",
            resource_type="alert_rule",
            resource_id=str(rule.pk),
            details={
                "changed_fields": changed,
                "old": {k: before[k] for k in changed},
                "new": {k: after[k] for k in changed},
            },
        )
    return rule


@transaction.atomic
def rule_mute(*, rule: AlertRule, until: datetime | None, actor: Actor) -> AlertRule:
    AlertRule.objects.filter(pk=rule.pk).update(muted_until=until, updated_at=timezone.now())
    rule.refresh_from_db()
    audit_record(
        organisation=rule.organisation,
        actor=actor,
        action="alert_rule.mute" if until else "alert_rule.unmute",
        resource_type="alert_rule",
        resource_id=str(rule.pk),
        details={"muted_until": until.isoformat() if until else None},
    )
    return rule


@transaction.atomic
def rule_delete(*, rule: AlertRule, actor: Actor) -> None:
    audit_record(
        organisation=rule.organisation,
        actor=actor,
        action="alert_rule.delete",
        resource_type="alert_rule",
        resource_id=str(rule.pk),
        details={"old": _audit_view(rule)},
    )
    rule.delete()


def _record_event(rule: AlertRule, state: str, value: Decimal | None, now: datetime) -> AlertEvent:
    """The event and one pending notification per target (call inside the claim's transaction)."""
    event = AlertEvent.objects.create(
        organisation_id=rule.organisation_id,
        rule=rule,
        rule_name=rule.name,
        kind=rule.kind,
        agent_id_label=rule.agent.public_id if rule.agent_id else "",
        state=state,
        value=value,
        threshold=rule.threshold,
        window_minutes=rule.window_minutes,
        at=now,
    )
    for target in rule.notify:
        if target.get("type") == "email":
            Notification.objects.create(event=event, channel="email", target=target["to"])
        elif target.get("type") == "webhook":
            config = {k: target[k] for k in ("format", "secret") if target.get(k)}
            Notification.objects.create(event=event, channel="webhook", target=target["url"], config=config)
    ids = list(event.notifications.values_list("pk", flat=True))
    transaction.on_commit(lambda: _enqueue(ids))
    transaction.on_commit(lambda: _push_to_dashboard(event))
    return event


def _enqueue(notification_ids: list[int]) -> None:
    """Queue a delivery task per notification. An unreachable broker is logged,
    never raised: the notification stays due and the sweep queues it later."""
    from .tasks import deliver_notification  # tasks import this module

    for i, pk in enumerate(notification_ids):
        try:
            deliver_notification.delay(pk)
        except Exception:  # noqa: BLE001 — the broker is down; the sweep queues them later
            logger.warning(
                "notifications %s not queued (broker unavailable); the sweep will queue them",
                notification_ids[i:],
                exc_info=True,
            )
            return


def _push_to_dashboard(event: AlertEvent) -> None:
    """Members looking at the dashboard see the badge change at once."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(
            f"alerts.{event.organisation_id}",
            {"type": "alert.event", "event": notify.payload(event)},
        )
    except Exception:  # noqa: BLE001 — live push is best effort; the event is stored
        logger.warning("could not push alert event %s to the dashboard", event.pk, exc_info=True)


def _claim(rule: AlertRule, to_state: str, value: Decimal | None, now: datetime, fired: bool) -> bool:
    """Move the rule to ``to_state`` if nobody else did since we read it."""
    updates = {
        "state": to_state,
        "state_version": F("state_version") + 1,
        "state_changed_at": now,
        "last_value": value,
    }
    if fired:
        updates["last_fired_at"] = now
    return bool(
        AlertRule.objects.filter(pk=rule.pk, state=rule.state, state_version=rule.state_version).update(
            **updates
        )
    )


def rule_evaluate(*, rule: AlertRule, now: datetime) -> AlertEvent | None:
    """One rule, one pass: an event when the rule fires or resolves, else None."""
    if rule.is_muted(now):
        return None
    current = reading(rule, now)
    AlertRule.objects.filter(pk=rule.pk).update(last_value=current.value, last_evaluated_at=now)
    in_cooldown = rule.last_fired_at is not None and now - rule.last_fired_at < timedelta(
        minutes=rule.cooldown_minutes
    )
    if current.breaching and rule.state == State.OK and not in_cooldown:
        to_state, event_state = State.FIRING, "firing"
    elif not current.breaching and rule.state == State.FIRING:
        to_state, event_state = State.OK, "resolved"
    else:
        return None
    with transaction.atomic():
        if not _claim(rule, to_state, current.value, now, fired=event_state == "firing"):
            return None  # another evaluation won this transition
        return _record_event(rule, event_state, current.value, now)


def alerts_evaluate(*, now: datetime | None = None, organisation=None) -> list[AlertEvent]:
    """One pass over every rule (the beat runs this every minute)."""
    now = now or timezone.now()
    rules = AlertRule.objects.select_related("organisation", "agent")
    if organisation is not None:
        rules = rules.filter(organisation=organisation)
    events = []
    for rule in rules:
        try:
            event = rule_evaluate(rule=rule, now=now)
        except Exception:  # noqa: BLE001 — one broken rule must not stop the others
            logger.exception("alert rule %s could not be evaluated", rule.pk)
            continue
        if event is not None:
            events.append(event)
    return events


@transaction.atomic
def rule_test(*, rule: AlertRule, actor: Actor) -> AlertEvent:
    """Send a test notification to every target of the rule."""
    audit_record(
        organisation=rule.organisation,
        actor=actor,
        action="alert_rule.test",
        resource_type="alert_rule",
        resource_id=str(rule.pk),
        details={"targets": len(rule.notify)},
    )
    return _record_event(rule, "test", rule.last_value, timezone.now())


# Seconds to wait before attempt 2, 3, …; after the last, the notification has failed.
RETRY_DELAYS = [10, 30, 90, 270, 810]
MAX_ATTEMPTS = 1 + len(RETRY_DELAYS)


@dataclass(frozen=True)
class DeliveryAttempt:
    sent: bool  # sent now, or by an earlier attempt
    retry_in: int | None = None  # seconds until the next attempt is due, after a failure


def _claim_delivery(pk: int, now: datetime) -> bool:
    """Take the notification for one attempt: only a pending or failed one, or
    one whose sender's lease ran out (the sender died), and only within the
    retry budget. The conditional UPDATE lets exactly one worker win."""
    claimable = Q(status__in=[Delivery.PENDING, Delivery.FAILED]) | Q(
        status=Delivery.SENDING, lease_until__lt=now
    )
    lease = timedelta(seconds=settings.ALERT_DELIVERY_LEASE_SECONDS)
    return bool(
        Notification.objects.filter(claimable, pk=pk, attempts__lt=MAX_ATTEMPTS).update(
            status=Delivery.SENDING, lease_until=now + lease, attempts=F("attempts") + 1
        )
    )


def notification_send(*, notification_id: int) -> DeliveryAttempt:
    """Claim the notification and send it once; record the outcome.

    Sent at most once at a time: a notification another worker is sending, or
    already sent, is left alone. A worker that dies between sending and
    recording leaves it ``sending``; when the lease expires it is sent again
    with the same delivery id, the one duplicate a receiver may see."""
    now = timezone.now()
    if not _claim_delivery(notification_id, now):
        done = Notification.objects.filter(pk=notification_id, status=Delivery.SENT).exists()
        return DeliveryAttempt(sent=done)
    notification = Notification.objects.select_related("event").get(pk=notification_id)
    try:
        notify.deliver(notification)
    except notify.DeliveryError as exc:
        retry_in = RETRY_DELAYS[notification.attempts - 1] if notification.attempts < MAX_ATTEMPTS else None
        Notification.objects.filter(pk=notification.pk).update(
            status=Delivery.FAILED,
            last_error=str(exc)[:2000],
            lease_until=None,
            next_attempt_at=now + timedelta(seconds=retry_in) if retry_in is not None else None,
        )
        return DeliveryAttempt(sent=False, retry_in=retry_in)
    Notification.objects.filter(pk=notification.pk).update(
        status=Delivery.SENT, sent_at=timezone.now(), last_error="", lease_until=None, next_attempt_at=None
    )
    return DeliveryAttempt(sent=True)


def notifications_sweep(*, now: datetime | None = None) -> int:
    """Queue again the notifications whose delivery task was lost: due (or
    retry due) for longer than the sweep interval, or claimed by a worker whose
    lease ran out. Returns how many were queued. Beat runs it periodically."""
    now = now or timezone.now()
    overdue = now - timedelta(seconds=settings.ALERT_SWEEP_SECONDS)
    Notification.objects.filter(
        status=Delivery.SENDING, lease_until__lt=now, attempts__gte=MAX_ATTEMPTS
    ).update(
        status=Delivery.FAILED,
        last_error="the last attempt was interrupted",
        lease_until=None,
        next_attempt_at=None,
    )
    lost = Notification.objects.filter(
        Q(status__in=[Delivery.PENDING, Delivery.FAILED], next_attempt_at__lte=overdue)
        | Q(status=Delivery.SENDING, lease_until__lt=now),
        attempts__lt=MAX_ATTEMPTS,
    )
    ids = list(lost.order_by("next_attempt_at").values_list("pk", flat=True)[:1000])
    if ids:
        # Queued again at most once per interval, however long the broker is down.
        Notification.objects.filter(pk__in=ids).exclude(status=Delivery.SENDING).update(next_attempt_at=now)
        _enqueue(ids)
    return len(ids)
