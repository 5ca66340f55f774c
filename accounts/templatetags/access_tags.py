from django import template

register = template.Library()


@register.filter
def has_role(membership, role: str) -> bool:
    """``{% if current_membership|has_role:"admin" %}``: the same rule the views enforce."""
    return membership is not None and membership.has_role(role)
