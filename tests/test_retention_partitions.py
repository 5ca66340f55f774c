"""Retention on partitioned PostgreSQL: days wholly before the horizon lose their
partitions, with their traces' keys, received spans and emptied conversations;
the day the horizon falls in is deleted row by row up to the horizon."""

import io
import json
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from agents.models import Session, Trace, TraceKey
from agents.partitions import DAY, PARTITIONED, day_of, day_start, partition_name
from agents.retention import retention_apply, retention_pending
from audit.models import AuditLog
from otel.models import ReceivedSpan, ReceivedTrace

from .conftest import postgres_only, rollup_snapshot
from .otlp import json_export, json_span

pytestmark = [postgres_only(), pytest.mark.django_db(transaction=True)]

DAYS = 30
OTEL_ID = "4" * 32


@dataclass
class Old:
    """Traffic around a horizon at noon: a day before it (dropped whole) and
    the day it falls in (the edge day)."""

    horizon: datetime
    dropped: date
    edge: date

    @property
    def now(self) -> datetime:
        """The moment of a retention pass whose horizon is ``horizon``."""
        return self.horizon + timedelta(days=DAYS)


def _trace(public_id: str, at: datetime, session: str, **more) -> dict:
    return {
        "id": public_id,
        "agent_id": "agent_0",
        "session_id": session,
        "input": "where is my order?",
        "output": "It ships today.",
        "model": "gpt-4o-mini",
        "input_tokens": 100,
        "output_tokens": 20,
        "latency_ms": 700,
        "steps": [{"kind": "llm", "name": "chat", "latency_ms": 300}],
        "created_at": at.isoformat(),
        **more,
    }


def _otel_root(ingest, at: datetime) -> None:
    start = int(at.timestamp() * 1e9)
    span = json_span(
        OTEL_ID,
        OTEL_ID[:16],
        "invoke_agent Support",
        start,
        start + 800_000_000,
        attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.id": "agent_0"},
    )
    r = ingest.post("/api/otel/v1/traces", raw=json.dumps(json_export([span])))
    assert r.status_code == 200, r.content


@pytest.fixture
def old(tenant, ingest, settings) -> Old:
    settings.RETENTION_DAYS = DAYS
    horizon = day_start(day_of(timezone.now()) - timedelta(days=DAYS + 1)) + timedelta(hours=12)
    edge = day_of(horizon)
    dropped = edge - DAY
    at = day_start(dropped)
    traces = [
        _trace("gone", at + timedelta(hours=3), "old-conv", evaluation_score=4),
        _trace("gone-spanning", at + timedelta(hours=4), "spanning"),
        _trace("edge-before", horizon - timedelta(hours=1), "edge-conv"),
        _trace("edge-after", horizon + timedelta(hours=1), "edge-conv"),
        _trace("spanning-late", horizon + timedelta(hours=2), "spanning"),
    ]
    assert ingest.post("/api/traces", {"traces": traces}).status_code == 200
    _otel_root(ingest, at + timedelta(hours=5))
    return Old(horizon=horizon, dropped=dropped, edge=edge)


def _tables_of(day: date) -> set[str]:
    names = [partition_name(spec.table, day) for spec in PARTITIONED]
    with connection.cursor() as cursor:
        cursor.execute("SELECT relname FROM pg_class WHERE relname = ANY(%s)", [names])
        return {name for (name,) in cursor.fetchall()}


class Stop(Exception):
    pass


def _stop_after_a_drop(traces: int) -> None:
    raise Stop


def _all_tables_of(day: date) -> set[str]:
    return {partition_name(spec.table, day) for spec in PARTITIONED}


def test_a_day_wholly_before_the_horizon_loses_its_partitions(old):
    assert _tables_of(old.dropped) == _all_tables_of(old.dropped)
    retention_apply(now=old.now)
    assert _tables_of(old.dropped) == set()
    assert _tables_of(old.edge) == _all_tables_of(old.edge)


def test_the_edge_day_loses_its_rows_before_the_horizon_only(old):
    expired = retention_apply(now=old.now)
    kept = set(Trace.objects.values_list("public_id", flat=True))
    assert kept == {"edge-after", "spanning-late"}
    assert expired.traces - expired.traces_dropped == 1  # edge-before, row by row


def test_a_pass_deletes_exactly_what_its_dry_run_counts(old):
    pending = retention_pending(horizon=old.horizon)
    expired = retention_apply(now=old.now)
    assert (expired.traces, expired.steps, expired.scores, expired.spans) == (
        pending.traces,
        pending.steps,
        pending.scores,
        pending.spans,
    )
    assert (expired.traces, expired.traces_dropped, expired.scores, expired.spans) == (4, 3, 1, 1)


def test_a_dropped_trace_id_is_stored_again_when_sent_again(old, ingest):
    retention_apply(now=old.now)
    assert not TraceKey.objects.filter(public_id__in=["gone", "gone-spanning", "otel-" + OTEL_ID]).exists()
    again = _trace("gone", day_start(old.dropped) + timedelta(hours=3), "old-conv")
    r = ingest.post("/api/traces", again)
    assert r.status_code == 200 and r.json()["accepted"] == ["gone"]
    assert Trace.objects.filter(public_id="gone").exists()


def test_received_spans_of_dropped_traces_go(old):
    assert ReceivedSpan.objects.filter(trace_id=OTEL_ID).count() == 1
    retention_apply(now=old.now)
    assert not ReceivedSpan.objects.exists() and not ReceivedTrace.objects.exists()


def test_conversations_emptied_by_a_drop_go_and_those_with_later_traces_stay(old, tenant):
    otel_conversation = Trace.objects.get(public_id="otel-" + OTEL_ID).session_id
    expired = retention_apply(now=old.now)
    assert expired.conversations == 2
    assert not Session.objects.filter(public_id="old-conv").exists()
    assert not Session.objects.filter(pk=otel_conversation).exists()
    spanning = Session.objects.get(public_id="spanning")
    assert spanning.started_at == day_start(old.dropped) + timedelta(hours=4)
    assert Session.objects.filter(public_id="edge-conv").exists()


def test_rollups_and_summaries_of_old_windows_stay(old, tenant):
    reader = tenant.api("read")
    start, end = day_start(old.dropped), old.horizon  # whole hours before the horizon
    path = f"/api/agents/agent_0/summary?from={start.isoformat()}&to={end.isoformat()}".replace("+", "%2B")
    before = reader.get(path).json()
    assert before["total_sessions"] == 4
    rollups = rollup_snapshot(tenant.organisation)
    retention_apply(now=old.now)
    assert rollup_snapshot(tenant.organisation) == rollups
    assert reader.get(path).json() == before


def test_audit_entries_say_what_went(old, tenant):
    retention_apply(now=old.now)
    entries = [
        e.details
        for e in AuditLog.objects.filter(
            organisation=tenant.organisation, action="retention.delete"
        ).order_by("pk")
    ]
    day_end = day_start(old.edge).isoformat()
    assert entries[0] == {
        "created_before": day_end,
        "day": old.dropped.isoformat(),
        "partitions_dropped": True,
        "traces": 3,
        "steps": 2,
        "scores": 1,
        "spans": 0,
        "conversations": 0,
    }
    went_with_the_day = [(e["created_before"], e["spans"], e["conversations"]) for e in entries[1:3]]
    assert went_with_the_day == [(day_end, 1, 0), (day_end, 0, 2)]
    assert entries[3]["created_before"] == old.horizon.isoformat() and entries[3]["traces"] == 1
    assert len(entries) == 4


def test_a_pass_stopped_after_a_drop_finishes_on_the_next(old):
    with pytest.raises(Stop):
        retention_apply(now=old.now, progress=_stop_after_a_drop)
    assert _tables_of(old.dropped) == set()
    assert TraceKey.objects.filter(public_id="gone").exists()
    assert Session.objects.filter(public_id="old-conv").exists()
    assert retention_pending(horizon=old.horizon).spans == 1

    expired = retention_apply(now=old.now)
    assert (expired.traces, expired.traces_dropped, expired.spans, expired.conversations) == (1, 0, 1, 2)
    assert not TraceKey.objects.filter(public_id="gone").exists()
    assert not ReceivedSpan.objects.exists()
    assert not Session.objects.filter(public_id="old-conv").exists()


def test_the_command_reports_days_dropped_and_traces_deleted_one_by_one(ingest, settings):
    now = timezone.now()
    traces = [
        _trace("long-gone", now - timedelta(days=DAYS + 10), "a"),  # a day wholly before the horizon
        _trace("just-gone", now - timedelta(days=DAYS, seconds=1), "b"),  # the horizon's day
        _trace("kept", now, "c"),
    ]
    assert ingest.post("/api/traces", {"traces": traces}).status_code == 200
    settings.RETENTION_DAYS = DAYS
    out = io.StringIO()
    call_command("apply_retention", "--verbosity", "0", stdout=out)
    # Other tests' days, long past, may still have (empty) partitions: they go too.
    assert re.search(r"Dropped \d+ whole days \(1 traces\); deleted 1 traces one by one\.", out.getvalue())
