"""Reads of the audit log."""

from datetime import datetime

from thinnest_analytics.cursors import cursor_decode, cursor_encode, invalid_cursor
from thinnest_analytics.errors import ApiError

from .models import AuditLog


def audit_entry_out(entry: AuditLog) -> dict:
    """One entry in the shape the API answers with."""
    return {
        "id": entry.pk,
        "user_id": entry.user_id,
        "action": entry.action,
        "resource_type": entry.resource_type,
        "resource_id": entry.resource_id,
        "details": entry.details,
        "ip_address": entry.ip_address,
        "created_at": entry.created_at,
    }


def audit_log_page(
    *,
    organisation,
    limit: int,
    cursor: str | None = None,
    action: str | None = None,
    resource_type: str | None = None,
    resource_id: str | None = None,
    user_id: str | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
) -> dict:
    """A page of the organisation's entries, newest first. ``created_from`` and
    ``created_to`` bound ``created_at`` as the window ``[from, to)``. Pages are
    keyset-paginated on the entry id, so entries recorded while paging never
    cause gaps or repeats."""
    if created_from and created_to and created_from >= created_to:
        raise ApiError(400, "invalid_window", "'from' must be before 'to'")
    qs = AuditLog.objects.filter(organisation=organisation)
    for field, value in (
        ("action", action),
        ("resource_type", resource_type),
        ("resource_id", resource_id),
        ("user_id", user_id),
    ):
        if value is not None:
            qs = qs.filter(**{field: value})
    if created_from:
        qs = qs.filter(created_at__gte=created_from)
    if created_to:
        qs = qs.filter(created_at__lt=created_to)
    if cursor:
        values = cursor_decode(cursor)
        if len(values) != 1 or not isinstance(values[0], int) or isinstance(values[0], bool):
            raise invalid_cursor()
        qs = qs.filter(pk__lt=values[0])
    entries = list(qs.order_by("-pk")[: limit + 1])
    next_cursor = cursor_encode(entries[limit - 1].pk) if len(entries) > limit else None
    return {"logs": [audit_entry_out(e) for e in entries[:limit]], "next_cursor": next_cursor}
