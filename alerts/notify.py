"""Sending one notification: an email through Django's mail API, or a JSON
(or Slack-compatible) POST, optionally signed with HMAC-SHA256."""

import hashlib
import hmac
import http.client
import json
from decimal import Decimal

from django.conf import settings
from django.core import mail

from thinnest_analytics import outbound

from .models import AlertEvent, Notification

SIGNATURE_HEADER = "X-Thinnest-Signature"
# The same for every attempt at one notification: receivers drop repeats by it.
DELIVERY_HEADER = "X-Thinnest-Delivery"
UNITS = {"error_rate": "", "latency": " ms", "budget": " % of budget", "low_balance": " USD"}


class DeliveryError(Exception):
    pass


def _number(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def payload(event: AlertEvent) -> dict:
    site = settings.SITE_URL.rstrip("/")
    return {
        "rule_id": event.rule_id,
        "name": event.rule_name,
        "kind": event.kind,
        "state": event.state,
        "value": _number(event.value),
        "threshold": _number(event.threshold),
        "window_minutes": event.window_minutes,
        "agent_id": event.agent_id_label or None,
        "at": event.at.isoformat(),
        "links": {
            "alerts": f"{site}/alerts/",
            "agent": f"{site}/agents/{event.agent_id_label}/performance/"
            if event.agent_id_label
            else f"{site}/",
        },
    }


def summary(event: AlertEvent) -> str:
    unit = UNITS.get(event.kind, "")
    value = "n/a" if event.value is None else f"{event.value.normalize()}{unit}"
    where = f" for {event.agent_id_label}" if event.agent_id_label else ""
    verb = {"firing": "FIRING", "resolved": "resolved", "test": "TEST"}.get(event.state, event.state)
    return f"[{verb}] {event.rule_name}{where}: {event.kind} is {value} (threshold {event.threshold.normalize()}{unit}, last {event.window_minutes} min)"


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def deliver(notification: Notification) -> None:
    """Send it once; raise DeliveryError on any failure (the task retries)."""
    event = notification.event
    delivery_id = str(notification.delivery_id)
    data = {**payload(event), "delivery_id": delivery_id}
    if notification.channel == "email":
        try:
            mail.EmailMessage(
                summary(event),
                summary(event) + "\n\n" + json.dumps(data, indent=2),
                None,
                [notification.target],
                headers={DELIVERY_HEADER: delivery_id},
            ).send()
        except Exception as exc:  # noqa: BLE001 — any mail failure is a delivery failure
            raise DeliveryError(f"email: {exc}") from exc
        return
    if notification.config.get("format") == "slack":
        data = {"text": summary(event), **data}
    body = json.dumps(data).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "thinnest-analytics-alerts",
        DELIVERY_HEADER: delivery_id,
    }
    if notification.config.get("secret"):
        headers[SIGNATURE_HEADER] = signature(notification.config["secret"], body)
    # Only to a public address (checked on the address connected to), never following a redirect.
    try:
        status = outbound.post(notification.target, body, headers, timeout=settings.ALERT_WEBHOOK_TIMEOUT)
    except outbound.OutboundRefused as exc:
        raise DeliveryError(f"webhook refused: {exc}") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise DeliveryError(f"webhook unreachable: {exc}") from exc
    if 300 <= status < 400:
        raise DeliveryError(f"webhook answered {status} (redirects are not followed)")
    if not 200 <= status < 300:
        raise DeliveryError(f"webhook answered {status}")
