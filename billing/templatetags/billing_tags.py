"""Money on the billing pages: the project's one style (thinnest_analytics.formatting)."""

from django import template

from thinnest_analytics.formatting_tags import usd, usd_exact

register = template.Library()
register.filter("usd", usd)
register.filter("usd_exact", usd_exact)
