"""Rollup rows read once are kept while they are unchanged, and read again as
soon as anything changes them (PostgreSQL)."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from dashboard import selectors
from metrics.readcache import rollup_reads
from metrics.rebuild import rollups_rebuild
from metrics.windows import parse_window

from .conftest import postgres_only, trace

pytestmark = [postgres_only(), pytest.mark.django_db]

HOUR = timezone.now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=5)


@pytest.fixture(autouse=True)
def _empty():
    rollup_reads.clear()
    yield
    rollup_reads.clear()


def _send(ingest, n: int, **fields) -> None:
    items = [
        trace(
            id=f"{fields.get('session_id', 's')}-{i}",
            created_at=(HOUR + timedelta(minutes=i)).isoformat(),
            **fields,
        )
        for i in range(n)
    ]
    assert ingest.post("/api/traces", {"traces": items}).status_code == 200


def _overview(tenant) -> dict:
    return selectors.overview_panels(organisation=tenant.organisation, window=parse_window(period="24h"))


def _sketch_reads(queries) -> int:
    return sum('"latency_sketch"' in q["sql"] and "hourlyrollup" in q["sql"] for q in queries)


def test_unchanged_rows_are_not_read_again(tenant, ingest):
    _send(ingest, 3, session_id="a")
    first = _overview(tenant)
    with CaptureQueriesContext(connection) as again:
        second = _overview(tenant)
    assert second["series"]["points"] == first["series"]["points"]
    assert _sketch_reads(again.captured_queries) == 0


def test_a_late_trace_for_a_past_hour_shows_at_once(tenant, ingest):
    _send(ingest, 3, session_id="a")
    assert _overview(tenant)["current"]["total_messages"] == 6
    _send(ingest, 2, session_id="late", latency_ms=4000)
    after = _overview(tenant)
    assert after["current"]["total_messages"] == 10
    point = next(p for p in after["series"]["points"] if p["bucket_start"] == HOUR)
    assert point["total_sessions"] == 2 and point["p95_latency_ms"] > 3900


def test_rebuilt_rollups_are_read_again(tenant, ingest):
    _send(ingest, 3, session_id="a")
    before = _overview(tenant)
    rollups_rebuild(start=HOUR - timedelta(days=1), end=HOUR + timedelta(days=1))
    with CaptureQueriesContext(connection) as again:
        after = _overview(tenant)
    assert _sketch_reads(again.captured_queries) > 0
    assert after["series"]["points"] == before["series"]["points"]
