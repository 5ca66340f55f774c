"""Retention deletes raw traces past RETENTION_DAYS in batches, with their
steps, scores, spans and emptied conversations, never the rollups: old windows
keep their numbers, read in whole hours."""

import io
import json
from datetime import UTC, timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from agents.models import Score, Session, Trace, TraceStep
from agents.partitions import partitioned
from agents.retention import retention_apply
from audit.models import AuditLog
from dashboard import selectors
from metrics.rebuild import rollups_rebuild
from metrics.rollups import hour_of
from metrics.windows import Window
from otel.models import ReceivedSpan, ReceivedTrace
from thinnest_analytics.celery import app

from . import oracle
from .conftest import rollup_snapshot
from .otlp import json_export, json_span
from .test_metrics_oracle import _assert_matches

DAYS = 30

# On PostgreSQL retention drops whole days' partitions from a connection of its
# own, which waits for every transaction using them: the rows must be committed.
pytestmark = pytest.mark.django_db(transaction=True)


def _traffic(ingest, now) -> oracle.World:
    """Conversations 40 days ago on partial hours, one that spans the horizon,
    and recent ones; errors, tool calls, scores and steps."""
    base = hour_of(now - timedelta(days=40))
    items = []
    for n in range(60):
        at = base + timedelta(minutes=11 * n + n % 7)
        items.append(
            {
                "id": f"old{n}",
                "agent_id": f"agent_{n // 4 % 2}",
                "session_id": f"old-s{n // 4}",
                "channel": ("chat", "voice", "widget")[n // 4 % 3],
                "input": "where is my order?" if n % 5 else "",
                "output": "It ships today.",
                "model": "gpt-4o-mini",
                "input_tokens": 100 + n,
                "output_tokens": 20 + n,
                "latency_ms": 300 + 97 * n,
                "status": "error" if n % 9 == 0 else "success",
                "tool_calls": [{"name": "lookup"}] if n % 3 == 0 else [],
                "steps": [{"kind": "llm", "name": "chat", "latency_ms": 100}],
                "created_at": at.isoformat(),
                "_at": at,
                **({"evaluation_score": n % 5} if n % 4 == 0 else {}),
            }
        )
    for n, at in enumerate([now - timedelta(days=DAYS + 1), now - timedelta(days=DAYS - 1), now]):
        items.append(
            {
                "id": f"span{n}",
                "agent_id": "agent_0",
                "session_id": "spanning",
                "input": "hi",
                "output": "hello",
                "latency_ms": 500,
                "steps": [{"kind": "tool", "name": "lookup", "latency_ms": 40}],
                "input_tokens": 1,
                "output_tokens": 1,
                "status": "success",
                "created_at": at.isoformat(),
                "_at": at,
            }
        )
    world = oracle.World()
    body = [{k: v for k, v in item.items() if not k.startswith("_")} for item in items]
    assert ingest.post("/api/traces", {"traces": body}).status_code == 200
    world.send(items)
    return world


def _otel(ingest, at, trace_id: str, root: bool) -> None:
    start = int(at.timestamp() * 1e9)
    span = json_span(
        trace_id,
        trace_id[:16],
        "invoke_agent Support" if root else "chat gpt-4o-mini",
        start,
        start + 800_000_000,
        parent="" if root else "aa" * 8,
        attributes={
            "gen_ai.operation.name": "invoke_agent" if root else "chat",
            "gen_ai.agent.id": "agent_0",
        },
        flags=0x100,  # the parent is in this process: wait for it
    )
    r = ingest.post("/api/otel/v1/traces", raw=json.dumps(json_export([span])))
    assert r.status_code == 200, r.content


def _summary(org, agent, start, end) -> dict:
    got = selectors.agent_summary(organisation=org, agent=agent, window=Window(start, end))
    return {k: v for k, v in got.items() if k not in ("from", "to")}


def test_old_windows_keep_their_numbers_in_whole_hours(tenant, ingest, settings):
    now = timezone.now().astimezone(UTC)
    world = _traffic(ingest, now)
    org = tenant.organisation
    agent = org.agents.get(public_id="agent_0")
    base = hour_of(now - timedelta(days=40))
    # A window with partial hours at both ends, its whole-hour cover, and one across the horizon.
    start, end = base + timedelta(minutes=17), base + timedelta(hours=5, minutes=40)
    aligned = (base, base + timedelta(hours=6))
    across = (now - timedelta(days=DAYS + 2, minutes=-7), now + timedelta(minutes=1))
    across_aligned = (hour_of(across[0]), across[1])
    exact = _summary(org, agent, start, end)
    _assert_matches(exact, _want(world, start, end))
    before = {w: _summary(org, agent, *w) for w in (aligned, across_aligned)}
    _assert_matches(before[aligned], _want(world, *aligned))
    rollups = rollup_snapshot(org)

    settings.RETENTION_DAYS = DAYS
    deleted = retention_apply()
    assert deleted.traces == 61 and Trace.objects.filter(organisation=org).count() == 2

    assert rollup_snapshot(org) == rollups
    # Ends before the horizon are read as whole hours from the rollups.
    assert _summary(org, agent, start, end) == before[aligned]
    assert _summary(org, agent, *aligned) == before[aligned]
    assert _summary(org, agent, *across) == before[across_aligned]
    _assert_matches(before[across_aligned], _want(world, *across_aligned))
    # Rebuilding leaves days past the horizon alone.
    rollups_rebuild(start=base - timedelta(days=1), end=now + timedelta(days=1))
    assert rollup_snapshot(org) == rollups


def _want(world, start, end) -> dict:
    want = oracle.summary(world, start, end, agent_id="agent_0")
    want.pop("active_agents")
    return want


def test_retention_deletes_raw_rows_in_batches(tenant, ingest, settings):
    now = timezone.now()
    _traffic(ingest, now)
    old = now - timedelta(days=40)
    _otel(ingest, old, "1" * 32, root=True)  # derived: trace otel-111…
    _otel(ingest, old, "2" * 32, root=False)  # its root never came: spans only
    ReceivedTrace.objects.filter(trace_id="2" * 32).update(last_received_at=old)
    _otel(ingest, now, "3" * 32, root=True)
    org = tenant.organisation
    kept_ids = {"span1", "span2", "otel-" + "3" * 32}
    assert TraceStep.objects.filter(trace__public_id__in=kept_ids).count() == 2

    settings.RETENTION_DAYS = DAYS
    out = io.StringIO()
    call_command("apply_retention", "--dry-run", stdout=out)
    assert "Would delete 62 traces (61 steps, 15 scores, 2 OpenTelemetry spans)" in out.getvalue()
    assert Trace.objects.filter(organisation=org).count() == 65

    out = io.StringIO()
    call_command("apply_retention", "--batch-size", "25", "--verbosity", "0", stdout=out)
    assert "Deleted 62 traces (61 steps, 15 scores, 2 OpenTelemetry spans)" in out.getvalue()
    assert "and 16 conversations left empty" in out.getvalue()
    assert set(Trace.objects.filter(organisation=org).values_list("public_id", flat=True)) == kept_ids
    assert set(TraceStep.objects.values_list("trace__public_id", flat=True)) == {"span1", "span2"}
    assert Score.objects.count() == 0
    assert set(ReceivedTrace.objects.values_list("trace_id", flat=True)) == {"3" * 32}
    assert ReceivedSpan.objects.count() == 1
    # The conversation across the horizon stays, with its start; emptied ones are gone.
    spanning = Session.objects.get(organisation=org, public_id="spanning")
    assert spanning.started_at < now - timedelta(days=DAYS)
    assert not Session.objects.filter(public_id__startswith="old-").exists()
    entries = list(AuditLog.objects.filter(organisation=org, action="retention.delete").order_by("pk"))
    if partitioned():
        # One entry per day dropped, then one for the spans and one for the
        # conversations that went with them, and one for the unfinished spans.
        days = [e for e in entries if e.details.get("partitions_dropped")]
        assert entries[: len(days)] == days and sum(e.details["traces"] for e in days) == 62
        rest = [(e.details.get("spans"), e.details.get("conversations")) for e in entries[len(days) :]]
        assert rest == [(1, 0), (0, 16), (1, None)]
    else:
        # One audit entry per batch (62 traces: 25 + 25 + 12), and one for the unfinished spans.
        assert [e.details.get("traces") for e in entries] == [25, 25, 12, None]
    assert entries[0].user_id == "system:retention" and entries[-1].details["spans"] == 1

    out = io.StringIO()
    call_command("apply_retention", stdout=out, stderr=io.StringIO())
    assert "Deleted 0 traces" in out.getvalue()


def test_retention_can_be_off(settings):
    settings.RETENTION_DAYS = 0
    out = io.StringIO()
    call_command("apply_retention", stdout=out)
    assert "Retention is off" in out.getvalue()
    with pytest.raises(Exception, match="--days"):
        call_command("apply_retention", "--days", "0")


def test_beat_applies_retention_daily_after_midnight():
    from agents.tasks import apply_retention

    entry = app.conf.beat_schedule["apply-retention"]
    assert entry["task"] == apply_retention.name
    assert entry["schedule"].hour == {0} and entry["schedule"].minute == {17}


def test_beat_creates_partitions_ahead_daily():
    from agents.tasks import create_partitions_ahead

    entry = app.conf.beat_schedule["create-partitions-ahead"]
    assert entry["task"] == create_partitions_ahead.name and entry["schedule"].hour == {0}
