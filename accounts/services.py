"""Writes for organisations, members and API keys. Each change is audited."""

import hashlib
import hmac
import secrets
import smtplib
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.contrib.auth.tokens import default_token_generator
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode
from django.utils.text import slugify

from audit.services import Actor, audit_record
from thinnest_analytics.errors import ApiError, not_found

from .live import access_ended_on_commit, api_key_grant, membership_grant
from .models import ApiKey, Invitation, Membership, Organisation, Role, Scope
from .selectors import invitations_for, user_addresses

KEY_PREFIX = "ta_"


class InvalidScopes(ValueError):
    pass


def parse_scopes(raw: str | list[str]) -> list[str]:
    items = raw.split(",") if isinstance(raw, str) else raw
    scopes = sorted({s.strip() for s in items if s.strip()})
    valid = set(Scope.values)
    unknown = [s for s in scopes if s not in valid]
    if unknown or not scopes:
        raise InvalidScopes(
            f"unknown scopes {unknown}; choose from read, ingest, admin"
            if unknown
            else "at least one scope is required: read, ingest, admin"
        )
    return scopes


def hash_api_key(raw_key: str) -> str:
    # Keys carry 190 bits of randomness, so a plain SHA-256 is enough.
    return hashlib.sha256(raw_key.encode()).hexdigest()


# The organisation's own settings, as the admin edits them.
ORGANISATION_FIELDS = ("slug", "name", "timezone", "voice_price_per_minute")


def _json(value):
    return str(value) if isinstance(value, Decimal) else value  # money as its exact decimal text


@transaction.atomic
def organisation_save(*, organisation: Organisation, actor: Actor) -> Organisation:
    """Save an organisation edited in the Django admin. Records
    organisation.create, or organisation.update with the changed fields."""
    stored = (
        Organisation.objects.select_for_update().filter(pk=organisation.pk).first()
        if organisation.pk
        else None
    )
    organisation.save()
    new = {f: getattr(organisation, f) for f in ORGANISATION_FIELDS}
    if stored is None:
        action, details = "organisation.create", {f: _json(v) for f, v in new.items()}
    else:
        old = {f: getattr(stored, f) for f in ORGANISATION_FIELDS}
        changed = [f for f in ORGANISATION_FIELDS if old[f] != new[f]]
        if not changed:
            return organisation
        action = "organisation.update"
        details = {
            "changed_fields": changed,
            "old": {f: _json(old[f]) for f in changed},
            "new": {f: _json(new[f]) for f in changed},
        }
    audit_record(
        organisation=organisation,
        actor=actor,
        action=action,
        resource_type="organisation",
        resource_id=organisation.slug,
        details=details,
    )
    return organisation


def organisation_get_or_create(*, slug: str, name: str | None = None) -> Organisation:
    slug = slugify(slug)
    if not slug:
        raise ValueError("organisation slug must contain letters or digits")
    org, _ = Organisation.objects.get_or_create(
        slug=slug, defaults={"name": name or slug.replace("-", " ").title()}
    )
    return org


@dataclass(frozen=True)
class CreatedApiKey:
    api_key: ApiKey
    raw_key: str


@transaction.atomic
def api_key_create(
    *, organisation: Organisation, name: str, scopes: list[str], actor: Actor
) -> CreatedApiKey:
    """Create a key; the returned raw key is the only time the secret exists."""
    scopes = parse_scopes(scopes)
    name = name.strip()
    if not name:
        raise ValueError("the key needs a name")
    prefix = secrets.token_hex(4)
    raw_key = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(24)}"
    api_key = ApiKey.objects.create(
        organisation=organisation,
        name=name[:100],
        prefix=prefix,
        secret_hash=hash_api_key(raw_key),
        scopes=scopes,
        created_by=actor.user,
    )
    audit_record(
        organisation=organisation,
        actor=actor,
        action="apikey.create",
        resource_type="api_key",
        resource_id=prefix,
        details={"name": api_key.name, "scopes": scopes},
    )
    return CreatedApiKey(api_key=api_key, raw_key=raw_key)


@transaction.atomic
def api_key_revoke(*, api_key: ApiKey, actor: Actor) -> ApiKey:
    """Revoke a key: it authenticates nothing from now on, and the live sockets
    it opened are closed once this commits. Records apikey.revoke."""
    changed = ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    api_key.refresh_from_db()
    if changed:
        audit_record(
            organisation=api_key.organisation,
            actor=actor,
            action="apikey.revoke",
            resource_type="api_key",
            resource_id=api_key.prefix,
            details={"name": api_key.name},
        )
        access_ended_on_commit(api_key_grant(api_key.pk))
    return api_key


def api_key_authenticate(raw_key: str) -> ApiKey | None:
    """The active key for ``raw_key``, or None. Compares hashes in constant time."""
    if not raw_key.startswith(KEY_PREFIX):
        return None
    prefix, _, secret = raw_key[len(KEY_PREFIX) :].partition("_")
    if not prefix or not secret:
        return None
    api_key = (
        ApiKey.objects.select_related("organisation").filter(prefix=prefix, revoked_at__isnull=True).first()
    )
    expected = api_key.secret_hash if api_key else hash_api_key("")
    if not hmac.compare_digest(expected, hash_api_key(raw_key)) or api_key is None:
        return None
    now = timezone.now()
    # Touch last_used_at at most once a minute so reads do not become writes.
    if api_key.last_used_at is None or now - api_key.last_used_at > timedelta(minutes=1):
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now
    return api_key


@transaction.atomic
def user_create_or_update(
    *, organisation: Organisation, username: str, password: str | None, role: str, email: str = ""
) -> tuple[AbstractBaseUser, Membership]:
    """Create the user if missing and give them ``role`` in the organisation."""
    role = Role(role)
    User = get_user_model()
    user, created = User.objects.get_or_create(username=username, defaults={"email": email})
    if password:
        user.set_password(password)
        user.save(update_fields=["password"])
    elif created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    membership, m_created = Membership.objects.get_or_create(
        user=user, organisation=organisation, defaults={"role": role}
    )
    actor = Actor.system("manage.py")
    if m_created:
        audit_record(
            organisation=organisation,
            actor=actor,
            action="member.add",
            resource_type="member",
            resource_id=username,
            details={"role": role.value},
        )
    elif membership.role != role:
        old = membership.role
        membership.role = role
        membership.save(update_fields=["role"])
        audit_record(
            organisation=organisation,
            actor=actor,
            action="member.role_change",
            resource_type="member",
            resource_id=username,
            details={"changed_fields": ["role"], "old": {"role": old}, "new": {"role": role.value}},
        )
    return user, membership


# --- team: invitations, roles, removals ----------------------------------------


def _require_may_manage(by: Membership, role: str) -> None:
    """Admins manage admins, members and viewers; owners manage everyone."""
    if not by.has_role(Role.OWNER) and not (by.has_role(Role.ADMIN) and role != Role.OWNER):
        raise ApiError(
            403,
            "forbidden",
            "only an owner can manage owners" if by.has_role(Role.ADMIN) else "admins manage the team",
        )


def _require_another_owner(membership: Membership) -> None:
    others = Membership.objects.filter(organisation_id=membership.organisation_id, role=Role.OWNER).exclude(
        pk=membership.pk
    )
    if not others.exists():
        raise ApiError(
            409, "last_owner", "an organisation keeps at least one owner: make someone else owner first"
        )


def _team_lock(organisation: Organisation) -> None:
    """Team changes of one organisation queue behind each other, so two owners
    demoting each other at once cannot leave it without an owner."""
    Organisation.objects.select_for_update().filter(pk=organisation.pk).first()


def _role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise ApiError(400, "invalid_request", f"role: choose from {', '.join(Role.values)}") from None


def member_invite(
    *, organisation: Organisation, email: str, role: str, by: Membership, actor: Actor
) -> Invitation:
    """Invite the person with ``email`` to the organisation with ``role``: a
    pending invitation, and an email once it is committed. Nobody joins until
    the invitee accepts — someone new by choosing a password through the link in
    the email (Django's password-reset token: single use, expires after
    ``PASSWORD_RESET_TIMEOUT``; the account is created now, without a usable
    password), someone with an account on the Invitations page once signed in.

    The inviter learns nothing about whether the address has an account: the
    answer, the Team page and the audit entry (member.invite with ``email``,
    ``role``, ``resent``) read the same either way. Inviting a pending invitee
    again sends the email again."""
    email = (email or "").strip().lower()
    try:
        validate_email(email)
    except ValidationError:
        raise ApiError(400, "invalid_request", f"'{email}' is not an email address") from None
    role = _role(role)
    _require_may_manage(by, role)
    with transaction.atomic():
        _team_lock(organisation)
        user = _account_of(email)
        if user is not None and Membership.objects.filter(user=user, organisation=organisation).exists():
            raise ApiError(409, "already_member", f"{email} is already a member")
        invitation = Invitation.objects.filter(organisation=organisation, email=email).first()
        resent = invitation is not None
        if resent and invitation.role != role:
            raise ApiError(
                409,
                "already_invited",
                f"{email} is already invited as {invitation.role}; cancel that invitation first",
            )
        if not resent:
            invitation = Invitation.objects.create(
                organisation=organisation, email=email, role=role, invited_by=actor.user_id
            )
        if user is None:
            user = get_user_model()(username=email, email=email)
            user.set_unusable_password()
            user.save()
        audit_record(
            organisation=organisation,
            actor=actor,
            action="member.invite",
            resource_type="member",
            resource_id=email,
            details={"email": email, "role": role.value, "resent": resent},
        )
    _invitation_send(user=user, email=email, organisation=organisation, invited_by=actor.user_id)
    return invitation


def _account_of(email: str):
    """The account an invitation to ``email`` is for: its username or its email."""
    User = get_user_model()
    return (
        User.objects.filter(username__iexact=email).first()
        or User.objects.filter(email__iexact=email).first()
    )


def _addressed_to(invitation: Invitation, user) -> bool:
    return invitation.email in user_addresses(user)


def invitation_link(user) -> str:
    """The link that lets ``user`` set a password; it stops working once used."""
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    token = default_token_generator.make_token(user)
    return settings.SITE_URL.rstrip("/") + reverse("accounts:invitation_accept", args=[uid, token])


def _invitation_send(*, user, email: str, organisation: Organisation, invited_by: str) -> None:
    context = {
        "organisation": organisation,
        "invited_by": invited_by,
        "username": user.get_username(),
        "set_password_link": None if user.has_usable_password() else invitation_link(user),
        "invitations_link": settings.SITE_URL.rstrip("/") + reverse("accounts:invitations"),
    }
    try:
        send_mail(
            f"You have been invited to {organisation.name} on thinnest analytics",
            render_to_string("accounts/email/invitation.txt", context),
            None,
            [email],
        )
    except (OSError, smtplib.SMTPException) as exc:
        raise ApiError(
            502, "email_failed", f"the invitation to {email} is saved, but its email failed: {exc}"
        ) from None


def invitation_join(*, invitation: Invitation, user, actor: Actor) -> Membership:
    """``user`` accepts an invitation addressed to them (by email or username)
    and joins with its role. Records member.invite_accept in the organisation."""
    with transaction.atomic():
        _team_lock(invitation.organisation)
        invitation = Invitation.objects.select_related("organisation").filter(pk=invitation.pk).first()
        if invitation is None or not _addressed_to(invitation, user):
            raise not_found("invitation")
        membership, _ = Membership.objects.get_or_create(
            user=user, organisation=invitation.organisation, defaults={"role": invitation.role}
        )
        invitation.delete()
        audit_record(
            organisation=invitation.organisation,
            actor=actor,
            action="member.invite_accept",
            resource_type="member",
            resource_id=user.get_username(),
            details={"role": membership.role, "email": invitation.email},
        )
    return membership


def invitation_decline(*, invitation: Invitation, user, actor: Actor) -> None:
    """``user`` turns down an invitation addressed to them. Records member.invite_decline."""
    with transaction.atomic():
        invitation = Invitation.objects.select_for_update().filter(pk=invitation.pk).first()
        if invitation is None or not _addressed_to(invitation, user):
            raise not_found("invitation")
        invitation.delete()
        audit_record(
            organisation=invitation.organisation,
            actor=actor,
            action="member.invite_decline",
            resource_type="member",
            resource_id=invitation.email,
            details={"role": invitation.role},
        )


def invitation_cancel(*, invitation: Invitation, by: Membership, actor: Actor) -> None:
    """An admin withdraws a pending invitation (only owners withdraw an
    invitation to be owner). Records member.invite_cancel."""
    _require_may_manage(by, invitation.role)
    with transaction.atomic():
        deleted, _ = Invitation.objects.filter(pk=invitation.pk).delete()
        if deleted:
            audit_record(
                organisation=invitation.organisation,
                actor=actor,
                action="member.invite_cancel",
                resource_type="member",
                resource_id=invitation.email,
                details={"role": invitation.role},
            )


@transaction.atomic
def member_role_change(*, membership: Membership, role: str, by: Membership, actor: Actor) -> Membership:
    """Give a member another role. Admins cannot touch owners or make owners; the
    last owner cannot be demoted. Records member.role_change."""
    role = _role(role)
    _team_lock(membership.organisation)
    membership = (
        Membership.objects.select_for_update(of=("self",))
        .select_related("user", "organisation")
        .get(pk=membership.pk)
    )
    if membership.role == role:
        return membership
    _require_may_manage(by, membership.role)
    _require_may_manage(by, role)
    if membership.role == Role.OWNER:
        _require_another_owner(membership)
    old = membership.role
    membership.role = role
    membership.save(update_fields=["role"])
    audit_record(
        organisation=membership.organisation,
        actor=actor,
        action="member.role_change",
        resource_type="member",
        resource_id=membership.user.get_username(),
        details={"changed_fields": ["role"], "old": {"role": old}, "new": {"role": role.value}},
    )
    return membership


@transaction.atomic
def member_remove(*, membership: Membership, by: Membership, actor: Actor) -> None:
    """Remove a member from the organisation (their account stays). Admins cannot
    remove owners; the last owner cannot be removed. Their live sockets on the
    organisation's agents are closed once this commits. Records member.remove."""
    _team_lock(membership.organisation)
    membership = (
        Membership.objects.select_for_update(of=("self",))
        .select_related("user", "organisation")
        .get(pk=membership.pk)
    )
    _require_may_manage(by, membership.role)
    if membership.role == Role.OWNER:
        _require_another_owner(membership)
    membership.delete()
    access_ended_on_commit(membership_grant(membership.user_id, membership.organisation_id))
    audit_record(
        organisation=membership.organisation,
        actor=actor,
        action="member.remove",
        resource_type="member",
        resource_id=membership.user.get_username(),
        details={"role": membership.role, "email": membership.user.email},
    )


def invitations_accept_all(*, user, actor: Actor) -> None:
    """An invited person chose their password through the emailed link (proving
    they read that address): they join every organisation that invited them.
    Call it in the transaction that sets the password."""
    for invitation in invitations_for(user):
        invitation_join(invitation=invitation, user=user, actor=actor)
