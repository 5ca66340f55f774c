from django.http import HttpRequest

from .models import Membership

SESSION_KEY = "organisation_id"


class CurrentOrganisationMiddleware:
    """Sets ``request.membership`` and ``request.organisation`` for signed-in
    members: the organisation chosen in the switcher, else their first."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest):
        request.membership = None
        request.organisation = None
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            memberships = list(
                Membership.objects.filter(user=user)
                .select_related("organisation")
                .order_by("organisation__name")
            )
            request.memberships = memberships
            chosen = request.session.get(SESSION_KEY)
            current = next((m for m in memberships if m.organisation_id == chosen), None)
            current = current or (memberships[0] if memberships else None)
            if current is not None:
                request.membership = current
                request.organisation = current.organisation
        return self.get_response(request)
