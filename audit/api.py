"""JSON endpoints of the audit log (scope ``admin``): reading it, and the agent
platform recording the actions it performed."""

from datetime import datetime
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from django.http import HttpRequest
from ninja import Field, Query, Router, Schema, Status
from pydantic import ConfigDict, field_validator

from thinnest_analytics.replica import replica_reads
from thinnest_analytics.validation import UtcDateTime, json_value_check

from .selectors import audit_entry_out, audit_log_page
from .services import Actor, audit_event_record

# Every endpoint here needs an admin key. The API root mounts this router with
# accounts' admin-key auth: audit sits below accounts, so it names no key check.
router = Router(tags=["audit"])

ACTION_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"
RESOURCE_TYPE_PATTERN = r"^[a-z][a-z0-9_]*$"
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
MAX_DETAILS_BYTES = 32 * 1024
MAX_DETAILS_DEPTH = 16


class AuditEntryOut(Schema):
    id: int
    user_id: str
    action: str
    resource_type: str
    resource_id: str
    details: dict[str, Any]
    ip_address: str | None
    created_at: datetime


class AuditLogPage(Schema):
    logs: list[AuditEntryOut]
    next_cursor: str | None


class AuditFilters(Schema):
    limit: int = Field(50, ge=1, le=200)
    cursor: str | None = Field(None, max_length=200)
    action: str | None = Field(None, max_length=64)
    resource_type: str | None = Field(None, max_length=64)
    resource_id: str | None = Field(None, max_length=200)
    user_id: str | None = Field(None, max_length=200)
    from_: UtcDateTime | None = Field(None, alias="from", description="ISO 8601; naive means UTC")
    to: UtcDateTime | None = Field(None, description="ISO 8601, exclusive; naive means UTC")


@router.get(
    "/admin/audit/logs",
    response=AuditLogPage,
    summary="The audit log, newest first",
)
@replica_reads
def audit_logs(request: HttpRequest, filters: Query[AuditFilters]):
    """Filters match exactly; ``from``/``to`` bound ``created_at`` as ``[from, to)``.
    Pass ``next_cursor`` back as ``cursor`` for the next page."""
    return audit_log_page(
        organisation=request.organisation,
        limit=filters.limit,
        cursor=filters.cursor,
        action=filters.action,
        resource_type=filters.resource_type,
        resource_id=filters.resource_id,
        user_id=filters.user_id,
        created_from=filters.from_,
        created_to=filters.to,
    )


class AuditEventIn(Schema):
    """An action the agent platform performed. ``user_id`` and ``ip_address``
    name the platform's user; without them the entry names the API key."""

    model_config = ConfigDict(extra="forbid")

    action: str = Field(..., max_length=64, pattern=ACTION_PATTERN, examples=["agent.update"])
    resource_type: str = Field(..., max_length=64, pattern=RESOURCE_TYPE_PATTERN, examples=["agent"])
    resource_id: str = Field("", max_length=200, pattern=PRINTABLE, examples=["agent_abc123"])
    details: dict[str, Any] = Field(default_factory=dict, examples=[{"changed_fields": ["instructions"]}])
    user_id: str | None = Field(
        None, min_length=1, max_length=200, pattern=PRINTABLE, examples=["auth0|abc123"]
    )
    ip_address: IPv4Address | IPv6Address | None = Field(None, examples=["203.0.113.42"])

    @field_validator("details")
    @classmethod
    def _details_fit(cls, details: dict[str, Any]) -> dict[str, Any]:
        return json_value_check(details, max_depth=MAX_DETAILS_DEPTH, max_bytes=MAX_DETAILS_BYTES)


@router.post(
    "/admin/audit/events",
    response={201: AuditEntryOut},
    summary="Record an action the agent platform performed",
)
def audit_event(request: HttpRequest, event: AuditEventIn):
    """Stored like every other entry: secrets in ``details`` are redacted, and
    the entry can never be changed or deleted. Answers the stored entry."""
    entry = audit_event_record(
        organisation=request.organisation,
        actor=Actor.for_request(request),
        action=event.action,
        resource_type=event.resource_type,
        resource_id=event.resource_id,
        details=event.details,
        user_id=event.user_id,
        ip_address=str(event.ip_address) if event.ip_address is not None else None,
    )
    return Status(201, audit_entry_out(entry))
