"""Recording audit entries. Call ``audit_record`` inside the same transaction as
the change it describes, so neither can exist without the other."""

import ipaddress
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.http import HttpRequest

from .models import AuditLog
from .redaction import redact, redact_text


@dataclass(frozen=True)
class Actor:
    """Who performed an action, as the audit log records it."""

    user_id: str
    user: Any = None  # the Django user, when a person acted
    ip_address: str | None = None

    @classmethod
    def system(cls, what: str) -> "Actor":
        return cls(user_id=f"system:{what}")

    @classmethod
    def for_user(cls, user, request: HttpRequest | None = None) -> "Actor":
        return cls(user_id=user.get_username(), user=user, ip_address=client_ip(request))

    @classmethod
    def for_api_key(cls, api_key, request: HttpRequest | None = None) -> "Actor":
        return cls(user_id=api_key.actor_id, ip_address=client_ip(request))

    @classmethod
    def for_request(cls, request: HttpRequest) -> "Actor":
        """Who sent ``request``, from the address it came from: the API key that
        authenticated it (the JSON API sets ``request.auth``), else the person
        signed in (pages and the admin)."""
        api_key = getattr(request, "auth", None)
        if api_key is not None:
            return cls.for_api_key(api_key, request)
        return cls.for_user(request.user, request)


def _valid_ip(value: str | None) -> str | None:
    try:
        return str(ipaddress.ip_address((value or "").strip()))
    except ValueError:
        return None


def client_ip(request: HttpRequest | None) -> str | None:
    """The caller's address; a proxy header counts only when configured as trusted.

    The last address in the header is the one the trusted proxy added (what it
    saw connecting); earlier ones were sent by the client and prove nothing. A
    header that does not end in an address is ignored."""
    if request is None:
        return None
    header = getattr(settings, "TRUSTED_PROXY_HEADER", "")
    if header and request.META.get(header):
        forwarded = _valid_ip(request.META[header].split(",")[-1])
        if forwarded:
            return forwarded
    return _valid_ip(request.META.get("REMOTE_ADDR"))


def _entry(*, organisation, actor: Actor, action: str, resource_type: str, resource_id, details) -> AuditLog:
    """An unsaved entry whose every free-form part has had its secrets redacted."""
    return AuditLog(
        organisation=organisation,
        user_id=redact_text(actor.user_id),
        action=action,
        resource_type=resource_type,
        resource_id=redact_text(str(resource_id)),
        details=redact(details or {}),
        ip_address=actor.ip_address,
    )


def audit_record(
    *,
    organisation,
    actor: Actor,
    action: str,
    resource_type: str,
    resource_id: str = "",
    details: dict | None = None,
) -> AuditLog:
    """Append one entry. ``details`` may hold secrets: they are redacted here."""
    entry = _entry(
        organisation=organisation,
        actor=actor,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        details=details,
    )
    entry.save(force_insert=True)
    return entry


def audit_record_many(*, organisation, actor: Actor, entries: list[dict]) -> None:
    """Record several entries in one statement (ingestion registers agents in bulk)."""
    AuditLog.objects.bulk_create(
        _entry(
            organisation=organisation,
            actor=actor,
            action=e["action"],
            resource_type=e["resource_type"],
            resource_id=e.get("resource_id", ""),
            details=e.get("details"),
        )
        for e in entries
    )


def audit_event_record(
    *,
    organisation,
    actor: Actor,
    action: str,
    resource_type: str,
    resource_id: str = "",
    details: dict | None = None,
    user_id: str | None = None,
    ip_address: str | None = None,
) -> AuditLog:
    """An action the agent platform performed, reported through the API.

    ``user_id`` and ``ip_address`` name the platform's user when given; the
    entry then keeps the reporting key in ``details.recorded_by``, so every
    entry still says who wrote it."""
    details = dict(details or {})
    if user_id is not None or ip_address is not None:
        details["recorded_by"] = actor.user_id
        actor = Actor(
            user_id=user_id if user_id is not None else actor.user_id,
            ip_address=ip_address if ip_address is not None else actor.ip_address,
        )
    return audit_record(
        organisation=organisation,
        actor=actor,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        details=details,
    )
