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


@register.filter
def count(value) -> str:
    return fmt(value, "count")


@register.filter
def duration(value) -> str:
    """A conversation's length: "42 s", "3 min 05 s", "2 h 03 min"."""
    if value is None:
        return "—"
    seconds = round(value.total_seconds())
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600:,} h {seconds % 3600 // 60:02d} min"
