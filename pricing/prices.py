"""LLM cost from the model price table, and voice minutes at the price per minute.
The one place a token or voice cost is computed."""

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Protocol

import re2
from django.conf import settings
from django.db.models import Q
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from .models import ModelPrice

logger = logging.getLogger(__name__)

MILLION = Decimal(1_000_000)
# Money is stored as NUMERIC(…, 10): every amount is rounded to that once, before it
# is stored or added to a rollup, so sums over rollups equal sums over raw rows.
MONEY_QUANTUM = Decimal("1e-10")


def money(value: Decimal) -> Decimal:
    return Decimal(value).quantize(MONEY_QUANTUM, rounding=ROUND_HALF_EVEN)


# --- price patterns ----------------------------------------------------------
# Organisations' admins write the patterns, and every trace is matched against
# them in the ingestion request: a backtracking engine would let one pattern like
# ``(a+)+b`` stall the server for every tenant. RE2 matches in time linear in the
# model name (at most 200 characters) whatever the pattern; it has no
# look-around or back-references, and refuses patterns whose compiled program
# exceeds PATTERN_MAX_MEMORY.
PATTERN_MAX_MEMORY = 1 << 20  # bytes


class PatternError(ValueError):
    pass


def _pattern_options() -> re2.Options:
    options = re2.Options()
    options.case_sensitive = False
    options.log_errors = False
    options.max_mem = PATTERN_MAX_MEMORY
    return options


_PATTERN_OPTIONS = _pattern_options()


def price_pattern(pattern: str):
    """A model price's pattern, compiled (case-insensitive, RE2 syntax); matches
    with ``.fullmatch(model)``. Raises PatternError with RE2's reason."""
    try:
        return re2.compile(pattern, _PATTERN_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "not accepted"
        raise PatternError(
            reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
        ) from None


def pattern_for_name(model_name: str) -> str:
    """The pattern that matches exactly ``model_name``."""
    return re2.escape(model_name)


@dataclass(frozen=True)
class _Price:
    pattern: object  # a compiled price_pattern
    input_per_mtok: Decimal
    output_per_mtok: Decimal
    effective_from: datetime
    organisation_specific: bool


class PriceTable:
    """An organisation's prices (its own rows first, then built-ins)."""

    def __init__(self, prices: list[_Price]):
        # Organisation rows beat built-ins; newer effective dates beat older.
        self._prices = sorted(
            prices, key=lambda p: (not p.organisation_specific, -p.effective_from.timestamp())
        )
        self._matching: dict[str, list[_Price]] = {}  # model name -> its prices, in priority order

    def price_for(self, model: str, at: datetime) -> _Price | None:
        matching = self._matching.get(model)
        if matching is None:
            matching = self._matching[model] = [p for p in self._prices if p.pattern.fullmatch(model)]
        for price in matching:
            if price.effective_from <= at:
                return price
        return None

    def cost(self, model: str, input_tokens: int, output_tokens: int, at: datetime) -> Decimal | None:
        """USD cost of the tokens at ``at``, or None when no price matches ``model``."""
        if not model:
            return None
        price = self.price_for(model, at)
        if price is None:
            return None
        return money((input_tokens * price.input_per_mtok + output_tokens * price.output_per_mtok) / MILLION)


class StepUsage(Protocol):
    """What pricing reads of a trace's step (an ingested step or a stored one)."""

    kind: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal | None
    started_at: datetime | None


# How a cost was arrived at (``agents.models.CostSource`` stores these values).
PRICE_TABLE = "price_table"
UNPRICED = "unpriced"


def trace_cost(
    prices: PriceTable,
    *,
    model: str,
    input_tokens: int,
    output_tokens: int,
    at: datetime,
    steps: Iterable[StepUsage],
) -> tuple[Decimal | None, str]:
    """USD cost of a trace whose caller sent no cost, and its source.

    The trace's model prices its tokens; without one, its LLM steps are priced
    one by one (a step's own ``cost_usd`` first, else its model's price at its
    start); tokens with no model to price them leave the trace unpriced (None),
    never a silent 0."""
    if model:
        cost = prices.cost(model, input_tokens, output_tokens, at)
        return (cost, PRICE_TABLE) if cost is not None else (None, UNPRICED)
    llm_steps = [s for s in steps if s.kind == "llm" or s.model or s.cost_usd is not None]
    if llm_steps:
        total = Decimal(0)
        for step in llm_steps:
            cost = step.cost_usd
            if cost is None:
                cost = prices.cost(step.model, step.input_tokens, step.output_tokens, step.started_at or at)
            if cost is None:
                return None, UNPRICED
            total += money(cost)
        return total, PRICE_TABLE
    if input_tokens or output_tokens:
        return None, UNPRICED
    return Decimal(0), PRICE_TABLE


# Per process, an organisation's table is reused for a few seconds; a change in
# this process clears it at once (signals below), other processes see it within
# CACHE_SECONDS. `manage.py reprice` recomputes traces stored before a change.
CACHE_SECONDS = 5.0
_cache: dict[int, tuple[float, PriceTable]] = {}


def price_table(*, organisation, fresh: bool = False) -> PriceTable:
    """The prices that apply to ``organisation``'s traces; ``fresh`` skips the cache."""
    cached = _cache.get(organisation.pk)
    now = time.monotonic()
    if cached is not None and cached[0] > now and not fresh:
        return cached[1]
    table = _load(organisation)
    _cache[organisation.pk] = (now + CACHE_SECONDS, table)
    return table


def price_tables_forget() -> None:
    """Drop this process's cached price tables (a price changed)."""
    _cache.clear()


@receiver([post_save, post_delete], sender=ModelPrice)
def _forget_prices(**kwargs) -> None:
    price_tables_forget()


def _load(organisation) -> PriceTable:
    rows = ModelPrice.objects.filter(Q(organisation__isnull=True) | Q(organisation=organisation))
    prices = []
    for row in rows:
        try:
            pattern = price_pattern(row.match_pattern)
        except PatternError as exc:
            # Saving validates; a row stored before RE2 (look-around, back-references)
            # must not break ingestion: its model stays unpriced until it is fixed.
            logger.warning("model price %s has a pattern RE2 refuses (%s); it is skipped", row.pk, exc)
            continue
        prices.append(
            _Price(
                pattern=pattern,
                input_per_mtok=row.input_price_per_mtok,
                output_per_mtok=row.output_price_per_mtok,
                effective_from=row.effective_from,
                organisation_specific=row.organisation_id is not None,
            )
        )
    return PriceTable(prices)


# --- voice minutes ---------------------------------------------------------

MILLISECOND = Decimal("0.001")
MONEY_STEP = Decimal("1e-10")  # the precision of cost columns


def voice_price_per_minute(*, organisation) -> Decimal:
    """USD per voice minute: the organisation's own price, else the installation's default."""
    if organisation.voice_price_per_minute is not None:
        return organisation.voice_price_per_minute
    return Decimal(settings.DEFAULT_VOICE_PRICE_PER_MINUTE)


def voice_seconds(seconds: Decimal | float) -> Decimal:
    """A call's duration as stored: whole milliseconds."""
    return Decimal(str(seconds)).quantize(MILLISECOND, rounding=ROUND_HALF_EVEN)


def voice_cost(*, seconds: Decimal, price_per_minute: Decimal) -> Decimal:
    """USD for ``seconds`` of a call, exact to the cost columns' 10 decimal places."""
    return (seconds * price_per_minute / 60).quantize(MONEY_STEP, rounding=ROUND_HALF_EVEN)
