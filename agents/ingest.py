"""Storing traces: the one entry every ingestion path calls.

``traces_store`` takes records already decoded and checked (the JSON API
builds them from request bodies; OTLP and voice can build them from spans and
calls) and stores them in one transaction with their steps, scores,
conversation totals and rollup increments.

On PostgreSQL the database does the set work in three round trips:

1. the head, pipelined: register unknown agents (``INSERT … ON CONFLICT DO
   NOTHING RETURNING``), read the agents' ids and active deployment versions,
   create missing conversations, and lock the batch's conversations ``FOR
   UPDATE`` in id order;
2. one statement of data-modifying CTEs over the batch passed as arrays (one
   per column, binary): insert the traces (``ON CONFLICT DO NOTHING
   RETURNING``, so a re-sent or racing id is stored once), then the steps and
   scores of the traces actually inserted;
3. one statement that writes the conversations' new totals and upserts the
   hourly and daily rollup increments (in key order).

Lock order, the same for every writer so batches never deadlock: agents (by
public id), conversations (by id), rollup rows (by key). The rollup
increments come from ``RollupDeltas`` (dashboard.rollups), which defines what a
trace and a conversation contribute to a rollup row; they are computed from
the rows the insert returned, so duplicates never count twice.

SQLite (the embedded default) runs the same steps as separate ORM statements.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec
from django.db import connection, transaction

from audit.services import Actor, audit_record_many
from billing.pricing import money, price_table, trace_cost
from dashboard.rollups import RollupDeltas

from .models import CostSource, Deployment, DeploymentStatus, Score, TraceStep

STORED = "stored"
DUPLICATE = "duplicate"

_encode = msgspec.json.Encoder(decimal_format="number").encode


class TraceRecord(msgspec.Struct, kw_only=True):
    """One trace to store, as callers hand it over (ids are public ids).

    ``None`` means "work it out": no session id makes the trace its own
    conversation; no channel takes the conversation's (chat for a new one); no
    deployment version takes the agent's active one; no token counts sum the
    steps'; no cost comes from the price table. ``steps`` hold objects with the
    attributes of ``agents.schemas.StepIn`` (kind, name, span_id, …)."""

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


class _Batch:
    """The steps of storing a batch; subclasses talk to the database."""

    def __init__(self, organisation, records, actor, now, outcomes) -> None:
        self.organisation = organisation
        self.records = records
        self.actor = actor
        self.now = now
        self.outcomes = outcomes

    def store(self) -> None:
        from .services import _sessions_fold, conversation_moves

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
        changed, transitions = _sessions_fold(sessions, [row for _, row in new_rows])
        deltas = RollupDeltas()
        org = self.organisation.pk
        for _, row in new_rows:
            r = row.record
            deltas.add_trace(
                organisation_id=org,
                agent_id=row.agent,
                channel=row.channel,
                deployment_version=row.deployment_version,
                created_at=r.created_at,
                input=r.input,
                output=r.output,
                input_tokens=row.input_tokens,
                output_tokens=row.output_tokens,
                latency_ms=row.latency_ms,
                tool_call_count=len(r.tool_calls),
                status=r.status,
                cost_usd=row.cost_usd,
            )
            if r.evaluation_score is not None:
                deltas.add_score(
                    organisation_id=org,
                    agent_id=row.agent,
                    channel=row.channel,
                    deployment_version=row.deployment_version,
                    created_at=r.created_at,
                    value=r.evaluation_score,
                )
        conversation_moves(deltas, org, transitions)
        self.finish(changed, deltas)

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
            if r.cost_usd is not None:
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
        return [
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
                s.input,
                s.output,
                s.error,
                s.attributes,
            )
            for position, s in enumerate(row.record.steps)
        ]


class _PortableBatch(_Batch):
    """Any database Django supports (SQLite here): the ORM and shared set writes."""

    def head(self):
        from .services import agents_resolve, sessions_lock

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
        from thinnest_analytics.db import insert_ignore_conflicts

        from .models import Trace
        from .services import SCORE_FIELDS, STEP_FIELDS, TRACE_FIELDS

        org = self.organisation.pk
        inserted = insert_ignore_conflicts(
            Trace,
            TRACE_FIELDS,
            [
                (
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
            ],
            conflict_fields=("organisation", "public_id"),
            returning=("id", "public_id"),
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
            TraceStep, STEP_FIELDS, steps, conflict_fields=("trace", "position"), returning=("id",)
        )
        insert_ignore_conflicts(Score, SCORE_FIELDS, scores, conflict_fields=("id",), returning=("id",))
        return new_pk

    def finish(self, changed, deltas: RollupDeltas) -> None:
        from thinnest_analytics.db import update_by_pk

        from .models import Session
        from .services import SESSION_FACTS

        update_by_pk(
            Session, SESSION_FACTS, [(s.pk, *(getattr(s, f) for f in SESSION_FACTS)) for s in changed]
        )
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

# Column arrays of the traces, in the order of _TRACE_COLUMNS.
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
)


def _unnest(columns, prefix: str) -> str:
    # JSON travels as text (encoded by msgspec) and is cast once in SQL.
    arrays = ", ".join(
        f"%({prefix}{name})b::{'text' if kind == 'jsonb' else kind}[]" for name, kind in columns
    )
    return (
        f"unnest({arrays}) WITH ORDINALITY AS {prefix.rstrip('_')}({', '.join(n for n, _ in columns)}, ord)"
    )


def _col(prefix: str, name: str, kind: str) -> str:
    return f"{prefix}.{name}::jsonb" if kind == "jsonb" else f"{prefix}.{name}"


_TRACE_INSERT_COLUMNS = [n for n, _ in _TRACE_COLUMNS if n != "evaluation_score"]
_STORE = f"""
WITH t AS (SELECT * FROM {_unnest(_TRACE_COLUMNS, "t_")}),
inserted AS (
    INSERT INTO agents_trace (organisation_id, {", ".join(_TRACE_INSERT_COLUMNS)}, received_at)
    SELECT %(org)s, {", ".join(_col("t", n, k) for n, k in _TRACE_COLUMNS if n != "evaluation_score")}, %(now)s
    FROM t ORDER BY t.ord
    ON CONFLICT (organisation_id, public_id) DO NOTHING
    RETURNING id, public_id
),
steps AS (
    INSERT INTO agents_tracestep (trace_id, {", ".join(n for n, _ in _STEP_COLUMNS[1:])})
    SELECT inserted.id, {", ".join(_col("s", n, k) for n, k in _STEP_COLUMNS[1:])}
    FROM {_unnest(_STEP_COLUMNS, "s_")} JOIN inserted ON inserted.public_id = s.trace_public_id
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
        # statements and binary arrays.
        connection.ensure_connection()
        return psycopg.Cursor(connection.connection)

    def head(self):
        from .services import LOCKED_SESSION_FIELDS, LockedSession

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
        params: dict[str, Any] = {"org": self.organisation.pk, "now": self.now}
        records = [row.record for row in rows]
        params.update(
            t_agent_id=[row.agent for row in rows],
            t_session_id=[row.session for row in rows],
            t_public_id=[r.public_id for r in records],
            t_channel=[row.channel for row in rows],
            t_deployment_version=[row.deployment_version for row in rows],
            t_input=[r.input for r in records],
            t_reasoning=[r.reasoning for r in records],
            t_output=[r.output for r in records],
            t_tool_calls=[_encode(r.tool_calls).decode() for r in records],
            t_tool_call_count=[len(r.tool_calls) for r in records],
            t_model=[r.model for r in records],
            t_input_tokens=[row.input_tokens for row in rows],
            t_output_tokens=[row.output_tokens for row in rows],
            t_latency_ms=[row.latency_ms for row in rows],
            t_cost_usd=[row.cost_usd for row in rows],
            t_cost_source=[row.cost_source for row in rows],
            t_status=[r.status for r in records],
            t_error=[r.error for r in records],
            t_metadata=[_encode(r.metadata).decode() for r in records],
            t_created_at=[r.created_at for r in records],
            t_evaluation_score=[r.evaluation_score for r in records],
        )
        steps = [(r.public_id, position, s) for r in records for position, s in enumerate(r.steps)]
        params.update(
            s_trace_public_id=[pid for pid, _, _ in steps],
            s_position=[position for _, position, _ in steps],
            s_span_id=[s.span_id for _, _, s in steps],
            s_parent_span_id=[s.parent_span_id for _, _, s in steps],
            s_kind=[s.kind for _, _, s in steps],
            s_name=[s.name for _, _, s in steps],
            s_started_at=[s.started_at for _, _, s in steps],
            s_latency_ms=[round(s.latency_ms) if s.latency_ms is not None else None for _, _, s in steps],
            s_model=[s.model for _, _, s in steps],
            s_input_tokens=[s.input_tokens for _, _, s in steps],
            s_output_tokens=[s.output_tokens for _, _, s in steps],
            s_cost_usd=[s.cost_usd for _, _, s in steps],
            s_input=[None if s.input is None else _encode(s.input).decode() for _, _, s in steps],
            s_output=[None if s.output is None else _encode(s.output).decode() for _, _, s in steps],
            s_error=[s.error for _, _, s in steps],
            s_attributes=[_encode(s.attributes).decode() for _, _, s in steps],
        )
        with connection.wrap_database_errors, self._cursor() as cursor:
            cursor.execute(_STORE, params, prepare=True, binary=True)
            return dict(cursor.fetchall())

    def finish(self, changed, deltas: RollupDeltas) -> None:
        from .services import SESSION_FACTS

        hourly, daily = deltas.upsert_rows()
        params: dict[str, Any] = {"session_id": [s.pk for s in changed]}
        for name in SESSION_FACTS:
            params[f"session_{name}"] = _typed([getattr(s, name) for s in changed], _SESSION_TYPES[name])
        for prefix, rows in (("h_", hourly), ("d_", daily)):
            for i, name in enumerate(_ROLLUP_COLUMNS):
                params[prefix + name] = _typed([row[i] for row in rows], _ROLLUP_TYPES.get(name, ""))
            params[prefix + "latency_sketch"] = [_encode(row[-1]).decode() for row in rows]
        with connection.wrap_database_errors, self._cursor() as cursor:
            cursor.execute(_finish_statement(), params, prepare=True, binary=True)
        if deltas.retracted:
            deltas.drop_empty_rows()


def _typed(values: list, kind: str) -> list:
    """One Python type per array (a sum may hold ``0`` among Decimals)."""
    if kind == "numeric":
        return [None if v is None else Decimal(v) for v in values]
    if kind in ("bigint", "integer"):
        return [None if v is None else int(v) for v in values]
    return values


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


def _finish_sql() -> str:
    from dashboard.models import DailyRollup, HourlyRollup

    from .services import SESSION_FACTS

    session_arrays = ", ".join(
        ["%(session_id)b::bigint[]"] + [f"%(session_{n})b::{_SESSION_TYPES[n]}[]" for n in SESSION_FACTS]
    )
    sets = ", ".join(f"{n} = v.{n}" for n in SESSION_FACTS)
    parts = [
        f"UPDATE agents_session SET {sets} FROM unnest({session_arrays}) AS v(id, {', '.join(SESSION_FACTS)}) "
        "WHERE agents_session.id = v.id"
    ]
    for prefix, model in (("h_", HourlyRollup), ("d_", DailyRollup)):
        table = model._meta.db_table
        types = {f.name: f for f in model._meta.concrete_fields}
        arrays = []
        for name in _ROLLUP_COLUMNS:
            kind = _ROLLUP_TYPES.get(name) or types[name].db_type(connection).split("(")[0]
            arrays.append(f"%({prefix}{name})b::{kind}[]")
        arrays.append(f"%({prefix}latency_sketch)b::text[]")
        columns = [types[n].column for n in _ROLLUP_COLUMNS]
        updates = [f"{c} = {table}.{c} + EXCLUDED.{c}" for c in columns[5:]]
        updates.append(f"latency_sketch = ta_sketch_merge({table}.latency_sketch, EXCLUDED.latency_sketch)")
        parts.append(
            f"INSERT INTO {table} ({', '.join(columns)}, latency_sketch) "
            f"SELECT {', '.join('v.' + c for c in columns)}, v.latency_sketch::jsonb "
            f"FROM unnest({', '.join(arrays)}) WITH ORDINALITY AS v({', '.join(columns)}, latency_sketch, ord) "
            f"ORDER BY v.ord "
            f"ON CONFLICT ({', '.join(columns[:5])}) DO UPDATE SET {', '.join(updates)}"
        )
    return "WITH " + ", ".join(f"w{i} AS ({sql})" for i, sql in enumerate(parts)) + " SELECT 1"


def _rollup_types() -> dict[str, str]:
    from django.db import models

    from dashboard.models import HourlyRollup

    kinds = {}
    for name in _ROLLUP_COLUMNS:
        field = HourlyRollup._meta.get_field(name)
        if isinstance(field, models.ForeignKey | models.BigIntegerField):
            kinds[name] = "bigint"
        elif isinstance(field, models.DecimalField):
            kinds[name] = "numeric"
    return kinds


def _rollup_columns() -> tuple[str, ...]:
    from dashboard.models import COUNTERS, KEY_FIELDS

    return (*KEY_FIELDS, *COUNTERS)


_ROLLUP_COLUMNS = _rollup_columns()
_ROLLUP_TYPES = _rollup_types()
_finish: list[str] = []


def _finish_statement() -> str:
    # Built on first use: column types come from the connection's vendor.
    if not _finish:
        _finish.append(_finish_sql())
    return _finish[0]
