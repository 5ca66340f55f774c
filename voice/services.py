"""Writes for voice calls: call events, and closing calls nobody hears from."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from pydantic import ValidationError

from agents.conversations import LockedSession, sessions_lock
from agents.models import Agent, Deployment, DeploymentStatus, Session
from agents.schemas import NUL_MESSAGE, nul_paths, validation_reason
from agents.services import IngestResult, agents_resolve
from audit.services import Actor, audit_record
from metrics.rollups import CONVERSATION_FACTS, VOICE_CALL_FACTS, Counted, RollupDeltas
from pricing.prices import voice_cost, voice_price_per_minute, voice_seconds
from thinnest_analytics.db import insert_ignore_conflicts, update_by_pk

from .live import voice_changed_on_commit
from .models import CallStatus, VoiceCall, VoiceTurn
from .schemas import (
    CallEnded,
    CallEvent,
    CallStarted,
    CallTurn,
    UnknownEventType,
    event_label,
    raw_label,
    voice_event_parse,
)

CALL_FIELDS = (
    "organisation",
    "agent",
    "session",
    "public_id",
    "deployment_version",
    "from_number",
    "to_number",
    "status",
    "started_at",
    "last_event_at",
    "last_received_at",
    "created_at",
)
TURN_FIELDS = (
    "organisation",
    "agent",
    "call",
    "key",
    "at",
    "voice_latency_ms",
    "interrupted",
    "transcription_confidence",
    "received_at",
)
CALL_UPDATE_FIELDS = [
    "status",
    "ended_at",
    "last_event_at",
    "last_received_at",
    "duration_s",
    "price_per_minute",
    "cost_usd",
]
SESSION_UPDATE_FIELDS = ["started_at", "deployment_version", "last_activity_at", "error_count"]
FAILED_STATUSES = (CallStatus.FAILED, CallStatus.DROPPED)


@dataclass
class _Call:
    """A call as the batch sees it (stored, or started by this batch)."""

    pk: int
    public_id: str
    agent_id: int
    agent_public_id: str
    session_pk: int
    session_public_id: str
    deployment_version: str
    started_at: datetime
    # CALL_UPDATE_FIELDS, in order:
    status: str
    ended_at: datetime | None
    last_event_at: datetime
    last_received_at: datetime
    duration_s: Decimal | None = None
    price_per_minute: Decimal | None = None
    cost_usd: Decimal | None = None
    changed: bool = False


def _seconds_between(start: datetime, end: datetime) -> Decimal:
    delta = end - start
    return Decimal(delta.days * 86400 + delta.seconds) + Decimal(delta.microseconds) / 1_000_000


def voice_events_ingest(*, organisation, items: Sequence[Any], actor: Actor) -> IngestResult:
    """Validate and apply a batch of call events in one transaction.

    Starts are applied first, then turns, then ends, so a batch may carry a whole
    call in any order. A call is a voice conversation (its session id defaults
    to the call id); its start counts as the conversation's start when it is
    the earliest thing known about it. Re-sent events are accepted but applied
    once: a call starts once and ends once; a turn is identified within its
    call by ``event_id``, else by its time; a re-sent start with an earlier
    time, for a call that has not ended, moves its start earlier. A turn or
    end for a call that has not started, or an end before the start, is
    rejected with the reason. When
    a call ends its minutes are priced (USD per minute) and rolled up in the
    hour it ended; a failed or dropped call makes its conversation failed.
    Unknown agents are registered (and audited). Subscribers of the agents'
    live metrics are told after the commit.
    """
    result = IngestResult()
    parsed: list[tuple[int, CallEvent]] = []
    for index, raw in enumerate(items):
        if not isinstance(raw, dict):
            result.reject(index, None, "each event must be a JSON object")
            continue
        if where := nul_paths(raw):
            result.reject(index, raw_label(raw), "; ".join(f"{path}: {NUL_MESSAGE}" for path in where))
            continue
        try:
            parsed.append((index, voice_event_parse(raw)))
        except UnknownEventType as exc:
            result.reject(index, raw_label(raw), str(exc))
        except ValidationError as exc:
            result.reject(index, raw_label(raw), validation_reason(exc))
    if parsed:
        with transaction.atomic():
            _EventBatch(organisation, actor, result).apply(parsed)
    result.rejected.sort(key=lambda r: r["index"])
    return result


class _EventBatch:
    """One transaction's worth of call events."""

    def __init__(self, organisation, actor: Actor, result: IngestResult) -> None:
        self.organisation = organisation
        self.actor = actor
        self.result = result
        self.now = timezone.now()
        self.accepted: list[tuple[int, str]] = []
        self.duplicates: list[tuple[int, str]] = []
        self.calls: dict[str, _Call] = {}
        self.sessions: dict[str, LockedSession] = {}
        self.changed_sessions: set[int] = set()
        self.ended_sessions: dict[int, tuple[datetime, Decimal]] = {}  # pk → (ended at, call cost)
        self.ended_calls: list[int] = []
        self.touched_agents: set[int] = set()
        self.moved_starts: dict[int, datetime] = {}

    def apply(self, parsed: list[tuple[int, CallEvent]]) -> None:
        starts = [(i, e) for i, e in parsed if isinstance(e, CallStarted)]
        turns = [(i, e) for i, e in parsed if isinstance(e, CallTurn)]
        ends = [(i, e) for i, e in parsed if isinstance(e, CallEnded)]
        call_ids = {e.call_id for _, e in parsed}
        stored = self._calls_read(call_ids)
        candidates, _ = self._first_starts(starts, stored)
        agents = agents_resolve(
            organisation=self.organisation,
            wanted={e.agent_id: e.agent_name or "" for _, e in candidates},
            actor=self.actor,
        )
        wanted = {e.session_id or e.call_id: (agents[e.agent_id].pk, "voice") for _, e in candidates}
        wanted.update({c.session_public_id: (c.agent_id, "voice") for c in stored.values()})
        # Every change to a call happens under its conversation's lock (taken in id
        # order), which also serialises it with trace ingestion and the stale sweep.
        self.sessions = sessions_lock(organisation=self.organisation, wanted=wanted) if wanted else {}
        # Read again under the locks: a concurrent batch may have started some of
        # these calls meanwhile, and then this batch's starts are re-sends.
        self.calls = {
            call_id: call
            for call_id, call in self._calls_read(call_ids).items()
            if call.session_public_id in self.sessions
        }
        new_starts, repeated_starts = self._first_starts(starts, self.calls)
        self._starts_apply(new_starts, agents)
        self._repeats_judge(repeated_starts)
        self._turns_store(turns)
        for index, event in ends:
            self._end_apply(index, event)
        self._write()
        self.result.accepted = [label for _, label in sorted(self.accepted)]
        self.result.duplicates = [label for _, label in sorted(self.duplicates)]
        voice_changed_on_commit(self.touched_agents)

    # --- reading --------------------------------------------------------------

    def _calls_read(self, call_ids: set[str]) -> dict[str, _Call]:
        rows = VoiceCall.objects.filter(organisation=self.organisation, public_id__in=call_ids).values_list(
            "pk",
            "public_id",
            "agent_id",
            "agent__public_id",
            "session_id",
            "session__public_id",
            "deployment_version",
            "started_at",
            *CALL_UPDATE_FIELDS,
        )
        return {row[1]: _Call(*row) for row in rows}

    def _first_starts(
        self, starts: list[tuple[int, CallStarted]], stored: dict[str, _Call]
    ) -> tuple[list[tuple[int, CallStarted]], list[tuple[int, CallStarted]]]:
        """The first start of each call not stored yet, and the other starts
        (re-sends, judged once the batch's new calls exist)."""
        first, repeats, seen = [], [], set(stored)
        for index, event in starts:
            (repeats if event.call_id in seen else first).append((index, event))
            seen.add(event.call_id)
        return first, repeats

    def _repeats_judge(self, repeats: list[tuple[int, CallStarted]]) -> None:
        for index, event in repeats:
            call = self.calls.get(event.call_id)
            if call is None:
                self.result.reject(index, event_label(event), "repeats a call.started that was rejected")
            elif call.agent_public_id != event.agent_id:
                self.result.reject(
                    index, event_label(event), f"call_id '{event.call_id}' belongs to another agent"
                )
            elif event.at < call.started_at and call.ended_at is None:
                self._accept(index, event)
                self._start_move(call, event.at)
            else:
                self._accept(index, event, duplicate=True)

    def _start_move(self, call: _Call, at: datetime) -> None:
        """A start earlier than the one known, for a call that has not ended,
        corrects it (a client that learns the real start late: OpenTelemetry
        spans of a call arrive as they end, its own span last), and its
        conversation's start with it."""
        call.started_at = at
        self.moved_starts[call.pk] = at
        self.touched_agents.add(call.agent_id)
        session = self.sessions[call.session_public_id]
        if session.started_at is None or at < session.started_at:
            self._session_change(session)
            session.started_at = at

    # --- applying -------------------------------------------------------------

    def _accept(self, index: int, event: CallEvent, *, duplicate: bool = False) -> None:
        label = event_label(event)
        self.accepted.append((index, label))
        if duplicate:
            self.duplicates.append((index, label))

    def _session_change(self, session: LockedSession) -> None:
        self.changed_sessions.add(session.pk)

    def _starts_apply(self, starts: list[tuple[int, CallStarted]], agents: dict[str, Agent]) -> None:
        if not starts:
            return
        active_versions = dict(
            Deployment.objects.filter(
                agent__in=list(agents.values()), status=DeploymentStatus.ACTIVE
            ).values_list("agent_id", "version")
        )
        sessions_by_pk = {s.pk: s for s in self.sessions.values()}
        taken = set(
            VoiceCall.objects.filter(session_id__in=list(sessions_by_pk)).values_list("session_id", flat=True)
        )
        rows, pending = [], []
        for index, event in starts:
            agent = agents[event.agent_id]
            sid = event.session_id or event.call_id
            session = self.sessions[sid]
            reason = None
            if session.agent_id != agent.pk:
                reason = f"session_id '{sid}' belongs to another agent"
            elif session.channel != "voice":
                reason = f"session_id '{sid}' is a {session.channel} conversation; a call needs a voice one"
            elif session.pk in taken:
                reason = f"session_id '{sid}' already has a call"
            if reason:
                self.result.reject(index, event_label(event), reason)
                continue
            taken.add(session.pk)
            version = (
                event.deployment_version
                if event.deployment_version is not None
                else active_versions.get(agent.pk, "")
            )
            rows.append(
                (
                    self.organisation.pk,
                    agent.pk,
                    session.pk,
                    event.call_id,
                    version,
                    event.from_number or "",
                    event.to_number or "",
                    CallStatus.ACTIVE,
                    event.at,
                    event.at,
                    self.now,
                    self.now,
                )
            )
            pending.append((index, event, agent, session, version))
        inserted = dict(
            (public_id, pk)
            for pk, public_id in insert_ignore_conflicts(
                VoiceCall,
                CALL_FIELDS,
                rows,
                conflict_fields=("organisation", "public_id"),
                returning=("id", "public_id"),
            )
        )
        for index, event, agent, session, version in pending:
            if event.call_id not in inserted:
                self._accept(index, event, duplicate=True)  # a concurrent batch started it first
                continue
            self._accept(index, event)
            self.touched_agents.add(agent.pk)
            self.calls[event.call_id] = _Call(
                pk=inserted[event.call_id],
                public_id=event.call_id,
                agent_id=agent.pk,
                agent_public_id=agent.public_id,
                session_pk=session.pk,
                session_public_id=session.public_id,
                deployment_version=version,
                started_at=event.at,
                status=CallStatus.ACTIVE,
                ended_at=None,
                last_event_at=event.at,
                last_received_at=self.now,
            )
            self._session_change(session)
            if session.started_at is None or event.at < session.started_at:
                session.started_at = event.at
                session.deployment_version = version
            if session.last_activity_at is None or event.at > session.last_activity_at:
                session.last_activity_at = event.at

    def _unknown_call(self, event: CallEvent) -> str:
        return f"unknown call '{event.call_id}': no call.started was received for it"

    def _turn_problem(self, event: CallTurn) -> str | None:
        call = self.calls.get(event.call_id)
        if call is None:
            return self._unknown_call(event)
        if event.at < call.started_at:
            return f"at: is before the call started ({call.started_at.isoformat()})"
        if call.ended_at is not None and event.at > call.ended_at:
            return f"at: is after the call ended ({call.ended_at.isoformat()}, {call.status})"
        return None

    def _turns_store(self, turns: list[tuple[int, CallTurn]]) -> None:
        rows, pending, seen = [], [], set()
        for index, event in turns:
            if problem := self._turn_problem(event):
                self.result.reject(index, event_label(event), problem)
                continue
            call = self.calls[event.call_id]
            if (call.pk, event.key) in seen:
                self._accept(index, event, duplicate=True)
                continue
            seen.add((call.pk, event.key))
            rows.append(
                (
                    self.organisation.pk,
                    call.agent_id,
                    call.pk,
                    event.key,
                    event.at,
                    round(event.voice_latency_ms),
                    event.interrupted,
                    event.transcription_confidence,
                    self.now,
                )
            )
            pending.append((index, event, call))
        inserted = set(
            insert_ignore_conflicts(
                VoiceTurn, TURN_FIELDS, rows, conflict_fields=("call", "key"), returning=("call", "key")
            )
        )
        for index, event, call in pending:
            if (call.pk, event.key) not in inserted:
                self._accept(index, event, duplicate=True)
                continue
            self._accept(index, event)
            self._call_heard(call, event.at)
            session = self.sessions[call.session_public_id]
            if session.last_activity_at is None or event.at > session.last_activity_at:
                self._session_change(session)
                session.last_activity_at = event.at

    def _call_heard(self, call: _Call, at: datetime) -> None:
        call.last_event_at = max(call.last_event_at, at)
        call.last_received_at = self.now
        call.changed = True
        self.touched_agents.add(call.agent_id)

    def _end_apply(self, index: int, event: CallEnded) -> None:
        call = self.calls.get(event.call_id)
        if call is None:
            self.result.reject(index, event_label(event), self._unknown_call(event))
            return
        if event.at < call.started_at:
            self.result.reject(
                index,
                event_label(event),
                f"at: call.ended at {event.at.isoformat()} is before the call started "
                f"({call.started_at.isoformat()})",
            )
            return
        if call.ended_at is not None:
            if call.ended_at == event.at and call.status == event.status:
                self._accept(index, event, duplicate=True)
            else:
                self.result.reject(
                    index,
                    event_label(event),
                    f"call '{call.public_id}' already ended at {call.ended_at.isoformat()} ({call.status})",
                )
            return
        seconds = voice_seconds(
            event.duration_s if event.duration_s is not None else _seconds_between(call.started_at, event.at)
        )
        self._accept(index, event)
        self._call_end(call, ended_at=event.at, status=event.status, seconds=seconds)

    def _call_end(self, call: _Call, *, ended_at: datetime, status: str, seconds: Decimal) -> None:
        price = voice_price_per_minute(organisation=self.organisation)
        call.ended_at = ended_at
        call.status = status
        call.duration_s = seconds
        call.price_per_minute = price
        call.cost_usd = voice_cost(seconds=seconds, price_per_minute=price)
        self._call_heard(call, ended_at)
        self.ended_calls.append(call.pk)
        session = self.sessions[call.session_public_id]
        self._session_change(session)
        if status in FAILED_STATUSES:
            session.error_count += 1
        if session.last_activity_at is None or ended_at > session.last_activity_at:
            session.last_activity_at = ended_at
        self.ended_sessions[session.pk] = (ended_at, call.cost_usd)

    # --- writing --------------------------------------------------------------

    def _write(self) -> None:
        """Write the calls and conversations; the rollups lose the changed
        conversations' facts as they were and gain them as they are, and the
        facts of the calls that ended, all read from the rows."""
        deltas = RollupDeltas()
        conversations = (Session, "pk", sorted(self.changed_sessions))
        deltas.count(Counted(CONVERSATION_FACTS, conversations, sign=-1))
        update_by_pk(VoiceCall, ["started_at"], sorted(self.moved_starts.items()))
        changed_calls = [c for c in self.calls.values() if c.changed]
        update_by_pk(
            VoiceCall,
            CALL_UPDATE_FIELDS,
            [(c.pk, *(getattr(c, f) for f in CALL_UPDATE_FIELDS)) for c in changed_calls],
        )
        by_pk = {s.pk: s for s in self.sessions.values()}
        changed_sessions = [by_pk[pk] for pk in sorted(self.changed_sessions)]
        update_by_pk(
            Session,
            SESSION_UPDATE_FIELDS,
            [(s.pk, *(getattr(s, f) for f in SESSION_UPDATE_FIELDS)) for s in changed_sessions],
        )
        update_by_pk(
            Session,
            ["ended_at", "voice_cost_usd"],
            [(pk, *ended) for pk, ended in sorted(self.ended_sessions.items())],
        )
        deltas.count(
            Counted(CONVERSATION_FACTS, conversations),
            Counted(VOICE_CALL_FACTS, (VoiceCall, "pk", self.ended_calls)),
        )
        deltas.apply()


# --- stale calls --------------------------------------------------------------


def voice_calls_close_stale(*, now: datetime | None = None, stale_after: timedelta | None = None) -> int:
    """Close as ``dropped`` every call the server has heard nothing about for
    ``stale_after`` (default ``VOICE_STALE_CALL_MINUTES``), so Active Calls cannot
    grow forever. A closed call ends at its last reported event; it is priced,
    rolled up and fails its conversation like any dropped call, and one
    ``voice_call.drop`` audit entry records it. Each call is claimed with a
    conditional UPDATE, so two workers never close one call twice. Returns the
    number of calls closed."""
    now = now or timezone.now()
    stale_after = stale_after or timedelta(minutes=settings.VOICE_STALE_CALL_MINUTES)
    cutoff = now - stale_after
    candidates = list(
        VoiceCall.objects.filter(ended_at__isnull=True, last_received_at__lt=cutoff)
        .order_by("last_received_at")
        .values_list("pk", flat=True)[:1000]
    )
    closed = 0
    for pk in candidates:
        closed += _call_close_stale(pk, cutoff, stale_after)
    return closed


@transaction.atomic
def _call_close_stale(pk: int, cutoff: datetime, stale_after: timedelta) -> int:
    call = VoiceCall.objects.select_related("organisation", "agent", "session").filter(pk=pk).first()
    if call is None:
        return 0
    # The conversation's lock first, as ingestion takes it, then the claim.
    session = sessions_lock(
        organisation=call.organisation, wanted={call.session.public_id: (call.agent_id, "voice")}
    )[call.session.public_id]
    price = voice_price_per_minute(organisation=call.organisation)
    ended_at = call.last_event_at
    seconds = voice_seconds(_seconds_between(call.started_at, ended_at))
    cost = voice_cost(seconds=seconds, price_per_minute=price)
    claimed = VoiceCall.objects.filter(pk=pk, ended_at__isnull=True, last_received_at__lt=cutoff).update(
        status=CallStatus.DROPPED,
        ended_at=ended_at,
        duration_s=seconds,
        price_per_minute=price,
        cost_usd=cost,
    )
    if claimed != 1:
        return 0  # another worker closed it, or an event arrived meanwhile
    conversation = Session.objects.filter(pk=session.pk)
    deltas = RollupDeltas()
    deltas.count(Counted(CONVERSATION_FACTS, conversation, sign=-1))
    session.error_count += 1
    fields = {"error_count": session.error_count, "ended_at": ended_at, "voice_cost_usd": cost}
    if session.last_activity_at is None or ended_at > session.last_activity_at:
        fields["last_activity_at"] = ended_at
    conversation.update(**fields)
    deltas.count(
        Counted(CONVERSATION_FACTS, conversation),
        Counted(VOICE_CALL_FACTS, VoiceCall.objects.filter(pk=pk)),
    )
    deltas.apply()
    audit_record(
        organisation=call.organisation,
        actor=Actor.system("stale_calls"),
        action="voice_call.drop",
        resource_type="voice_call",
        resource_id=call.public_id,
        details={
            "agent_id": call.agent.public_id,
            "reason": "stale",
            "last_event_at": ended_at.isoformat(),
            "stale_after_minutes": stale_after.total_seconds() / 60,
            "duration_s": str(seconds),
        },
    )
    voice_changed_on_commit([call.agent_id])
    return 1
