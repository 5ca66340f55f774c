"""Reads of organisations, members and API keys."""

from collections.abc import Iterable
from functools import cache
from zoneinfo import ZoneInfo, available_timezones

from thinnest_analytics.errors import not_found

from .live import api_key_grant, membership_grant
from .models import ApiKey, Invitation, Membership, Organisation


def grants_ended(grants: Iterable[str]) -> set[str]:
    """Those of ``grants`` (see ``accounts.live``) that no longer admit anyone:
    revoked or deleted keys, memberships removed, accounts deactivated. Two
    queries, however many grants."""
    grants = set(grants)
    key_pks, user_pks, organisation_pks = set(), set(), set()
    for grant in grants:
        kind, *ids = grant.split(":")
        if kind == "apikey":
            key_pks.add(int(ids[0]))
        else:
            user_pks.add(int(ids[0]))
            organisation_pks.add(int(ids[1]))
    held = set()
    if key_pks:
        active = ApiKey.objects.filter(pk__in=key_pks, revoked_at__isnull=True)
        held |= {api_key_grant(pk) for pk in active.values_list("pk", flat=True)}
    if user_pks:
        members = Membership.objects.filter(
            user_id__in=user_pks, organisation_id__in=organisation_pks, user__is_active=True
        )
        held |= {membership_grant(u, o) for u, o in members.values_list("user_id", "organisation_id")}
    return grants - held


def user_addresses(user) -> set[str]:
    """The addresses an invitation to ``user`` may be sent to: their email and
    their username, lower-case."""
    return {a for a in ((user.email or "").lower(), user.get_username().lower()) if a}


def invitations_for(user) -> list[Invitation]:
    """The invitations waiting for ``user``, oldest first."""
    return list(Invitation.objects.filter(email__in=user_addresses(user)).select_related("organisation"))


def invitation_for(user, invitation_id: int) -> Invitation | None:
    """One invitation waiting for ``user``; None for anyone else's."""
    return next((i for i in invitations_for(user) if i.pk == invitation_id), None)


def team_invitations(organisation: Organisation) -> list[Invitation]:
    """The organisation's pending invitations, oldest first."""
    return list(Invitation.objects.filter(organisation=organisation))


@cache
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones())


def timezone_valid(name: str) -> bool:
    """An IANA zone name the server knows, e.g. ``Asia/Kolkata``."""
    return name in _zone_names()


def zone_of(organisation) -> ZoneInfo:
    """The organisation's time zone; UTC when unset or unknown."""
    name = organisation.timezone or "UTC"
    return ZoneInfo(name) if timezone_valid(name) else ZoneInfo("UTC")


def api_key_list(*, organisation: Organisation) -> list[ApiKey]:
    """The organisation's API keys, revoked ones too (the page says which)."""
    return list(ApiKey.objects.filter(organisation=organisation))


def api_key_get(*, organisation: Organisation, prefix: str) -> ApiKey:
    """The organisation's key with ``prefix``; ``not_found`` for any other."""
    api_key = ApiKey.objects.filter(organisation=organisation, prefix=prefix).first()
    if api_key is None:
        raise not_found("API key")
    return api_key


def team_members(*, organisation: Organisation) -> list[Membership]:
    """The organisation's members with their accounts, by username."""
    return list(
        Membership.objects.filter(organisation=organisation).select_related("user").order_by("user__username")
    )


def membership_get(*, organisation: Organisation, membership_id: int) -> Membership:
    """One member of the organisation; ``not_found`` for anyone else's membership."""
    membership = Membership.objects.filter(organisation=organisation, pk=membership_id).first()
    if membership is None:
        raise not_found("member")
    return membership
