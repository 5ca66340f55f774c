from decimal import ROUND_HALF_UP, Decimal

from django import template

register = template.Library()
CENT = Decimal("0.01")


@register.filter
def usd(value) -> str:
    """Money for people: ``$1,234.57``, ``−$1.78``; amounts under a cent show as
    ``<$0.01`` rather than a misleading ``$0.00``. The exact value goes in a title."""
    if value is None or value == "":
        return "—"
    amount = Decimal(value)
    if amount and abs(amount) < CENT:
        return "<$0.01" if amount > 0 else "−<$0.01"
    rounded = amount.quantize(CENT, rounding=ROUND_HALF_UP)
    return f"{'−' if rounded < 0 else ''}${abs(rounded):,.2f}"


@register.filter
def usd_exact(value) -> str:
    """The exact amount, e.g. for a title attribute: ``0.0000217500`` → ``0.00002175 USD``."""
    if value is None or value == "":
        return ""
    amount = Decimal(value)
    return f"{amount.normalize() if amount else Decimal(0):f} USD"
