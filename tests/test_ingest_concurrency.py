"""Racing batches on PostgreSQL: a trace id is stored and counted once, and the
conversation counters equal a recount from the stored traces."""

from datetime import UTC, datetime, timedelta
from functools import partial

import pytest
from django.db.models import Count, Q

from agents.models import Session, Trace
from audit.models import AuditLog
from metrics.rebuild import rollups_rebuild

from .conftest import _tenant, post_json, postgres_only, race, rollup_snapshot, trace

pytestmark = [postgres_only(), pytest.mark.django_db(transaction=True)]


def _race(url: str, key: str, bodies: list[dict]) -> list[tuple[int, dict]]:
    return race([partial(post_json, url, key, body) for body in bodies])


def test_concurrent_duplicate_batches_store_each_trace_once(live_server):
    tenant = _tenant("race")
    key = tenant.keys["ingest"]
    # Eight clients send overlapping batches: every trace id is sent by several of them.
    batches = []
    for client in range(8):
        items = [
            trace(
                id=f"t{n}",
                session_id=f"s{n % 7}",
                agent_id=f"agent_{n % 7 % 3}",
                status="error" if n % 11 == 0 else "success",
                created_at=f"2026-03-06T14:{n % 60:02d}:00Z",
            )
            for n in range(client * 25, client * 25 + 150)
        ]
        batches.append({"traces": items})
    results = _race(f"{live_server.url}/api/traces", key, batches)

    assert [status for status, _ in results] == [200] * 8
    unique = {f"t{n}" for n in range(0, 7 * 25 + 150)}
    assert Trace.objects.filter(organisation=tenant.organisation).count() == len(unique)
    # Each id is new in exactly one response and a duplicate in all the others.
    stored = [tid for _, body in results for tid in body["accepted"] if tid not in body["duplicates"]]
    assert sorted(stored) == sorted(unique)
    # Conversation counters equal a recount from the stored traces.
    recount = {
        row["session_id"]: (row["n"], row["errors"])
        for row in Trace.objects.values("session_id").annotate(
            n=Count("id"), errors=Count("id", filter=Q(status="error"))
        )
    }
    for session in Session.objects.filter(organisation=tenant.organisation):
        assert (session.trace_count, session.error_count) == recount[session.pk]


def test_concurrent_new_agents_are_registered_once(live_server):
    tenant = _tenant("race-agents")
    key = tenant.keys["ingest"]
    bodies = [
        {
            "traces": [
                trace(id=f"c{c}-{n}", session_id=f"c{c}-{n}", agent_id=f"agent_new_{n}") for n in range(20)
            ]
        }
        for c in range(6)
    ]
    results = _race(f"{live_server.url}/api/traces", key, bodies)
    assert [status for status, _ in results] == [200] * 6
    assert tenant.organisation.agents.count() == 20
    assert AuditLog.objects.filter(organisation=tenant.organisation, action="agent.create").count() == 20


def test_rollups_after_racing_batches_equal_a_full_rebuild(live_server):
    tenant = _tenant("race-rollups")
    key = tenant.keys["ingest"]
    start = datetime(2026, 3, 6, 22, 0, tzinfo=UTC)
    # Conversations span batches and arrive out of order; some end in a late error.
    bodies = []
    for client in range(6):
        items = []
        for n in range(client, 240, 6):
            session = f"s{n % 20}"
            items.append(
                trace(
                    id=f"t{n}",
                    session_id=session,
                    agent_id=f"agent_{n % 20 % 2}",
                    channel=("chat", "voice", "widget")[n % 20 % 3],
                    deployment_version=("v1", "v2")[n % 2],
                    created_at=(start + timedelta(minutes=(240 - n) * 3)).isoformat(),
                    status="error" if n % 17 == 0 else "success",
                    latency_ms=50 + n * 13,
                    evaluation_score=n % 5,
                )
            )
        bodies.append({"traces": items})
        bodies.append({"traces": items[::2]})  # and re-sends, racing the originals
    results = _race(f"{live_server.url}/api/traces", key, bodies)
    assert {status for status, _ in results} == {200}
    incremental = rollup_snapshot(tenant.organisation)
    rollups_rebuild(start=start - timedelta(days=1), end=start + timedelta(days=2))
    assert rollup_snapshot(tenant.organisation) == incremental
