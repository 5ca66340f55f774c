"""The ``formatting`` template library (``{% load formatting %}``): template
filters over ``thinnest_analytics.formatting``, so a page writes a number the
way the charts and CSV files do."""

from django import template

from . import formatting

register = template.Library()


@register.filter
def usd(value, places=formatting.USD_PLACES) -> str:
    """``{{ cost|usd }}`` in cents (``unit_usd`` for one trace's cost)."""
    return formatting.format_usd(value, int(places))


@register.filter
def unit_usd(value) -> str:
    """One trace's, step's or conversation's cost, to a hundredth of a cent
    (totals and balances use ``usd``, in cents)."""
    return formatting.format_usd(value, formatting.UNIT_USD_PLACES)


@register.filter
def usd_exact(value) -> str:
    return formatting.format_usd_exact(value)


@register.filter
def count(value) -> str:
    return formatting.format_count(value)


@register.filter
def number(value, places=1) -> str:
    return formatting.format_number(value, int(places))


@register.filter
def ms(value) -> str:
    return formatting.format_ms(value)


@register.filter
def seconds(value) -> str:
    return formatting.format_seconds(value)


@register.filter
def duration(value) -> str:
    return formatting.format_duration(value)


@register.filter
def minutes(value) -> str:
    return formatting.format_minutes(value)


@register.filter
def percent(rate, places=1) -> str:
    return formatting.format_percent(rate, int(places))


@register.filter
def score(value) -> str:
    return formatting.format_score(value)


@register.simple_tag
def tokens(input_tokens, output_tokens) -> str:
    """``{% tokens trace.input_tokens trace.output_tokens %}`` → ``1,738 in · 217 out``."""
    return formatting.format_tokens(input_tokens, output_tokens)
