"""Storing OTLP spans and keeping the traces derived from them current."""

import logging
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import timedelta
from types import SimpleNamespace

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agents.conversations import sessions_lock, sessions_refresh
from agents.ingest import (
    DUPLICATE,
    STEP_FIELDS,
    STORED,
    TRACE_FIELDS,
    TraceRecord,
    TraceRow,
    trace_keys_move,
    traces_insert,
    traces_store,
)
from agents.models import Deployment, DeploymentStatus, Score, Session, Trace, TraceStep
from agents.partitions import partitions_ensure
from agents.services import agents_resolve
from agents.steps import step_values
from audit.services import Actor
from metrics.rollups import CONVERSATION_FACTS, SCORE_FACTS, TRACE_FACTS, Counted, RollupDeltas
from pricing.prices import price_table
from thinnest_analytics.db import insert_ignore_conflicts, update_by_pk
from voice.services import voice_events_ingest

from .mapping import Draft, public_id_of, trace_agent, trace_draft
from .otlp import LogIn, SpanIn
from .received import old_traces, received_lock, received_store
from .voice import is_voice, voice_trace

logger = logging.getLogger(__name__)

UPDATED_TRACE_FIELDS = [f for f in TRACE_FIELDS if f not in ("organisation", "public_id", "received_at")]


@dataclass
class SpansResult:
    """What became of a request's spans: stored (or already stored) and rejected."""

    accepted: int = 0
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)
    # Public ids of the traces derived again by this call.
    traces: list[str] = field(default_factory=list)
    # Drafts carrying results of tool calls made in other traces.
    carried: list[Draft] = field(default_factory=list)

    def reject(self, count: int, reason: str) -> None:
        self.rejected += count
        if len(self.reasons) < 5:
            self.reasons.append(reason)


def logs_ingest(*, organisation, records: list[LogIn], actor: Actor) -> SpansResult:
    """Keep GenAI events sent as OTLP log records with their trace, and derive
    the trace again when its spans are there: each record is read as an event
    of its span, so the result is the same whether the records came before,
    with or after the spans. A re-sent record (same span, name, time, body and
    attributes) is kept once. ``accepted``/``rejected`` count log records."""
    result = SpansResult()
    incoming: dict[str, dict[str, LogIn]] = defaultdict(dict)
    for record in records:
        incoming[record.trace_id].setdefault(record.key, record)
    if incoming:
        with transaction.atomic():
            _store(organisation, {}, incoming, actor, result)
        _results_push(organisation, result.carried, actor)
    return result


def spans_ingest(*, organisation, spans: list[SpanIn], actor: Actor) -> SpansResult:
    """Store spans and derive again, from all of its stored spans, each trace
    that received new ones — all in one transaction.

    A re-sent span (same trace and span id) is accepted but changes nothing. A
    trace is derived once its local root span has arrived (see
    ``mapping.has_local_root``); its old version's contribution to the rollups
    and conversations is replaced by the new one's, so the end result is the
    same however the spans were split into requests and in whatever order they
    came. Unknown agents are registered (and audited) as with ``trace_ingest``.
    """
    result = SpansResult()
    incoming: dict[str, dict[str, SpanIn]] = defaultdict(dict)
    for span in spans:
        incoming[span.trace_id].setdefault(span.span_id, span)  # the first copy in a request wins
    if incoming:
        with transaction.atomic():
            _store(organisation, incoming, {}, actor, result)
        _results_push(organisation, result.carried, actor)
    return result


# How far apart a tool call and the request carrying its result may be, when
# each request is a trace of its own.
RESULT_WINDOW = timedelta(hours=1)


def _results_push(organisation, carried: list[Draft], actor: Actor) -> None:
    """Traces that carry the results of tool calls made in earlier traces of the
    same agent (an instrumented client without a span around its agent loop
    makes each request a trace): derive those earlier traces again, which then
    find their results (``_results_pull``). In a transaction of its own, as
    the earlier traces are locked after this request's."""
    owners = set()
    for draft in carried:
        candidates = Trace.objects.filter(
            organisation=organisation,
            agent__public_id=draft.agent_id,
            created_at__gte=draft.created_at - RESULT_WINDOW,
            created_at__lte=draft.created_at,
            public_id__startswith=public_id_of(""),
        ).exclude(public_id=draft.public_id)
        for public_id, tool_calls in candidates.values_list("public_id", "tool_calls"):
            waiting = {
                c.get("id") for c in tool_calls or [] if isinstance(c, dict) and c.get("result") is None
            }
            if waiting & set(draft.tool_results):
                owners.add(public_id.removeprefix(public_id_of("")))
    if owners:
        with transaction.atomic():
            _store(organisation, {}, {}, actor, SpansResult(), rederive=owners)


def _results_pull(organisation, drafts: dict[str, "Draft"]) -> None:
    """Results for the tool calls a draft made and did not see answered: from the
    later traces of the same agent that carried them (``metadata.tool_results``)."""
    for draft in drafts.values():
        waiting = draft.calls_awaiting_results()
        if not waiting:
            continue
        later = Trace.objects.filter(
            organisation=organisation,
            agent__public_id=draft.agent_id,
            created_at__gte=draft.created_at,
            created_at__lte=draft.created_at + RESULT_WINDOW,
            public_id__startswith=public_id_of(""),
        ).exclude(public_id=draft.public_id)
        found = {}
        for metadata in later.order_by("created_at").values_list("metadata", flat=True):
            for call_id, result in ((metadata or {}).get("tool_results") or {}).items():
                if call_id in waiting:
                    found.setdefault(call_id, result)
        if found:
            draft.tool_calls = [
                {**c, "result": found[c["id"]]} if c.get("id") in found and c.get("result") is None else c
                for c in draft.tool_calls
            ]


def with_log_records(spans: list[SpanIn], records: list[dict]) -> list[SpanIn]:
    """The spans with the log records of each appended to its events (in time
    order, as ``{"name", "time_ns", "attributes"}`` with the body's fields
    among the attributes), so mapping reads both forms alike."""
    by_span: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        body = record.get("body")
        fields = body if isinstance(body, dict) else ({"content": body} if body is not None else {})
        by_span[record["span_id"]].append(
            {
                "name": record["event_name"],
                "time_ns": record["time_ns"],
                "attributes": {**record["attributes"], **fields},
            }
        )
    if not by_span:
        return spans
    return [
        replace(s, events=[*s.events, *sorted(by_span[s.span_id], key=lambda e: e["time_ns"])])
        if s.span_id in by_span
        else s
        for s in spans
    ]


def _store(
    organisation,
    incoming: dict[str, dict[str, SpanIn]],
    incoming_logs: dict[str, dict[str, LogIn]],
    actor: Actor,
    result: SpansResult,
    rederive: set[str] = frozenset(),
) -> None:
    """Derive each trace the request touches once, from its stored spans (read
    once, with its lock) and the new ones, then write the traces and store the
    new spans: two round trips of received state around the write."""
    trace_ids = sorted(set(incoming) | set(incoming_logs) | set(rederive))
    now = timezone.now()
    state = received_lock(organisation, trace_ids, [public_id_of(t) for t in trace_ids], now)
    received, stored = state.received, state.stored
    limit = settings.OTEL_MAX_SPANS_PER_TRACE
    new_spans: dict[str, list[SpanIn]] = {}
    for trace_id in sorted(incoming):
        new = [s for sid, s in incoming[trace_id].items() if sid not in stored[trace_id]]
        result.accepted += len(incoming[trace_id]) - len(new)
        room = max(0, limit - len(stored[trace_id]))
        if len(new) > room:
            result.reject(len(new) - room, f"trace {trace_id} holds at most {limit} spans")
            new = new[:room]
        if new:
            new_spans[trace_id] = new
    new_logs: dict[str, list[dict]] = {}
    for trace_id in sorted(incoming_logs):
        known = {r["key"] for r in received[trace_id].log_records}
        new = [r.as_stored() for key, r in incoming_logs[trace_id].items() if key not in known]
        result.accepted += len(incoming_logs[trace_id]) - len(new)
        room = max(0, limit - len(known))
        if len(new) > room:
            result.reject(len(new) - room, f"trace {trace_id} holds at most {limit} log records")
            new = new[:room]
        if new:
            new_logs[trace_id] = new

    calls = False
    for trace_id in sorted(new_spans):
        calls |= _calls_follow(organisation, [*stored[trace_id].values(), *new_spans[trace_id]], actor)

    prices = price_table(organisation=organisation)
    drafts: dict[str, Draft] = {}
    for trace_id in sorted(set(new_spans) | set(new_logs) | set(rederive)):
        spans = [*stored[trace_id].values(), *new_spans.get(trace_id, [])]
        records = [*received[trace_id].log_records, *new_logs.get(trace_id, [])]
        draft = trace_draft(with_log_records(spans, records), prices) if spans else None
        if draft is not None:
            drafts[trace_id] = draft
    _results_pull(organisation, drafts)

    # A voice call's events may have moved its traces to the call's conversation.
    old = old_traces(organisation, [d.public_id for d in drafts.values()]) if calls else state.old
    pending = _Pending(new_spans, new_logs)
    for trace_id, draft in list(drafts.items()):
        if draft.public_id in old and not received[trace_id].derived:
            _refuse(result, pending, drafts, trace_id, f"the id {draft.public_id} is used by another trace")

    derived = derived_traces_store(organisation, drafts, old, pending, actor, result)

    received_store(organisation, received, new_spans, new_logs, derived, now)
    result.accepted += sum(len(s) for s in new_spans.values()) + sum(len(r) for r in new_logs.values())
    result.traces = sorted(public_id_of(trace_id) for trace_id in derived)
    result.carried = [drafts[t] for t in sorted(derived) if drafts[t].tool_results]


def _calls_follow(organisation, spans: list[SpanIn], actor: Actor) -> bool:
    """The voice call a voice framework's trace describes, brought up to date
    from all of its spans through the call events service (re-sent events are
    applied once), before the trace joins the call's conversation. Whether
    there was a call."""
    if not is_voice(spans):
        return False
    agent_id, agent_name = trace_agent(spans)
    call = voice_trace(spans, agent_id=agent_id, agent_name=agent_name, trace_id=spans[0].trace_id)
    if call is None:
        return False
    outcome = voice_events_ingest(organisation=organisation, items=call.events, actor=actor)
    if outcome.rejected:
        logger.info("voice events of call %s rejected: %s", call.call_id, outcome.rejected)
    return True


@dataclass
class _Pending:
    """What a request brings, by trace id, until it is stored: new spans and
    new log records. A trace that cannot be stored loses both."""

    spans: dict[str, list[SpanIn]]
    logs: dict[str, list[dict]]

    def drop(self, trace_id: str) -> int:
        return len(self.spans.pop(trace_id, [])) + len(self.logs.pop(trace_id, []))


def _refuse(result: SpansResult, pending: _Pending, drafts: dict, trace_id: str, reason: str) -> None:
    """Keep a trace as it was: its new spans and log records are rejected, not stored."""
    result.reject(pending.drop(trace_id), reason)
    drafts.pop(trace_id, None)


def derived_traces_store(
    organisation, drafts: dict[str, Draft], old: dict, pending: _Pending, actor, result
) -> set[str]:
    """Write the derived traces, their steps, conversations and rollup changes,
    through ingestion's agents, conversations and rollups: the one place where
    OTLP hands its traces to ingestion. Returns the ids of the traces written.

    What it needs from ingestion, for each draft (``old`` holds the stored
    version of a trace derived before, as ``received.OLD_TRACE_FIELDS``):
    agents registered (and audited) on first sight; the trace inserted, or
    replaced in place when derived again (same row id, ``received_at`` and,
    when the spans name none, deployment version), its steps rewritten; the
    old version's contribution to rollups, conversations and scores retracted
    and the new one's added; a trace without a conversation id keeps a
    conversation of its own, which follows it to another agent or channel and
    is removed once left empty; a draft whose conversation belongs to another
    agent or channel, or whose id another trace took meanwhile, is refused
    (``_refuse``: its new spans and log records are rejected with the reason).

    When none of the drafts was derived before, they are stored as new traces
    by ingestion's ``traces_store`` in one call; the few it refuses for their
    conversation take the path of traces derived again, which words the
    refusal or lets a trace's own conversation follow it. A request that also
    derives traces again takes that path for all of its drafts, so that its
    conversations are locked once, in one order."""
    if not drafts:
        return set()
    written: set[str] = set()
    if not any(d.public_id in old for d in drafts.values()):
        written = _new_traces_store(organisation, drafts, pending, actor, result)
        drafts = {trace_id: d for trace_id, d in drafts.items() if trace_id not in written}
        if not drafts:
            return written
    agents = agents_resolve(
        organisation=organisation,
        wanted={d.agent_id: d.agent_name for d in drafts.values()},
        actor=actor,
    )
    wanted: dict[str, tuple[int, str]] = {}
    for d in drafts.values():
        wanted.setdefault(d.session_id or d.public_id, (agents[d.agent_id].pk, d.channel))
    for d in drafts.values():
        if d.public_id in old:
            row = old[d.public_id]
            wanted.setdefault(row["session__public_id"], (row["agent_id"], row["channel"]))
    sessions = sessions_lock(organisation=organisation, wanted=wanted)

    rows, adopted = _rows_of(organisation, drafts, old, agents, sessions, pending, result)
    # The rollups lose what the stored versions of these traces, their scores and
    # the conversations they may leave count now, and gain what they count once
    # written: both read from the rows with the facts of metrics.rollups.
    derived_again = [old[d.public_id]["id"] for d in drafts.values() if d.public_id in old]
    conversations = (Session, "pk", sorted(_conversations_touched(drafts, old, rows)))
    # The traces' and scores' times, before and after: their reads touch only
    # those days' partitions.
    times = [old[d.public_id]["created_at"] for d in drafts.values() if d.public_id in old]
    times += [row.created_at for row in rows.values()]
    within = (min(times), max(times)) if times else None
    deltas = RollupDeltas()
    deltas.count(
        Counted(TRACE_FACTS, (Trace, "pk", derived_again), sign=-1, within=within),
        Counted(SCORE_FACTS, (Score, "trace_id", derived_again), sign=-1, within=within),
        Counted(CONVERSATION_FACTS, conversations, sign=-1),
    )
    pk_of = _rows_store(organisation, drafts, old, rows, pending, result)
    moved = []
    for trace_id, row in rows.items():
        previous = old.get(drafts[trace_id].public_id)
        if previous is not None:
            moved.append((previous, row._asdict() | {"agent_id": row.agent}, pk_of[trace_id]))
    _scores_move(moved)
    _conversations_refresh(drafts, old, rows, sessions, adopted)
    deltas.count(
        Counted(TRACE_FACTS, (Trace, "pk", [pk_of[trace_id] for trace_id in rows]), within=within),
        Counted(SCORE_FACTS, (Score, "trace_id", derived_again), within=within),
        Counted(CONVERSATION_FACTS, conversations),
    )
    deltas.apply()
    return written | set(rows)


def _new_traces_store(organisation, drafts: dict[str, Draft], pending: _Pending, actor, result) -> set[str]:
    """Store drafts derived for the first time as new traces, in one call of
    ``traces_store``. Returns the ids of the traces stored; a draft whose id
    another trace took meanwhile is refused; one refused for its conversation
    stays in ``drafts`` for the caller."""
    trace_ids = sorted(drafts)
    outcomes = traces_store(
        organisation=organisation,
        records=[_record_of(drafts[trace_id]) for trace_id in trace_ids],
        actor=actor,
        now=timezone.now(),
    )
    written = set()
    for trace_id, outcome in zip(trace_ids, outcomes, strict=True):
        if outcome == STORED:
            written.add(trace_id)
        elif outcome == DUPLICATE:  # taken meanwhile by a trace sent to /api/traces
            _refuse(
                result,
                pending,
                drafts,
                trace_id,
                f"the id {drafts[trace_id].public_id} is used by another trace",
            )
    return written


def _record_of(d: Draft) -> TraceRecord:
    """A draft as ingestion's record: priced already, with its steps as objects."""
    return TraceRecord(
        public_id=d.public_id,
        agent_id=d.agent_id,
        created_at=d.created_at,
        agent_name=d.agent_name,
        session_id=d.session_id,
        channel=d.channel,
        deployment_version=d.deployment_version,
        input=d.input,
        reasoning=d.reasoning,
        output=d.output,
        tool_calls=d.tool_calls,
        model=d.model,
        input_tokens=d.input_tokens,
        output_tokens=d.output_tokens,
        latency_ms=d.latency_ms,
        cost_usd=d.cost_usd,
        cost_source=str(d.cost_source),
        status=d.status,
        error=d.error,
        metadata=d.metadata,
        steps=[SimpleNamespace(**step) for step in d.steps],
    )


def _rows_of(organisation, drafts, old, agents, sessions, pending, result):
    """The trace rows to write, by trace id, and the conversations adopted by
    their traces."""
    active_versions = dict(
        Deployment.objects.filter(
            agent__in=[agents[d.agent_id] for d in drafts.values()], status=DeploymentStatus.ACTIVE
        ).values_list("agent_id", "version")
    )
    adopted: set[int] = set()
    rows: dict[str, TraceRow] = {}
    now = timezone.now()
    for trace_id, d in sorted(drafts.items()):
        agent = agents[d.agent_id]
        session = sessions[d.session_id or d.public_id]
        previous = old.get(d.public_id)
        if session.agent_id != agent.pk or session.channel != d.channel:
            # A trace first derived without a conversation id has a conversation
            # of its own, named after it; when the trace turns out to be another
            # agent's or channel's, that conversation follows it.
            own = d.session_id is None and session.trace_count <= (
                1 if previous and previous["session_id"] == session.pk else 0
            )
            if not own:
                _refuse(
                    result,
                    pending,
                    drafts,
                    trace_id,
                    f"conversation '{session.public_id}' belongs to another agent or channel",
                )
                continue
            adopted.add(session.pk)
            session.agent_id, session.channel = agent.pk, d.channel
        if d.deployment_version is not None:
            version = d.deployment_version
        elif previous is not None:
            version = previous["deployment_version"]
        else:
            version = active_versions.get(agent.pk, "")
        rows[trace_id] = TraceRow(
            organisation.pk,
            agent.pk,
            session.pk,
            d.public_id,
            d.channel,
            version,
            d.input,
            d.reasoning,
            d.output,
            d.tool_calls,
            len(d.tool_calls),
            d.model,
            d.input_tokens,
            d.output_tokens,
            d.latency_ms,
            d.cost_usd,
            d.cost_source,
            d.status,
            d.error,
            d.metadata,
            d.created_at,
            previous["received_at"] if previous else now,
        )
    return rows, adopted


def _rows_store(organisation, drafts, old, rows, pending, result) -> dict[str, int]:
    """Insert new traces, update derived-again ones, rewrite their steps.
    Returns each trace's primary key by trace id."""
    pk_of = {trace_id: old[d.public_id]["id"] for trace_id, d in drafts.items() if d.public_id in old}
    inserted = traces_insert([row for trace_id, row in rows.items() if trace_id not in pk_of])
    pk_of.update({public_id.removeprefix("otel-"): pk for pk, public_id in inserted})
    for trace_id, d in list(drafts.items()):
        if trace_id not in pk_of:  # taken meanwhile by a trace sent to /api/traces
            _refuse(result, pending, drafts, trace_id, f"the id {d.public_id} is used by another trace")
            rows.pop(trace_id)
    rederived = {trace_id: row for trace_id, row in rows.items() if drafts[trace_id].public_id in old}
    partitions_ensure(moments=[row.created_at for row in rederived.values()])
    trace_keys_move(
        organisation=organisation,
        moved={
            row.public_id: row.created_at
            for row in rederived.values()
            if row.created_at != old[row.public_id]["created_at"]
        },
    )
    update_by_pk(
        Trace,
        UPDATED_TRACE_FIELDS,
        [
            (pk_of[trace_id], *(getattr(row, f) for f in UPDATED_TRACE_FIELDS))
            for trace_id, row in rows.items()
            if drafts[trace_id].public_id in old
        ],
    )
    # The old steps are in the partitions of their traces' old days.
    TraceStep.objects.filter(
        trace_id__in=[pk_of[trace_id] for trace_id, d in drafts.items() if d.public_id in old],
        trace_created_at__in={old[d.public_id]["created_at"] for d in drafts.values() if d.public_id in old},
    ).delete()
    insert_ignore_conflicts(
        TraceStep,
        STEP_FIELDS,
        [
            (
                pk_of[trace_id],
                position,
                *step_values(step, trace_input=d.input, trace_output=d.output),
                d.created_at,
            )
            for trace_id, d in drafts.items()
            for position, step in enumerate(d.steps)
        ],
        conflict_fields=("trace", "position", "trace_created_at"),
        returning=("id",),
    )
    return pk_of


def _conversations_touched(drafts, old, rows) -> set[int]:
    """The conversations the traces join or leave."""
    touched = {row.session for row in rows.values()}
    return touched | {old[d.public_id]["session_id"] for d in drafts.values() if d.public_id in old}


def _conversations_refresh(drafts, old, rows, sessions, adopted) -> None:
    """Recount the conversations the traces left or joined, and remove a trace's
    own conversation once it is left empty."""
    by_pk = {s.pk: s for s in sessions.values()}
    refreshed = [by_pk[pk] for pk in sorted(_conversations_touched(drafts, old, rows))]
    if adopted:
        update_by_pk(
            Session, ["agent", "channel"], [(pk, by_pk[pk].agent_id, by_pk[pk].channel) for pk in adopted]
        )
    sessions_refresh(sessions=refreshed)
    own_ids = {d.public_id for d in drafts.values()}
    used = {row.session for row in rows.values()}
    empty = [
        s.pk
        for s in refreshed
        if s.public_id in own_ids and s.pk not in used and s.trace_count == 0 and s.started_at is None
    ]
    if empty:
        Session.objects.filter(pk__in=empty).delete()


def _scores_move(moved: list[tuple[dict, dict, int]]) -> None:
    """Scores carry their trace's agent, channel, version and time: when those
    change, the scores follow."""
    keys = ("agent_id", "channel", "deployment_version", "created_at")
    moved = [(a, b, pk) for a, b, pk in moved if tuple(a[k] for k in keys) != tuple(b[k] for k in keys)]
    if not moved:
        return
    new_of = {pk: new for _, new, pk in moved}
    scores = list(
        Score.objects.filter(
            trace_id__in=list(new_of), trace_created_at__in={before["created_at"] for before, _, _ in moved}
        ).values("id", "trace_id")
    )
    update_by_pk(
        Score,
        ["agent", "channel", "deployment_version", "trace_created_at"],
        [
            (
                s["id"],
                new_of[s["trace_id"]]["agent_id"],
                new_of[s["trace_id"]]["channel"],
                new_of[s["trace_id"]]["deployment_version"],
                new_of[s["trace_id"]]["created_at"],
            )
            for s in scores
        ],
    )
