from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.http import HttpRequest

from .models import Membership

SESSION_KEY = "organisation_id"


def _memberships(user) -> list[Membership]:
    return list(
        Membership.objects.filter(user=user).select_related("organisation").order_by("organisation__name")
    )


def _choose(request: HttpRequest, memberships: list[Membership]) -> None:
    request.memberships = memberships
    chosen = request.session.get(SESSION_KEY)
    current = next((m for m in memberships if m.organisation_id == chosen), None)
    current = current or (memberships[0] if memberships else None)
    if current is not None:
        request.membership = current
        request.organisation = current.organisation


class CurrentOrganisationMiddleware:
    """Sets ``request.membership`` and ``request.organisation`` for signed-in
    members: the organisation chosen in the switcher, else their first. Runs in
    async mode too, so API requests never queue behind one another here."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(self.get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        request.membership = request.organisation = None
        request.memberships = []
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            _choose(request, _memberships(user))
        return self.get_response(request)

    async def __acall__(self, request: HttpRequest):
        request.membership = request.organisation = None
        request.memberships = []
        if settings.SESSION_COOKIE_NAME in request.COOKIES:  # API calls carry no session
            user = await request.auser()
            if user.is_authenticated:
                memberships = await sync_to_async(_memberships)(user)
                await sync_to_async(_choose)(request, memberships)
        return await self.get_response(request)
