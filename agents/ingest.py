"""Storing traces: the one entry every ingestion path calls.

``traces_store`` takes records already decoded and checked (the JSON API
builds them from request bodies; OTLP and voice can build them from spans and
calls) and stores them in one transaction with their steps, scores,
conversation totals and rollup increments.

On PostgreSQL the database does the set work in four round trips:

1. the head, pipelined: register unknown agents (``INSERT … ON CONFLICT DO
   NOTHING RETURNING``), read the agents' ids and active deployment versions,
   create missing conversations, and lock the batch's conversations ``FOR
   UPDATE`` in id order;
2. one statement of data-modifying CTEs over the batch, passed as one JSON
   parameter per row set (``jsonb_to_recordset``): insert the traces (``ON
   CONFLICT DO NOTHING RETURNING``, so a re-sent or racing id is stored once),
   then the steps and scores of the traces actually inserted;
3. one pipeline that reads what the batch changes in the rollups and writes the
   conversations' new totals: the facts of the changed conversations as they
   were, their update, their facts as they are now, and the facts of the new
   traces (with their latency sketches) and of their scores;
4. one statement that upserts the hourly and daily rollup increments (in key
   order).

Lock order, the same for every writer so batches never deadlock: agents (by
public id), conversations (by id), rollup rows (by key). The rollup
increments are not computed here: they are the facts of ``metrics.rollups``
(the aggregates the rebuild and the window reads use too), read from the rows
the insert returned, grouped by rollup key, so duplicates never count twice.

SQLite (the embedded default) runs the same steps as separate ORM statements.
"""

import json
from collections import namedtuple
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec
from django.db import connection, models, transaction

from audit.services import Actor, audit_record_many
from metrics.models import COUNTERS, KEY_FIELDS, DailyRollup, HourlyRollup
from metrics.rollups import CONVERSATION_FACTS, SCORE_FACTS, TRACE_FACTS, Counted, RollupDeltas
from pricing.prices import money, price_table, trace_cost

from .models import CostSource, Deployment, DeploymentStatus, Score, TraceStep
from .partitions import partitions_ensure
from .steps import step_texts

STORED = "stored"
DUPLICATE = "duplicate"

_encode = msgspec.json.Encoder(decimal_format="number").encode

# Column orders of stored traces, steps and scores, as the set writes pass them.
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
    "texts_from_trace",
    "trace_created_at",
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


class TraceRecord(msgspec.Struct, kw_only=True):
    """One trace to store, as callers hand it over (ids are public ids).

    ``None`` means "work it out": no session id makes the trace its own
    conversation; no channel takes the conversation's (chat for a new one); no
    deployment version takes the agent's active one; no token counts sum the
    steps'; no cost comes from the price table. A cost source says the cost
    was worked out already (OTLP prices its spans itself): cost and source are
    stored as given. ``steps`` hold objects with the attributes of
    ``agents.schemas.StepIn`` (kind, name, span_id, …)."""

    public_id: str
    agent_id: str
    created_at: datetime
    agent_name: str = ""
    session_id: str | None = None
    channel: str | None = None
    deployment_version: str | None = None
    input: str = ""
    reasoning: str = ""
    output: str = ""
    tool_calls: list[dict] = msgspec.field(default_factory=list)
    model: str = ""
    input_tokens: int | None = None
    output_tokens: int | None = None
    latency_ms: float | None = None
    cost_usd: Decimal | None = None
    cost_source: str | None = None
    status: str = "success"
    error: str = ""
    evaluation_score: Decimal | None = None
    metadata: dict = msgspec.field(default_factory=dict)
    steps: list[Any] = msgspec.field(default_factory=list)


@dataclass(slots=True)
class _Row:
    """A trace ready to insert: the record with every default worked out."""

    index: int
    record: TraceRecord
    agent: int
    session: int
    channel: str
    deployment_version: str
    input_tokens: int
    output_tokens: int
    latency_ms: int | None
    cost_usd: Decimal | None
    cost_source: str

    @property
    def created_at(self) -> datetime:
        return self.record.created_at

    @property
    def status(self) -> str:
        return self.record.status


def traces_store(*, organisation, records: Sequence[TraceRecord], actor: Actor, now: datetime) -> list[str]:
    """Store ``records`` in one transaction; per index, ``STORED``,
    ``DUPLICATE`` (the id is already stored, or earlier in the batch) or the
    reason the record was refused. Unknown agents are registered and audited."""
    outcomes = [""] * len(records)
    if not records:
        return outcomes
    with transaction.atomic():
        if connection.vendor == "postgresql":
            _PostgresBatch(organisation, records, actor, now, outcomes).store()
        else:
            _PortableBatch(organisation, records, actor, now, outcomes).store()
    return outcomes


def traces_insert(rows: Sequence[TraceRow]) -> list[tuple[int, str]]:
    """Store the traces whose public id is new: claim each id in ``TraceKey``
    first, then insert the traces of the ids claimed. Returns (id, public id)
    of the traces inserted; an id stored before (or earlier in ``rows``) is
    skipped. The caller holds the locks that make its writes consistent."""
    from thinnest_analytics.db import insert_ignore_conflicts, insert_rows

    from .models import Trace, TraceKey

    claimed = {
        public_id
        for (public_id,) in insert_ignore_conflicts(
            TraceKey,
            ("organisation", "public_id", "created_at"),
            [(row.organisation, row.public_id, row.created_at) for row in rows],
            conflict_fields=("organisation", "public_id"),
            returning=("public_id",),
        )
    }
    new_rows, seen = [], set()
    for row in rows:
        if row.public_id in claimed and row.public_id not in seen:
            seen.add(row.public_id)
            new_rows.append(row)
    partitions_ensure(moments=[row.created_at for row in new_rows])
    return insert_rows(Trace, TRACE_FIELDS, new_rows, returning=("id", "public_id"))


def trace_keys_move(*, organisation, moved: dict[str, datetime]) -> None:
    """Keep the keys of traces whose ``created_at`` changed (a trace derived
    again from more spans) equal to it: public id → new ``created_at``."""
    from .models import TraceKey

    if not moved:
        return
    for public_id, created_at in moved.items():
        TraceKey.objects.filter(organisation=organisation, public_id=public_id).update(created_at=created_at)


class _Batch:
    """The steps of storing a batch; subclasses talk to the database."""

    def __init__(self, organisation, records, actor, now, outcomes) -> None:
        self.organisation = organisation
        self.records = records
        self.actor = actor
        self.now = now
        self.outcomes = outcomes

    def store(self) -> None:
        from .conversations import sessions_fold

        agents, versions, sessions = self.head()
        rows = self.prepare(agents, versions, sessions)
        inserted = self.insert(rows) if rows else {}
        new_rows = []
        for row in rows:
            pk = inserted.get(row.record.public_id)
            self.outcomes[row.index] = STORED if pk is not None else DUPLICATE
            if pk is not None:
                new_rows.append((pk, row))
        if not new_rows:
            return
        changed = sessions_fold(sessions, [row for _, row in new_rows])
        scored = [pk for pk, row in new_rows if row.record.evaluation_score is not None]
        times = [row.record.created_at for _, row in new_rows]
        self.finish(changed, [pk for pk, _ in new_rows], scored, (min(times), max(times)))

    def prepare(self, agents: dict[str, int], versions: dict[int, str], sessions: dict) -> list[_Row]:
        """Check each record against its conversation and work out its defaults."""
        prices = price_table(organisation=self.organisation)
        seen: set[str] = set()
        rows = []
        for index, r in enumerate(self.records):
            agent = agents[r.agent_id]
            sid = r.session_id or r.public_id
            session = sessions[sid]
            if session.agent_id != agent:
                self.outcomes[index] = f"session_id '{sid}' belongs to another agent"
                continue
            channel = r.channel or session.channel
            if channel != session.channel:
                self.outcomes[index] = (
                    f"session_id '{sid}' is a {session.channel} conversation, not {channel}"
                )
                continue
            if r.public_id in seen:
                self.outcomes[index] = DUPLICATE
                continue
            seen.add(r.public_id)
            input_tokens = (
                r.input_tokens if r.input_tokens is not None else sum(s.input_tokens for s in r.steps)
            )
            output_tokens = (
                r.output_tokens if r.output_tokens is not None else sum(s.output_tokens for s in r.steps)
            )
            if r.cost_source is not None:
                cost, source = r.cost_usd, r.cost_source
            elif r.cost_usd is not None:
                cost, source = money(r.cost_usd), CostSource.REPORTED
            else:
                cost, source = trace_cost(
                    prices,
                    model=r.model,
                    input_tokens=input_tokens,
                    output_tokens=output_tokens,
                    at=r.created_at,
                    steps=r.steps,
                )
            rows.append(
                _Row(
                    index,
                    r,
                    agent,
                    session.pk,
                    channel,
                    r.deployment_version if r.deployment_version is not None else versions.get(agent, ""),
                    input_tokens,
                    output_tokens,
                    round(r.latency_ms) if r.latency_ms is not None else None,
                    cost,
                    str(source),
                )
            )
        return rows

    def wanted_agents(self) -> dict[str, str]:
        wanted: dict[str, str] = {}
        for r in self.records:
            if not wanted.get(r.agent_id):
                wanted[r.agent_id] = r.agent_name or ""
        return wanted

    def wanted_sessions(self) -> dict[str, tuple[str, str]]:
        """Conversation public id → (agent public id, channel) for a new one."""
        wanted: dict[str, tuple[str, str]] = {}
        for r in self.records:
            wanted.setdefault(r.session_id or r.public_id, (r.agent_id, r.channel or "chat"))
        return wanted

    def audit_new_agents(self, created: Sequence[str], wanted: dict[str, str]) -> None:
        audit_record_many(
            organisation=self.organisation,
            actor=self.actor,
            entries=[
                {
                    "action": "agent.create",
                    "resource_type": "agent",
                    "resource_id": pid,
                    "details": {"name": wanted[pid] or pid, "registered_by": "ingestion"},
                }
                for pid in created
            ],
        )

    def steps_of(self, pk: int, row: _Row) -> list[tuple]:
        r = row.record
        rows = []
        for position, s in enumerate(r.steps):
            step_input, step_output, shared = step_texts(
                s.input, s.output, trace_input=r.input, trace_output=r.output
            )
            rows.append(
                (
                    pk,
                    position,
                    s.span_id,
                    s.parent_span_id,
                    s.kind,
                    s.name,
                    s.started_at,
                    round(s.latency_ms) if s.latency_ms is not None else None,
                    s.model,
                    s.input_tokens,
                    s.output_tokens,
                    s.cost_usd,
                    step_input,
                    step_output,
                    s.error,
                    s.attributes,
                    shared,
                    r.created_at,
                )
            )
        return rows


class _PortableBatch(_Batch):
    """Any database Django supports (SQLite here): the ORM and shared set writes."""

    def head(self):
        from .conversations import sessions_lock
        from .services import agents_resolve

        agents = {
            pid: a.pk
            for pid, a in agents_resolve(
                organisation=self.organisation, wanted=self.wanted_agents(), actor=self.actor
            ).items()
        }
        versions = dict(
            Deployment.objects.filter(
                agent__in=list(agents.values()), status=DeploymentStatus.ACTIVE
            ).values_list("agent_id", "version")
        )
        sessions = sessions_lock(
            organisation=self.organisation,
            wanted={sid: (agents[aid], channel) for sid, (aid, channel) in self.wanted_sessions().items()},
        )
        return agents, versions, sessions

    def insert(self, rows: list[_Row]) -> dict[str, int]:
        from thinnest_analytics.db import insert_ignore_conflicts, insert_rows

        org = self.organisation.pk
        inserted = traces_insert(
            [
                TraceRow(
                    org,
                    row.agent,
                    row.session,
                    row.record.public_id,
                    row.channel,
                    row.deployment_version,
                    row.record.input,
                    row.record.reasoning,
                    row.record.output,
                    row.record.tool_calls,
                    len(row.record.tool_calls),
                    row.record.model,
                    row.input_tokens,
                    row.output_tokens,
                    row.latency_ms,
                    row.cost_usd,
                    row.cost_source,
                    row.record.status,
                    row.record.error,
                    row.record.metadata,
                    row.record.created_at,
                    self.now,
                )
                for row in rows
            ]
        )
        new_pk = {public_id: pk for pk, public_id in inserted}
        steps, scores = [], []
        for row in rows:
            pk = new_pk.get(row.record.public_id)
            if pk is None:
                continue
            steps.extend(self.steps_of(pk, row))
            if row.record.evaluation_score is not None:
                scores.append(
                    (org, pk, row.agent, row.channel, row.deployment_version, row.record.created_at)
                    + ("evaluation", row.record.evaluation_score, "", self.now)
                )
        insert_ignore_conflicts(
            TraceStep,
            STEP_FIELDS,
            steps,
            conflict_fields=("trace", "position", "trace_created_at"),
            returning=("id",),
        )
        insert_rows(Score, SCORE_FIELDS, scores, returning=("id",))
        return new_pk

    def finish(
        self, changed, new_traces: list[int], scored: list[int], within: tuple[datetime, datetime]
    ) -> None:
        from thinnest_analytics.db import update_by_pk

        from .conversations import SESSION_FACTS
        from .models import Session

        deltas = RollupDeltas()
        conversations = (Session, "pk", [s.pk for s in changed])
        deltas.count(Counted(CONVERSATION_FACTS, conversations, sign=-1))
        update_by_pk(
            Session, SESSION_FACTS, [(s.pk, *(getattr(s, f) for f in SESSION_FACTS)) for s in changed]
        )
        deltas.count(*_counted(conversations, new_traces, scored, within))
        deltas.apply()


# --- PostgreSQL ---------------------------------------------------------------

_HEAD_AGENTS_INSERT = """
INSERT INTO agents_agent (organisation_id, public_id, name, config, created_at, updated_at)
SELECT %(org)s, w.public_id, w.name, '{}'::jsonb, %(now)s, %(now)s
FROM unnest(%(agent_ids)s::text[], %(agent_names)s::text[]) AS w(public_id, name)
ORDER BY w.public_id
ON CONFLICT (organisation_id, public_id) DO NOTHING
RETURNING public_id
"""
_HEAD_AGENTS = """
SELECT a.public_id, a.id, d.version
FROM agents_agent a
LEFT JOIN agents_deployment d ON d.agent_id = a.id AND d.status = %(active)s
WHERE a.organisation_id = %(org)s AND a.public_id = ANY(%(agent_ids)s::text[])
"""
_HEAD_SESSIONS_INSERT = """
INSERT INTO agents_session (organisation_id, agent_id, public_id, channel, deployment_version,
                            trace_count, error_count, created_at)
SELECT %(org)s, a.id, w.public_id, w.channel, '', 0, 0, %(now)s
FROM unnest(%(session_ids)s::text[], %(session_agents)s::text[], %(session_channels)s::text[])
     AS w(public_id, agent, channel)
JOIN agents_agent a ON a.organisation_id = %(org)s AND a.public_id = w.agent
ORDER BY w.public_id
ON CONFLICT (organisation_id, public_id) DO NOTHING
"""
_HEAD_SESSIONS_LOCK = """
SELECT {columns} FROM agents_session
WHERE organisation_id = %(org)s AND public_id = ANY(%(session_ids)s::text[])
ORDER BY id
FOR UPDATE
"""

# The columns of a batch's traces and steps as they travel (JSON objects).
_TRACE_COLUMNS = (
    ("agent_id", "bigint"),
    ("session_id", "bigint"),
    ("public_id", "text"),
    ("channel", "text"),
    ("deployment_version", "text"),
    ("input", "text"),
    ("reasoning", "text"),
    ("output", "text"),
    ("tool_calls", "jsonb"),
    ("tool_call_count", "integer"),
    ("model", "text"),
    ("input_tokens", "bigint"),
    ("output_tokens", "bigint"),
    ("latency_ms", "integer"),
    ("cost_usd", "numeric"),
    ("cost_source", "text"),
    ("status", "text"),
    ("error", "text"),
    ("metadata", "jsonb"),
    ("created_at", "timestamptz"),
    ("evaluation_score", "numeric"),
)
_STEP_COLUMNS = (
    ("trace_public_id", "text"),
    ("position", "integer"),
    ("span_id", "text"),
    ("parent_span_id", "text"),
    ("kind", "text"),
    ("name", "text"),
    ("started_at", "timestamptz"),
    ("latency_ms", "integer"),
    ("model", "text"),
    ("input_tokens", "bigint"),
    ("output_tokens", "bigint"),
    ("cost_usd", "numeric"),
    ("input", "jsonb"),
    ("output", "jsonb"),
    ("error", "text"),
    ("attributes", "jsonb"),
    ("texts_from_trace", "smallint"),
)


def _rows_of(param: str, columns, alias: str) -> str:
    """The rows of a JSON array of objects passed as one parameter, typed in
    SQL. One string encoded by msgspec and parsed by PostgreSQL, both in C,
    costs a fraction of binding a parameter array per column."""
    types = ", ".join(f"{name} {kind}" for name, kind in (("ord", "integer"), *columns))
    return f"jsonb_to_recordset(%({param})s::jsonb) AS {alias}({types})"


_TRACE_INSERT_COLUMNS = [n for n, _ in _TRACE_COLUMNS if n != "evaluation_score"]
_STORE = f"""
WITH t AS (SELECT * FROM {_rows_of("traces", _TRACE_COLUMNS, "t")}),
claimed AS (
    INSERT INTO agents_tracekey (organisation_id, public_id, created_at)
    SELECT %(org)s, t.public_id, t.created_at FROM t ORDER BY t.ord
    ON CONFLICT (organisation_id, public_id) DO NOTHING
    RETURNING public_id
),
inserted AS (
    INSERT INTO agents_trace (organisation_id, {", ".join(_TRACE_INSERT_COLUMNS)}, received_at)
    SELECT %(org)s, {", ".join("t." + n for n in _TRACE_INSERT_COLUMNS)}, %(now)s
    FROM t JOIN claimed ON claimed.public_id = t.public_id ORDER BY t.ord
    RETURNING id, public_id, created_at
),
steps AS (
    INSERT INTO agents_tracestep (trace_id, {", ".join(n for n, _ in _STEP_COLUMNS[1:])}, trace_created_at)
    SELECT inserted.id, {", ".join("s." + n for n, _ in _STEP_COLUMNS[1:])}, inserted.created_at
    FROM {_rows_of("steps", _STEP_COLUMNS, "s")} JOIN inserted ON inserted.public_id = s.trace_public_id
    ORDER BY s.ord
),
scores AS (
    INSERT INTO agents_score (organisation_id, trace_id, agent_id, channel, deployment_version,
                              trace_created_at, name, value, comment, created_at)
    SELECT %(org)s, inserted.id, t.agent_id, t.channel, t.deployment_version, t.created_at,
           'evaluation', t.evaluation_score, '', %(now)s
    FROM t JOIN inserted ON inserted.public_id = t.public_id
    WHERE t.evaluation_score IS NOT NULL
    ORDER BY t.ord
)
SELECT public_id, id FROM inserted
"""


class _PostgresBatch(_Batch):
    def _cursor(self):
        import psycopg

        # Server-side binding (Django's cursors bind on the client): prepared
        # statements.
        connection.ensure_connection()
        return psycopg.Cursor(connection.connection)

    def head(self):
        from .conversations import LOCKED_SESSION_FIELDS, LockedSession

        wanted_agents = self.wanted_agents()
        wanted_sessions = self.wanted_sessions()
        ordered_sessions = sorted(wanted_sessions)
        params = {
            "org": self.organisation.pk,
            "now": self.now,
            "active": str(DeploymentStatus.ACTIVE),
            "agent_ids": sorted(wanted_agents),
            "agent_names": [wanted_agents[a] or a for a in sorted(wanted_agents)],
            "session_ids": ordered_sessions,
            "session_agents": [wanted_sessions[s][0] for s in ordered_sessions],
            "session_channels": [wanted_sessions[s][1] for s in ordered_sessions],
        }
        columns = ", ".join("id" if f == "pk" else f for f in LOCKED_SESSION_FIELDS)
        with (
            connection.wrap_database_errors,
            self._cursor() as c1,
            self._cursor() as c2,
            self._cursor() as c3,
        ):
            with connection.connection.pipeline():
                c1.execute(_HEAD_AGENTS_INSERT, params, prepare=True)
                c2.execute(_HEAD_AGENTS, params, prepare=True)
                c3.execute(_HEAD_SESSIONS_INSERT, params, prepare=True)
                c3.execute(_HEAD_SESSIONS_LOCK.format(columns=columns), params, prepare=True)
            created = [pid for (pid,) in c1.fetchall()]
            agent_rows = c2.fetchall()
            locked = c3.fetchall()
        if created:
            self.audit_new_agents(created, wanted_agents)
        agents = {pid: pk for pid, pk, _ in agent_rows}
        versions = {pk: version for _, pk, version in agent_rows if version is not None}
        sessions = {row[1]: LockedSession(*row) for row in locked}
        return agents, versions, sessions

    def insert(self, rows: list[_Row]) -> dict[str, int]:
        # (The portable path's ``traces_insert`` does this for the rows it stores.)
        partitions_ensure(moments=[row.record.created_at for row in rows])
        traces, steps = [], []
        for ord, row in enumerate(rows):
            r = row.record
            traces.append(
                {
                    "ord": ord,
                    "agent_id": row.agent,
                    "session_id": row.session,
                    "public_id": r.public_id,
                    "channel": row.channel,
                    "deployment_version": row.deployment_version,
                    "input": r.input,
                    "reasoning": r.reasoning,
                    "output": r.output,
                    "tool_calls": r.tool_calls,
                    "tool_call_count": len(r.tool_calls),
                    "model": r.model,
                    "input_tokens": row.input_tokens,
                    "output_tokens": row.output_tokens,
                    "latency_ms": row.latency_ms,
                    "cost_usd": row.cost_usd,
                    "cost_source": row.cost_source,
                    "status": r.status,
                    "error": r.error,
                    "metadata": r.metadata,
                    "created_at": r.created_at,
                    "evaluation_score": r.evaluation_score,
                }
            )
            for position, s in enumerate(r.steps):
                step_input, step_output, shared = step_texts(
                    s.input, s.output, trace_input=r.input, trace_output=r.output
                )
                steps.append(
                    {
                        "ord": len(steps),
                        "trace_public_id": r.public_id,
                        "position": position,
                        "span_id": s.span_id,
                        "parent_span_id": s.parent_span_id,
                        "kind": s.kind,
                        "name": s.name,
                        "started_at": s.started_at,
                        "latency_ms": round(s.latency_ms) if s.latency_ms is not None else None,
                        "model": s.model,
                        "input_tokens": s.input_tokens,
                        "output_tokens": s.output_tokens,
                        "cost_usd": s.cost_usd,
                        "input": step_input,
                        "output": step_output,
                        "error": s.error,
                        "attributes": s.attributes,
                        "texts_from_trace": shared,
                    }
                )
        params = {
            "org": self.organisation.pk,
            "now": self.now,
            "traces": _json(traces),
            "steps": _json(steps),
        }
        with connection.wrap_database_errors, self._cursor() as cursor:
            cursor.execute(_STORE, params, prepare=True)
            return dict(cursor.fetchall())

    def finish(
        self, changed, new_traces: list[int], scored: list[int], within: tuple[datetime, datetime]
    ) -> None:
        from .conversations import SESSION_FACTS
        from .models import Session

        sessions = [
            {"ord": i, "id": c.pk} | {n: getattr(c, n) for n in SESSION_FACTS} for i, c in enumerate(changed)
        ]
        # One round trip: the conversations' facts before, their new totals, their
        # facts after, and the facts of the new traces and their scores.
        deltas = RollupDeltas()
        conversations = (Session, "pk", [s.pk for s in changed])
        deltas.count(
            Counted(CONVERSATION_FACTS, conversations, sign=-1),
            (_sessions_statement(), {"sessions": _json(sessions)}),
            *_counted(conversations, new_traces, scored, within),
        )
        hourly, daily = deltas.upsert_rows()
        params = {}
        for name, rows in (("hourly", hourly), ("daily", daily)):
            params[name] = _json(
                [
                    {"ord": i, **dict(zip(_ROLLUP_COLUMNS, row, strict=False)), "latency_sketch": row[-1]}
                    for i, row in enumerate(rows)
                ]
            )
        with connection.wrap_database_errors, self._cursor() as cursor:
            cursor.execute(_finish_statement(), params, prepare=True)
        if deltas.retracted:
            deltas.drop_empty_rows()


def _counted(
    conversations, new_traces: list[int], scored: list[int], within: tuple[datetime, datetime]
) -> list[Counted]:
    """What a batch adds to the rollups, read from the rows it wrote: the new
    traces, their scores (of the traces that came with one) and the
    conversations they changed (whose facts as they were are retracted first).
    ``within``: the first and last ``created_at`` of the new traces, so the
    reads of traces and scores touch only those days' partitions."""
    from .models import Trace

    counted = [
        Counted(CONVERSATION_FACTS, conversations),
        Counted(TRACE_FACTS, (Trace, "pk", new_traces), within=within),
    ]
    if scored:
        counted.append(Counted(SCORE_FACTS, (Score, "trace_id", scored), within=within))
    return counted


def _json(value: Any) -> str:
    try:
        return _encode(value).decode()
    except (UnicodeEncodeError, TypeError, OverflowError):
        # A lone surrogate (only pydantic lets one through): escaped, PostgreSQL refuses it.
        return json.dumps(value, default=str)


_SESSION_TYPES = {
    "first_trace_at": "timestamptz",
    "started_at": "timestamptz",
    "deployment_version": "text",
    "last_activity_at": "timestamptz",
    "trace_count": "integer",
    "error_count": "integer",
    "input_tokens": "bigint",
    "output_tokens": "bigint",
    "latency_count": "integer",
    "latency_sum_ms": "bigint",
    "llm_cost_usd": "numeric",
    "unpriced_traces": "integer",
}


def _sessions_sql() -> str:
    from .conversations import SESSION_FACTS

    session_columns = [("id", "bigint"), *((n, _SESSION_TYPES[n]) for n in SESSION_FACTS)]
    sets = ", ".join(f"{n} = v.{n}" for n in SESSION_FACTS)
    return (
        f"UPDATE agents_session SET {sets} FROM {_rows_of('sessions', session_columns, 'v')} "
        "WHERE agents_session.id = v.id"
    )


def _finish_sql() -> str:
    parts = []
    for param, model in (("hourly", HourlyRollup), ("daily", DailyRollup)):
        table = model._meta.db_table
        fields = {f.name: f for f in model._meta.concrete_fields}
        typed = [
            (name, _ROLLUP_TYPES.get(name) or fields[name].db_type(connection).split("(")[0])
            for name in _ROLLUP_COLUMNS
        ]
        columns = [fields[n].column for n in _ROLLUP_COLUMNS]
        updates = [f"{c} = {table}.{c} + EXCLUDED.{c}" for c in columns[5:]]
        updates.append(f"latency_sketch = ta_sketch_merge({table}.latency_sketch, EXCLUDED.latency_sketch)")
        parts.append(
            f"INSERT INTO {table} ({', '.join(columns)}, latency_sketch) "
            f"SELECT {', '.join('v.' + n for n in _ROLLUP_COLUMNS)}, v.latency_sketch "
            f"FROM {_rows_of(param, [*typed, ('latency_sketch', 'jsonb')], 'v')} "
            f"ORDER BY v.ord "
            f"ON CONFLICT ({', '.join(columns[:5])}) DO UPDATE SET {', '.join(updates)}"
        )
    return "WITH " + ", ".join(f"w{i} AS ({sql})" for i, sql in enumerate(parts)) + " SELECT 1"


def _rollup_types() -> dict[str, str]:

    from metrics.models import HourlyRollup

    kinds = {}
    for name in _ROLLUP_COLUMNS:
        field = HourlyRollup._meta.get_field(name)
        if isinstance(field, models.ForeignKey | models.BigIntegerField):
            kinds[name] = "bigint"
        elif isinstance(field, models.DecimalField):
            kinds[name] = "numeric"
    return kinds


def _rollup_columns() -> tuple[str, ...]:

    return (*KEY_FIELDS, *COUNTERS)


_ROLLUP_COLUMNS = _rollup_columns()
_ROLLUP_TYPES = _rollup_types()
_finish: list[str] = []
_sessions: list[str] = []


def _sessions_statement() -> str:
    if not _sessions:
        _sessions.append(_sessions_sql())
    return _sessions[0]


def _finish_statement() -> str:
    # Built on first use: column types come from the connection's vendor.
    if not _finish:
        _finish.append(_finish_sql())
    return _finish[0]
