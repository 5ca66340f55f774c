"""The billing page (balance, spend, breakdown, top agents, budgets, unpriced
traces, the ledger) and the model prices page.

Every member reads the billing page; admins top up, adjust, set budgets and the
billing time zone, and manage model prices. Each change goes through one
service; a refusal is shown on the page.
"""

import csv
from datetime import timedelta
from functools import partial
from zoneinfo import ZoneInfo

from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_POST

from accounts.access import member_required
from accounts.models import Role
from agents.selectors import agent_choices, agent_get
from audit.services import Actor
from metrics.selectors import timeseries
from metrics.windows import Window
from pricing import services as price_services
from pricing.models import ModelPrice
from thinnest_analytics import charts, formatting
from thinnest_analytics.pages import button_apply, form_apply, or_404

from . import selectors, services
from .forms import AdjustmentForm, BudgetForm, LedgerFilterForm, ModelPriceForm, TimezoneForm, TopUpForm
from .models import LedgerEntry

LEDGER_PAGE_SIZE = 25
BREAKDOWN_LABELS = {"llm_tokens": "LLM tokens", "voice_minutes": "Voice minutes", "scraping": "Scraping"}


def _agent_choices(request: HttpRequest) -> list[tuple[str, str]]:
    return agent_choices(organisation=request.organisation, blank="the whole organisation")


def _ledger(
    request: HttpRequest, zone: ZoneInfo
) -> tuple[LedgerFilterForm, QuerySet[LedgerEntry] | list[LedgerEntry]]:
    """The ledger entries the filter form in the query string asks for; none
    while the filter is invalid (the form says why)."""
    form = LedgerFilterForm(request.GET)
    if not form.is_valid():
        return form, []
    start, end = form.window(zone)
    entries = selectors.ledger_entries(
        organisation=request.organisation, kind=form.cleaned_data["kind"] or None, start=start, end=end
    )
    return form, entries


def _charts(request: HttpRequest, usage: dict) -> list[dict]:
    breakdown = usage["breakdown"]
    donut = charts.donut(
        "cost-breakdown",
        "Spend this month by category (USD)",
        [BREAKDOWN_LABELS.get(k, k.replace("_", " ").capitalize()) for k in breakdown],
        [float(v) for v in breakdown.values()],
        value_format=formatting.usd_axis_format(max(breakdown.values(), default=0)),
    )
    now = timezone.now()
    trend = timeseries(
        organisation=request.organisation,
        window=Window(now - timedelta(days=30), now, "30d"),
        with_percentiles=False,
    )
    points = trend["points"]
    line = charts.lines(
        "cost-per-conversation",
        "Cost per conversation, last 30 days (USD)",
        [p["bucket_start"] for p in points],
        {
            "Cost per conversation": [
                float(p["cost_per_conversation"]) if p["cost_per_conversation"] is not None else None
                for p in points
            ]
        },
        y_title="USD",
        y_format=formatting.usd_axis_format(
            max((p["cost_per_conversation"] or 0 for p in points), default=0)
        ),
    )
    return [donut, line]


def _billing_page(request: HttpRequest, status: int = 200, **forms) -> HttpResponse:
    organisation = request.organisation
    usage = selectors.usage_overview(organisation=organisation, limit=10)
    periods = selectors.billing_periods(organisation=organisation)
    ledger_form, entries = _ledger(request, periods.zone)
    page = Paginator(entries, LEDGER_PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "nav": "billing",
        "usage": usage,
        "periods": periods,
        "zone": periods.zone.key,
        "plan": selectors.subscription_plan(organisation=organisation),
        "budgets": selectors.budgets(organisation=organisation),
        "unpriced": selectors.unpriced_traces(organisation=organisation, window=periods.month),
        "ledger_form": ledger_form,
        "ledger_page": page,
        "ledger_query": query.urlencode(),
        "topup_form": forms.get("topup_form") or TopUpForm(),
        "adjustment_form": forms.get("adjustment_form") or AdjustmentForm(),
        "budget_form": forms.get("budget_form") or BudgetForm(agent_choices=_agent_choices(request)),
        "timezone_form": forms.get("timezone_form") or TimezoneForm(initial={"timezone": periods.zone.key}),
    }
    if request.htmx and request.htmx.target == "ledger":
        response = render(request, "billing/page.html#ledger", context, status=status)
    else:
        context["charts"] = _charts(request, usage)
        response = render(request, "billing/page.html", context, status=status)
    patch_vary_headers(response, ["HX-Request", "HX-Target"])  # one URL, the page or its ledger
    return response


@member_required()
def billing_page(request: HttpRequest) -> HttpResponse:
    """Balance, spend today and this month, breakdown, top agents, budgets,
    unpriced traces and the ledger (filtered by kind and dates, paged)."""
    return _billing_page(request)


LEDGER_CSV_COLUMNS = ["id", "created_at", "kind", "amount_usd", "reference", "reason", "plan", "created_by"]


@member_required()
def ledger_csv(request: HttpRequest) -> HttpResponse:
    """The ledger entries the page's filters select, as CSV (amounts in USD)."""
    zone = selectors.zone_of(request.organisation)
    form, entries = _ledger(request, zone)
    if not form.is_valid():
        return HttpResponse(f"invalid filter: {form.errors.as_text()}", status=400, content_type="text/plain")
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="ledger-{request.organisation.slug}-{stamp}.csv"'
    writer = csv.writer(response)
    writer.writerow(LEDGER_CSV_COLUMNS)
    for e in entries.iterator(chunk_size=2000):
        writer.writerow(
            [
                e.pk,
                e.created_at.isoformat(),
                e.kind,
                formatting.format_usd_plain(e.amount_usd),  # a number, never quoted
                *(formatting.csv_cell(v) for v in (e.reference, e.reason, e.plan, e.created_by)),
            ]
        )
    return response


def _posted(request: HttpRequest, form, change, done: str, form_name: str) -> HttpResponse:
    """Apply a valid form through its service, or show the page with its errors."""
    if form_apply(form, change) is None:
        return _billing_page(request, status=400, **{form_name: form})
    messages.success(request, done)
    return redirect("billing:page")


@require_POST
@member_required(Role.ADMIN)
def topup(request: HttpRequest) -> HttpResponse:
    """Credit the balance (amount_usd, reference). Audited as billing.topup."""
    record = partial(
        services.topup_record, organisation=request.organisation, actor=Actor.for_request(request)
    )
    return _posted(
        request, TopUpForm(request.POST), lambda data: record(**data), "Top-up recorded.", "topup_form"
    )


@require_POST
@member_required(Role.ADMIN)
def adjustment(request: HttpRequest) -> HttpResponse:
    """Correct the balance (amount_usd, reason). Audited as billing.adjustment."""
    record = partial(
        services.adjustment_record, organisation=request.organisation, actor=Actor.for_request(request)
    )
    form = AdjustmentForm(request.POST)
    return _posted(request, form, lambda data: record(**data), "Adjustment recorded.", "adjustment_form")


@require_POST
@member_required(Role.ADMIN)
def budget(request: HttpRequest) -> HttpResponse:
    form = BudgetForm(request.POST, agent_choices=_agent_choices(request))

    def change(data) -> bool:
        agent_id = data["agent"]
        services.budget_set(
            organisation=request.organisation,
            agent=agent_get(organisation=request.organisation, public_id=agent_id) if agent_id else None,
            monthly_usd=data["monthly_usd"],
            actor=Actor.for_request(request),
        )
        return True

    return _posted(request, form, change, "Budget saved.", "budget_form")


@require_POST
@member_required(Role.ADMIN)
def billing_timezone(request: HttpRequest) -> HttpResponse:
    form = TimezoneForm(request.POST)

    def change(data):
        return services.billing_timezone_set(
            organisation=request.organisation,
            timezone_name=data["timezone"],
            actor=Actor.for_request(request),
        )

    return _posted(request, form, change, "Time zone saved.", "timezone_form")


# --- model prices ---------------------------------------------------------------


def _price(request: HttpRequest, price_id: int) -> ModelPrice:
    """One of the organisation's own prices, or 404 (built-ins are not edited here)."""
    return or_404(selectors.model_price_get, organisation=request.organisation, price_id=price_id)


def _price_change(request: HttpRequest, form: ModelPriceForm, price: ModelPrice | None):
    return form_apply(
        form,
        lambda data: price_services.model_price_save(
            organisation=request.organisation, actor=Actor.for_request(request), price=price, **data
        ),
    )


@member_required(Role.ADMIN)
def prices(request: HttpRequest) -> HttpResponse:
    """The organisation's own prices (editable) and the built-in ones; add a price."""
    form = ModelPriceForm(
        request.POST or None, initial={"effective_from": timezone.now().replace(microsecond=0)}
    )
    if request.method == "POST":
        if _price_change(request, form, None) is not None:
            messages.success(request, "Price added. Traces stored earlier keep their cost until repriced.")
            return redirect("billing:prices")
    context = {
        "nav": "billing",
        "form": form,
        **selectors.model_prices(organisation=request.organisation),
    }
    return render(request, "billing/prices.html", context, status=400 if form.is_bound else 200)


@member_required(Role.ADMIN)
def price_edit(request: HttpRequest, price_id: int) -> HttpResponse:
    price = _price(request, price_id)
    if request.method == "POST":
        form = ModelPriceForm(request.POST)
        if _price_change(request, form, price) is not None:
            messages.success(request, "Price saved. Traces stored earlier keep their cost until repriced.")
            return redirect("billing:prices")
    else:
        form = ModelPriceForm(initial={f: getattr(price, f) for f in price_services.PRICE_FIELDS})
    context = {"nav": "billing", "form": form, "price": price}
    return render(request, "billing/price_edit.html", context, status=400 if form.is_bound else 200)


@require_POST
@member_required(Role.ADMIN)
def price_retire(request: HttpRequest, price_id: int) -> HttpResponse:
    price = _price(request, price_id)
    button_apply(
        request,
        lambda: price_services.model_price_delete(
            organisation=request.organisation, price=price, actor=Actor.for_request(request)
        ),
        f"Price for {price.model_name} retired.",
    )
    return redirect("billing:prices")
