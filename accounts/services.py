"""Writes for organisations, members and API keys. Each change is audited."""

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from audit.services import Actor, audit_record

from .models import ApiKey, Membership, Organisation, Role, Scope

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
