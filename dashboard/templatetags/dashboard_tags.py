import json

from django import template

from dashboard.panels import fmt

register = template.Library()


@register.filter
def pretty_json(value) -> str:
    """Indented JSON for display; the template still escapes it."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


@register.filter
def money(value) -> str:
    return fmt(value, "money")


@register.filter
def ms(value) -> str:
    return fmt(value, "ms")


@register.filter
def percent(value) -> str:
    return fmt(value, "rate")
