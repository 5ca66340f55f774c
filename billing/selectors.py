"""Reads for billing: balance, usage today and this month, the per-category
breakdown, top agents by cost, budgets, the ledger and unpriced traces.

Usage is the metrics engine's cost — ``llm_cost_usd + voice_cost_usd +
other_cost_usd`` of the rollups, read through ``metrics.selectors.collect`` —
so billing and the dashboard always show the same numbers. Money is Decimal (USD).
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.db.models import Count, Max, QuerySet, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.selectors import zone_of
from agents.models import Agent, CostSource, Trace
from metrics.models import DailyRollup
from metrics.selectors import Totals, collect, ranges_q, window_plan
from metrics.windows import Window
from pricing.models import ModelPrice
from thinnest_analytics.errors import not_found

from .models import Budget, LedgerEntry, Subscription, UsageEvent, UsageRollup

# The breakdown always shows these, in this order; further categories follow.
CATEGORIES = ("llm_tokens", "voice_minutes", "scraping")
ZERO = Decimal(0)


# --- periods ------------------------------------------------------------------


@dataclass(frozen=True)
class Periods:
    """ "Today" and "this month" in the organisation's time zone, as UTC windows."""

    zone: ZoneInfo
    today: Window
    month: Window

    @property
    def day(self) -> date:
        return self.today.start.astimezone(self.zone).date()

    def describe(self) -> dict:
        return {
            "today": {"date": self.day.isoformat(), "from": self.today.start, "to": self.today.end},
            "this_month": {
                "month": self.day.strftime("%Y-%m"),
                "from": self.month.start,
                "to": self.month.end,
            },
        }


def local_midnight(day: date, zone: ZoneInfo) -> datetime:
    # A midnight that a daylight-saving change skips resolves to the first instant of the day.
    return datetime.combine(day, time.min, tzinfo=zone).astimezone(UTC)


def billing_periods(*, organisation, now: datetime | None = None) -> Periods:
    """The whole local day and calendar month containing ``now``: ``[midnight,
    next midnight)`` and ``[the 1st, the next month's 1st)``, converted to UTC
    (windows may start mid-hour, e.g. at 18:30 UTC for UTC+5:30)."""
    zone = zone_of(organisation)
    local = (now or timezone.now()).astimezone(zone)
    day = local.date()
    first = day.replace(day=1)
    next_first = (first + timedelta(days=32)).replace(day=1)
    return Periods(
        zone=zone,
        today=Window(local_midnight(day, zone), local_midnight(day + timedelta(days=1), zone)),
        month=Window(local_midnight(first, zone), local_midnight(next_first, zone)),
    )


# --- balance ------------------------------------------------------------------


def ledger_credits(*, organisation) -> Decimal:
    """The sum of the organisation's ledger entries, USD (top-ups and positive
    adjustments minus refunds, subscription charges and negative adjustments)."""
    return LedgerEntry.objects.filter(organisation=organisation).aggregate(
        total=Coalesce(Sum("amount_usd"), ZERO)
    )["total"]


def usage_to_date(*, organisation) -> Decimal:
    """Every cost recorded for the organisation, USD: the daily rollups' LLM,
    voice and other cost over all days (a few hundred rows per agent a year)."""
    sums = DailyRollup.objects.filter(organisation=organisation).aggregate(
        llm=Coalesce(Sum("llm_cost_usd"), ZERO),
        voice=Coalesce(Sum("voice_cost_usd"), ZERO),
        other=Coalesce(Sum("other_cost_usd"), ZERO),
    )
    return sums["llm"] + sums["voice"] + sums["other"]


def balance(*, organisation) -> Decimal:
    """Credits in the ledger minus usage to date, USD. Derived on every read,
    never stored, so it cannot drift from the ledger and the rollups."""
    return ledger_credits(organisation=organisation) - usage_to_date(organisation=organisation)


# --- usage --------------------------------------------------------------------


def category_costs(*, organisation, window: Window) -> dict[str, Decimal]:
    """Usage events' cost per category in ``[start, end)``, USD: whole hours from
    the per-category rollup, the partial hours at the edges from the events."""
    plan = window_plan(window, use_daily=False)
    out: dict[str, Decimal] = defaultdict(Decimal)
    sources = ((UsageRollup, "bucket_start", plan.hourly), (UsageEvent, "at", plan.raw))
    for model, column, ranges in sources:
        if not ranges:
            continue
        rows = model.objects.filter(ranges_q(column, ranges), organisation=organisation)
        for row in rows.values("category").annotate(cost=Sum("cost_usd")).order_by():
            out[row["category"]] += row["cost"]
    return dict(out)


def breakdown(totals: Totals, categories: dict[str, Decimal]) -> dict[str, Decimal]:
    """Cost per category, USD: LLM tokens and voice minutes from the metrics
    engine's totals, the rest from usage events. The values add up to
    ``totals.total_cost_usd``."""
    out = {"llm_tokens": totals.llm_cost_usd, "voice_minutes": totals.voice_cost_usd, "scraping": ZERO}
    for category in sorted(categories):
        out[category] = out.get(category, ZERO) + categories[category]
    return out


def _sum_totals(parts) -> Totals:
    """The costs of several groups' totals added up."""
    total = Totals()
    for part in parts:
        total.llm_cost_usd += part.llm_cost_usd
        total.voice_cost_usd += part.voice_cost_usd
        total.other_cost_usd += part.other_cost_usd
    return total


def top_agents_by_cost(by_agent: dict[int, Totals], limit: int) -> list[dict]:
    """The ``limit`` agents with the highest cost (USD), ties by name; agents
    without cost are left out."""
    costs = {pk: t.total_cost_usd for pk, t in by_agent.items() if t.total_cost_usd > 0}
    agents = Agent.objects.filter(pk__in=list(costs)).only("pk", "public_id", "name")
    rows = [{"agent_id": a.public_id, "name": a.name, "cost_usd": costs[a.pk]} for a in agents]
    return sorted(rows, key=lambda r: (-r["cost_usd"], r["name"], r["agent_id"]))[:limit]


def usage_overview(*, organisation, limit: int = 5, now: datetime | None = None) -> dict:
    """``GET /api/metrics/usage`` and the billing page's headline: balance,
    usage today and this month in the organisation's time zone (USD), the top
    ``limit`` agents by cost this month and this month's cost per category."""
    periods = billing_periods(organisation=organisation, now=now)
    month_by_agent = collect(organisation=organisation, window=periods.month, group="agent")
    month = _sum_totals(month_by_agent.values())
    today = collect(organisation=organisation, window=periods.today).get(None, Totals())
    return {
        "balance_usd": balance(organisation=organisation),
        "usage_today_usd": today.total_cost_usd,
        "usage_this_month_usd": month.total_cost_usd,
        "top_agents_by_cost": top_agents_by_cost(month_by_agent, limit),
        "breakdown": breakdown(month, category_costs(organisation=organisation, window=periods.month)),
        "timezone": periods.zone.key,
        "period": periods.describe(),
    }


# --- budgets ------------------------------------------------------------------


def _status(budget_usd: Decimal | None, spent: Decimal) -> dict:
    percent = float(spent * 100 / budget_usd) if budget_usd else None
    return {"budget_usd": budget_usd, "spent_usd": spent, "percent": percent}


def budget_status(*, organisation, agent: Agent | None = None, now: datetime | None = None) -> dict:
    """This month's spend (USD, the organisation's time zone) against the
    monthly budget of the organisation or of ``agent``: ``{budget_usd,
    spent_usd, percent}``; ``budget_usd`` and ``percent`` are None without a
    budget. ``percent`` is 0..100 and beyond."""
    month = billing_periods(organisation=organisation, now=now).month
    budget = Budget.objects.filter(organisation=organisation, agent=agent).first()
    spent = collect(organisation=organisation, window=month, agent=agent).get(None, Totals()).total_cost_usd
    return _status(budget.monthly_usd if budget else None, spent)


def budgets(*, organisation, now: datetime | None = None) -> list[dict]:
    """Every budget of the organisation with this month's spend against it:
    the organisation's first, then agents' by name."""
    month = billing_periods(organisation=organisation, now=now).month
    rows = list(Budget.objects.filter(organisation=organisation).select_related("agent"))
    if not rows:
        return []
    by_agent = collect(organisation=organisation, window=month, group="agent")
    out = []
    for budget in rows:
        if budget.agent is None:
            spent = _sum_totals(by_agent.values()).total_cost_usd
        else:
            spent = by_agent.get(budget.agent_id, Totals()).total_cost_usd
        out.append({"agent": budget.agent, **_status(budget.monthly_usd, spent)})
    return sorted(out, key=lambda b: (b["agent"] is not None, b["agent"].name if b["agent"] else ""))


# --- ledger, subscription, unpriced traces --------------------------------------


def ledger_entries(
    *, organisation, kind: str | None = None, start: datetime | None = None, end: datetime | None = None
) -> QuerySet[LedgerEntry]:
    """The organisation's ledger, newest first, optionally of one kind and within ``[start, end)``."""
    entries = LedgerEntry.objects.filter(organisation=organisation)
    if kind:
        entries = entries.filter(kind=kind)
    if start is not None:
        entries = entries.filter(created_at__gte=start)
    if end is not None:
        entries = entries.filter(created_at__lt=end)
    return entries.order_by("-created_at", "-id")


def subscription_plan(*, organisation) -> str | None:
    return Subscription.objects.filter(organisation=organisation).values_list("plan", flat=True).first()


def unpriced_traces(*, organisation, window: Window, limit: int = 20) -> dict:
    """Traces in the window whose model has no price (their cost is unknown,
    not 0): how many per model, and the latest ``limit`` of them."""
    traces = Trace.objects.filter(
        organisation=organisation,
        cost_source=CostSource.UNPRICED,
        created_at__gte=window.start,
        created_at__lt=window.end,
    )
    models = list(
        traces.values("model")
        .annotate(traces=Count("id"), last_seen=Max("created_at"))
        .order_by("-traces", "model")
    )
    recent = list(traces.prefetch_related("agent").order_by("-created_at", "-id")[:limit])
    return {"count": sum(m["traces"] for m in models), "models": models, "recent": recent}


# --- model prices -----------------------------------------------------------------


def model_prices(*, organisation) -> dict[str, list[ModelPrice]]:
    """The prices page's two tables: the organisation's own prices (``own``,
    which it edits, and which override the rest) and the built-in ones
    (``builtin``); USD per million tokens."""
    return {
        "own": list(ModelPrice.objects.filter(organisation=organisation)),
        "builtin": list(ModelPrice.objects.filter(organisation__isnull=True)),
    }


def model_price_get(*, organisation, price_id: int) -> ModelPrice:
    """One of the organisation's own prices; ``not_found`` for a built-in one
    (not edited here) or another organisation's."""
    price = ModelPrice.objects.filter(organisation=organisation, pk=price_id).first()
    if price is None:
        raise not_found("price")
    return price
