"""Writes for agents: the entry of JSON trace batches, agents registered by
ingestion, and agents' configuration, tools and archive.

Conversations, deployments, scores and phone numbers have modules of their
own; ``ingest.py`` stores the traces."""

import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
from django.db import IntegrityError, transaction
from django.utils import timezone
from pydantic import ValidationError

from audit.redaction import changed_paths
from audit.services import Actor, audit_record, audit_record_many
from thinnest_analytics.db import insert_ignore_conflicts
from thinnest_analytics.errors import ApiError, not_found

from .config import agent_fields, change_details, config_of, config_validate, tools_restore
from .ingest import DUPLICATE, STORED, TraceRecord, traces_store
from .ingest_schemas import TraceIn as FastTraceIn
from .ingest_schemas import trace_decode
from .models import Agent
from .schemas import ID_PATTERN, NUL_MESSAGE, TraceIn, nul_paths, validation_reason


def new_public_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


@dataclass
class IngestResult:
    """What happened to each item of a batch, by its index in the request."""

    accepted: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    # Ids of the traces stored by this call (not re-sends), for post-commit work.
    stored: list[str] = field(default_factory=list)

    def reject(self, index: int, item_id: str | None, reason: str) -> None:
        self.rejected.append({"index": index, "id": item_id, "reason": reason})


def trace_ingest(*, organisation, items: Sequence[Any], actor: Actor, check_nul: bool = True) -> IngestResult:
    """Validate and store a batch of traces in one transaction.

    Invalid items are rejected with a reason; valid ones are stored. A trace id
    already stored (or repeated in the batch) is accepted but never stored or
    counted twice, also when two batches race. Unknown agents are registered
    (and audited). Cost in USD comes from the caller, else the price table, else
    the trace is marked unpriced. Items are JSON objects, or raw JSON items
    (``msgspec.Raw``) that are decoded here. ``check_nul=False`` skips the search
    for NUL characters when the caller knows the raw body has none.
    """
    result = IngestResult()
    now = timezone.now()
    records: list[tuple[int, TraceRecord]] = []
    for index, raw in enumerate(items):
        trace: Any = None
        nul_possible = check_nul
        if isinstance(raw, msgspec.Raw):
            trace = trace_decode(raw)
            if trace is None:
                # pydantic decides and words the reason (the body parsed, so this JSON is valid).
                raw, nul_possible = json.loads(bytes(raw)), True
        if trace is None:
            if not isinstance(raw, dict):
                result.reject(index, None, "each trace must be a JSON object")
                continue
            raw_id = raw.get("id") if isinstance(raw.get("id"), str) else None
            if nul_possible and (where := nul_paths(raw)):
                result.reject(index, raw_id, "; ".join(f"{path}: {NUL_MESSAGE}" for path in where))
                continue
            try:
                trace = TraceIn.model_validate(raw)
            except ValidationError as exc:
                result.reject(index, raw_id, validation_reason(exc))
                continue
        records.append((index, trace_record_of(trace, now)))

    if records:
        outcomes = traces_store(
            organisation=organisation, records=[r for _, r in records], actor=actor, now=now
        )
        for (index, record), outcome in zip(records, outcomes, strict=True):
            if outcome == STORED:
                result.accepted.append(record.public_id)
                result.stored.append(record.public_id)
            elif outcome == DUPLICATE:
                result.accepted.append(record.public_id)
                result.duplicates.append(record.public_id)
            else:
                result.reject(index, record.public_id, outcome)
    result.rejected.sort(key=lambda r: r["index"])
    return result


def trace_record_of(trace: "TraceIn | FastTraceIn", now: datetime) -> TraceRecord:
    """A validated trace (pydantic's or msgspec's) as the record ingestion stores."""
    if isinstance(trace, FastTraceIn):
        tool_calls = [c.as_stored() for c in trace.tool_calls]
    else:
        tool_calls = [c.model_dump(exclude_none=True) for c in trace.tool_calls]
    return TraceRecord(
        public_id=trace.id if trace.id is not None else new_public_id("trace"),
        agent_id=trace.agent_id,
        created_at=trace.created_at if trace.created_at is not None else now,
        agent_name=trace.agent_name or "",
        session_id=trace.session_id,
        channel=trace.channel,
        deployment_version=trace.deployment_version,
        input=trace.input,
        reasoning=trace.reasoning,
        output=trace.output,
        tool_calls=tool_calls,
        model=trace.model,
        input_tokens=trace.input_tokens,
        output_tokens=trace.output_tokens,
        latency_ms=trace.latency_ms,
        cost_usd=trace.cost_usd,
        status=trace.status,
        error=trace.error,
        evaluation_score=trace.evaluation_score,
        metadata=trace.metadata,
        steps=trace.steps,
    )


def agents_resolve(*, organisation, wanted: dict[str, str], actor: Actor) -> dict[str, Agent]:
    """Agents by public id, registering (and auditing) those seen for the first
    time. ``wanted`` maps public id to the name to give a new agent."""
    agents = {
        a.public_id: a
        for a in Agent.objects.filter(organisation=organisation, public_id__in=wanted).only(
            "pk", "public_id", "name"
        )
    }
    missing = sorted(set(wanted) - set(agents))
    if missing:
        # The agents and their audit entries commit together, with or without the caller's transaction.
        with transaction.atomic(savepoint=False):
            now = timezone.now()
            created = insert_ignore_conflicts(
                Agent,
                ("organisation", "public_id", "name", "config", "created_at", "updated_at"),
                [(organisation.pk, pid, wanted[pid] or pid, {}, now, now) for pid in missing],
                conflict_fields=("organisation", "public_id"),
                returning=("public_id",),
            )
            audit_record_many(
                organisation=organisation,
                actor=actor,
                entries=[
                    {
                        "action": "agent.create",
                        "resource_type": "agent",
                        "resource_id": pid,
                        "details": {"name": wanted[pid] or pid, "registered_by": "ingestion"},
                    }
                    for (pid,) in created
                ],
            )
            agents.update(
                {
                    a.public_id: a
                    for a in Agent.objects.filter(organisation=organisation, public_id__in=missing).only(
                        "pk", "public_id", "name"
                    )
                }
            )
    return agents


# --- agents: configuration, tools, archive ------------------------------------


def agent_lock(agent: Agent) -> Agent:
    """The agent's row, locked until the transaction ends, so that changes to one
    agent queue instead of overwriting each other. Archived agents are read-only."""
    locked = Agent.objects.select_for_update(of=("self",)).select_related("organisation").get(pk=agent.pk)
    if locked.archived_at is not None:
        raise ApiError(409, "agent_archived", f"agent '{locked.public_id}' is archived")
    return locked


def _name_clean(name: str) -> str:
    name = (name or "").strip()
    if not name or len(name) > 200 or "\x00" in name:
        raise ApiError(400, "invalid_request", "name: must be 1 to 200 characters")
    return name


def agent_config_store(agent: Agent, *, config: dict, name: str | None = None) -> None:
    """Save the agent's configuration (and name, if given); the caller holds
    ``agent_lock``."""
    agent.config = config
    agent.name = name if name is not None else agent.name
    agent.updated_at = timezone.now()
    agent.save(update_fields=["config", "name", "updated_at"])


@transaction.atomic
def agent_create(
    *, organisation, actor: Actor, name: str, config: dict | None = None, public_id: str | None = None
) -> Agent:
    """Create an agent with a validated configuration; ``public_id`` defaults to a
    new ``agent_…`` id, one already in use (also by an archived agent) is a 409.
    Records agent.create with the configuration, tool secrets redacted."""
    name = _name_clean(name)
    config = config_validate(config or {})
    tools_restore(config["tools"], [])  # a masked value has nothing to be restored from
    if public_id is not None and (len(public_id) > 64 or not re.fullmatch(ID_PATTERN, public_id)):
        raise ApiError(400, "invalid_request", "id: letters, digits and _ . : @ + = - only, at most 64")
    public_id = public_id or new_public_id("agent")
    now = timezone.now()
    try:
        with transaction.atomic():
            agent = Agent.objects.create(
                organisation=organisation,
                public_id=public_id,
                name=name,
                config=config,
                created_at=now,
                updated_at=now,
            )
    except IntegrityError:
        raise ApiError(409, "agent_exists", f"agent '{public_id}' already exists") from None
    audit_record(
        organisation=organisation,
        actor=actor,
        action="agent.create",
        resource_type="agent",
        resource_id=public_id,
        details={"name": name, "config": config},
    )
    return agent


@transaction.atomic
def agent_update(*, agent: Agent, actor: Actor, name: str | None = None, config: dict | None = None) -> Agent:
    """Change the agent's name and the configuration fields present in ``config``
    (a ``tools`` list replaces all tools; masked tool settings sent back unchanged
    keep their stored secrets). Records agent.update with the changed fields and
    their old and new values, secrets redacted; a change that changes nothing
    records nothing."""
    agent = agent_lock(agent)
    old_config = config_of(agent)
    new_config = config_validate({**old_config, **(config or {})})
    if config and "tools" in config:
        new_config["tools"] = tools_restore(new_config["tools"], old_config["tools"])
    new_name = _name_clean(name) if name is not None else agent.name
    details = change_details(agent_fields(agent.name, old_config), agent_fields(new_name, new_config))
    if details:
        agent_config_store(agent, config=new_config, name=new_name)
        audit_record(
            organisation=agent.organisation,
            actor=actor,
            action="agent.update",
            resource_type="agent",
            resource_id=agent.public_id,
            details=details,
        )
    return agent


@transaction.atomic
def agent_archive(*, agent: Agent, actor: Actor) -> Agent:
    """Archive the agent (agents are never deleted: their traces stay). Its phone
    numbers must be released first. Records agent.delete; archiving an archived
    agent changes and records nothing."""
    locked = Agent.objects.select_for_update(of=("self",)).select_related("organisation").get(pk=agent.pk)
    if locked.archived_at is not None:
        return locked
    numbers = list(locked.phone_numbers.values_list("number", flat=True))
    if numbers:
        raise ApiError(
            409,
            "agent_has_phone_numbers",
            f"release the agent's phone numbers first: {', '.join(numbers)}",
            {"phone_numbers": numbers},
        )
    locked.archived_at = timezone.now()
    locked.save(update_fields=["archived_at"])
    audit_record(
        organisation=locked.organisation,
        actor=actor,
        action="agent.delete",
        resource_type="agent",
        resource_id=locked.public_id,
        details={"name": locked.name, "archived": True},
    )
    return locked


@transaction.atomic
def agent_tool_save(
    *,
    agent: Agent,
    actor: Actor,
    name: str,
    config: dict,
    create: bool,
    public_settings: list[str] | None = None,
) -> Agent:
    """Add the tool ``name`` (``create``) or replace its settings, and with
    ``public_settings`` the settings every reader may see (None keeps them).
    Masked values sent back unchanged keep their stored secrets. Records
    tool.add or tool.config_update with the setting paths that changed and the
    old and new settings, secrets redacted."""
    agent = agent_lock(agent)
    current = config_of(agent)
    tools = list(current["tools"])
    index = next((i for i, t in enumerate(tools) if t["name"] == name), None)
    if create and index is not None:
        raise ApiError(409, "tool_exists", f"the agent already has a tool '{name}'")
    if not create and index is None:
        raise not_found(f"tool '{name}'")
    old = None if create else tools[index]["config"]
    old_public = [] if create else tools[index].get("public_settings", [])
    public = old_public if public_settings is None else public_settings
    tool = tools_restore(
        [{"name": name, "config": config, "public_settings": public}], [] if create else [tools[index]]
    )[0]
    if create:
        tools.append(tool)
    else:
        tools[index] = tool
    new_config = config_validate({**current, "tools": tools})
    public = next(t for t in new_config["tools"] if t["name"] == name).get("public_settings", [])
    changed = changed_paths(old or {}, tool["config"])
    if public != old_public:
        changed.append("public_settings")
    if not create and not changed:
        return agent
    agent_config_store(agent, config=new_config)
    audit_record(
        organisation=agent.organisation,
        actor=actor,
        action="tool.add" if create else "tool.config_update",
        resource_type="tool",
        resource_id=f"{agent.public_id}/{name}",
        details={
            "agent_id": agent.public_id,
            "tool": name,
            "changed_fields": changed,
            "old": old,
            "new": tool["config"],
            **({"public_settings": public} if public or old_public else {}),
        },
    )
    return agent


@transaction.atomic
def agent_tool_remove(*, agent: Agent, actor: Actor, name: str) -> Agent:
    """Remove the tool ``name``. Records tool.remove with its settings, secrets redacted."""
    agent = agent_lock(agent)
    current = config_of(agent)
    removed = next((t for t in current["tools"] if t["name"] == name), None)
    if removed is None:
        raise not_found(f"tool '{name}'")
    tools = [t for t in current["tools"] if t["name"] != name]
    agent_config_store(agent, config={**current, "tools": tools})
    audit_record(
        organisation=agent.organisation,
        actor=actor,
        action="tool.remove",
        resource_type="tool",
        resource_id=f"{agent.public_id}/{name}",
        details={"agent_id": agent.public_id, "tool": name, "old": removed["config"]},
    )
    return agent
