"""LLM cost from the model price table. The one place a token cost is computed."""

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db.models import Q

from .models import ModelPrice

MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class _Price:
    pattern: re.Pattern
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

    def price_for(self, model: str, at: datetime) -> _Price | None:
        for price in self._prices:
            if price.effective_from <= at and price.pattern.fullmatch(model):
                return price
        return None

    def cost(self, model: str, input_tokens: int, output_tokens: int, at: datetime) -> Decimal | None:
        """USD cost of the tokens at ``at``, or None when no price matches ``model``."""
        if not model:
            return None
        price = self.price_for(model, at)
        if price is None:
            return None
        return (input_tokens * price.input_per_mtok + output_tokens * price.output_per_mtok) / MILLION


def price_table(*, organisation) -> PriceTable:
    rows = ModelPrice.objects.filter(Q(organisation__isnull=True) | Q(organisation=organisation))
    prices = []
    for row in rows:
        try:
            pattern = re.compile(row.match_pattern, re.IGNORECASE)
        except re.error:
            continue  # the admin form validates; a bad legacy row must not break ingestion
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
