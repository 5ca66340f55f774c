"""The built-in list prices (USD per million tokens), which organisations
override with rows of their own. A migration seeds them; emptied tables get
them back after ``migrate`` or ``flush`` (Django sends ``post_migrate`` after
both), as Django does for content types."""

from decimal import Decimal

from django.db import DEFAULT_DB_ALIAS


def _prices():
    from importlib import import_module

    # One list: the migration that first seeded them.
    return import_module("billing.migrations.0002_builtin_prices")


def builtin_prices_restore(*, using: str = DEFAULT_DB_ALIAS, **_) -> int:
    """Seed the built-in prices when no built-in price exists at all (a new or
    flushed database); a table with some keeps what its operators made of it.
    Returns how many were added."""
    from .models import ModelPrice

    if ModelPrice.objects.using(using).filter(organisation=None).exists():
        return 0
    seed = _prices()
    ModelPrice.objects.using(using).bulk_create(
        ModelPrice(
            organisation=None,
            model_name=name,
            match_pattern=pattern,
            input_price_per_mtok=Decimal(input_price),
            output_price_per_mtok=Decimal(output_price),
            effective_from=seed.EFFECTIVE_FROM,
        )
        for name, pattern, input_price, output_price in seed.PRICES
    )
    return len(seed.PRICES)
