"""Alert values in the unit of their rule's kind, in the project's number style."""

from django import template

from thinnest_analytics import formatting

from ..models import Kind

register = template.Library()


@register.filter
def kind_value(value, kind: str) -> str:
    """``{{ rule.threshold|kind_value:rule.kind }}``: an error rate as a
    percentage (``13.0%``), a latency in ms, a budget's share in percent, a
    balance in USD."""
    if value is None:
        return formatting.MISSING
    if kind == Kind.ERROR_RATE:
        return formatting.format_percent(value)
    if kind == Kind.LATENCY:
        return formatting.format_ms(value)
    if kind == Kind.BUDGET:
        return f"{formatting.format_number(value)}%"
    if kind == Kind.LOW_BALANCE:
        return formatting.format_usd(value)
    return formatting.format_number(value, 2)
