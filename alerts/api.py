"""Alert rules and events over JSON: ``read`` lists, ``admin`` changes."""

from datetime import datetime
from typing import Any, Literal

from django.http import HttpRequest, HttpResponse
from ninja import Query, Router, Schema, Status

from accounts.auth import admin_key, read_key
from accounts.models import Scope
from audit.services import Actor

from . import selectors, services
from .models import AlertRule
from .schemas import AlertRuleIn, AlertRulePatch

router = Router(tags=["alerts"])


class RuleOut(Schema):
    id: int
    name: str
    kind: str
    agent_id: str | None
    channel: str | None
    threshold: float
    statistic: str
    baseline_factor: float | None
    baseline_period: str
    window_minutes: int
    min_conversations: int
    cooldown_minutes: int
    notify: list[dict[str, Any]]
    state: str
    last_value: float | None
    last_evaluated_at: datetime | None
    muted_until: datetime | None


class RuleList(Schema):
    rules: list[RuleOut]


class EventOut(Schema):
    id: int
    rule_id: int | None
    name: str
    kind: str
    agent_id: str | None
    state: str
    value: float | None
    threshold: float
    window_minutes: int
    at: datetime
    notifications: list[dict[str, Any]]


class EventList(Schema):
    events: list[EventOut]


class EventFilters(Schema):
    state: Literal["firing", "resolved", "test"] | None = None


def _full(request: HttpRequest) -> bool:
    """Keys with the admin scope see webhook URLs and delivery errors whole."""
    return Scope.ADMIN in request.auth.scopes


def rule_out(rule: AlertRule, *, full: bool) -> dict:
    """A rule as callers see it: webhook secrets are never echoed back, URLs only to admins."""
    return {
        "id": rule.pk,
        **services.rule_as_input(rule),
        "notify": selectors.targets_shown(rule.notify, full=full),
        "state": rule.state,
        "last_value": rule.last_value,
        "last_evaluated_at": rule.last_evaluated_at,
        "muted_until": rule.muted_until,
    }


def event_out(shown: selectors.EventShown) -> dict:
    event = shown.event
    return {
        "id": event.pk,
        "rule_id": event.rule_id,
        "name": event.rule_name,
        "kind": event.kind,
        "agent_id": event.agent_id_label or None,
        "state": event.state,
        "value": event.value,
        "threshold": event.threshold,
        "window_minutes": event.window_minutes,
        "at": event.at,
        "notifications": [vars(delivery) for delivery in shown.deliveries],
    }


def _rule(request: HttpRequest, rule_id: int) -> AlertRule:
    return selectors.rule_get(organisation=request.organisation, rule_id=rule_id)


@router.get("/alerts/rules", auth=read_key, response=RuleList, summary="The organisation's alert rules")
def rules(request: HttpRequest):
    full = _full(request)
    return {"rules": [rule_out(r, full=full) for r in selectors.rule_list(organisation=request.organisation)]}


@router.post("/alerts/rules", auth=admin_key, response={201: RuleOut}, summary="Create an alert rule")
def rule_create(request: HttpRequest, payload: AlertRuleIn):
    rule = services.rule_create(
        organisation=request.organisation,
        data=payload.model_dump(),
        actor=Actor.for_request(request),
    )
    return Status(201, rule_out(rule, full=True))


@router.patch("/alerts/rules/{rule_id}", auth=admin_key, response=RuleOut, summary="Change an alert rule")
def rule_update(request: HttpRequest, rule_id: int, payload: AlertRulePatch):
    rule = services.rule_update(
        rule=_rule(request, rule_id),
        changes=payload.model_dump(exclude_unset=True),
        actor=Actor.for_request(request),
    )
    return rule_out(rule, full=True)


@router.delete(
    "/alerts/rules/{rule_id}", auth=admin_key, response={204: None}, summary="Delete an alert rule"
)
def rule_delete(request: HttpRequest, rule_id: int):
    services.rule_delete(rule=_rule(request, rule_id), actor=Actor.for_request(request))
    return HttpResponse(status=204)


@router.post(
    "/alerts/rules/{rule_id}/test",
    auth=admin_key,
    response={202: EventOut},
    summary="Send a test notification",
)
def rule_test(request: HttpRequest, rule_id: int):
    event = services.rule_test(rule=_rule(request, rule_id), actor=Actor.for_request(request))
    return Status(202, event_out(selectors.event_shown(event, full=True)))


@router.get("/alerts/events", auth=read_key, response=EventList, summary="Alert events, newest first")
def events(request: HttpRequest, filters: Query[EventFilters]):
    history = selectors.history_shown(
        organisation=request.organisation, full=_full(request), state=filters.state
    )
    return {"events": [event_out(shown) for shown in history]}
