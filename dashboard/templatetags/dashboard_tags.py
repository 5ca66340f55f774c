import json

from django import template

from thinnest_analytics import formatting, formatting_tags

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
    """One trace's, step's or conversation's cost, to a hundredth of a cent
    (totals use ``usd`` from the ``formatting`` library, in cents)."""
    return formatting.format_usd(value, formatting.UNIT_USD_PLACES)


# The project's number style, also under the names these pages used before.
register.filter("ms", formatting_tags.ms)
register.filter("percent", formatting_tags.percent)
register.filter("count", formatting_tags.count)
register.filter("usd", formatting_tags.usd)
register.filter("duration", formatting_tags.duration)
