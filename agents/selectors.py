"""Reads for agents, conversations and traces."""

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from django.db.models import Q, QuerySet
from django.utils.dateparse import parse_datetime

from thinnest_analytics.cursors import cursor_decode, cursor_encode, invalid_cursor
from thinnest_analytics.errors import ApiError, not_found

from .config import agent_fields, change_details, config_complete, config_masked, config_of
from .models import Agent, Deployment, DeploymentStatus, PhoneNumber, Session, Trace, TraceKey
from .steps import steps_with_texts


def agent_get(*, organisation, public_id: str) -> Agent:
    """The organisation's agent, or 404 (also for another organisation's agent)."""
    agent = Agent.objects.filter(organisation=organisation, public_id=public_id).first()
    if agent is None:
        raise not_found(f"agent '{public_id}'")
    return agent


def agent_list_for_page(*, organisation) -> list[Agent]:
    """The organisation's agents for the Agents page: active ones first, each
    group by name."""
    return list(Agent.objects.filter(organisation=organisation).order_by("archived_at", "name"))


def agents_exist(*, organisation) -> bool:
    """Whether the organisation has registered any agent, archived ones too."""
    return Agent.objects.filter(organisation=organisation).exists()


def agent_choices(*, organisation, blank: str | None = None) -> list[tuple[str, str]]:
    """The agents a form may pick, as ``(agent id, "Name (agent id)")`` choices by
    name: the organisation's active agents (an archived agent takes no new
    phone numbers, budgets or rules). With ``blank``, a first choice ``("",
    blank)`` stands for no agent in particular."""
    agents = Agent.objects.filter(organisation=organisation, archived_at__isnull=True).order_by("name")
    choices = [(a.public_id, f"{a.name} ({a.public_id})") for a in agents.only("public_id", "name")]
    return [("", blank), *choices] if blank is not None else choices


def agent_list_for_filter(*, organisation) -> list[Agent]:
    """The organisation's agents by name, for a filter's choices."""
    return list(Agent.objects.filter(organisation=organisation).only("public_id", "name").order_by("name"))


def agent_list(*, organisation) -> list[dict]:
    return [
        {"id": a.public_id, "name": a.name, "created_at": a.created_at, "archived": a.archived_at is not None}
        for a in Agent.objects.filter(organisation=organisation)
    ]


def _encode_cursor(trace: Trace) -> str:
    return cursor_encode(trace.created_at.isoformat(), trace.pk)


def _decode_cursor(cursor: str) -> tuple[datetime, int]:
    values = cursor_decode(cursor)
    try:
        created, pk = values
        created_at = parse_datetime(created)
    except (ValueError, TypeError):
        raise invalid_cursor() from None
    if created_at is None or not isinstance(pk, int):
        raise invalid_cursor()
    return created_at, pk


def _trace_summary(t: Trace) -> dict:
    return {
        "id": t.public_id,
        "session_id": t.session.public_id,
        "input": t.input,
        "output": t.output,
        "tool_calls": t.tool_calls,
        "input_tokens": t.input_tokens,
        "output_tokens": t.output_tokens,
        "latency_ms": t.latency_ms,
        "cost_usd": t.cost_usd,
        "status": t.status,
        "created_at": t.created_at,
        "channel": t.channel,
        "model": t.model,
        "deployment_version": t.deployment_version,
        "error": t.error,
    }


def trace_page(
    *,
    agent: Agent,
    limit: int,
    cursor: str | None = None,
    status: str | None = None,
    session_id: str | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
) -> dict:
    """A page of the agent's traces, newest first, keyset-paginated on
    (created_at, id) so traces arriving meanwhile cause no gaps or repeats."""
    if created_from and created_to and created_from >= created_to:
        raise ApiError(400, "invalid_window", "'from' must be before 'to'")
    qs = Trace.objects.filter(agent=agent).prefetch_related("session")
    if status:
        qs = qs.filter(status=status)
    if session_id:
        session = Session.objects.filter(organisation_id=agent.organisation_id, public_id=session_id).first()
        if session is None:
            return {"traces": [], "next_cursor": None}
        qs = qs.filter(session=session, **_conversation_times(session))
    if created_from:
        qs = qs.filter(created_at__gte=created_from)
    if created_to:
        qs = qs.filter(created_at__lt=created_to)
    if cursor:
        at, pk = _decode_cursor(cursor)
        qs = qs.filter(Q(created_at__lt=at) | Q(created_at=at, pk__lt=pk))
    traces = list(qs.order_by("-created_at", "-pk")[: limit + 1])
    next_cursor = _encode_cursor(traces[limit - 1]) if len(traces) > limit else None
    return {"traces": [_trace_summary(t) for t in traces[:limit]], "next_cursor": next_cursor}


def _conversation_times(session: Session) -> dict:
    """Bounds on ``created_at`` that every trace of the conversation meets: its
    first trace and last activity, which ingestion keeps at or beyond its
    traces' times. They let PostgreSQL read only the partitions of those days
    (the traces table is partitioned by ``created_at``)."""
    if session.first_trace_at is None or session.last_activity_at is None:
        return {}
    return {"created_at__gte": session.first_trace_at, "created_at__lte": session.last_activity_at}


def conversation_traces(session: Session) -> QuerySet[Trace]:
    """A conversation's traces (unordered), read from the days it spans."""
    return Trace.objects.filter(session=session, **_conversation_times(session))


def traces_by_public_id(*, organisation, public_ids: Sequence[str]) -> QuerySet[Trace]:
    """The organisation's traces with these public ids. Their keys give their
    times first, so on PostgreSQL only the partitions of those days are read."""
    times = set(
        TraceKey.objects.filter(organisation=organisation, public_id__in=public_ids).values_list(
            "created_at", flat=True
        )
    )
    return Trace.objects.filter(organisation=organisation, public_id__in=public_ids, created_at__in=times)


def trace_steps(trace: Trace) -> QuerySet:
    """A trace's steps in order (read from the partition of its day)."""
    return trace.steps.filter(trace_created_at=trace.created_at)


def trace_scores(trace: Trace) -> list:
    """A trace's scores, oldest first."""
    return list(trace.scores.filter(trace_created_at=trace.created_at).order_by("created_at", "pk"))


def trace_get(*, organisation, public_id: str) -> Trace:
    trace = (
        traces_by_public_id(organisation=organisation, public_ids=[public_id])
        .select_related("session", "agent")
        .first()
    )
    if trace is None:
        raise not_found(f"trace '{public_id}'")
    return trace


def trace_with_steps(*, organisation, public_id: str) -> dict:
    """The trace page's parts: the trace, its steps in order with their
    waterfall (``step_waterfall``), and its scores oldest first."""
    trace = trace_get(organisation=organisation, public_id=public_id)
    steps = steps_with_texts(trace, trace_steps(trace))
    return {
        "trace": trace,
        "steps": steps,
        "waterfall": step_waterfall(trace, steps),
        "scores": trace_scores(trace),
    }


def trace_detail(*, organisation, public_id: str) -> dict:
    trace = trace_get(organisation=organisation, public_id=public_id)
    return {
        **_trace_summary(trace),
        "agent_id": trace.agent.public_id,
        "reasoning": trace.reasoning,
        "cost_source": trace.cost_source,
        "metadata": trace.metadata,
        "steps": steps_with_texts(trace, trace_steps(trace)),
        "scores": trace_scores(trace),
    }


def recent_traces(*, organisation, limit: int = 20) -> list[Trace]:
    return list(
        Trace.objects.filter(organisation=organisation)
        .prefetch_related("agent", "session")
        .order_by("-created_at", "-pk")[:limit]
    )


def agent_detail(agent: Agent, *, all_settings: bool) -> dict:
    """The agent with its configuration as it may be shown: tool secrets masked,
    and without ``all_settings`` every tool setting the tool does not make public
    (``config.tool_masked``)."""
    active = active_deployment(agent=agent)
    return {
        "id": agent.public_id,
        "name": agent.name,
        "config": config_masked(config_of(agent), all_settings=all_settings),
        "created_at": agent.created_at,
        "updated_at": agent.updated_at,
        "archived": agent.archived_at is not None,
        "active_version": active.version if active else None,
    }


def deployment_out(deployment: Deployment) -> dict:
    return {
        "id": deployment.pk,
        "version": deployment.version,
        "status": deployment.status,
        "deployed_at": deployment.deployed_at,
        "deployed_by": deployment.deployed_by,
        "changes": deployment.changes,
        "rollback_of": deployment.rollback_of_id,
    }


def deployment_detail(deployment: Deployment) -> dict:
    """One deployment with its configuration snapshot, tool secrets masked (for
    admins: every other setting shown)."""
    return {
        **deployment_out(deployment),
        "agent_id": deployment.agent.public_id,
        "config": config_masked(config_complete(deployment.config), all_settings=True),
    }


def active_deployment(*, agent: Agent) -> Deployment | None:
    """The agent's active deployment; None before its first."""
    return agent.deployments.filter(status=DeploymentStatus.ACTIVE).first()


def deployment_get(*, agent: Agent, deployment_id: int) -> Deployment:
    """One of the agent's deployments; ``not_found`` for any other."""
    deployment = agent.deployments.filter(pk=deployment_id).first()
    if deployment is None:
        raise not_found(f"deployment {deployment_id}")
    return deployment


def deployment_history(*, agent: Agent) -> list[Deployment]:
    """The agent's deployments, newest first."""
    return list(agent.deployments.select_related("rollback_of").order_by("-deployed_at", "-pk"))


def rollback_preview(*, agent: Agent, deployment: Deployment) -> dict:
    """What rolling back to ``deployment`` would do: the deployment it replaces,
    the fields of the agent's configuration that change, and the snapshot that
    becomes active (tool secrets masked)."""
    snapshot = config_complete(deployment.config)
    change = change_details(agent_fields(agent.name, config_of(agent)), agent_fields(agent.name, snapshot))
    return {
        "active": active_deployment(agent=agent),
        "changed_fields": change.get("changed_fields", []),
        "snapshot": config_masked(snapshot, all_settings=True),
    }


def phone_number_list(*, organisation) -> list[PhoneNumber]:
    """The organisation's phone numbers with the agent answering each."""
    return list(PhoneNumber.objects.filter(organisation=organisation).select_related("agent"))


def agent_phone_numbers(*, agent: Agent) -> list[PhoneNumber]:
    """The numbers ``agent`` answers."""
    return list(agent.phone_numbers.all())


def phone_number_get(*, organisation, phone_id: int) -> PhoneNumber:
    """One of the organisation's phone numbers; ``not_found`` for any other."""
    phone = PhoneNumber.objects.filter(organisation=organisation, pk=phone_id).first()
    if phone is None:
        raise not_found("phone number")
    return phone


# --- dashboard pages ------------------------------------------------------------


def conversation_get(*, organisation, public_id: str) -> dict:
    """A conversation with its turns in order, like a transcript, and its totals
    summed from those turns and its call: turns, input and output tokens, mean
    response time (ms), cost (USD: priced turns plus the call's minutes; turns
    without a price are counted, not guessed) and duration."""
    session = (
        Session.objects.select_related("agent").filter(organisation=organisation, public_id=public_id).first()
    )
    if session is None:
        raise not_found(f"conversation '{public_id}'")
    # The page shows each turn, not its steps (the trace page does).
    turns = list(conversation_traces(session).order_by("created_at", "pk"))
    latencies = [t.latency_ms for t in turns if t.latency_ms is not None]
    totals = {
        "turns": len(turns),
        "input_tokens": sum(t.input_tokens for t in turns),
        "output_tokens": sum(t.output_tokens for t in turns),
        "avg_latency_ms": sum(latencies) / len(latencies) if latencies else None,
        "llm_cost_usd": sum((t.cost_usd for t in turns if t.cost_usd is not None), Decimal(0)),
        "voice_cost_usd": session.voice_cost_usd,  # the call's minutes, priced when it ended
        "unpriced_turns": sum(1 for t in turns if t.cost_usd is None),
        "duration": session.duration,
    }
    totals["cost_usd"] = totals["llm_cost_usd"] + totals["voice_cost_usd"]
    return {"conversation": session, "turns": turns, "totals": totals}


def step_waterfall(trace: Trace, steps: list) -> dict:
    """Bars for the trace view's waterfall: each step's start and length as a
    share of the drawn span (steps without a start follow one another).

    ``span_ms`` is how long the steps take from the first start to the last
    end; ``latency_ms`` the trace's own latency as the agent reported it. They
    differ when the agent measures its latency from another point than its
    first step, or when steps without a start time are laid end to end though
    they ran side by side; ``note`` says which way, and the drawing covers both
    (``latency_x`` marks the reported latency on it)."""
    latency = float(trace.latency_ms) if trace.latency_ms is not None else None
    if not steps:
        return {"rows": [], "total_ms": latency or 0, "span_ms": 0, "latency_ms": latency, "note": ""}
    starts = [s.started_at for s in steps if s.started_at is not None]
    origin = min(starts) if starts else None
    cursor_ms = 0.0
    rows = []
    for step in steps:
        length = float(step.latency_ms or 0)
        if origin is not None and step.started_at is not None:
            offset = (step.started_at - origin).total_seconds() * 1000
        else:
            offset = cursor_ms
        cursor_ms = max(cursor_ms, offset + length)
        rows.append(
            {"step": step, "offset_ms": offset, "length_ms": length, "placed": step.started_at is None}
        )
    span = cursor_ms
    total = max([span, latency or 0, 1.0])
    for row in rows:
        row["x"] = round(row["offset_ms"] / total * 100, 3)
        row["width"] = round(max(row["length_ms"] / total * 100, 0.4), 3)
    note = ""
    if latency is not None and round(span) != round(latency):
        if span > latency:
            laid = sum(1 for row in rows if row["placed"])
            why = (
                f"{laid} step{'s' if laid != 1 else ''} without a start time {'are' if laid != 1 else 'is'} "
                "drawn one after another, though they may have overlapped; the agent may also time its "
                "latency from a later point than its first step"
                if laid
                else "the agent times its latency from a later point than its first step, or steps overlap its end"
            )
            note = f"The steps span {span:,.0f} ms, longer than the trace's reported latency of {latency:,.0f} ms: {why}."
        else:
            note = (
                f"The steps account for {span:,.0f} ms of the trace's {latency:,.0f} ms; "
                "the rest was spent outside any recorded step."
            )
    return {
        "rows": rows,
        "total_ms": total,
        "span_ms": span,
        "latency_ms": latency,
        "latency_x": round(latency / total * 100, 3) if latency is not None else None,
        "note": note,
    }
