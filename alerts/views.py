"""The Alerts page: rules with their state, create/edit/mute/delete/test
(admins, audited), and the history of events with their notifications."""

from datetime import timedelta

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from accounts.access import member_required
from accounts.models import Role
from audit.services import Actor
from thinnest_analytics.pages import button_apply, form_apply, or_404

from . import selectors, services
from .forms import AlertRuleForm
from .models import AlertRule

MUTE_CHOICES = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7)}


def _rule(request: HttpRequest, rule_id: int) -> AlertRule:
    return or_404(selectors.rule_get, organisation=request.organisation, rule_id=rule_id)


@member_required(to_post=Role.ADMIN)
def alert_rules(request: HttpRequest) -> HttpResponse:
    form = AlertRuleForm(request.POST or None, organisation=request.organisation)
    if request.method == "POST":
        rule = form_apply(
            form,
            lambda d: services.rule_create(
                organisation=request.organisation, data=form.rule_data(), actor=Actor.for_request(request)
            ),
        )
        if rule is not None:
            messages.success(request, f"Rule “{rule.name}” created.")
            return redirect("alerts:rules")
    context = {
        "nav": "alerts",
        "rules": selectors.rule_list(organisation=request.organisation),
        "history": selectors.history_shown(
            organisation=request.organisation, full=request.membership.has_role(Role.ADMIN), limit=50
        ),
        "form": form,
        "now": timezone.now(),
    }
    return render(request, "alerts/rules.html", context, status=400 if request.method == "POST" else 200)


@member_required(Role.ADMIN)
def alert_rule_edit(request: HttpRequest, rule_id: int) -> HttpResponse:
    rule = _rule(request, rule_id)
    if request.method == "POST":
        form = AlertRuleForm(request.POST, organisation=request.organisation, rule=rule)
        if form_apply(
            form,
            lambda d: services.rule_update(
                rule=rule, changes=form.rule_data(), actor=Actor.for_request(request)
            ),
        ):
            messages.success(request, f"Rule “{rule.name}” saved.")
            return redirect("alerts:rules")
    else:
        form = AlertRuleForm(
            initial=AlertRuleForm.initial_for(rule), organisation=request.organisation, rule=rule
        )
    return render(request, "alerts/rule_edit.html", {"nav": "alerts", "rule": rule, "form": form})


@require_POST
@member_required(Role.ADMIN)
def alert_rule_mute(request: HttpRequest, rule_id: int) -> HttpResponse:
    rule = _rule(request, rule_id)
    span = MUTE_CHOICES.get(request.POST.get("for", ""))
    until = timezone.now() + span if span else None
    button_apply(
        request,
        lambda: services.rule_mute(rule=rule, until=until, actor=Actor.for_request(request)),
        f"Rule “{rule.name}” muted until {until:%Y-%m-%d %H:%M} UTC."
        if until
        else f"Rule “{rule.name}” unmuted.",
    )
    return redirect("alerts:rules")


@require_POST
@member_required(Role.ADMIN)
def alert_rule_delete(request: HttpRequest, rule_id: int) -> HttpResponse:
    rule = _rule(request, rule_id)
    name = rule.name
    button_apply(
        request,
        lambda: services.rule_delete(rule=rule, actor=Actor.for_request(request)),
        f"Rule “{name}” deleted.",
    )
    return redirect("alerts:rules")


@require_POST
@member_required(Role.ADMIN)
def alert_rule_test(request: HttpRequest, rule_id: int) -> HttpResponse:
    rule = _rule(request, rule_id)
    button_apply(
        request,
        lambda: services.rule_test(rule=rule, actor=Actor.for_request(request)),
        f"Test notification sent to {len(rule.notify)} target(s) of “{rule.name}”.",
    )
    return redirect("alerts:rules")
