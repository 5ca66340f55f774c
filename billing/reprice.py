"""Recomputing stored trace costs from the current price table, after a price
was added, changed or retired. Costs the caller reported stay as they are."""

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.db import transaction

from accounts.models import Organisation
from agents.conversations import sessions_costs_shift
from agents.models import Agent, CostSource, Trace, TraceStep
from audit.services import Actor, audit_record
from metrics.models import DailyRollup
from metrics.rebuild import rollups_rebuild
from metrics.rollups import day_of
from pricing.prices import PriceTable, price_table, trace_cost
from thinnest_analytics.db import update_by_pk

# Stored costs have 10 decimal places (NUMERIC(20,10)); PostgreSQL rounds half away from zero.
COST_QUANTUM = Decimal("1e-10")
CHUNK = 5000
TRACE_COLUMNS = (
    "pk",
    "model",
    "input_tokens",
    "output_tokens",
    "created_at",
    "cost_usd",
    "cost_source",
    "session_id",
)
STEP_COLUMNS = (
    "trace_id",
    "kind",
    "model",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "started_at",
)  # what pricing reads


@dataclass
class RepriceResult:
    days_rebuilt: int = 0  # (organisation, day) pairs whose costs changed
    traces_changed: int = 0
    cost_before_usd: Decimal = Decimal(0)  # of the changed traces, unpriced counting as 0
    cost_after_usd: Decimal = Decimal(0)


def _days(start: datetime, end: datetime) -> list[datetime]:
    days, at = [], day_of(start.astimezone(UTC))
    while at < end:
        days.append(at)
        at += timedelta(days=1)
    return days


def _new_cost(prices: PriceTable, row: tuple, steps: Iterable[TraceStep]) -> tuple[Decimal | None, str]:
    _, model, input_tokens, output_tokens, created_at, _, _, _ = row
    cost, source = trace_cost(
        prices,
        model=model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        at=created_at,
        steps=steps,
    )
    if cost is not None:
        cost = cost.quantize(COST_QUANTUM, rounding=ROUND_HALF_UP)
    return cost, source


@dataclass
class _DayChange:
    traces: int = 0
    cost_before_usd: Decimal = Decimal(0)  # of the changed traces, unpriced counting as 0
    cost_after_usd: Decimal = Decimal(0)


def _reprice_chunk(prices: PriceTable, rows: list[tuple], change: _DayChange) -> None:
    """Write the traces of ``rows`` whose cost or source changes."""
    needs_steps = [row[0] for row in rows if not row[1]]
    steps: dict[int, list[TraceStep]] = defaultdict(list)
    if needs_steps:
        stored = TraceStep.objects.filter(trace_id__in=needs_steps).order_by("trace_id", "position")
        for step in stored.only(*STEP_COLUMNS):
            steps[step.trace_id].append(step)
    changed = []
    # Per conversation: (LLM cost, unpriced traces) to add.
    conversations: dict[int, tuple[Decimal, int]] = defaultdict(lambda: (Decimal(0), 0))
    for row in rows:
        cost, source = _new_cost(prices, row, steps.get(row[0], ()))
        old_cost, old_source, session_id = row[5], row[6], row[7]
        if (cost, source) != (old_cost, old_source):
            changed.append((row[0], cost, source))
            change.cost_before_usd += old_cost or 0
            change.cost_after_usd += cost or 0
            shift, unpriced = conversations[session_id]
            conversations[session_id] = (
                shift + (cost or 0) - (old_cost or 0),
                unpriced + (cost is None) - (old_cost is None),
            )
    update_by_pk(Trace, ["cost_usd", "cost_source"], changed)
    sessions_costs_shift(changes=conversations)
    change.traces += len(changed)


def _reprice_day(organisation, start: datetime, end: datetime, agent, prices) -> _DayChange:
    traces = Trace.objects.filter(
        organisation=organisation, created_at__gte=start, created_at__lt=end
    ).exclude(cost_source=CostSource.REPORTED)
    if agent is not None:
        traces = traces.filter(agent=agent)
    change, last = _DayChange(), 0
    while True:  # keyset pages keep memory bounded on a busy day
        rows = list(traces.filter(pk__gt=last).order_by("pk").values_list(*TRACE_COLUMNS)[:CHUNK])
        if not rows:
            return change
        _reprice_chunk(prices, rows, change)
        last = rows[-1][0]


def traces_reprice(
    *,
    start: datetime,
    end: datetime,
    organisations: Iterable[Organisation],
    agent: Agent | None = None,
    actor: Actor,
    progress: Callable[[list], Iterable] | None = None,
) -> RepriceResult:
    """Recompute the cost (USD) of every trace created in ``[start, end)``
    (optionally of one agent) from the organisation's current price table —
    traces whose caller reported a cost keep it — then rebuild the rollups of
    each UTC day whose costs changed, so every total follows. One transaction
    per organisation and day: the day's costs, rollups and its trace.reprice
    audit entry change together."""
    result = RepriceResult()
    work = [(organisation, day) for organisation in organisations for day in _days(start, end)]
    prices_of: dict[int, PriceTable] = {}
    for organisation, day in progress(work) if progress else work:
        if organisation.pk not in prices_of:
            prices_of[organisation.pk] = price_table(organisation=organisation, fresh=True)
        day_end = day + timedelta(days=1)
        part = (max(day, start), min(day_end, end))
        with transaction.atomic():
            change = _reprice_day(organisation, *part, agent, prices_of[organisation.pk])
            if change.traces:
                rollups_rebuild(start=day, end=day_end, organisation_id=organisation.pk)
                audit_record(
                    organisation=organisation,
                    actor=actor,
                    action="trace.reprice",
                    resource_type="traces",
                    resource_id=day.date().isoformat(),
                    details={
                        "from": part[0].isoformat(),
                        "to": part[1].isoformat(),
                        "agent_id": agent.public_id if agent else None,
                        "traces_changed": change.traces,
                        "cost_before_usd": str(change.cost_before_usd),
                        "cost_after_usd": str(change.cost_after_usd),
                    },
                )
        result.days_rebuilt += bool(change.traces)
        result.traces_changed += change.traces
        result.cost_before_usd += change.cost_before_usd
        result.cost_after_usd += change.cost_after_usd
    return result


def organisations_with_traces(*, start: datetime, end: datetime) -> list[Organisation]:
    """The organisations with traces in ``[start, end)``, found in the daily rollups."""
    ids = (
        DailyRollup.objects.filter(
            bucket_start__gte=day_of(start.astimezone(UTC)), bucket_start__lt=end, traces__gt=0
        )
        .values_list("organisation_id", flat=True)
        .distinct()
        .order_by()
    )
    return list(Organisation.objects.filter(pk__in=list(ids)).order_by("slug"))
