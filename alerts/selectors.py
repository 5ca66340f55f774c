"""What a rule measures right now. Reads go through the metrics engine's
selectors (rollups plus partial-hour edges), never raw scans."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from urllib.parse import urlsplit

from billing.selectors import balance, budget_status
from dashboard import selectors as metrics
from metrics.windows import Window
from thinnest_analytics.errors import not_found

from .models import AlertEvent, AlertRule, Kind, Notification


@dataclass(frozen=True)
class Reading:
    value: Decimal | None  # what the rule compares with its threshold
    traffic: int  # conversations in the window
    breaching: bool
    note: str = ""


def _totals(rule: AlertRule, window: Window):
    group = "channel" if rule.channel else None
    found = metrics.collect(
        organisation=rule.organisation,
        window=window,
        agent=rule.agent,
        group=group,
        with_sketch=rule.kind == Kind.LATENCY,
    )
    return found.get(rule.channel if rule.channel else None, metrics.Totals())


def _decimal(value) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def reading(rule: AlertRule, now: datetime) -> Reading:
    window = Window(now - timedelta(minutes=rule.window_minutes), now)
    if rule.kind in (Kind.ERROR_RATE, Kind.LATENCY):
        totals = _totals(rule, window)
        m = metrics.metrics(totals)
        traffic = m["total_sessions"]
        if rule.kind == Kind.ERROR_RATE:
            value = _decimal(m["error_rate"])
        else:
            value = _decimal(m["p95_latency_ms"] if rule.statistic == "p95" else m["avg_response_time_ms"])
        if traffic < rule.min_conversations or value is None:
            return Reading(value, traffic, False, f"fewer than {rule.min_conversations} conversations")
        breaching = value > rule.threshold
        if breaching and rule.kind == Kind.ERROR_RATE and rule.baseline_factor is not None:
            span = timedelta(days=7 if rule.baseline_period == "week" else 1)
            base = metrics.metrics(_totals(rule, Window(window.start - span, window.start)))["error_rate"]
            if base is not None and value <= rule.baseline_factor * _decimal(base):
                return Reading(
                    value, traffic, False, f"within {rule.baseline_factor}× the baseline {base:.4f}"
                )
        return Reading(value, traffic, breaching)
    if rule.kind == Kind.BUDGET:
        status = budget_status(organisation=rule.organisation, agent=rule.agent, now=now)
        if status is None or not status["budget_usd"]:
            return Reading(None, 0, False, "no budget set")
        percent = _decimal(status["percent"])
        return Reading(percent, 0, percent >= rule.threshold)
    value = _decimal(balance(organisation=rule.organisation))
    return Reading(value, 0, value < rule.threshold)


def rule_get(*, organisation, rule_id: int) -> AlertRule:
    """One of the organisation's alert rules; ``not_found`` for any other."""
    rule = (
        AlertRule.objects.select_related("agent", "organisation")
        .filter(organisation=organisation, pk=rule_id)
        .first()
    )
    if rule is None:
        raise not_found(f"alert rule {rule_id}")
    return rule


def rule_list(*, organisation) -> list[AlertRule]:
    return list(AlertRule.objects.filter(organisation=organisation).select_related("agent"))


def event_list(*, organisation, state: str | None = None, limit: int = 100) -> list[AlertEvent]:
    qs = AlertEvent.objects.filter(organisation=organisation).prefetch_related("notifications")
    if state:
        qs = qs.filter(state=state)
    return list(qs[:limit])


# --- what each reader may see of targets and deliveries ------------------------
# Webhook URLs carry secrets (Slack hook paths, ``?token=``): only admins (a
# member with the admin role, a key with the admin scope) see them whole;
# everyone else sees scheme and host. A delivery's error tells how the receiver
# answered — a probe of whatever the URL points at — so readers see only that it
# failed. Signing secrets are shown to nobody. The API and the Alerts page both
# go through these.

DELIVERY_FAILED = "delivery failed"


def webhook_url_shown(url: str, *, full: bool) -> str:
    if full:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}/…"


def targets_shown(notify: list[dict], *, full: bool) -> list[dict]:
    """A rule's notification targets as the reader may see them."""
    shown = []
    for target in notify:
        target = dict(target)
        if target.get("secret"):
            target["secret"] = "[set]"
        if target.get("type") == "webhook":
            target["url"] = webhook_url_shown(target.get("url", ""), full=full)
        shown.append(target)
    return shown


@dataclass(frozen=True)
class DeliveryShown:
    channel: str
    target: str
    delivery_id: str
    status: str
    attempts: int
    last_error: str


def delivery_shown(notification: Notification, *, full: bool) -> DeliveryShown:
    """One notification of an event as the reader may see it."""
    target = notification.target
    if notification.channel == "webhook":
        target = webhook_url_shown(target, full=full)
    error = notification.last_error
    return DeliveryShown(
        channel=notification.channel,
        target=target,
        delivery_id=str(notification.delivery_id),
        status=notification.status,
        attempts=notification.attempts,
        last_error=error if full or not error else DELIVERY_FAILED,
    )


@dataclass(frozen=True)
class EventShown:
    event: AlertEvent
    deliveries: list[DeliveryShown]


def history_shown(
    *, organisation, full: bool, state: str | None = None, limit: int = 100
) -> list[EventShown]:
    """Alert events, newest first, each with its deliveries as the reader may see them."""
    return [
        event_shown(e, full=full) for e in event_list(organisation=organisation, state=state, limit=limit)
    ]


def event_shown(event: AlertEvent, *, full: bool) -> EventShown:
    """One event with its deliveries as the reader may see them."""
    return EventShown(event, [delivery_shown(n, full=full) for n in event.notifications.all()])
