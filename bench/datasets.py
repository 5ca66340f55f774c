"""Benchmark data: realistic ingestion batches, and a fast SQL loader that writes
millions of traces straight into the tables (bypassing HTTP), then rebuilds the
rollups set-based, as ``rebuild_rollups`` would."""

import random
from datetime import UTC, datetime, timedelta

from django.db import connection, transaction
from tqdm import tqdm

from accounts.services import organisation_get_or_create
from agents.models import Agent, Trace
from agents.partitions import partitions_ensure
from agents.services import agents_resolve
from audit.services import Actor
from metrics.rebuild import rollups_rebuild

AGENTS = 10
TRACES_PER_CONVERSATION = 4
DAYS = 30


def traffic_item(n: int, *, prefix: str, rng: random.Random, now: datetime) -> dict:
    """Trace number ``n`` of a realistic stream: four traces per conversation,
    ten agents, a tool call in a third, an error in 2.5 %, the last hour."""
    tool = n % 3 == 0
    latency = round(rng.lognormvariate(6.8, 0.5))
    return {
        "id": f"{prefix}-{n}",
        "agent_id": f"agent_{n // TRACES_PER_CONVERSATION % AGENTS}",
        "session_id": f"{prefix}-s{n // TRACES_PER_CONVERSATION}",
        "channel": "chat",
        "input": "Where is my order #1234? It was supposed to arrive yesterday.",
        "reasoning": "The user asks about an order; look it up before answering.",
        "output": "Your order left our warehouse this morning and arrives tomorrow.",
        "tool_calls": [
            {
                "name": "lookup_order",
                "arguments": {"id": 1234},
                "result": {"status": "shipped"},
                "latency_ms": 120,
            }
        ]
        if tool
        else [],
        "steps": [
            {
                "kind": "llm",
                "name": "chat",
                "model": "gpt-4o-mini",
                "latency_ms": latency,
                "input_tokens": 480,
                "output_tokens": 60,
            }
        ],
        "model": "gpt-4o-mini",
        "input_tokens": 400 + n % 300,
        "output_tokens": 40 + n % 90,
        "latency_ms": latency,
        "status": "error" if n % 40 == 0 else "success",
        "error": "tool timed out" if n % 40 == 0 else "",
        "created_at": (now - timedelta(seconds=(n % 3000))).isoformat(),
    }


def ingest_batches(*, clients: int, batches: int, size: int, seed: int) -> list[list[bytes]]:
    """JSON bodies of ``size`` traces each, per client, shaped like real traffic."""
    import json

    rng = random.Random(seed)
    now = datetime.now(UTC)
    return [
        [
            json.dumps(
                {
                    "traces": [
                        traffic_item(
                            (client * batches + b) * size + i, prefix=f"ing-{seed}", rng=rng, now=now
                        )
                        for i in range(size)
                    ]
                }
            ).encode()
            for b in range(batches)
        ]
        for client in range(clients)
    ]


# Deterministic pseudo-random numbers in [0, 1) from the trace number, so
# conversations can be derived from the same values as their traces.
_FUNCTIONS = """
CREATE OR REPLACE FUNCTION bench_u(n bigint, salt bigint) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT (((n + salt * 7919) * 2654435761 + salt * 40503) % 4294967291)::double precision / 4294967291
$$;
CREATE OR REPLACE FUNCTION bench_error(n bigint) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT bench_u(n, 3) < 0.02 $$;
"""


# A trace's numbers as functions of its number n; conversations sum the same
# expressions, so their totals equal their traces'.
INPUT_TOKENS = "(200 + bench_u(n, 6) * 1800)::int"
OUTPUT_TOKENS = "(20 + bench_u(n, 7) * 400)::int"
LATENCY = "round(exp(ln(900) + 0.6 * sqrt(-2 * ln(greatest(bench_u(n, 1), 1e-12))) * cos(2 * pi() * bench_u(n, 2))))::int"
COST = f"round(({INPUT_TOKENS} * 0.15 + {OUTPUT_TOKENS} * 0.60) / 1000000, 10)"


def _clear(organisation_id: int) -> None:
    """Delete an organisation's raw rows and conversations (an earlier load of
    another size), set-based: Django's cascade would read every row first."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM agents_tracestep s USING agents_trace t WHERE s.trace_id = t.id "
            "AND s.trace_created_at = t.created_at AND t.organisation_id = %s",
            [organisation_id],
        )
        for table in ("agents_score", "agents_trace", "agents_tracekey", "agents_session"):
            cursor.execute(f"DELETE FROM {table} WHERE organisation_id = %s", [organisation_id])


def load(*, slug: str, traces: int, days: int = DAYS, progress: bool = True) -> tuple[object, list[Agent]]:
    """An organisation with ``traces`` traces over the last ``days`` days (4 per
    conversation, 10 agents, chat/widget/voice, two deployment versions, 10 %
    scored). Reuses an existing load of the same size."""
    organisation = organisation_get_or_create(slug=slug)
    agents = list(
        agents_resolve(
            organisation=organisation,
            wanted={f"agent_{i}": f"Bench Agent {i}" for i in range(AGENTS)},
            actor=Actor.system("bench"),
        ).values()
    )
    agents.sort(key=lambda a: int(a.public_id.split("_")[1]))
    if Trace.objects.filter(organisation=organisation).count() == traces:
        return organisation, agents
    _clear(organisation.pk)

    end = datetime.now(UTC).replace(microsecond=0)
    start = end - timedelta(days=days)
    span = (end - start).total_seconds()
    agent_ids = "ARRAY[" + ",".join(str(a.pk) for a in agents) + "]::bigint[]"
    # The days' partitions, before the transaction below locks the tables.
    partitions_ensure(moments=[start + timedelta(days=d) for d in range(days + 1)] + [end])
    with connection.cursor() as cursor:
        cursor.execute(_FUNCTIONS)
        cursor.execute("SELECT coalesce(max(id), 0) + 1 FROM agents_session")
        base = cursor.fetchone()[0]
        # Shared expressions over n (trace number) and s (conversation number).
        at = f"(%(start)s::timestamptz + make_interval(secs => n * {span / traces}))"
        agent = f"({agent_ids})[(s %% {AGENTS}) + 1]"
        channel = f"(CASE WHEN s %% {AGENTS} < 4 THEN (CASE WHEN s %% 3 = 0 THEN 'widget' ELSE 'chat' END) WHEN s %% {AGENTS} < 7 THEN 'voice' ELSE 'chat' END)"
        version = f"(CASE WHEN {at} < %(start)s::timestamptz + make_interval(secs => {span} * (12 + (s %% {AGENTS})) / {DAYS}) THEN 'v1' ELSE 'v2' END)"
        chunk = 1_000_000
        steps = list(range(0, traces, chunk))
        with transaction.atomic():
            for lo in tqdm(steps, desc=f"{slug}: conversations", disable=not progress):
                hi = min(traces, lo + chunk)
                s_lo, s_hi = lo // TRACES_PER_CONVERSATION, (hi - 1) // TRACES_PER_CONVERSATION
                cursor.execute(
                    f"""
                    INSERT INTO agents_session (id, organisation_id, agent_id, public_id, channel, deployment_version,
                        started_at, first_trace_at, last_activity_at, trace_count, error_count, created_at,
                        input_tokens, output_tokens, latency_count, latency_sum_ms, llm_cost_usd, unpriced_traces,
                        voice_cost_usd)
                    SELECT %(base)s + s, %(org)s, {agent}, 'bs' || s, {channel},
                        (SELECT {version} FROM (SELECT s * {TRACES_PER_CONVERSATION} AS n) first),
                        f.at, f.at, l.at, t.count, t.errors, f.at,
                        t.input_tokens, t.output_tokens, t.count, t.latency_sum, t.cost, 0, 0
                    FROM generate_series(%(s_lo)s::bigint, %(s_hi)s::bigint) AS s,
                    LATERAL (SELECT {at} AS at FROM (SELECT s * {TRACES_PER_CONVERSATION} AS n) x) f,
                    LATERAL (SELECT {at} AS at FROM (SELECT least(s * {TRACES_PER_CONVERSATION} + {TRACES_PER_CONVERSATION - 1}, %(last)s) AS n) x) l,
                    LATERAL (SELECT count(*) AS count, count(*) FILTER (WHERE bench_error(n)) AS errors,
                                    sum({INPUT_TOKENS}) AS input_tokens, sum({OUTPUT_TOKENS}) AS output_tokens,
                                    sum({LATENCY}) AS latency_sum, sum({COST}) AS cost
                             FROM generate_series(s * {TRACES_PER_CONVERSATION},
                                                  least(s * {TRACES_PER_CONVERSATION} + {TRACES_PER_CONVERSATION - 1}, %(last)s)) AS n) t
                    WHERE s * {TRACES_PER_CONVERSATION} >= %(lo)s
                    """,
                    {
                        "base": base,
                        "org": organisation.pk,
                        "s_lo": s_lo,
                        "s_hi": s_hi,
                        "lo": lo,
                        "last": traces - 1,
                        "start": start,
                    },
                )
            cursor.execute(
                "SELECT setval(pg_get_serial_sequence('agents_session', 'id'), (SELECT max(id) FROM agents_session))"
            )
            # Building the traces' secondary indexes once, after the rows, is
            # several times quicker than keeping them up to date row by row.
            cursor.execute(
                """
                SELECT i.relname, pg_get_indexdef(x.indexrelid) FROM pg_index x
                JOIN pg_class i ON i.oid = x.indexrelid
                WHERE x.indrelid = 'agents_trace'::regclass AND NOT x.indisunique AND NOT x.indisprimary
                  AND i.relname <> 'trace_org_time_id'
                """
            )
            deferred = cursor.fetchall()
            for name, _ in deferred:
                cursor.execute(f'DROP INDEX "{name}"')
            # An index of the partitioned table is defined ON ONLY it; created
            # again without ONLY, it is built on every partition too.
            deferred = [(name, definition.replace(" ON ONLY ", " ON ", 1)) for name, definition in deferred]
            for lo in tqdm(steps, desc=f"{slug}: traces", disable=not progress):
                hi = min(traces, lo + chunk)
                cursor.execute(
                    f"""
                    INSERT INTO agents_trace (organisation_id, agent_id, session_id, public_id, channel, deployment_version,
                        input, reasoning, output, tool_calls, tool_call_count, model, input_tokens, output_tokens,
                        latency_ms, cost_usd, cost_source, status, error, metadata, created_at, received_at)
                    SELECT %(org)s, {agent}, %(base)s + s, 'b' || n, {channel}, {version},
                        'Where is my order #' || (n %% 100000) || '?', '',
                        CASE WHEN bench_u(n, 5) < 0.1 THEN '' ELSE 'It ships today.' END,
                        CASE WHEN n %% 3 = 0 THEN '[{{"name": "lookup_order"}}]'::jsonb ELSE '[]'::jsonb END,
                        CASE WHEN n %% 3 = 0 THEN 1 ELSE 0 END, 'gpt-4o-mini',
                        {INPUT_TOKENS}, {OUTPUT_TOKENS}, {LATENCY}, {COST},
                        'price_table', CASE WHEN bench_error(n) THEN 'error' ELSE 'success' END,
                        CASE WHEN bench_error(n) THEN 'lookup_order timed out after 30 s' ELSE '' END,
                        '{{}}'::jsonb, {at}, {at}
                    FROM (SELECT n, n / {TRACES_PER_CONVERSATION} AS s FROM generate_series(%(lo)s::bigint, %(hi)s::bigint - 1) AS n) g
                    """,
                    {"org": organisation.pk, "base": base, "lo": lo, "hi": hi, "start": start},
                )
            # Each trace's public id, claimed as ingestion claims it.
            cursor.execute(
                "INSERT INTO agents_tracekey (organisation_id, public_id, created_at) "
                "SELECT organisation_id, public_id, created_at FROM agents_trace WHERE organisation_id = %s",
                [organisation.pk],
            )
            cursor.execute("SET LOCAL maintenance_work_mem = '256MB'")
            for _, definition in tqdm(deferred, desc=f"{slug}: indexes", disable=not progress):
                cursor.execute(definition)
            cursor.execute(
                """
                INSERT INTO agents_score (organisation_id, trace_id, agent_id, channel, deployment_version,
                    trace_created_at, name, value, comment, created_at)
                SELECT organisation_id, id, agent_id, channel, deployment_version, created_at,
                    'evaluation', 1 + (id %% 5), '', created_at
                FROM agents_trace WHERE organisation_id = %s AND id %% 10 = 0
                """,
                [organisation.pk],
            )
        cursor.execute(
            "ANALYZE agents_trace; ANALYZE agents_session; ANALYZE agents_score; ANALYZE agents_tracekey;"
        )
    rollups_rebuild(
        start=start,
        end=end + timedelta(seconds=1),
        organisation_id=organisation.pk,
        progress=lambda days: tqdm(days, desc=f"{slug}: rollups", unit="day", disable=not progress),
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE dashboard_hourlyrollup; ANALYZE dashboard_dailyrollup;")
    return organisation, agents
