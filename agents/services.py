"""Writes for agents, conversations and traces."""

import json
import re
import secrets
from collections import defaultdict, namedtuple
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec
from django.db import IntegrityError, transaction
from django.db.models import Count, Max, Min, OuterRef, Q, Subquery, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone
from pydantic import ValidationError

from audit.redaction import changed_paths
from audit.services import Actor, audit_record, audit_record_many
from metrics.rollups import SCORE_FACTS, Counted, RollupDeltas
from thinnest_analytics.db import insert_ignore_conflicts, update_by_pk
from thinnest_analytics.errors import ApiError, not_found

from .config import (
    VERSION_PATTERN,
    agent_fields,
    change_details,
    config_complete,
    config_of,
    config_validate,
    tools_restore,
)
from .ingest import DUPLICATE, STORED, TraceRecord, traces_store
from .ingest_schemas import TraceIn as FastTraceIn
from .ingest_schemas import trace_decode
from .models import (
    Agent,
    Deployment,
    DeploymentStatus,
    PhoneNumber,
    Score,
    Session,
    Trace,
)
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


@dataclass(frozen=True)
class SessionState:
    """The facts about a conversation that the metrics count once per conversation."""

    agent_id: int
    channel: str
    deployment_version: str
    started_at: datetime | None
    failed: bool

    @property
    def counted(self) -> bool:
        return self.started_at is not None

    @classmethod
    def of(cls, session: "Session | LockedSession") -> "SessionState":
        return cls(
            agent_id=session.agent_id,
            channel=session.channel,
            deployment_version=session.deployment_version,
            started_at=session.started_at,
            failed=session.error_count > 0,
        )


TRACE_FIELDS = (
    "organisation",
    "agent",
    "session",
    "public_id",
    "channel",
    "deployment_version",
    "input",
    "reasoning",
    "output",
    "tool_calls",
    "tool_call_count",
    "model",
    "input_tokens",
    "output_tokens",
    "latency_ms",
    "cost_usd",
    "cost_source",
    "status",
    "error",
    "metadata",
    "created_at",
    "received_at",
)
STEP_FIELDS = (
    "trace",
    "position",
    "span_id",
    "parent_span_id",
    "kind",
    "name",
    "started_at",
    "latency_ms",
    "model",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "input",
    "output",
    "error",
    "attributes",
)
SCORE_FIELDS = (
    "organisation",
    "trace",
    "agent",
    "channel",
    "deployment_version",
    "trace_created_at",
    "name",
    "value",
    "comment",
    "created_at",
)
# One stored trace, in the column order of TRACE_FIELDS.
TraceRow = namedtuple("TraceRow", TRACE_FIELDS)


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


@dataclass
class LockedSession:
    """The columns of a locked conversation that ingestion reads and updates."""

    pk: int
    public_id: str
    agent_id: int
    channel: str
    deployment_version: str
    started_at: datetime | None
    first_trace_at: datetime | None
    last_activity_at: datetime | None
    trace_count: int
    error_count: int
    input_tokens: int
    output_tokens: int
    latency_count: int
    latency_sum_ms: int
    llm_cost_usd: Decimal
    unpriced_traces: int


LOCKED_SESSION_FIELDS = [
    "pk",
    "public_id",
    "agent_id",
    "channel",
    "deployment_version",
    "started_at",
    "first_trace_at",
    "last_activity_at",
    "trace_count",
    "error_count",
    "input_tokens",
    "output_tokens",
    "latency_count",
    "latency_sum_ms",
    "llm_cost_usd",
    "unpriced_traces",
]


def sessions_lock(*, organisation, wanted: dict[str, tuple[int, str]]) -> dict[str, LockedSession]:
    """Lock the conversations ``wanted`` (public id → (agent pk, channel)),
    creating missing ones empty. Locks are taken in id order so concurrent
    batches never deadlock."""
    now = timezone.now()
    insert_ignore_conflicts(
        Session,
        (
            "organisation",
            "agent",
            "public_id",
            "channel",
            "deployment_version",
            "trace_count",
            "error_count",
            "created_at",
        ),
        [
            (organisation.pk, agent_pk, sid, channel, "", 0, 0, now)
            for sid, (agent_pk, channel) in sorted(wanted.items())
        ],
        conflict_fields=("organisation", "public_id"),
        returning=("id",),
    )
    locked = (
        Session.objects.select_for_update()
        .filter(organisation=organisation, public_id__in=list(wanted))
        .order_by("id")
        .values_list(*LOCKED_SESSION_FIELDS)
    )
    return {row[1]: LockedSession(*row) for row in locked}


# The conversation columns that ingestion keeps current.
SESSION_FACTS = (
    "first_trace_at",
    "started_at",
    "deployment_version",
    "last_activity_at",
    "trace_count",
    "error_count",
    "input_tokens",
    "output_tokens",
    "latency_count",
    "latency_sum_ms",
    "llm_cost_usd",
    "unpriced_traces",
)


def _sessions_apply(
    sessions: dict[str, LockedSession], new_rows: list[TraceRow]
) -> list[tuple[SessionState, SessionState]]:
    """Fold newly stored traces into their (locked) conversations and save them;
    returns each changed conversation's state before and after."""
    changed, transitions = _sessions_fold(sessions, new_rows)
    update_by_pk(Session, SESSION_FACTS, [(s.pk, *(getattr(s, f) for f in SESSION_FACTS)) for s in changed])
    return transitions


def _sessions_fold(
    sessions: dict[str, LockedSession], new_rows: Sequence[Any]
) -> tuple[list[LockedSession], list[tuple[SessionState, SessionState]]]:
    """Fold newly stored traces (rows with session, created_at, status, token,
    latency and cost attributes) into their locked conversations, in memory;
    returns the changed conversations and each one's state before and after."""
    by_session: dict[int, list[Any]] = defaultdict(list)
    for row in new_rows:
        by_session[row.session].append(row)
    changed, transitions = [], []
    by_pk = {s.pk: s for s in sessions.values()}
    for session_pk, rows in by_session.items():
        session = by_pk[session_pk]
        before = SessionState.of(session)
        earliest = min(rows, key=lambda r: r.created_at)
        if session.first_trace_at is None or earliest.created_at < session.first_trace_at:
            session.first_trace_at = earliest.created_at
            if session.started_at is None or earliest.created_at < session.started_at:
                session.started_at = earliest.created_at
                session.deployment_version = earliest.deployment_version
        latest = max(r.created_at for r in rows)
        if session.last_activity_at is None or latest > session.last_activity_at:
            session.last_activity_at = latest
        session.trace_count += len(rows)
        session.error_count += sum(1 for r in rows if r.status == "error")
        session.input_tokens += sum(r.input_tokens for r in rows)
        session.output_tokens += sum(r.output_tokens for r in rows)
        latencies = [r.latency_ms for r in rows if r.latency_ms is not None]
        session.latency_count += len(latencies)
        session.latency_sum_ms += sum(latencies)
        session.llm_cost_usd += sum((r.cost_usd for r in rows if r.cost_usd is not None), Decimal(0))
        session.unpriced_traces += sum(1 for r in rows if r.cost_usd is None)
        changed.append(session)
        transitions.append((before, SessionState.of(session)))
    return changed, transitions


# Sums of a conversation's traces, named as on Session.
TRACE_SUMS = (
    "input_tokens",
    "output_tokens",
    "latency_count",
    "latency_sum_ms",
    "llm_cost_usd",
    "unpriced_traces",
)
EMPTY_FACTS = {"traces": 0, "errors": 0, "first": None, "last": None} | dict.fromkeys(TRACE_SUMS, 0)


def sessions_refresh(*, sessions: Sequence[LockedSession]) -> list[tuple[SessionState, SessionState]]:
    """Recount locked conversations from their stored traces, after traces moved
    into or out of them or changed (a trace derived again from more of its spans):
    first and last trace, trace and error counts, token, latency and cost sums,
    and the version of the earliest trace. A conversation that a call started before its first trace keeps that
    start. Returns each conversation's state before and after."""
    pks = [s.pk for s in sessions]
    facts = {
        row["session_id"]: row
        for row in Trace.objects.filter(session_id__in=pks)
        .values("session_id")
        .annotate(
            traces=Count("id"),
            errors=Count("id", filter=Q(status="error")),
            first=Min("created_at"),
            last=Max("created_at"),
            input_tokens=Coalesce(Sum("input_tokens"), 0),
            output_tokens=Coalesce(Sum("output_tokens"), 0),
            latency_count=Count("latency_ms"),
            latency_sum_ms=Coalesce(Sum("latency_ms"), 0),
            llm_cost_usd=Coalesce(Sum("cost_usd"), Decimal(0)),
            unpriced_traces=Count("id", filter=Q(cost_usd__isnull=True)),
        )
        .order_by()
    }
    earliest = Trace.objects.filter(session=OuterRef("pk")).order_by("created_at", "id")
    versions = dict(
        Session.objects.filter(pk__in=pks)
        .annotate(version=Subquery(earliest.values("deployment_version")[:1]))
        .values_list("pk", "version")
    )
    transitions = []
    for session in sessions:
        before = SessionState.of(session)
        row = facts.get(session.pk, EMPTY_FACTS)
        call_start = session.started_at
        if session.started_at is not None and session.first_trace_at is not None:
            call_start = session.started_at if session.started_at < session.first_trace_at else None
        session.first_trace_at, session.last_activity_at = row["first"], row["last"]
        session.trace_count, session.error_count = row["traces"], row["errors"]
        for name in TRACE_SUMS:
            setattr(session, name, row[name])
        if row["first"] is not None and (call_start is None or row["first"] < call_start):
            session.started_at, session.deployment_version = row["first"], versions.get(session.pk) or ""
        else:
            session.started_at = call_start
        transitions.append((before, SessionState.of(session)))
    update_by_pk(Session, SESSION_FACTS, [(s.pk, *(getattr(s, f) for f in SESSION_FACTS)) for s in sessions])
    return transitions


def sessions_costs_shift(*, changes: dict[int, tuple[Decimal, int]]) -> None:
    """Add LLM cost (USD) and unpriced-trace deltas to conversations, by primary
    key, after their traces were priced again. Rows are locked in id order, as
    ingestion locks them."""
    changes = {pk: change for pk, change in changes.items() if any(change)}
    if not changes:
        return
    current = (
        Session.objects.select_for_update()
        .filter(pk__in=list(changes))
        .order_by("id")
        .values_list("pk", "llm_cost_usd", "unpriced_traces")
    )
    update_by_pk(
        Session,
        ["llm_cost_usd", "unpriced_traces"],
        [(pk, cost + changes[pk][0], unpriced + changes[pk][1]) for pk, cost, unpriced in current],
    )


# --- agents: configuration, tools, archive ------------------------------------


def _agent_lock(agent: Agent) -> Agent:
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


def _config_store(agent: Agent, *, config: dict, name: str | None = None) -> None:
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
    agent = _agent_lock(agent)
    old_config = config_of(agent)
    new_config = config_validate({**old_config, **(config or {})})
    if config and "tools" in config:
        new_config["tools"] = tools_restore(new_config["tools"], old_config["tools"])
    new_name = _name_clean(name) if name is not None else agent.name
    details = change_details(agent_fields(agent.name, old_config), agent_fields(new_name, new_config))
    if details:
        _config_store(agent, config=new_config, name=new_name)
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
    agent = _agent_lock(agent)
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
    _config_store(agent, config=new_config)
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
    agent = _agent_lock(agent)
    current = config_of(agent)
    removed = next((t for t in current["tools"] if t["name"] == name), None)
    if removed is None:
        raise not_found(f"tool '{name}'")
    tools = [t for t in current["tools"] if t["name"] != name]
    _config_store(agent, config={**current, "tools": tools})
    audit_record(
        organisation=agent.organisation,
        actor=actor,
        action="tool.remove",
        resource_type="tool",
        resource_id=f"{agent.public_id}/{name}",
        details={"agent_id": agent.public_id, "tool": name, "old": removed["config"]},
    )
    return agent


# --- deployments -------------------------------------------------------------


def _next_version(agent: Agent) -> str:
    """``v<n>`` one above the highest ``v<n>`` label the agent has used."""
    numbers = [
        int(v[1:])
        for v in Deployment.objects.filter(agent=agent).values_list("version", flat=True)
        if re.fullmatch(r"v\d{1,9}", v)
    ]
    return f"v{max(numbers, default=0) + 1}"


def _deployment_activate(
    agent: Agent, *, replaced_status: str, **fields
) -> tuple[Deployment, Deployment | None]:
    """Make a new deployment the agent's active one; the one it replaces gets
    ``replaced_status``. The caller holds the agent's row lock."""
    previous = Deployment.objects.filter(agent=agent, status=DeploymentStatus.ACTIVE).first()
    if previous is not None:
        previous.status = replaced_status
        previous.save(update_fields=["status"])
    deployment = Deployment.objects.create(agent=agent, status=DeploymentStatus.ACTIVE, **fields)
    return deployment, previous


@transaction.atomic
def deployment_create(
    *,
    agent: Agent,
    actor: Actor,
    version: str | None = None,
    changes: str = "",
    config: dict | None = None,
    deployed_at: datetime | None = None,
) -> Deployment:
    """Record a deployment of ``agent``; it becomes the active one and the
    previously active deployment is superseded. ``version`` defaults to the next
    ``v<n>``; a label the agent already used is a 409. ``config`` becomes the
    agent's configuration (masked tool settings sent back unchanged keep their
    secrets); without it the deployment snapshots the current configuration.
    Traces ingested from now on carry this version unless they name another."""
    agent = _agent_lock(agent)
    current = config_of(agent)
    if config is not None:
        config = config_validate(config)
        config["tools"] = tools_restore(config["tools"], current["tools"])
    else:
        config = current
    if version is None:
        version = _next_version(agent)
    elif not re.fullmatch(VERSION_PATTERN, version) or len(version) > 64:
        raise ApiError(400, "invalid_request", "version: letters, digits and _ . + - only, at most 64")
    if Deployment.objects.filter(agent=agent, version=version).exists():
        raise ApiError(409, "version_exists", f"agent '{agent.public_id}' already has a deployment {version}")
    if "\x00" in changes:
        raise ApiError(400, "invalid_request", "changes: contains a NUL character")
    details = {"agent_id": agent.public_id, "version": version, "changes": changes}
    config_change = change_details(agent_fields(agent.name, current), agent_fields(agent.name, config))
    if config_change:
        details["changed_fields"] = config_change["changed_fields"]
        _config_store(agent, config=config)
    deployment, previous = _deployment_activate(
        agent,
        replaced_status=DeploymentStatus.SUPERSEDED,
        version=version,
        deployed_at=deployed_at or timezone.now(),
        deployed_by=actor.user_id,
        changes=changes,
        config=config,
    )
    details["superseded"] = previous.version if previous else None
    audit_record(
        organisation=agent.organisation,
        actor=actor,
        action="deployment.create",
        resource_type="deployment",
        resource_id=str(deployment.pk),
        details=details,
    )
    return deployment


@transaction.atomic
def score_add(*, trace: Trace, name: str, value: Decimal, comment: str = "") -> Score:
    """Attach an evaluation score to a stored trace; the trace's rollup bucket
    counts it, so ``avg_evaluation_score`` follows at once."""
    score = Score.objects.create(
        organisation_id=trace.organisation_id,
        trace=trace,
        agent_id=trace.agent_id,
        channel=trace.channel,
        deployment_version=trace.deployment_version,
        trace_created_at=trace.created_at,
        name=name,
        value=value,
        comment=comment,
    )
    deltas = RollupDeltas()
    deltas.count(Counted(SCORE_FACTS, Score.objects.filter(pk=score.pk)))
    deltas.apply()
    return score


@transaction.atomic
def deployment_rollback(*, agent: Agent, version_id: int, actor: Actor) -> Deployment:
    """Make deployment ``version_id``'s configuration active again as a new
    deployment (history is append-only): labelled with the next ``v<n>``, it
    records ``rollback_of``; the deployment it replaces is marked rolled_back and
    the agent's configuration becomes the snapshot. An unknown deployment or
    another agent's is a 404; one whose configuration is already active a 409.
    The agent's row lock makes concurrent rollbacks queue, so there is never more
    than one active deployment."""
    agent = _agent_lock(agent)
    target = Deployment.objects.filter(agent=agent, pk=version_id).first()
    if target is None:
        raise not_found(f"deployment {version_id} of agent '{agent.public_id}'")
    active = Deployment.objects.filter(agent=agent, status=DeploymentStatus.ACTIVE).first()
    if active is not None and target.pk in (active.pk, active.rollback_of_id):
        raise ApiError(409, "already_active", f"the configuration of {target.version} is already active")
    current = config_of(agent)
    config = config_complete(target.config)
    config_change = change_details(agent_fields(agent.name, current), agent_fields(agent.name, config))
    if config_change:
        _config_store(agent, config=config)
    deployment, previous = _deployment_activate(
        agent,
        replaced_status=DeploymentStatus.ROLLED_BACK,
        version=_next_version(agent),
        deployed_at=timezone.now(),
        deployed_by=actor.user_id,
        changes=f"Rollback to {target.version}",
        config=config,
        rollback_of=target,
    )
    audit_record(
        organisation=agent.organisation,
        actor=actor,
        action="deployment.rollback",
        resource_type="deployment",
        resource_id=str(deployment.pk),
        details={
            "agent_id": agent.public_id,
            "version": deployment.version,
            "rollback_of": target.pk,
            "rollback_to_version": target.version,
            "rolled_back": previous.version if previous else None,
            "changed_fields": config_change.get("changed_fields", []),
        },
    )
    return deployment


# --- phone numbers -----------------------------------------------------------

E164 = re.compile(r"\+[1-9][0-9]{1,14}")


def phone_number_normalise(raw: str) -> str:
    """E.164 (``+14155550100``) from what a person types: spaces, dots, dashes and
    brackets are dropped, a leading ``00`` becomes ``+``."""
    number = re.sub(r"[\s().-]", "", raw or "")
    if number.startswith("00"):
        number = "+" + number[2:]
    if not E164.fullmatch(number):
        raise ApiError(
            400, "invalid_phone_number", f"'{raw}' is not an international number such as +14155550100"
        )
    return number


@transaction.atomic
def phone_number_assign(*, organisation, number: str, agent: Agent, actor: Actor) -> PhoneNumber:
    """Assign ``number`` to ``agent`` (an active agent of ``organisation``),
    adding the number if it is new and moving it if another agent has it.
    Records phone_number.assign with the agent and the previous one."""
    number = phone_number_normalise(number)
    agent = _agent_lock(agent)
    if agent.organisation_id != organisation.pk:
        raise not_found(f"agent '{agent.public_id}'")
    phone, _ = PhoneNumber.objects.select_for_update().get_or_create(organisation=organisation, number=number)
    if phone.agent_id == agent.pk:
        return phone
    previous = phone.agent.public_id if phone.agent_id else None
    phone.agent = agent
    phone.assigned_at = timezone.now()
    phone.save(update_fields=["agent", "assigned_at"])
    audit_record(
        organisation=organisation,
        actor=actor,
        action="phone_number.assign",
        resource_type="phone_number",
        resource_id=number,
        details={"agent_id": agent.public_id, "previous_agent_id": previous},
    )
    return phone


@transaction.atomic
def phone_number_release(*, phone_number: PhoneNumber, actor: Actor) -> PhoneNumber:
    """Unassign the number from its agent; it stays on the organisation's list.
    Records phone_number.release with the agent; releasing a free number records nothing."""
    phone = PhoneNumber.objects.select_for_update().get(pk=phone_number.pk)
    if phone.agent_id is None:
        return phone
    agent_id = phone.agent.public_id
    phone.agent = None
    phone.assigned_at = None
    phone.save(update_fields=["agent", "assigned_at"])
    audit_record(
        organisation=phone.organisation,
        actor=actor,
        action="phone_number.release",
        resource_type="phone_number",
        resource_id=phone.number,
        details={"agent_id": agent_id},
    )
    return phone
