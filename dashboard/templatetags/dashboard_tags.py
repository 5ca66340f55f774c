import json

from django import template

from thinnest_analytics import formatting_tags

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


# The project's number style, also under the names these pages used before.
register.filter("ms", formatting_tags.ms)
register.filter("percent", formatting_tags.percent)
register.filter("count", formatting_tags.count)
register.filter("usd", formatting_tags.usd)
register.filter("duration", formatting_tags.duration)
