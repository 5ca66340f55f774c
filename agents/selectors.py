"""Reads for agents, conversations and traces."""

from datetime import datetime

from django.db.models import Exists, OuterRef, Q, Subquery
from django.utils.dateparse import parse_datetime

from thinnest_analytics.cursors import cursor_decode, cursor_encode, invalid_cursor
from thinnest_analytics.errors import ApiError, not_found

from .config import agent_fields, change_details, config_complete, config_masked, config_of
from .models import Agent, Deployment, DeploymentStatus, Session, Trace


def agent_get(*, organisation, public_id: str) -> Agent:
    """The organisation's agent, or 404 (also for another organisation's agent)."""
    agent = Agent.objects.filter(organisation=organisation, public_id=public_id).first()
    if agent is None:
        raise not_found(f"agent '{public_id}'")
    return agent


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
        qs = qs.filter(session__public_id=session_id)
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


def trace_get(*, organisation, public_id: str) -> Trace:
    trace = (
        Trace.objects.select_related("session", "agent")
        .filter(organisation=organisation, public_id=public_id)
        .first()
    )
    if trace is None:
        raise not_found(f"trace '{public_id}'")
    return trace


def trace_detail(*, organisation, public_id: str) -> dict:
    trace = trace_get(organisation=organisation, public_id=public_id)
    return {
        **_trace_summary(trace),
        "agent_id": trace.agent.public_id,
        "reasoning": trace.reasoning,
        "cost_source": trace.cost_source,
        "metadata": trace.metadata,
        "steps": list(trace.steps.all()),
        "scores": list(trace.scores.order_by("created_at", "pk")),
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
    active = agent.deployments.filter(status=DeploymentStatus.ACTIVE).first()
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
        "active": agent.deployments.filter(status=DeploymentStatus.ACTIVE).first(),
        "changed_fields": change.get("changed_fields", []),
        "snapshot": config_masked(snapshot, all_settings=True),
    }


# --- dashboard pages ------------------------------------------------------------

PAGE_SIZE = 25


def _page_of(rows: list, limit: int, key) -> tuple[list, str | None]:
    """Rows of one page and the cursor of the next (None on the last page)."""
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], cursor_encode(*key(last))


# The lists below fetch their agents and conversations in a second query rather
# than a join: a page is then one ordered index scan whatever the planner believes
# about the newest rows (statistics lag behind a table that grows by the second,
# and a join planned for "2 rows" sorts the whole window).


def _keyset(qs, column: str, cursor: str | None):
    """Rows strictly after the cursor in (column DESC, id DESC) order."""
    if not cursor:
        return qs
    values = cursor_decode(cursor)
    try:
        at, pk = parse_datetime(values[0]), int(values[1])
    except (ValueError, TypeError, IndexError):
        raise invalid_cursor() from None
    if at is None:
        raise invalid_cursor()
    return qs.filter(Q(**{f"{column}__lt": at}) | Q(**{column: at, "pk__lt": pk}))


def conversation_page(
    *,
    organisation,
    window,
    agent_id: str | None = None,
    channel: str | None = None,
    status: str | None = None,
    text: str | None = None,
    cursor: str | None = None,
    limit: int = PAGE_SIZE,
) -> dict:
    """Conversations that started in the window, newest first. ``status`` is
    success or failed; ``text`` searches the inputs and outputs of their traces."""
    qs = Session.objects.filter(
        organisation=organisation, started_at__gte=window.start, started_at__lt=window.end
    ).prefetch_related("agent")
    if agent_id:
        qs = qs.filter(agent__public_id=agent_id)
    if channel:
        qs = qs.filter(channel=channel)
    if status == "failed":
        qs = qs.filter(error_count__gt=0)
    elif status == "success":
        qs = qs.filter(error_count=0)
    if text:
        qs = qs.filter(
            Exists(
                Trace.objects.filter(session=OuterRef("pk")).filter(
                    Q(input__icontains=text) | Q(output__icontains=text)
                )
            )
        )
    first_input = (
        Trace.objects.filter(session=OuterRef("pk"))
        .exclude(input="")
        .order_by("created_at", "pk")
        .values("input")[:1]
    )
    qs = _keyset(qs, "started_at", cursor).annotate(first_input=Subquery(first_input))
    rows = list(qs.order_by("-started_at", "-pk")[: limit + 1])
    items, next_cursor = _page_of(rows, limit, lambda s: (s.started_at.isoformat(), s.pk))
    return {"conversations": items, "next_cursor": next_cursor}


def conversation_get(*, organisation, public_id: str) -> dict:
    """A conversation with its turns in order, like a transcript."""
    session = (
        Session.objects.select_related("agent").filter(organisation=organisation, public_id=public_id).first()
    )
    if session is None:
        raise not_found(f"conversation '{public_id}'")
    turns = list(Trace.objects.filter(session=session).order_by("created_at", "pk").prefetch_related("steps"))
    return {"conversation": session, "turns": turns}


def trace_list_page(
    *,
    organisation,
    window,
    agent_id: str | None = None,
    status: str | None = None,
    cursor: str | None = None,
    limit: int = PAGE_SIZE,
) -> dict:
    qs = Trace.objects.filter(
        organisation=organisation, created_at__gte=window.start, created_at__lt=window.end
    )
    if agent_id:
        qs = qs.filter(agent__public_id=agent_id)
    if status in ("success", "error"):
        qs = qs.filter(status=status)
    qs = _keyset(qs, "created_at", cursor).prefetch_related("agent", "session")
    rows = list(qs.order_by("-created_at", "-pk")[: limit + 1])
    items, next_cursor = _page_of(rows, limit, lambda t: (t.created_at.isoformat(), t.pk))
    return {"traces": items, "next_cursor": next_cursor}


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
